//! The repository certificate: generating `server.crt`/`server.key` with rcgen, reading them back, and
//! describing them for `list`.
//!
//! A generated certificate is a self-signed ECDSA P-256 leaf (fast handshakes) whose SANs cover the names
//! clients use, so `sslmode=verify-full` works with the certificate itself as `sslrootcert`.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SecureRandom;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::atomic;

/// The certificate file name, as in PostgreSQL's `ssl_cert_file` default.
pub const CERT_FILE: &str = "server.crt";
/// The private key file name, as in PostgreSQL's `ssl_key_file` default.
pub const KEY_FILE: &str = "server.key";

/// Where a certificate and its key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// `server.crt`: PEM, the leaf first, then any chain.
    pub cert: PathBuf,
    /// `server.key`: PEM private key, mode 0600.
    pub key: PathBuf,
}

impl CertPaths {
    /// `server.crt` and `server.key` inside `dir`.
    pub fn in_dir(dir: &Path) -> CertPaths {
        CertPaths {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }

    /// Whether both files exist.
    pub fn exist(&self) -> bool {
        self.cert.is_file() && self.key.is_file()
    }
}

/// A certificate or key that cannot be generated, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be read.
    #[error(
        "cannot read {path}: {source} (run 'pgssl security repository-ssl enable' to generate it)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error(
        "certificate file {path} holds no PEM certificate (run 'pgssl security repository-ssl enable' to generate one)"
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificate is not valid X.509.
    #[error("certificate file {path} is not a valid X.509 certificate: {message}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The key file holds no PEM private key.
    #[error("key file {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1 expected)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key file is readable by others.
    #[error(
        "key file {path} has mode {mode:04o}, which lets other users read it; run 'chmod 600 {path}'"
    )]
    KeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key does not belong to the certificate, or rustls cannot use it.
    #[error("key file {key} cannot be used with certificate {cert}: {reason}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// What `list` shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertInfo {
    /// Subject distinguished name, e.g. `CN=repository`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names as `DNS:name` / `IP:addr`.
    pub subject_alt_names: Vec<String>,
    /// SHA-256 over the DER, as colon-separated hex.
    pub sha256_fingerprint: String,
    /// Start of validity (RFC 3339 in JSON).
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity (RFC 3339 in JSON).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Certificates in the file (leaf plus chain).
    pub chain_len: usize,
}

/// The SANs a generated certificate gets: loopback names, the host name, then `extra`.
pub fn default_subject_alt_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(hostname());
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// This machine's host name, if it has a usable one.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_string();
    (!name.is_empty() && name != "localhost").then_some(name)
}

/// Generates a new key pair and self-signed certificate and writes them atomically: the key (0600)
/// first, then the certificate, so a crash in between leaves no certificate and the next `enable`
/// generates both again.
pub fn generate(
    paths: &CertPaths,
    sans: &[String],
    validity_days: u32,
) -> Result<CertInfo, CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = served_params(sans, validity_days)?.self_signed(&key)?;
    write_served(paths, &key, cert.pem().as_bytes())?;
    describe(cert.der(), 1, &paths.cert)
}

/// What a served certificate says, whoever signs it: the SANs, the host name as CN, valid for
/// `validity_days` from an hour ago (a client whose clock lags still accepts a fresh one), server
/// authentication only, a random serial.
pub(crate) fn served_params(
    sans: &[String],
    validity_days: u32,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut dn = DistinguishedName::new();
    let cn = hostname().unwrap_or_else(|| "localhost".into());
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "pgssl repository");
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(validity_days));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertError::Random)?;
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

/// Writes a served key and its certificate (PEM, the chain after it) as a pair, in a private
/// folder.
pub(crate) fn write_served(
    paths: &CertPaths,
    key: &KeyPair,
    chain_pem: &[u8],
) -> Result<(), CertError> {
    if let Some(dir) = paths.cert.parent() {
        atomic::create_private_dir(dir).map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    super::pair::write(paths, key.serialize_pem().as_bytes(), chain_pem)
}

/// Reads the certificate chain from a PEM file.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// Reads the private key, refusing a file that other users can read (PostgreSQL's rule: 0600, or
/// 0640 when owned by root).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = read_private_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| CertError::NoKey {
        path: path.to_path_buf(),
    })
}

/// Reads a private key file's bytes, refusing a file that other users can read.
pub fn read_private_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, CertError> {
    let meta = fs::metadata(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    let too_open = if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(CertError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let pem = fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(zeroize::Zeroizing::new(pem))
}

/// Describes the leaf certificate of the PEM file at `path`.
pub fn read_info(path: &Path) -> Result<CertInfo, CertError> {
    let chain = read_chain(path)?;
    describe(&chain[0], chain.len(), path)
}

/// The DER of each `CERTIFICATE` block in PEM text (other blocks are skipped); the reason when the text
/// does not parse or holds none.
pub(crate) fn pem_certificate_blocks(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(bytes)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err("no BEGIN CERTIFICATE block".into());
    }
    Ok(certs)
}

/// A certificate chain as PEM, leaf first.
pub fn chain_pem(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| to_pem(c)).collect()
}

/// One certificate as PEM.
pub(crate) fn to_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// One PEM block labelled `label` (`CERTIFICATE`, `X509 CRL`), LF line endings.
pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The contents of each `label` block in PEM text (other blocks are skipped), or the bytes as they
/// are when they are not PEM (DER); the reason when the PEM does not parse or has no such block.
pub(crate) fn pem_or_der(bytes: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    if !bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(vec![bytes.to_vec()]);
    }
    let blocks: Vec<Vec<u8>> = pem::parse_many(bytes)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|b| b.tag() == label)
        .map(pem::Pem::into_contents)
        .collect();
    if blocks.is_empty() {
        return Err(format!("no BEGIN {label} block"));
    }
    Ok(blocks)
}

/// SHA-256 of `der` as upper-case hex pairs joined by colons (the form `openssl x509 -fingerprint`
/// prints).
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Describes one DER certificate; `path` is only used in messages.
pub(crate) fn describe(der: &[u8], chain_len: usize, path: &Path) -> Result<CertInfo, CertError> {
    let bad = |message: String| CertError::BadCertificate {
        path: path.to_path_buf(),
        message,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(n) => sans.push(format!("DNS:{n}")),
                GeneralName::IPAddress(ip) => sans.push(format!("IP:{}", format_ip(ip))),
                other => sans.push(other.to_string()),
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        subject_alt_names: sans,
        sha256_fingerprint: sha256_fingerprint(der),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        chain_len,
    })
}

fn format_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => format!("{bytes:02x?}"),
    }
}

impl CertError {
    /// A certificate or key that cannot be made, read or used is the administrator's to fix (a
    /// file to replace, a folder to make writable, `repository-ssl enable` to run).
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::User
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_a_p256_certificate_with_the_requested_names() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_dir(&dir.path().join("security"));
        let sans = default_subject_alt_names(&["db.example.com".into(), "localhost".into()]);
        let info = generate(&paths, &sans, 30).unwrap();
        assert!(info.subject_alt_names.contains(&"DNS:localhost".into()));
        assert!(info.subject_alt_names.contains(&"IP:127.0.0.1".into()));
        assert!(info.subject_alt_names.contains(&"IP:::1".into()));
        assert!(
            info.subject_alt_names
                .contains(&"DNS:db.example.com".into())
        );
        assert_eq!(
            info.subject_alt_names
                .iter()
                .filter(|n| *n == "DNS:localhost")
                .count(),
            1
        );
        let days = (info.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((29..=30).contains(&days), "{days}");
        assert_eq!(info.sha256_fingerprint.len(), 32 * 3 - 1);
        let mode = fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_info(&paths.cert).unwrap(), info);
        assert!(read_key(&paths.key).is_ok());
    }

    #[test]
    fn exported_pem_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_dir(dir.path());
        generate(&paths, &["localhost".into()], 10).unwrap();
        let out = dir.path().join("copy.crt");
        fs::write(&out, chain_pem(&read_chain(&paths.cert).unwrap())).unwrap();
        assert_eq!(read_chain(&out).unwrap(), read_chain(&paths.cert).unwrap());
    }

    #[test]
    fn refuses_an_open_key_and_a_file_without_pem() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_dir(dir.path());
        generate(&paths, &["localhost".into()], 10).unwrap();
        fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key(&paths.key),
            Err(CertError::KeyPermissions { .. })
        ));
        fs::write(&paths.cert, "not a certificate").unwrap();
        assert!(matches!(
            read_chain(&paths.cert),
            Err(CertError::NoCertificate { .. })
        ));
    }
}
