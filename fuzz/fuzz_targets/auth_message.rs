//! The authentication-phase frames pgssl reads from either side: never a panic, whatever the bytes, and
//! a rewritten offer never contains the channel-binding mechanism.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgssl::proxy::protocol::auth_message::{self, Frame, SCRAM_PLUS};

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..5) {
        let _ = auth_message::body_len([header[0], header[1], header[2], header[3], header[4]]);
    }
    let frame = Frame {
        kind: b'R',
        body: Bytes::copy_from_slice(data),
    };
    let _ = frame.auth_code();
    if let Ok(Some(offer)) = auth_message::without_channel_binding(&frame) {
        let kept = auth_message::sasl_mechanisms(&offer.body).expect("a rewritten offer parses");
        assert!(!kept.contains(&SCRAM_PLUS));
    }
});
