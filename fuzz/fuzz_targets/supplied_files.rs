//! The certificate, key, CA, CRL and map files an administrator gives (`external-ssl enable`,
//! `custom-cert add`, `authentication mutual-ssl configure`, or their uploads on the admin pages and
//! API): PEM or DER X.509, PKCS#8 (plain or encrypted), PKCS#1, SEC1, X.509 CRLs. Never a panic, and
//! never unbounded work: an encrypted key's parameters are checked before it is decrypted.
//!
//! One input holds up to three files, split at `#####` (the seeds in `fuzz/corpus/supplied_files`
//! come from `fuzz/seeds/supplied_files.sh`, real openssl output).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgssl::control::state::custom_ca;
use pgssl::control::state::external_cert::{self, Supplied, SuppliedFiles};
use pgssl::control::state::mutual_ssl::{self, Given};
use pgssl::keystore::Secret;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    // A fixed "now" (2027-01-15): the same input, the same verdict.
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time");
    let parts: Vec<&[u8]> = data.split_inner(b"#####");
    let passphrase = Secret::new("pw".into());
    let supplied = |i: usize, name: &'static str| {
        parts.get(i).map(|bytes| Supplied {
            path: Path::new(name),
            bytes,
        })
    };
    if let (Some(cert), Some(key)) = (supplied(0, "cert.pem"), supplied(1, "key.pem")) {
        let files = SuppliedFiles {
            cert,
            key,
            chain: supplied(2, "chain.pem"),
        };
        let _ = external_cert::validate(files, Some(&passphrase), now);
        let _ = external_cert::validate(files, None, now);
    }
    let _ = external_cert::decode_key(data, Some(&passphrase), Path::new("key.pem"));
    let given = |i: usize, name: &'static str| parts.get(i).map(|bytes| Given { name, bytes });
    if let Some(ca) = given(0, "ca.pem") {
        let _ = mutual_ssl::validate(ca, given(1, "crl.pem"), given(2, "map.txt"), now);
    }
    let _ = custom_ca::parse(Path::new("ca.crt"), data.to_vec(), now);
});

/// `split` on a multi-byte separator.
trait SplitInner {
    fn split_inner(&self, sep: &[u8]) -> Vec<&[u8]>;
}

impl SplitInner for [u8] {
    fn split_inner(&self, sep: &[u8]) -> Vec<&[u8]> {
        let mut parts = Vec::new();
        let mut rest = self;
        while let Some(at) = rest.windows(sep.len()).position(|w| w == sep) {
            parts.push(&rest[..at]);
            rest = &rest[at + sep.len()..];
        }
        parts.push(rest);
        parts
    }
}
