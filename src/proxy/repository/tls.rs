//! TLS from pgssl to the repository (`repository.tls`), with libpq's `sslmode` semantics.
//!
//! After the TCP connect pgssl sends SSLRequest, reads the one-byte answer exactly as libpq does, and
//! on `S` runs a TLS handshake; the client's start-up then travels inside it. `N` (or anything else)
//! fails the connection: every mode but `disable` insists on TLS, like libpq's `require` and above.
//!
//! | mode          | encrypts | checks the chain                    | checks the host name |
//! |---------------|----------|-------------------------------------|----------------------|
//! | `disable`     | no       | -                                   | -                    |
//! | `require`     | yes      | only if a custom CA is installed    | no                   |
//! | `verify-ca`   | yes      | yes                                 | no                   |
//! | `verify-full` | yes      | yes                                 | yes                  |
//!
//! As in libpq, where `require` with a root certificate file behaves as `verify-ca`, the trust anchor
//! is the custom CA (`security custom-cert add`) when one is installed, else the system's CA bundle.

use std::fmt;
use std::io;

use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proxy::protocol::first_packet::SSL_REQUEST_CODE;
use crate::tls::client;

/// `repository.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepositoryTlsMode {
    /// Plaintext to the repository (fine on loopback or a Unix socket).
    #[default]
    Disable,
    /// Encrypt; authenticate the server only if a custom CA is installed.
    Require,
    /// Encrypt and verify the certificate chain, not the host name.
    VerifyCa,
    /// Encrypt and verify the chain and that the certificate names the upstream host.
    VerifyFull,
}

impl fmt::Display for RepositoryTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RepositoryTlsMode::Disable => "disable",
            RepositoryTlsMode::Require => "require",
            RepositoryTlsMode::VerifyCa => "verify-ca",
            RepositoryTlsMode::VerifyFull => "verify-full",
        })
    }
}

/// Why the upstream TLS settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryTlsError {
    /// No trust anchor is available for a verifying mode.
    #[error(
        "repository.tls = {0} needs a trusted CA, but no custom CA is installed and the system CA bundle is empty (run 'pgssl security custom-cert add --cert-file CA.crt' and apply, or install ca-certificates)"
    )]
    NoTrustAnchor(RepositoryTlsMode),
    /// The custom CA certificate is not usable as a trust anchor.
    #[error("the custom CA certificate cannot be used as a trust anchor: {0}")]
    BadAnchor(String),
    /// rustls refused the configuration.
    #[error("cannot build the upstream TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Why TLS to the repository could not be set up on one connection.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryTlsFailure {
    /// The server answered `N`.
    #[error(
        "the repository does not support SSL, but repository.tls = {0} requires it (set ssl = on in its postgresql.conf, or set repository.tls = \"disable\")"
    )]
    Refused(RepositoryTlsMode),
    /// The server answered something other than `S` or `N`.
    #[error("the repository answered the SSL request with byte 0x{0:02x} instead of 'S' or 'N'")]
    BadAnswer(u8),
    /// The host part of the address is not a valid server name.
    #[error("'{0}' is not a valid host name for TLS")]
    BadHost(String),
    /// Reading the answer or running the handshake failed.
    #[error("TLS handshake with the repository failed (repository.tls = {mode}): {source}")]
    Handshake {
        /// The mode in force.
        mode: RepositoryTlsMode,
        /// rustls' or the socket's error.
        source: io::Error,
    },
}

/// The upstream TLS settings in force: the mode and, unless `disable`, the connector.
#[derive(Clone)]
pub struct RepositoryTls {
    mode: RepositoryTlsMode,
    connector: Option<TlsConnector>,
}

impl fmt::Debug for RepositoryTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepositoryTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RepositoryTls {
    /// Plaintext to the repository.
    pub fn disabled() -> RepositoryTls {
        RepositoryTls {
            mode: RepositoryTlsMode::Disable,
            connector: None,
        }
    }

    /// Builds the settings for `mode`, trusting `custom_ca` if given, else the system's CA bundle.
    pub fn new(
        mode: RepositoryTlsMode,
        custom_ca: Option<&CertificateDer<'static>>,
    ) -> Result<RepositoryTls, RepositoryTlsError> {
        if mode == RepositoryTlsMode::Disable {
            return Ok(RepositoryTls::disabled());
        }
        RepositoryTls::with_identity(mode, custom_ca, None)
    }

    /// TLS in `mode` that presents `identity` (a client certificate) when the repository asks for
    /// one. With an identity, `disable` means `require`: a certificate can only travel inside TLS.
    pub fn with_identity(
        mode: RepositoryTlsMode,
        custom_ca: Option<&CertificateDer<'static>>,
        identity: Option<client::Identity>,
    ) -> Result<RepositoryTls, RepositoryTlsError> {
        let mode = match mode {
            RepositoryTlsMode::Disable => RepositoryTlsMode::Require,
            other => other,
        };
        let verification = match (mode, custom_ca) {
            (RepositoryTlsMode::Disable, _) => client::Verification::None,
            (RepositoryTlsMode::Require, None) => client::Verification::None,
            (RepositoryTlsMode::Require | RepositoryTlsMode::VerifyCa, _) => {
                client::Verification::ChainOnly(roots(mode, custom_ca)?)
            }
            (RepositoryTlsMode::VerifyFull, _) => {
                client::Verification::Full(roots(mode, custom_ca)?)
            }
        };
        Ok(RepositoryTls {
            mode,
            connector: Some(client::connector_with_identity(
                verification,
                &[],
                identity,
            )?),
        })
    }

    /// TLS that accepts only a server certificate with one of `fingerprints` (SHA-256, colon hex),
    /// whatever its chain or names: a cluster node's trust in the repository and its peers.
    pub fn pinned(fingerprints: Vec<String>) -> Result<RepositoryTls, RepositoryTlsError> {
        Ok(RepositoryTls {
            mode: RepositoryTlsMode::VerifyFull,
            connector: Some(client::connector_with_identity(
                client::Verification::Pinned(fingerprints),
                &[],
                None,
            )?),
        })
    }

    /// The mode in force.
    pub fn mode(&self) -> RepositoryTlsMode {
        self.mode
    }

    /// Sends SSLRequest on a fresh connection and, on `S`, runs the handshake for `name`.
    pub(crate) async fn negotiate(
        &self,
        mut tcp: TcpStream,
        name: ServerName<'static>,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RepositoryTlsFailure> {
        let handshake = |source| RepositoryTlsFailure::Handshake {
            mode: self.mode,
            source,
        };
        let Some(connector) = &self.connector else {
            return Err(RepositoryTlsFailure::Refused(self.mode));
        };
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8u32.to_be_bytes());
        request[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        tcp.write_all(&request).await.map_err(handshake)?;
        match tcp.read_u8().await.map_err(handshake)? {
            b'S' => {}
            b'N' => return Err(RepositoryTlsFailure::Refused(self.mode)),
            other => return Err(RepositoryTlsFailure::BadAnswer(other)),
        }
        connector.connect(name, tcp).await.map_err(handshake)
    }
}

fn roots(
    mode: RepositoryTlsMode,
    custom_ca: Option<&CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, RepositoryTlsError> {
    match custom_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(ca.clone())
                .map_err(|e| RepositoryTlsError::BadAnchor(e.to_string()))?;
            Ok(roots)
        }
        None => {
            let roots = client::system_roots();
            if roots.is_empty() {
                return Err(RepositoryTlsError::NoTrustAnchor(mode));
            }
            Ok(roots)
        }
    }
}
