//! A client certificate's name under each mapping (cn, upn, ldap): never a panic on any bytes, and
//! the same answer twice (the DER walk of the UPN otherName is hand-written).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::auth::cert::{CertLogin, NameMapping, normalise_dn};

fuzz_target!(|data: &[u8]| {
    for mapping in [NameMapping::Cn, NameMapping::Upn, NameMapping::Ldap] {
        let login = CertLogin {
            mapping,
            map: vec![(normalise_dn("CN=a,O=b").unwrap(), "a".into())],
            fallback: false,
        };
        assert_eq!(login.user_of(data), login.user_of(data));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(once) = normalise_dn(text) {
            assert_eq!(normalise_dn(&once).as_ref(), Ok(&once));
        }
    }
});
