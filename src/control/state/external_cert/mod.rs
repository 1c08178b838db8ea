//! A certificate the administrator brings (`security external-ssl enable`): validating the files before
//! anything is staged, keeping private copies in the data directory, and loading them for a server.
//!
//! ```text
//! <data-dir>/config/external-ssl/<id>/server.crt   the leaf, then the chain (PEM)
//! <data-dir>/config/external-ssl/<id>/server.key   the key exactly as given (0600; may stay encrypted)
//! ```
//!
//! Each `enable` copies into a new `<id>` folder, so staging never touches what a server is serving.
//! An encrypted key stays encrypted on disk; its passphrase is sealed in the keystore.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::atomic::{self, PRIVATE_MODE, PUBLIC_MODE};
use crate::keystore::Secret;
use crate::tls::certs::{self, CertError, CertInfo, CertPaths};

/// A certificate expiring within this many days is accepted with a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Why supplied files cannot be used. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ExternalCertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or chain file holds no usable PEM certificate.
    #[error(
        "{path} is not a PEM X.509 certificate ({reason}); give the PEM file (BEGIN CERTIFICATE)"
    )]
    NotACertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key file holds no PEM private key.
    #[error(
        "{path} holds no PEM private key; give an RSA, ECDSA or Ed25519 key in PKCS#8, PKCS#1 or SEC1 PEM form"
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is in OpenSSL's legacy encrypted PEM form.
    #[error(
        "{path} is encrypted in OpenSSL's legacy PEM format; convert it with 'openssl pkcs8 -topk8 -in {path} -out key.p8.pem' and give that file"
    )]
    LegacyEncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The encrypted key's parameters ask for more work or memory than any real key file does.
    #[error(
        "{path} asks for {what} to decrypt its key, more than pgssl allows (PBKDF2 up to 10,000,000 rounds, scrypt up to 256 MiB with p at most 16); re-encrypt it with 'openssl pkcs8 -topk8 -v2 aes-256-cbc'"
    )]
    KeyTooCostly {
        /// The file.
        path: PathBuf,
        /// What it asks for.
        what: String,
    },
    /// The key is encrypted and no passphrase was given.
    #[error(
        "{path} is encrypted; give its passphrase with --passphrase (or --passphrase - to type it)"
    )]
    PassphraseNeeded {
        /// The file.
        path: PathBuf,
    },
    /// The passphrase does not decrypt the key.
    #[error(
        "{path} cannot be decrypted with the given passphrase (wrong passphrase, or an unsupported PKCS#8 encryption scheme: PBES2 with PBKDF2 or scrypt and AES is supported)"
    )]
    WrongPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// A passphrase was given for a key that is not encrypted.
    #[error("{path} is not encrypted; leave out --passphrase")]
    PassphraseNotNeeded {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error(
        "{path} is not a supported key: RSA (2048 bits or more), ECDSA P-256 or P-384, or Ed25519 ({reason})"
    )]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error(
        "{key} does not belong to the certificate in {cert}; give the key the certificate was issued for"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The chain does not lead from the leaf to its issuers.
    #[error("{path}: {reason}")]
    BrokenChain {
        /// The chain (or certificate) file.
        path: PathBuf,
        /// Which link is broken and what to do.
        reason: String,
    },
    /// The certificate has expired or is not valid yet.
    #[error("{path}: {reason}")]
    NotValidNow {
        /// The certificate file.
        path: PathBuf,
        /// When it is valid.
        reason: String,
    },
    /// Copying the files into the data directory failed.
    #[error(transparent)]
    Store(#[from] CertError),
}

/// One supplied file: the name it had (for messages) and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Supplied<'a> {
    /// The name, e.g. the path given on the command line.
    pub path: &'a Path,
    /// The contents.
    pub bytes: &'a [u8],
}

/// The files the administrator supplied.
#[derive(Debug, Clone, Copy)]
pub struct SuppliedFiles<'a> {
    /// `--cert-file`: the leaf, optionally followed by its chain.
    pub cert: Supplied<'a>,
    /// `--key-file`.
    pub key: Supplied<'a>,
    /// `--chain-file`: intermediates (and optionally the root), issuer after subject.
    pub chain: Option<Supplied<'a>>,
}

/// Files that passed every check.
#[derive(Debug)]
pub struct ValidatedCert {
    /// Leaf first, then the chain, as the server will present it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key file's bytes as given (encrypted if it was).
    key_file: Zeroizing<Vec<u8>>,
    /// Whether the key file is encrypted.
    pub encrypted: bool,
    /// The leaf's details.
    pub info: CertInfo,
    /// Accepted but worth saying (expiry within 30 days).
    pub warnings: Vec<String>,
}

/// Checks the supplied files: PEM X.509, a supported key that matches, a chain that really chains,
/// and a validity period that includes `now`.
pub fn validate(
    files: SuppliedFiles<'_>,
    passphrase: Option<&Secret>,
    now: OffsetDateTime,
) -> Result<ValidatedCert, ExternalCertError> {
    let mut chain = read_pem_certificates(files.cert)?;
    let leaf_count = chain.len();
    if let Some(chain_file) = files.chain {
        chain.extend(read_pem_certificates(chain_file)?);
    }
    verify_links(
        &chain,
        files.cert.path,
        files.chain.unwrap_or(files.cert).path,
        leaf_count,
    )?;

    let key_file = files.key.bytes;
    let (key, encrypted) = decode_key(key_file, passphrase, files.key.path)?;
    if passphrase.is_some() && !encrypted {
        return Err(ExternalCertError::PassphraseNotNeeded {
            path: files.key.path.to_path_buf(),
        });
    }
    check_key_matches(&chain, key, files)?;

    let info = certs::describe(&chain[0], chain.len(), files.cert.path)?;
    let mut warnings = Vec::new();
    if info.not_after < now {
        return Err(ExternalCertError::NotValidNow {
            path: files.cert.path.to_path_buf(),
            reason: format!(
                "the certificate expired on {}; renew it with your CA and give the new file",
                info.not_after.date()
            ),
        });
    }
    if info.not_before > now {
        return Err(ExternalCertError::NotValidNow {
            path: files.cert.path.to_path_buf(),
            reason: format!(
                "the certificate is not valid before {}; check this machine's clock or wait",
                info.not_before
            ),
        });
    }
    let days_left = (info.not_after - now).whole_days();
    if days_left < EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "the certificate in {} expires in {days_left} days ({}); renew it soon",
            files.cert.path.display(),
            info.not_after.date()
        ));
    }
    Ok(ValidatedCert {
        chain,
        key_file: Zeroizing::new(key_file.to_vec()),
        encrypted,
        info,
        warnings,
    })
}

impl ValidatedCert {
    /// Writes private copies into `dir` (created 0700): the key first (0600), then the chain.
    pub fn store(&self, dir: &Path) -> Result<CertPaths, CertError> {
        atomic::create_private_dir(dir).map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let paths = CertPaths::in_dir(dir);
        atomic::write_file(&paths.key, &self.key_file, PRIVATE_MODE).map_err(|source| {
            CertError::Write {
                path: paths.key.clone(),
                source,
            }
        })?;
        let pem = certs::chain_pem(&self.chain);
        atomic::write_file(&paths.cert, pem.as_bytes(), PUBLIC_MODE).map_err(|source| {
            CertError::Write {
                path: paths.cert.clone(),
                source,
            }
        })?;
        Ok(paths)
    }
}

/// Loads a stored copy for serving: the chain and the decrypted key.
pub fn load(
    paths: &CertPaths,
    passphrase: Option<&Secret>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ExternalCertError> {
    let chain = certs::read_chain(&paths.cert)?;
    let key_file = certs::read_private_file(&paths.key)?;
    let (key, _) = decode_key(&key_file, passphrase, &paths.key)?;
    Ok((chain, key))
}

fn read_pem_certificates(
    file: Supplied<'_>,
) -> Result<Vec<CertificateDer<'static>>, ExternalCertError> {
    let (path, bytes) = (file.path, file.bytes);
    let not_cert = |reason: String| ExternalCertError::NotACertificate {
        path: path.to_path_buf(),
        reason,
    };
    let certs = certs::pem_certificate_blocks(bytes).map_err(not_cert)?;
    for (i, der) in certs.iter().enumerate() {
        X509Certificate::from_der(der)
            .map_err(|e| not_cert(format!("certificate {} does not parse: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// Checks that each certificate is issued and signed by the next one.
fn verify_links(
    chain: &[CertificateDer<'static>],
    cert_file: &Path,
    chain_file: &Path,
    leaf_count: usize,
) -> Result<(), ExternalCertError> {
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        // The parent's file: the certificate file holds the first `leaf_count` certificates.
        let path = if i + 1 < leaf_count {
            cert_file
        } else {
            chain_file
        };
        let broken = |what: &str| ExternalCertError::BrokenChain {
            path: path.to_path_buf(),
            reason: format!(
                "certificate '{}' {what} '{}'; list the issuer of each certificate right after it (leaf, intermediate, ..., root)",
                parent.subject(),
                child.subject()
            ),
        };
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(broken("is not the issuer of"));
        }
        if child.verify_signature(Some(parent.public_key())).is_err() {
            return Err(broken("did not sign"));
        }
    }
    Ok(())
}

/// Decodes the first private key in a PEM file, decrypting PKCS#8 with `passphrase`; returns the key
/// and whether it was encrypted.
pub fn decode_key(
    pem_bytes: &[u8],
    passphrase: Option<&Secret>,
    path: &Path,
) -> Result<(PrivateKeyDer<'static>, bool), ExternalCertError> {
    let no_key = || ExternalCertError::NoKey {
        path: path.to_path_buf(),
    };
    let blocks = pem::parse_many(pem_bytes).map_err(|_| no_key())?;
    let block = blocks
        .into_iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(no_key)?;
    if block
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.contains("ENCRYPTED"))
    {
        return Err(ExternalCertError::LegacyEncryptedKey {
            path: path.to_path_buf(),
        });
    }
    let tag = block.tag().to_string();
    let der = Zeroizing::new(block.into_contents());
    let key = match tag.as_str() {
        "PRIVATE KEY" => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.to_vec())),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der.to_vec())),
        "ENCRYPTED PRIVATE KEY" => {
            let passphrase = passphrase.ok_or_else(|| ExternalCertError::PassphraseNeeded {
                path: path.to_path_buf(),
            })?;
            let wrong = || ExternalCertError::WrongPassphrase {
                path: path.to_path_buf(),
            };
            let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
                .map_err(|_| no_key())?;
            check_key_cost(&info.encryption_algorithm, path)?;
            let plain = info.decrypt(passphrase.expose()).map_err(|_| wrong())?;
            // A wrong passphrase can still "decrypt" to padding-valid garbage: insist on a PKCS#8 body.
            pkcs8::PrivateKeyInfoRef::try_from(plain.as_bytes()).map_err(|_| wrong())?;
            return Ok((
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())),
                true,
            ));
        }
        _ => return Err(no_key()),
    };
    Ok((key, false))
}

/// The most PBKDF2 rounds an encrypted key may ask for: OpenSSL 3 writes 2,048, and the PKCS#5
/// crate's own ceiling is 100,000,000 (minutes of work).
const MAX_PBKDF2_ROUNDS: u32 = 10_000_000;
/// The most memory scrypt may take (128 · r · N bytes): OpenSSL's `-scrypt` takes 16 MiB.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
/// The most scrypt lanes (p), each as costly as the first.
const MAX_SCRYPT_LANES: u16 = 16;

/// Refuses key-derivation parameters no real key file has, before any work is done: they are the
/// file's to choose, and a crafted file could hold the command for hours (2^32 PBKDF2 rounds),
/// take gigabytes (scrypt's N and r), or panic the scrypt parameter conversion (N = 0).
fn check_key_cost(
    scheme: &pkcs8::pkcs5::EncryptionScheme,
    path: &Path,
) -> Result<(), ExternalCertError> {
    use pkcs8::pkcs5::{EncryptionScheme, pbes2::Kdf};
    let too_costly = |what: String| {
        Err(ExternalCertError::KeyTooCostly {
            path: path.to_path_buf(),
            what,
        })
    };
    let EncryptionScheme::Pbes2(params) = scheme else {
        return Ok(()); // PBES1: no parameter that costs more than a fixed, small amount.
    };
    match &params.kdf {
        Kdf::Pbkdf2(p) if p.iteration_count == 0 || p.iteration_count > MAX_PBKDF2_ROUNDS => {
            too_costly(format!("{} PBKDF2 rounds", p.iteration_count))
        }
        Kdf::Scrypt(p) => {
            let (n, r, lanes) = (p.cost_parameter, p.block_size, p.parallelization);
            let memory = 128u64
                .checked_mul(u64::from(r))
                .and_then(|m| m.checked_mul(n))
                .unwrap_or(u64::MAX);
            if n < 2 || !n.is_power_of_two() || r == 0 || lanes == 0 {
                too_costly(format!("scrypt with N = {n}, r = {r}, p = {lanes}"))
            } else if memory > MAX_SCRYPT_MEMORY || lanes > MAX_SCRYPT_LANES {
                too_costly(format!(
                    "scrypt with N = {n}, r = {r}, p = {lanes} ({} MiB per lane)",
                    memory >> 20
                ))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: PrivateKeyDer<'static>,
    files: SuppliedFiles<'_>,
) -> Result<(), ExternalCertError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        ExternalCertError::UnsupportedKey {
            path: files.key.path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    CertifiedKey::new(chain.to_vec(), Arc::clone(&signing_key))
        .keys_match()
        .map_err(|_| ExternalCertError::KeyMismatch {
            cert: files.cert.path.to_path_buf(),
            key: files.key.path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests;
