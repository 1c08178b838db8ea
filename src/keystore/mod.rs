//! Secrets at rest: every secret pgssl keeps is sealed with ChaCha20-Poly1305 under a master key.
//!
//! ```text
//! <data-dir>/config/keystore             0600, TOML: key id + name -> base64(nonce ‖ ciphertext ‖ tag)
//! <data-dir>/config/master-<id>.key      0600, 32 random bytes
//! ```
//!
//! Each entry's name is its associated data, so a ciphertext cannot be moved to another name. Rotating
//! the master key writes the new key file, then the keystore re-sealed under it (the commit point), then
//! removes the old key file: a crash at any step leaves a keystore whose key file exists. Plaintext
//! secrets live only in memory, in [`Secret`]s that are zeroed on drop.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{CHACHA20_POLY1305, LessSafeKey, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::atomic::{self, PRIVATE_MODE};

const KEYSTORE_FILE: &str = "keystore";
const KEY_LEN: usize = 32;
const AAD_PREFIX: &str = "pgssl-keystore-v1:";

mod secret;
mod share;
pub use secret::Secret;
pub use share::{import_master_key, open_with, seal_with};

/// Keystore failures.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is readable by other users.
    #[error(
        "{path} has mode {mode:04o}, which lets other users read secrets; run 'chmod 600 {path}'"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The keystore names a master key file that does not exist or is malformed.
    #[error(
        "master key {path} is missing or damaged; the keystore cannot be opened without it (restore it from a backup)"
    )]
    MasterKey {
        /// The key file.
        path: PathBuf,
    },
    /// The keystore file is malformed.
    #[error("keystore {path} is damaged: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An entry does not decrypt under the master key.
    #[error(
        "keystore entry '{0}' does not decrypt with the current master key (the keystore or key file was altered)"
    )]
    Tampered(String),
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    key_id: String,
    #[serde(default)]
    entries: BTreeMap<String, String>,
}

/// The sealed secrets of a data directory.
pub struct Keystore {
    dir: PathBuf,
    key_id: String,
    key: LessSafeKey,
    entries: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .field("key_id", &self.key_id)
            .field("entries", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keystore {
    /// Opens the keystore in `config_dir` if it has one (a read that must not make one).
    pub fn open_existing(config_dir: &Path) -> Result<Option<Keystore>, KeystoreError> {
        if !config_dir.join(KEYSTORE_FILE).exists() {
            return Ok(None);
        }
        Keystore::open(config_dir).map(Some)
    }

    /// Opens the keystore in `config_dir`, creating it (and a master key) on first use.
    pub fn open(config_dir: &Path) -> Result<Keystore, KeystoreError> {
        let path = config_dir.join(KEYSTORE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(KeystoreError::Io { path, source }),
        };
        let Some(text) = text else {
            let (key_id, key) = new_master_key(config_dir)?;
            let store = Keystore {
                dir: config_dir.to_path_buf(),
                key_id,
                key,
                entries: BTreeMap::new(),
            };
            store.save()?;
            return Ok(store);
        };
        check_private(&path)?;
        let file: KeystoreFile = toml::from_str(&text).map_err(|e| KeystoreError::Corrupt {
            path: path.clone(),
            message: e.message().to_string(),
        })?;
        let key = load_master_key(config_dir, &file.key_id)?;
        let mut entries = BTreeMap::new();
        for (name, sealed) in file.entries {
            let bytes = BASE64
                .decode(sealed.as_bytes())
                .map_err(|e| KeystoreError::Corrupt {
                    path: path.clone(),
                    message: format!("entry '{name}': {e}"),
                })?;
            entries.insert(name, bytes);
        }
        let store = Keystore {
            dir: config_dir.to_path_buf(),
            key_id: file.key_id,
            key,
            entries,
        };
        store.remove_stale_keys();
        Ok(store)
    }

    /// The id of the current master key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret stored under `name`.
    pub fn get(&self, name: &str) -> Result<Option<Secret>, KeystoreError> {
        let Some(sealed) = self.entries.get(name) else {
            return Ok(None);
        };
        open_entry(&self.key, name, sealed).map(Some)
    }

    /// How many secrets are stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The names of the stored secrets.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether no secret is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The secret under `name`, or a new random one of `len` characters sealed there first (so it is
    /// on disk before anything else learns it).
    pub fn get_or_generate(&mut self, name: &str, len: usize) -> Result<Secret, KeystoreError> {
        if let Some(secret) = self.get(name)? {
            return Ok(secret);
        }
        let secret = Secret::generate(len)?;
        self.set(name, &secret)?;
        Ok(secret)
    }

    /// Seals `secret` under `name` and saves the keystore.
    pub fn set(&mut self, name: &str, secret: &Secret) -> Result<(), KeystoreError> {
        let sealed = seal_entry(&self.key, name, secret)?;
        self.entries.insert(name.to_string(), sealed);
        self.save()
    }

    /// Removes `name` and saves the keystore; returns whether it existed.
    pub fn remove(&mut self, name: &str) -> Result<bool, KeystoreError> {
        let had = self.entries.remove(name).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    /// Re-seals every entry under a new master key and removes the old key.
    pub fn rotate_master_key(&mut self) -> Result<(), KeystoreError> {
        let (new_id, new_key) = new_master_key(&self.dir)?;
        let mut resealed = BTreeMap::new();
        for (name, sealed) in &self.entries {
            let secret = open_entry(&self.key, name, sealed)?;
            resealed.insert(name.clone(), seal_entry(&new_key, name, &secret)?);
        }
        let old_id = std::mem::replace(&mut self.key_id, new_id);
        self.key = new_key;
        self.entries = resealed;
        self.save()?;
        let old = key_path(&self.dir, &old_id);
        atomic::remove_file(&old).map_err(|source| KeystoreError::Io { path: old, source })?;
        Ok(())
    }

    fn save(&self) -> Result<(), KeystoreError> {
        let file = KeystoreFile {
            key_id: self.key_id.clone(),
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), BASE64.encode(v)))
                .collect(),
        };
        let path = self.dir.join(KEYSTORE_FILE);
        let text = toml::to_string(&file).map_err(|e| KeystoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let body = format!(
            "# pgssl keystore: secrets sealed with ChaCha20-Poly1305 under master-{}.key.\n{text}",
            self.key_id
        );
        atomic::write_file(&path, body.as_bytes(), PRIVATE_MODE)
            .map_err(|source| KeystoreError::Io { path, source })
    }

    /// Key files left by a rotation interrupted after its commit point.
    fn remove_stale_keys(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let current = format!("master-{}.key", self.key_id);
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("master-") && name.ends_with(".key") && name != current {
                let _ = atomic::remove_file(&entry.path());
            }
        }
    }
}

fn key_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("master-{id}.key"))
}

fn new_master_key(dir: &Path) -> Result<(String, LessSafeKey), KeystoreError> {
    let rng = SystemRandom::new();
    let mut id = [0u8; 6];
    rng.fill(&mut id).map_err(|_| KeystoreError::Random)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(key.as_mut()).map_err(|_| KeystoreError::Random)?;
    let path = key_path(dir, &id);
    atomic::write_file(&path, key.as_ref(), PRIVATE_MODE)
        .map_err(|source| KeystoreError::Io { path, source })?;
    Ok((id, aead_key(key.as_ref())?))
}

fn load_master_key(dir: &Path, id: &str) -> Result<LessSafeKey, KeystoreError> {
    let path = key_path(dir, id);
    let valid_id = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit());
    if !valid_id {
        return Err(KeystoreError::MasterKey { path });
    }
    check_private(&path).map_err(|e| match e {
        KeystoreError::Io { .. } => KeystoreError::MasterKey { path: path.clone() },
        other => other,
    })?;
    let bytes = Zeroizing::new(
        fs::read(&path).map_err(|_| KeystoreError::MasterKey { path: path.clone() })?,
    );
    if bytes.len() != KEY_LEN {
        return Err(KeystoreError::MasterKey { path });
    }
    aead_key(&bytes)
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, KeystoreError> {
    UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| KeystoreError::Random)
}

fn check_private(path: &Path) -> Result<(), KeystoreError> {
    let meta = fs::metadata(path).map_err(|source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn seal_entry(key: &LessSafeKey, name: &str, secret: &Secret) -> Result<Vec<u8>, KeystoreError> {
    share::seal(
        key,
        &format!("{AAD_PREFIX}{name}"),
        secret.expose().as_bytes(),
    )
}

fn open_entry(key: &LessSafeKey, name: &str, sealed: &[u8]) -> Result<Secret, KeystoreError> {
    let tampered = || KeystoreError::Tampered(name.to_string());
    let plain = share::open(key, &format!("{AAD_PREFIX}{name}"), sealed).map_err(|_| tampered())?;
    let text = std::str::from_utf8(&plain).map_err(|_| tampered())?;
    Ok(Secret::new(text.to_string()))
}

impl KeystoreError {
    /// The keystore is pgssl's own: a file it cannot read, a damaged or altered one, is pgssl's
    /// failure, never the caller's request.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Server
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stores_secrets_sealed_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = Keystore::open(dir.path()).unwrap();
        let secret = Secret::new("correct horse battery staple".into());
        ks.set("role/pgssl_internal", &secret).unwrap();
        let again = Keystore::open(dir.path()).unwrap();
        assert_eq!(again.get("role/pgssl_internal").unwrap(), Some(secret));
        assert_eq!(again.get("missing").unwrap(), None);
        let bytes = fs::read(dir.path().join("keystore")).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"horse"));
        assert_eq!(
            fs::metadata(dir.path().join("keystore"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(format!("{:?}", again.get("role/pgssl_internal").unwrap()).contains("***"));
    }

    #[test]
    fn rotation_reseals_everything_and_removes_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = Keystore::open(dir.path()).unwrap();
        ks.set("a", &Secret::new("one".into())).unwrap();
        let old_id = ks.key_id().to_string();
        let old_file = fs::read(dir.path().join("keystore")).unwrap();
        ks.rotate_master_key().unwrap();
        assert_ne!(ks.key_id(), old_id);
        assert!(!key_path(dir.path(), &old_id).exists());
        assert_ne!(fs::read(dir.path().join("keystore")).unwrap(), old_file);
        let again = Keystore::open(dir.path()).unwrap();
        assert_eq!(again.get("a").unwrap().unwrap().expose(), "one");
    }

    #[test]
    fn a_stray_key_from_an_interrupted_rotation_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = Keystore::open(dir.path()).unwrap();
        ks.set("a", &Secret::new("one".into())).unwrap();
        // Crash after writing the new key file but before the keystore: the old pair still opens.
        let (stray, _) = new_master_key(dir.path()).unwrap();
        let again = Keystore::open(dir.path()).unwrap();
        assert_eq!(again.get("a").unwrap().unwrap().expose(), "one");
        assert!(!key_path(dir.path(), &stray).exists());
    }

    #[test]
    fn refuses_open_permissions_swapped_entries_and_a_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = Keystore::open(dir.path()).unwrap();
        ks.set("a", &Secret::new("one".into())).unwrap();
        ks.set("b", &Secret::new("two".into())).unwrap();
        let path = dir.path().join("keystore");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keystore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        // Moving a ciphertext to another name must not decrypt.
        let text = fs::read_to_string(&path).unwrap();
        let file: KeystoreFile = toml::from_str(&text).unwrap();
        let mut swapped = KeystoreFile {
            key_id: file.key_id.clone(),
            entries: file.entries.clone(),
        };
        swapped
            .entries
            .insert("a".into(), file.entries["b"].clone());
        fs::write(&path, toml::to_string(&swapped).unwrap()).unwrap();
        let ks = Keystore::open(dir.path()).unwrap();
        assert!(matches!(ks.get("a"), Err(KeystoreError::Tampered(_))));

        fs::remove_file(key_path(dir.path(), &file.key_id)).unwrap();
        assert!(matches!(
            Keystore::open(dir.path()),
            Err(KeystoreError::MasterKey { .. })
        ));
    }

    #[test]
    fn generated_secrets_are_random_and_long() {
        let a = Secret::generate(32).unwrap();
        let b = Secret::generate(32).unwrap();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a, b);
    }
}
