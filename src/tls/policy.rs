//! Which TLS 1.3 cipher suites and key-exchange groups the served TLS offers (`tls.tls13_ciphersuites`,
//! `tls.groups`, as PgBouncer's `client_tls13_ciphers` and `client_tls_groups`): checked by name when
//! the configuration is read, set once when `serve` starts, used by every served configuration.
//! Empty lists mean everything the aws-lc-rs provider offers: its groups in its order, the suites in
//! [`DEFAULT_SUITES`]' order. The server's order decides, not the client's
//! ([`rustls::ServerConfig::ignore_client_order`]).

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, NamedGroup};

/// The TLS 1.3 suites, by their IANA/OpenSSL names.
const SUITES: [(&str, CipherSuite); 3] = [
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// The TLS 1.3 suites' order when none are configured: AES-128-GCM with SHA-256 first, as Mozilla's
/// recommended configurations order them. libpq (OpenSSL) offers AES-256-GCM with SHA-384 first,
/// whose key schedule runs SHA-384, which CPUs do not accelerate: it was ~7 % of pgssl's CPU per
/// login (perf, `pgbench -C`), where SHA-256 runs on the CPU's SHA extensions.
pub const DEFAULT_SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The groups, by their IANA names (and OpenSSL's aliases).
const GROUPS: [(&str, NamedGroup); 6] = [
    // The hybrid post-quantum exchange (ML-KEM-768 with X25519), first by default.
    ("X25519MLKEM768", NamedGroup::X25519MLKEM768),
    ("X25519", NamedGroup::X25519),
    ("secp256r1", NamedGroup::secp256r1),
    ("P-256", NamedGroup::secp256r1),
    ("prime256v1", NamedGroup::secp256r1),
    ("secp384r1", NamedGroup::secp384r1),
];

/// Which list a name was given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `tls13_ciphersuites`.
    Suite,
    /// `groups`.
    Group,
}

/// A name that is not a suite or group pgssl offers.
#[derive(Debug, thiserror::Error)]
#[error("'{name}' is not one of {known}")]
pub struct UnknownName {
    /// Which list it was in.
    pub kind: NameKind,
    /// The name given.
    pub name: String,
    /// The names accepted.
    pub known: String,
}

fn lookup<T: Copy>(table: &[(&str, T)], kind: NameKind, name: &str) -> Result<T, UnknownName> {
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| UnknownName {
            kind,
            name: name.to_string(),
            known: table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        })
}

/// The served provider for these names (TLS 1.2 suites are kept as they are).
pub fn provider(suites: &[String], groups: &[String]) -> Result<CryptoProvider, UnknownName> {
    let mut provider = if suites.is_empty() {
        with_suites(&DEFAULT_SUITES)
    } else {
        let wanted = suites
            .iter()
            .map(|n| lookup(&SUITES, NameKind::Suite, n))
            .collect::<Result<Vec<_>, _>>()?;
        with_suites(&wanted)
    };
    if !groups.is_empty() {
        let wanted = groups
            .iter()
            .map(|n| lookup(&GROUPS, NameKind::Group, n))
            .collect::<Result<Vec<_>, _>>()?;
        provider.kx_groups.retain(|g| wanted.contains(&g.name()));
        provider.kx_groups.sort_by_key(|g| {
            wanted
                .iter()
                .position(|w| *w == g.name())
                .unwrap_or(usize::MAX)
        });
    }
    Ok(provider)
}

/// The aws-lc-rs provider with only the TLS 1.3 suites `wanted`, in that order of preference (TLS
/// 1.2's suites kept, after them).
fn with_suites(wanted: &[CipherSuite]) -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.version() != &rustls::version::TLS13 || wanted.contains(&s.suite()));
    provider.cipher_suites.sort_by_key(|s| {
        wanted
            .iter()
            .position(|w| *w == s.suite())
            .unwrap_or(usize::MAX)
    });
    provider
}

static SERVED: OnceLock<Arc<CryptoProvider>> = OnceLock::new();

/// Sets the served provider once (at `serve` start); later calls change nothing.
pub fn set_served(provider: CryptoProvider) {
    let _ = SERVED.set(Arc::new(provider));
}

/// The provider served configurations are built with.
pub fn served() -> Arc<CryptoProvider> {
    SERVED
        .get_or_init(|| Arc::new(with_suites(&DEFAULT_SUITES)))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls13(p: &CryptoProvider) -> Vec<CipherSuite> {
        p.cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn names_pick_and_order_suites_and_groups() {
        let p = provider(
            &["tls_chacha20_poly1305_sha256".into()],
            &["secp384r1".into(), "X25519".into()],
        )
        .unwrap();
        assert_eq!(tls13(&p), [CipherSuite::TLS13_CHACHA20_POLY1305_SHA256]);
        assert!(
            p.cipher_suites
                .iter()
                .any(|s| s.version() == &rustls::version::TLS12)
        );
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::secp384r1, NamedGroup::X25519]);
        let err = provider(&["RC4-MD5".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("TLS_AES_256_GCM_SHA384"), "{err}");
        assert_eq!(err.kind, NameKind::Suite);
        let err = provider(&[], &["ffdhe2048".into()]).unwrap_err();
        assert_eq!(err.kind, NameKind::Group);
        let all: Vec<NamedGroup> = provider(&[], &[])
            .unwrap()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        // Hybrid post-quantum preferred, the classical groups still there for older clients.
        assert_eq!(all[0], NamedGroup::X25519MLKEM768, "{all:?}");
        assert!(all.contains(&NamedGroup::X25519) && all.contains(&NamedGroup::secp256r1));
        assert_eq!(tls13(&provider(&[], &[]).unwrap()), DEFAULT_SUITES);
        assert_eq!(tls13(&served()), DEFAULT_SUITES);
        let p = provider(&[], &["x25519mlkem768".into()]).unwrap();
        assert_eq!(p.kx_groups.len(), 1);
    }
}
