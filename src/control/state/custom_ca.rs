//! The custom CA certificate (`security custom-cert add`): read from PEM or DER, checked, and kept as
//! PEM in `config/custom-ca/<id>.crt`. It is the trust anchor of pgssl's own outgoing TLS.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::atomic::{self, PUBLIC_MODE};
use crate::tls::certs::{self, CertError, CertInfo};

/// A CA certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CustomCaError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither PEM nor DER X.509.
    #[error("{path} is not an X.509 certificate in PEM or DER form ({reason})")]
    NotACertificate {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// More than one certificate.
    #[error(
        "{path} holds {count} certificates; pgssl trusts one custom CA: give a file with only the root (or issuing) CA certificate"
    )]
    TooMany {
        /// The file.
        path: std::path::PathBuf,
        /// How many.
        count: usize,
    },
    /// Expired.
    #[error("{path}: the CA certificate expired on {date}; give a current one")]
    Expired {
        /// The file.
        path: std::path::PathBuf,
        /// When.
        date: time::Date,
    },
    /// Writing the copy failed.
    #[error(transparent)]
    Store(#[from] CertError),
}

/// A checked CA certificate.
#[derive(Debug, Clone)]
pub struct CustomCaCert {
    /// The DER.
    pub der: CertificateDer<'static>,
    /// Its details.
    pub info: CertInfo,
    /// Whether it is marked as a CA (basicConstraints cA = TRUE).
    pub is_ca: bool,
}

/// Reads and checks a CA certificate file (PEM or DER).
pub fn read(path: &Path, now: OffsetDateTime) -> Result<CustomCaCert, CustomCaError> {
    let bytes = std::fs::read(path).map_err(|source| CustomCaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, bytes, now)
}

/// Checks the bytes of a CA certificate file (PEM or DER) named `path` in messages.
pub fn parse(
    path: &Path,
    bytes: Vec<u8>,
    now: OffsetDateTime,
) -> Result<CustomCaCert, CustomCaError> {
    let not_cert = |reason: String| CustomCaError::NotACertificate {
        path: path.to_path_buf(),
        reason,
    };
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let mut certs = certs::pem_certificate_blocks(&bytes).map_err(not_cert)?;
        match certs.len() {
            1 => certs.remove(0),
            count => {
                return Err(CustomCaError::TooMany {
                    path: path.to_path_buf(),
                    count,
                });
            }
        }
    } else {
        CertificateDer::from(bytes)
    };
    let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| not_cert(e.to_string()))?;
    if !rest.is_empty() {
        return Err(not_cert("trailing bytes after the certificate".into()));
    }
    let is_ca = cert.is_ca();
    let info = certs::describe(&der, 1, path)?;
    if info.not_after < now {
        return Err(CustomCaError::Expired {
            path: path.to_path_buf(),
            date: info.not_after.date(),
        });
    }
    Ok(CustomCaCert { der, info, is_ca })
}

/// Writes the copy (PEM) to `dest`.
pub fn store(ca: &CustomCaCert, dest: &Path) -> Result<(), CertError> {
    if let Some(dir) = dest.parent() {
        atomic::create_private_dir(dir).map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    atomic::write_file(dest, certs::to_pem(&ca.der).as_bytes(), PUBLIC_MODE).map_err(|source| {
        CertError::Write {
            path: dest.to_path_buf(),
            source,
        }
    })
}

/// Reads a stored copy.
pub fn load(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    let mut chain = certs::read_chain(path)?;
    Ok(chain.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pem_and_der_and_refuses_bundles_and_junk() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let now = OffsetDateTime::now_utc();

        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, ca.pem()).unwrap();
        let der_path = dir.path().join("ca.der");
        std::fs::write(&der_path, ca.der()).unwrap();
        let from_pem = read(&pem_path, now).unwrap();
        let from_der = read(&der_path, now).unwrap();
        assert_eq!(from_pem.der, from_der.der);
        assert!(from_pem.is_ca);

        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, ca.pem() + &ca.pem()).unwrap();
        assert!(matches!(
            read(&bundle, now),
            Err(CustomCaError::TooMany { count: 2, .. })
        ));
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"\x30\x03junk").unwrap();
        assert!(matches!(
            read(&junk, now),
            Err(CustomCaError::NotACertificate { .. })
        ));
        let expired_at = from_pem.info.not_after + time::Duration::days(1);
        assert!(matches!(
            read(&pem_path, expired_at),
            Err(CustomCaError::Expired { .. })
        ));

        let copy = dir.path().join("store").join("x.crt");
        store(&from_der, &copy).unwrap();
        assert_eq!(load(&copy).unwrap(), from_der.der);
    }
}
