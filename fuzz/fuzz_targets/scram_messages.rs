//! Every SCRAM message a client (or the repository) sends pgssl, and the verifiers it reads: never a
//! panic, whatever the bytes; a parsed client-first message always has a valid nonce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::auth::scram::{ClientFinal, ClientFirst, Verifier, server_final_matches};
use pgssl::proxy::protocol::auth_message::sasl_initial_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(first) = ClientFirst::parse(data) {
        assert!(!first.nonce.is_empty() && !first.nonce.contains(','));
        assert!(first.bare.starts_with("n="));
    }
    if let Ok(last) = ClientFinal::parse(data) {
        assert!(last.without_proof.starts_with("c="));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Verifier::parse(text);
    }
    let _ = server_final_matches(data, &[0u8; 32]);
    if let Ok((_, inner)) = sasl_initial_response(data) {
        let _ = ClientFirst::parse(inner);
    }
});
