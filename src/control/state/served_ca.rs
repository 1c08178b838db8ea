//! The repository CA: the issuer of the certificate pgssl serves (when it serves its own, not the
//! administrator's external one). Clients trust the CA — `get-certificate-file` hands it out with
//! the served certificate — so a renewed certificate (`regenerate-internal-tokens`, or the renewal
//! before expiry) verifies with the file they already hold.
//!
//! Each CA is one keystore entry, its key and certificate sealed together (one atomic write
//! replaces both). A CA rotation (`regenerate-internal-tokens --ca`) first only publishes the next
//! CA — `get-certificate-file` hands out both — and the next CA signs nothing until the overlap
//! (`tls.ca_overlap_days`) has passed since it was published: a later regenerate or renewal then
//! makes it the current one, and the old CA leaves the bundle.

use std::path::Path;

use time::OffsetDateTime;

use crate::keystore::{Keystore, KeystoreError, Secret};
use crate::tls::certs::{self, CertError, CertInfo};
use crate::tls::internal_ca::InternalCa;

/// Keystore entry of the CA that signs the served certificate.
pub const CURRENT: &str = "repository-ca/current";
/// Keystore entry of the CA published for a rotation, which signs nothing yet.
pub const NEXT: &str = "repository-ca/next";

/// Why the repository CA could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum ServedCaError {
    /// The keystore failed.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// A sealed CA does not read, or a certificate could not be made.
    #[error(transparent)]
    Cert(#[from] CertError),
}

impl ServedCaError {
    /// Both are pgssl's own state.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Server
    }
}

/// The repository CA and, during a rotation, the next one.
pub struct ServedCas {
    /// Signs the served certificate.
    pub current: InternalCa,
    /// Published, signs nothing yet.
    pub next: Option<InternalCa>,
}

impl ServedCas {
    /// When the next CA may start signing (its publication plus the overlap), if one is
    /// published.
    pub fn next_signs_from(&self, overlap_days: u32) -> Option<OffsetDateTime> {
        let next = self.next.as_ref()?;
        let info = describe(next).ok()?;
        // Made an hour before its notBefore says (certificates are backdated an hour).
        let published = info.not_before + time::Duration::hours(1);
        Some(published + time::Duration::days(i64::from(overlap_days)))
    }
}

/// A repository CA's details.
pub fn describe(ca: &InternalCa) -> Result<CertInfo, CertError> {
    certs::describe(ca.certificate_der(), 1, Path::new("repository-ca.crt"))
}

fn sealed(ca: &InternalCa, key_pem: &str) -> Secret {
    Secret::new(ca.key_and_certificate(key_pem))
}

fn unsealed(secret: &Secret, entry: &str) -> Result<InternalCa, ServedCaError> {
    Ok(InternalCa::from_key_and_certificate(
        secret.expose(),
        entry,
    )?)
}

/// A new CA, named with the date and a random tag: two CAs made in the same second (a rotation
/// right after the first CA) must not share a subject, which clients find issuers by.
fn make() -> Result<(InternalCa, String), CertError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut tag)
        .map_err(|_| CertError::Random)?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    InternalCa::generate_named(&format!("pgssl repository CA {tag}"), "pgssl repository")
}

/// The repository CAs; `None` before the first is made.
pub fn read(keystore: &Keystore) -> Result<Option<ServedCas>, ServedCaError> {
    let Some(current) = keystore.get(CURRENT)? else {
        return Ok(None);
    };
    let current = unsealed(&current, CURRENT)?;
    let next = keystore
        .get(NEXT)?
        .map(|s| unsealed(&s, NEXT))
        .transpose()?;
    Ok(Some(ServedCas { current, next }))
}

/// The repository CAs of the data directory whose config folder is `config_dir`, read without
/// making a keystore where there is none.
pub fn read_in(config_dir: &Path) -> Result<Option<ServedCas>, ServedCaError> {
    match Keystore::open_existing(config_dir)? {
        Some(keystore) => read(&keystore),
        None => Ok(None),
    }
}

/// The repository CAs, the current one made (and sealed) the first time it is needed.
pub fn read_or_make(keystore: &mut Keystore) -> Result<ServedCas, ServedCaError> {
    if let Some(cas) = read(keystore)? {
        return Ok(cas);
    }
    let (current, key_pem) = make()?;
    keystore.set(CURRENT, &sealed(&current, &key_pem))?;
    Ok(ServedCas {
        current,
        next: None,
    })
}

/// Issues the served certificate at `paths` from the current CA (made the first time), for the
/// default names and `extra_names`, valid for `validity_days`.
pub fn issue(
    keystore: &mut Keystore,
    paths: &certs::CertPaths,
    extra_names: &[String],
    validity_days: u32,
) -> Result<CertInfo, ServedCaError> {
    let cas = read_or_make(keystore)?;
    let sans = certs::default_subject_alt_names(extra_names);
    Ok(cas.current.issue_served(paths, &sans, validity_days)?)
}

/// Publishes a next CA (nothing when one is published already); whether it made one.
pub fn publish_next(keystore: &mut Keystore) -> Result<bool, ServedCaError> {
    read_or_make(keystore)?;
    if keystore.get(NEXT)?.is_some() {
        return Ok(false);
    }
    let (next, key_pem) = make()?;
    keystore.set(NEXT, &sealed(&next, &key_pem))?;
    Ok(true)
}

/// Makes the next CA the current one once the overlap has passed; whether it did. The old CA is
/// dropped: clients that fetched the file during the overlap hold the new one.
pub fn promote_due(keystore: &mut Keystore, overlap_days: u32) -> Result<bool, ServedCaError> {
    let Some(cas) = read(keystore)? else {
        return Ok(false);
    };
    let due = cas
        .next_signs_from(overlap_days)
        .is_some_and(|from| from <= OffsetDateTime::now_utc());
    if !due {
        return Ok(false);
    }
    let Some(next) = keystore.get(NEXT)? else {
        return Ok(false);
    };
    // The current entry first: a crash after it leaves next == current, which the next run reads
    // as a rotation still to finish and finishes.
    keystore.set(CURRENT, &next)?;
    keystore.remove(NEXT)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_publishes_the_next_ca_before_it_signs_and_promotes_it_after_the_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let mut keystore = Keystore::open(dir.path()).unwrap();
        assert!(read(&keystore).unwrap().is_none());
        let first = read_or_make(&mut keystore).unwrap();
        let first_pem = first.current.certificate_pem().to_string();
        assert!(first.next.is_none());
        // Made once: read again, the same CA.
        let again = read_or_make(&mut keystore).unwrap();
        assert_eq!(again.current.certificate_pem(), first_pem);

        assert!(publish_next(&mut keystore).unwrap());
        assert!(
            !publish_next(&mut keystore).unwrap(),
            "one rotation at a time"
        );
        let rotating = read(&keystore).unwrap().unwrap();
        assert_eq!(rotating.current.certificate_pem(), first_pem);
        let next_pem = rotating
            .next
            .as_ref()
            .unwrap()
            .certificate_pem()
            .to_string();
        assert_ne!(next_pem, first_pem);
        // Within the overlap the next CA signs nothing.
        assert!(!promote_due(&mut keystore, 7).unwrap());
        let from = rotating.next_signs_from(7).unwrap();
        assert!(from > OffsetDateTime::now_utc() + time::Duration::days(6));
        // With no overlap it takes over, and the old CA leaves the bundle.
        assert!(promote_due(&mut keystore, 0).unwrap());
        let promoted = read(&keystore).unwrap().unwrap();
        assert_eq!(promoted.current.certificate_pem(), next_pem);
        assert!(promoted.next.is_none());
        assert!(!promote_due(&mut keystore, 0).unwrap());
    }
}
