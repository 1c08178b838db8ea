//! The first packets a client sends (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage):
//! never a panic, lengths always bounded, and a parsed start-up never repeats a parameter name. A
//! relayed client's address (`pgssl.relayed_client`) is checked without a panic, and a start-up
//! with it taken out parses back to the same parameters.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgssl::proxy::protocol::first_packet::{self, FirstPacket, MAX_STARTUP_PACKET_LEN};
use pgssl::proxy::relayed_client::{self, PARAM, RelayKey};

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
            if let Some(value) = startup.param(PARAM) {
                let _ = RelayKey::new(&[7; 32]).verify(&[0; 32], value);
            }
            let stripped = relayed_client::without_param(&startup, PARAM);
            assert!(stripped.param(PARAM).is_none());
            let mut again = BytesMut::from(&stripped.raw[..]);
            if let Ok(Some(FirstPacket::Startup(back))) = first_packet::parse(&mut again) {
                assert_eq!(back.params, stripped.params);
            }
        }
    }
});
