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
            // Taking out a parameter the packet does not have gives back the client's own bytes,
            // and adding one then taking it out does too.
            if startup.param(PARAM).is_none() {
                assert_eq!(stripped.raw, startup.raw);
                let added = relayed_client::with_param(&startup, PARAM, "127.0.0.1:1 t");
                assert_eq!(relayed_client::without_param(&added, PARAM).raw, startup.raw);
            }
            let mut again = BytesMut::from(&stripped.raw[..]);
            let Ok(Some(FirstPacket::Startup(back))) = first_packet::parse(&mut again) else {
                panic!("a start-up with one parameter taken out no longer parses");
            };
            assert_eq!(back.params, stripped.params);
        }
    }
});
