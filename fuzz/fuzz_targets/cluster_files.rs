//! What a cluster node reads from outside: a bootstrap file handed to `topology join` (parsed
//! before its passphrase is tried), and a state snapshot as it comes out of the repository once
//! unsealed. Never a panic; a snapshot that parses names only shared files inside `config/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::control::cluster::{bootstrap, snapshot::Snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bootstrap::parse(text);
    }
    if let Ok(snapshot) = Snapshot::from_bytes(data) {
        // Parsing again what was accepted gives the same snapshot.
        let again = Snapshot::from_bytes(&snapshot.to_bytes()).expect("a parsed snapshot re-parses");
        assert_eq!(again.digest(), snapshot.digest());
    }
});
