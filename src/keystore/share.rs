//! What a cluster shares: blobs sealed under the master key (the state a node publishes in the
//! repository), and the master key itself, which leaves a node only inside a bootstrap file sealed
//! with a passphrase.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::{KEY_LEN, Keystore, KeystoreError, aead_key, key_path, load_master_key};
use crate::atomic::{self, PRIVATE_MODE};

impl Keystore {
    /// Seals `plain` under the master key, bound to `purpose` (so that a blob made for one use
    /// cannot be passed off as another): nonce ‖ ciphertext ‖ tag.
    pub fn seal_blob(&self, purpose: &str, plain: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        seal(&self.key, purpose, plain)
    }

    /// Opens a blob sealed by [`Keystore::seal_blob`] with the same master key and `purpose`.
    pub fn open_blob(
        &self,
        purpose: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        open(&self.key, purpose, sealed)
    }

    /// A 32-byte key for `purpose`, derived from the master key (HMAC-SHA256 over the purpose):
    /// the same on every start and on every node that holds the master key, and nothing about the
    /// master key can be learnt from it.
    pub fn derive(&self, purpose: &str) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
        let (_, master) = self.export_master_key()?;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &master);
        let tag = aws_lc_rs::hmac::sign(&key, purpose.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The master key's id and bytes, for a bootstrap file.
    pub fn export_master_key(&self) -> Result<(String, Zeroizing<Vec<u8>>), KeystoreError> {
        let path = key_path(&self.dir, &self.key_id);
        let bytes = Zeroizing::new(
            std::fs::read(&path).map_err(|source| KeystoreError::Io { path, source })?,
        );
        Ok((self.key_id.clone(), bytes))
    }
}

/// Writes a master key received in a bootstrap file into `config_dir` (0600, atomically) and checks
/// that it loads.
pub fn import_master_key(config_dir: &Path, id: &str, bytes: &[u8]) -> Result<(), KeystoreError> {
    let path = key_path(config_dir, id);
    if bytes.len() != KEY_LEN || id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeystoreError::MasterKey { path });
    }
    atomic::write_file(&path, bytes, PRIVATE_MODE)
        .map_err(|source| KeystoreError::Io { path, source })?;
    load_master_key(config_dir, id).map(|_| ())
}

/// Seals `plain` with a key derived from raw bytes (a passphrase's PBKDF2 output).
pub fn seal_with(key: &[u8], purpose: &str, plain: &[u8]) -> Result<Vec<u8>, KeystoreError> {
    seal(&aead_key(key)?, purpose, plain)
}

/// Opens what [`seal_with`] sealed.
pub fn open_with(
    key: &[u8],
    purpose: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    open(&aead_key(key)?, purpose, sealed)
}

pub(super) fn seal(
    key: &LessSafeKey,
    purpose: &str,
    plain: &[u8],
) -> Result<Vec<u8>, KeystoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeystoreError::Random)?;
    let mut in_out = Zeroizing::new(plain.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(purpose.as_bytes()),
        &mut *in_out,
    )
    .map_err(|_| KeystoreError::Random)?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&in_out);
    Ok(sealed)
}

pub(super) fn open(
    key: &LessSafeKey,
    purpose: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let tampered = || KeystoreError::Tampered(purpose.to_string());
    if sealed.len() < NONCE_LEN {
        return Err(tampered());
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| tampered())?;
    let mut in_out = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut in_out)
        .map_err(|_| tampered())?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_opens_only_with_its_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        let sealed = ks.seal_blob("state", b"hello").unwrap();
        assert_eq!(&ks.open_blob("state", &sealed).unwrap()[..], b"hello");
        assert!(ks.open_blob("other", &sealed).is_err());
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert!(ks.open_blob("state", &bent).is_err());
        assert!(ks.open_blob("state", b"short").is_err());
        // Another data directory given the same master key opens it; one with its own does not.
        let (id, key) = ks.export_master_key().unwrap();
        let other = tempfile::tempdir().unwrap();
        assert!(
            Keystore::open(other.path())
                .unwrap()
                .open_blob("state", &sealed)
                .is_err()
        );
        let joined = tempfile::tempdir().unwrap();
        import_master_key(joined.path(), &id, &key).unwrap();
        std::fs::write(
            joined.path().join("keystore"),
            format!("key_id = \"{id}\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            joined.path().join("keystore"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let ks2 = Keystore::open(joined.path()).unwrap();
        assert_eq!(&ks2.open_blob("state", &sealed).unwrap()[..], b"hello");
        assert!(import_master_key(joined.path(), &id, b"short").is_err());
    }
}
