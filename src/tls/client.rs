//! TLS for pgssl's own outgoing connections: to the repository (`repository.tls`), and for the
//! load generator and tests.
//!
//! The three levels of server authentication match libpq's `sslmode`: none (`require`: encryption
//! only, handshake signatures still checked), the chain only (`verify-ca`), and the chain plus the host
//! name (`verify-full`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// How much of the server's identity a connector checks.
#[derive(Debug)]
pub enum Verification {
    /// Nothing: any certificate (libpq `require` without a root certificate).
    None,
    /// That the chain leads to one of these roots (libpq `verify-ca`).
    ChainOnly(RootCertStore),
    /// The chain and the host name (libpq `verify-full`).
    Full(RootCertStore),
    /// A leaf certificate whose SHA-256 fingerprint ([`crate::tls::certs::sha256_fingerprint`]) is
    /// one of these: how cluster nodes trust the repository and each other, whose certificates
    /// may be self-signed and reached by address, so neither a chain nor a name could be checked.
    Pinned(Vec<String>),
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The system's CA bundle; unreadable entries are skipped, as OpenSSL does. Empty when there is none.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// A connector with `sslmode=require` semantics: encryption without server authentication.
pub fn require_mode_connector() -> Result<TlsConnector, rustls::Error> {
    connector(Verification::None)
}

/// A TLS 1.2/1.3 connector (aws-lc-rs provider) that checks what `verification` asks for.
pub fn connector(verification: Verification) -> Result<TlsConnector, rustls::Error> {
    connector_with_alpn(verification, &[])
}

/// Like [`connector`], offering the ALPN protocols `alpn`.
pub fn connector_with_alpn(
    verification: Verification,
    alpn: &[&[u8]],
) -> Result<TlsConnector, rustls::Error> {
    connector_with_identity(verification, alpn, None)
}

/// A client certificate chain (leaf first) and its key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Like [`connector_with_alpn`], presenting `identity` when the server asks for a certificate.
pub fn connector_with_identity(
    verification: Verification,
    alpn: &[&[u8]],
    identity: Option<Identity>,
) -> Result<TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let wants = match verification {
        Verification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                chain: None,
                pins: Vec::new(),
                provider,
            })),
        Verification::ChainOnly(roots) => {
            let chain = Some(webpki_verifier(roots, provider.clone())?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    chain,
                    pins: Vec::new(),
                    provider,
                }))
        }
        Verification::Pinned(pins) => {
            let pins = pins.iter().map(|p| p.to_ascii_uppercase()).collect();
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    chain: None,
                    pins,
                    provider,
                }))
        }
        Verification::Full(roots) => {
            builder.with_webpki_verifier(webpki_verifier(roots, provider)?)
        }
    };
    let config = match identity {
        Some((chain, key)) => wants.with_client_auth_cert(chain, key)?,
        None => wants.with_no_client_auth(),
    };
    let mut config = config;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

/// A verifier weaker than `verify-full`, as libpq's `require` and `verify-ca` are: with `chain`, the
/// chain is verified but any host name accepted (`verify-ca`); without, any certificate is accepted
/// (`require`); with `pins`, only a leaf with one of those fingerprints is accepted. Either way the
/// handshake's signatures are verified with the certificate presented.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.pins.is_empty() {
            let seen = crate::tls::certs::sha256_fingerprint(end_entity);
            return if self.pins.contains(&seen) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            };
        }
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The name is checked last, so this error means everything else passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a TLS reachability check failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeCheckError {
    /// The host is not a valid TLS server name.
    #[error("'{0}' is not a valid host name")]
    BadHost(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The handshake failed (for example an untrusted certificate).
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// host:port.
        addr: String,
        /// rustls' or the socket's error.
        source: std::io::Error,
    },
    /// Connecting and the handshake took longer than allowed.
    #[error("no TLS handshake with {addr} within {ms} ms")]
    TimedOut {
        /// host:port.
        addr: String,
        /// The limit.
        ms: u128,
    },
}

/// Connects to `host:port` and completes a TLS handshake with `verification`, within `timeout`;
/// returns the negotiated protocol version.
pub async fn check_handshake(
    host: &str,
    port: u16,
    verification: Verification,
    timeout: std::time::Duration,
) -> Result<String, HandshakeCheckError> {
    let addr = host_port(host, port);
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| HandshakeCheckError::BadHost(host.to_string()))?;
    let connector = connector(verification).map_err(|e| HandshakeCheckError::Handshake {
        addr: addr.clone(),
        source: std::io::Error::other(e),
    })?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|source| HandshakeCheckError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let tls = connector.connect(name, tcp).await.map_err(|source| {
            HandshakeCheckError::Handshake {
                addr: addr.clone(),
                source,
            }
        })?;
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .map_or_else(|| "unknown".into(), |v| format!("{v:?}"));
        Ok(version)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| HandshakeCheckError::TimedOut {
            addr: addr.clone(),
            ms: timeout.as_millis(),
        })?
}
