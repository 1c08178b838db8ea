//! The files of `authentication mutual-ssl configure`, checked and kept in
//! `config/mutual-ssl/<id>/`: `ca.pem` (the CA bundle client certificates must chain to), `crl.pem`
//! (optional: the revocation list checked on every handshake) and `user-map` (optional, for the
//! `ldap` mapping: `DN user` lines). And pgssl's internal CA, sealed in the keystore (key and
//! certificate together), made on first need and rotated by `regenerate-internal-tokens`.

use std::path::Path;

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::atomic::{self, PUBLIC_MODE};
use crate::keystore::{Keystore, KeystoreError, Secret};
use crate::proxy::auth::cert::normalise_dn;
use crate::tls::certs::{self, CertError, CertInfo};
use crate::tls::internal_ca::InternalCa;

/// The keystore name of the internal CA (its key and certificate).
pub const INTERNAL_CA_KEY: &str = "internal-ca/current";
/// The keystore name of the CA a rotation replaced.
pub const INTERNAL_CA_PREVIOUS: &str = "internal-ca/previous";

/// Why mutual-SSL files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MutualSslError {
    /// The CA bundle is not X.509.
    #[error("{file}: not a CA certificate in PEM or DER form ({reason})")]
    BadCa {
        /// The file's name.
        file: String,
        /// Why.
        reason: String,
    },
    /// A CA has expired.
    #[error("{file}: the CA certificate {subject} expired on {date}")]
    ExpiredCa {
        /// The file's name.
        file: String,
        /// Its subject.
        subject: String,
        /// When.
        date: time::Date,
    },
    /// The CRL is not a CRL.
    #[error("{file}: not a certificate revocation list in PEM or DER form ({reason})")]
    BadCrl {
        /// The file's name.
        file: String,
        /// Why.
        reason: String,
    },
    /// The CRL parses, but the TLS stack that would check clients against it refuses it.
    #[error("{file}: this revocation list cannot be used to check client certificates: {reason}")]
    UnusableCrl {
        /// The file's name.
        file: String,
        /// What it lacks, or the TLS stack's reason.
        reason: String,
    },
    /// The CRL was not issued (signed) by a configured CA.
    #[error(
        "{file}: the revocation list is issued by {issuer}, which is not a CA in the bundle (or its signature does not verify)"
    )]
    ForeignCrl {
        /// The file's name.
        file: String,
        /// Its issuer.
        issuer: String,
    },
    /// A map line is malformed.
    #[error("{file} line {line}: expected 'DN user' (for example 'CN=alice,O=Example alice')")]
    BadMap {
        /// The file's name.
        file: String,
        /// The 1-based line.
        line: usize,
    },
    /// Writing or reading the copies failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The keystore failed.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

/// What `list` shows of a CRL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CrlInfo {
    /// Its issuer.
    pub issuer: String,
    /// When its issuer promises the next one, if it says.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_update: Option<OffsetDateTime>,
    /// How many certificates it revokes.
    pub revoked: usize,
}

/// Checked mutual-SSL files.
#[derive(Debug, Clone)]
pub struct MutualSslFiles {
    /// The CA bundle.
    pub cas: Vec<CertificateDer<'static>>,
    /// Each CA's details.
    pub ca_info: Vec<CertInfo>,
    /// The CRL (DER) and its details.
    pub crl: Option<(CertificateRevocationListDer<'static>, CrlInfo)>,
    /// (normalised DN, user) pairs.
    pub map: Vec<(String, String)>,
}

/// A file as given: its name (for messages) and bytes.
#[derive(Clone, Copy)]
pub struct Given<'a> {
    /// The name.
    pub name: &'a str,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// Checks the CA bundle, the CRL and the map.
pub fn validate(
    ca: Given<'_>,
    crl: Option<Given<'_>>,
    map: Option<Given<'_>>,
    now: OffsetDateTime,
) -> Result<MutualSslFiles, MutualSslError> {
    let bad_ca = |reason: String| MutualSslError::BadCa {
        file: ca.name.to_string(),
        reason,
    };
    let mut cas = Vec::new();
    let mut ca_info = Vec::new();
    for der in certs::pem_or_der(ca.bytes, "CERTIFICATE").map_err(bad_ca)? {
        let der = CertificateDer::from(der);
        let info = certs::describe(&der, 1, Path::new(ca.name))?;
        if info.not_after < now {
            return Err(MutualSslError::ExpiredCa {
                file: ca.name.to_string(),
                subject: info.subject,
                date: info.not_after.date(),
            });
        }
        cas.push(der);
        ca_info.push(info);
    }
    let crl = crl.map(|c| read_crl(c, &cas)).transpose()?;
    let map = map.map(parse_map).transpose()?.unwrap_or_default();
    Ok(MutualSslFiles {
        cas,
        ca_info,
        crl,
        map,
    })
}

fn read_crl(
    given: Given<'_>,
    cas: &[CertificateDer<'static>],
) -> Result<(CertificateRevocationListDer<'static>, CrlInfo), MutualSslError> {
    let bad = |reason: String| MutualSslError::BadCrl {
        file: given.name.to_string(),
        reason,
    };
    let der = certs::pem_or_der(given.bytes, "X509 CRL")
        .map_err(bad)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| bad(e.to_string()))?;
    let issuer = crl.issuer().to_string();
    let signed_by_a_ca = cas.iter().any(|ca| {
        X509Certificate::from_der(ca).is_ok_and(|(_, ca)| {
            ca.subject() == crl.issuer() && crl.verify_signature(ca.public_key()).is_ok()
        })
    });
    if !signed_by_a_ca {
        return Err(MutualSslError::ForeignCrl {
            file: given.name.to_string(),
            issuer,
        });
    }
    let info = CrlInfo {
        issuer,
        next_update: crl.next_update().map(|t| t.to_datetime()),
        revoked: crl.iter_revoked_certificates().count(),
    };
    let has_number = crl.crl_number().is_some();
    let der = CertificateRevocationListDer::from(der.clone());
    // Checked by the code that will serve it: what stages must apply. The TLS stack (webpki) takes
    // only RFC 5280 CRLs, which carry a CRL number; name what is missing rather than its parse error.
    if let Err(e) = crate::tls::client_verifier(cas, vec![der.clone()]) {
        return Err(MutualSslError::UnusableCrl {
            file: given.name.to_string(),
            reason: if has_number {
                e.to_string()
            } else {
                "it has no CRL number extension (RFC 5280, 5.2.3), which the TLS stack requires; \
                 issue it again with a CRL number (openssl ca -gencrl with a crlnumber file)"
                    .to_string()
            },
        });
    }
    Ok((der, info))
}

/// Parses `DN user` lines (the user is the last word). A line whose first character (after blanks)
/// is `#` is a comment; a `#` anywhere else belongs to the line, since a DN value may hold one
/// (`CN=Data Team #1`), and cutting there would map a shorter DN to the wrong user.
pub fn parse_map(given: Given<'_>) -> Result<Vec<(String, String)>, MutualSslError> {
    let text = String::from_utf8_lossy(given.bytes);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || MutualSslError::BadMap {
            file: given.name.to_string(),
            line: i + 1,
        };
        let (dn, user) = line.rsplit_once(char::is_whitespace).ok_or_else(bad)?;
        // Only unescaped white space is trimmed, by the DN's own reading: `CN=\ x\ ` keeps its
        // escaped spaces.
        let dn = dn.trim_start();
        let dn = match dn
            .trim_end()
            .strip_prefix('"')
            .and_then(|d| d.strip_suffix('"'))
        {
            Some(quoted) => quoted,
            None => dn,
        };
        if user.is_empty() {
            return Err(bad());
        }
        out.push((normalise_dn(dn).map_err(|_| bad())?, user.to_string()));
    }
    Ok(out)
}

impl MutualSslFiles {
    /// Writes the copies into `dir` (created private): the CA bundle and CRL as PEM, the map as
    /// normalised lines.
    pub fn store(&self, dir: &Path) -> Result<(), CertError> {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            atomic::write_file(&path, text.as_bytes(), PUBLIC_MODE)
                .map_err(|source| CertError::Write { path, source })
        };
        atomic::create_private_dir(dir).map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        write("ca.pem", certs::chain_pem(&self.cas))?;
        if let Some((crl, _)) = &self.crl {
            write("crl.pem", certs::pem_block("X509 CRL", crl))?;
        }
        if !self.map.is_empty() {
            let lines: String = self.map.iter().map(|(d, u)| format!("{d} {u}\n")).collect();
            write("user-map", lines)?;
        }
        Ok(())
    }

    /// Reads the copies back from `dir`.
    pub fn load(dir: &Path, now: OffsetDateTime) -> Result<MutualSslFiles, MutualSslError> {
        let read = |name: &str| -> Result<Option<Vec<u8>>, MutualSslError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(CertError::Read { path, source }.into()),
            }
        };
        let ca = read("ca.pem")?.unwrap_or_default();
        let crl = read("crl.pem")?;
        let map = read("user-map")?;
        fn given<'a>(name: &'a str, bytes: &'a Option<Vec<u8>>) -> Option<Given<'a>> {
            bytes.as_deref().map(|bytes| Given { name, bytes })
        }
        validate(
            Given {
                name: "ca.pem",
                bytes: &ca,
            },
            given("crl.pem", &crl),
            given("user-map", &map),
            now,
        )
    }
}

/// The internal CAs: the current one, which mints, and the one a rotation replaced, still presented
/// when the repository does not trust the current one yet.
pub struct InternalCas {
    /// The current CA.
    pub current: InternalCa,
    /// The previous CA, until the next rotation.
    pub previous: Option<InternalCa>,
}

impl InternalCas {
    /// The certificates the repository's `ssl_ca_file` should hold (current first), PEM.
    pub fn bundle_pem(&self) -> String {
        let mut pem = self.current.certificate_pem().to_string();
        if let Some(previous) = &self.previous {
            pem.push_str(previous.certificate_pem());
        }
        pem
    }
}

/// A CA as sealed: its key and certificate in one keystore entry.
fn sealed(ca: &InternalCa, key_pem: &str) -> Secret {
    Secret::new(ca.key_and_certificate(key_pem))
}

fn unsealed(secret: &Secret) -> Result<InternalCa, MutualSslError> {
    Ok(InternalCa::from_key_and_certificate(
        secret.expose(),
        INTERNAL_CA_KEY,
    )?)
}

/// The internal CAs, the current one made (and sealed) the first time it is needed when `create`.
pub fn internal_ca(config_dir: &Path, create: bool) -> Result<Option<InternalCas>, MutualSslError> {
    let mut keystore = Keystore::open(config_dir)?;
    let previous = keystore
        .get(INTERNAL_CA_PREVIOUS)?
        .map(|s| unsealed(&s))
        .transpose()?;
    if let Some(current) = keystore.get(INTERNAL_CA_KEY)? {
        let current = unsealed(&current)?;
        return Ok(Some(InternalCas { current, previous }));
    }
    if !create {
        return Ok(None);
    }
    let (current, key_pem) = InternalCa::generate()?;
    keystore.set(INTERNAL_CA_KEY, &sealed(&current, &key_pem))?;
    Ok(Some(InternalCas { current, previous }))
}

/// `regenerate-internal-tokens`: a new current CA, the current one kept as the previous (the one
/// before is dropped). Does nothing when there is no internal CA yet. Returns the new certificate's
/// details.
pub fn rotate_internal_ca(keystore: &mut Keystore) -> Result<Option<CertInfo>, MutualSslError> {
    let Some(current) = keystore.get(INTERNAL_CA_KEY)? else {
        return Ok(None);
    };
    // A re-run after a crash between the two writes finds previous == current and rotates again.
    keystore.set(INTERNAL_CA_PREVIOUS, &current)?;
    let (next, key_pem) = InternalCa::generate()?;
    keystore.set(INTERNAL_CA_KEY, &sealed(&next, &key_pem))?;
    Ok(Some(certs::describe(
        next.certificate_der(),
        1,
        Path::new("internal-ca.crt"),
    )?))
}

#[cfg(test)]
mod tests;
