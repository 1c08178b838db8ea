//! The first packets a client sends (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage):
//! never a panic, lengths always bounded, and a parsed start-up never repeats a parameter name.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgssl::proxy::protocol::first_packet::{self, FirstPacket, MAX_STARTUP_PACKET_LEN};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // Parse packet after packet, as negotiation does, until more bytes or an error are needed.
    while let Ok(Some(packet)) = first_packet::parse(&mut buf) {
        if let FirstPacket::Startup(startup) = packet {
            assert!(startup.raw.len() <= MAX_STARTUP_PACKET_LEN as usize);
            for (i, (name, _)) in startup.params.iter().enumerate() {
                assert!(!startup.params[..i].iter().any(|(n, _)| n == name) || name.contains('\u{fffd}'));
            }
            let _ = (startup.user(), startup.database());
        }
    }
});
