//! TLS: the rustls server configuration built from a certificate folder (here), the outgoing-TLS
//! connectors and verifiers ([`client`]), certificate files ([`certs`]) and protocol lists
//! ([`protocols`]).
//!
//! TLS 1.2 and 1.3 (or the subset `external-ssl --protocols` leaves) with the aws-lc-rs provider, ALPN `postgresql` (PostgreSQL 17's protocol name, required for
//! direct TLS and accepted on the SSLRequest path), and the full chain from `server.crt`.

pub mod certs;
pub mod client;
pub mod internal_ca;
pub mod pair;
pub mod policy;
pub mod protocols;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;

use certs::{CertError, CertPaths};
use protocols::ProtocolSet;

/// A verifier of client certificates that chain to `cas`, checked against `crls`. A client may also
/// present none: whether that is allowed is the login's decision (mutual SSL's fallback), so that a
/// client without one is told so in PostgreSQL's words instead of a bare TLS alert.
pub fn client_verifier(
    cas: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls)
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

/// The ALPN protocol name PostgreSQL registered.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Builds a server configuration from `server.crt` and `server.key`, checking that the key matches.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, CertError> {
    server_config_with_chain(paths, certs::read_chain(&paths.cert)?, None)
}

/// Like [`server_config`], with the certificate chain already read from `paths.cert`.
pub fn server_config_with_chain(
    paths: &CertPaths,
    chain: Vec<CertificateDer<'static>>,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, CertError> {
    let key = certs::read_key(&paths.key)?;
    server_config_from(chain, key, ProtocolSet::ALL, client_auth).map_err(|e| CertError::Unusable {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reason: e.to_string(),
    })
}

/// Builds a server configuration offering `protocols`, asking clients for a certificate that
/// `client_auth` verifies when given; rustls refuses a key that does not match.
pub fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    protocols: ProtocolSet,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::with_capacity(2);
    if protocols.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if protocols.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let builder =
        ServerConfig::builder_with_provider(policy::served()).with_protocol_versions(&versions)?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    // `tls.tls13_ciphersuites` is an order of preference: the server's, as PgBouncer's and
    // PostgreSQL's `ssl_prefer_server_ciphers` (on by default) make it.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_a_generated_certificate_and_refuses_a_foreign_key() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = CertPaths::in_dir(a.path());
        let pb = CertPaths::in_dir(b.path());
        certs::generate(&pa, &["localhost".into()], 10).unwrap();
        certs::generate(&pb, &["localhost".into()], 10).unwrap();
        let config = server_config(&pa).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"postgresql".to_vec()]);
        let mixed = CertPaths {
            cert: pa.cert.clone(),
            key: pb.key.clone(),
        };
        let err = server_config(&mixed).unwrap_err();
        assert!(matches!(err, CertError::Unusable { .. }), "{err}");
    }
}
