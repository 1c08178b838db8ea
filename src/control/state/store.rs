//! Applied and pending state in the data directory.
//!
//! `applied.toml` is what a server serves; `pending.toml` holds only the changes staged since. `apply`
//! validates the merged result, writes it as the new `applied.toml` and then removes `pending.toml`;
//! a crash between the two leaves a pending file that equals the applied state, which reads as "nothing
//! pending" because pending changes are always normalised against what is applied.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::model::{
    Access, AppliedState, PendingChanges, RepositorySsl, pending_password_name,
};
use super::security;
use crate::atomic::{self, FileLock, PRIVATE_MODE};
use crate::keystore::{Keystore, KeystoreError};
use crate::tls::certs::CertPaths;

/// State that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A state file or directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A state file is not valid.
    #[error(
        "state file {path} is damaged: {message} (restore it from a backup, or remove it to start from defaults)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The data directory (its `config/` folder) does not exist.
    #[error(
        "no pgssl data directory at {0} (check --data-dir or PGSSL_DATA_DIR; 'pgssl serve' and the commands that stage a change create one)"
    )]
    Missing(PathBuf),
}

/// Folder (under `config/`) of external certificates.
const EXTERNAL_SSL_DIR: &str = "external-ssl";
/// Folder of the custom CA.
const CUSTOM_CA_DIR: &str = "custom-ca";
/// Folder of the external service's certificate.
const EXTSVC_DIR: &str = "extsvc";
/// Copies of `authentication mutual-ssl configure`'s files, one folder per record.
const MUTUAL_SSL_DIR: &str = "mutual-ssl";

/// A new random id for a staged record's files and secrets: 16 hex digits.
pub fn new_id() -> Result<String, StateError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut raw = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| StateError::Io {
            path: PathBuf::from("/dev/urandom"),
            source: io::Error::other("the system random number generator failed"),
        })?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Cleaning up unreferenced copies failed.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A state file or folder.
    #[error(transparent)]
    State(#[from] StateError),
    /// The keystore.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

/// The data directory's state files.
#[derive(Debug, Clone)]
pub struct StateStore {
    data_dir: PathBuf,
}

impl StateStore {
    /// Opens (creating if needed) the data directory at `data_dir`.
    pub fn open(data_dir: &Path) -> Result<StateStore, StateError> {
        let store = StateStore {
            data_dir: data_dir.to_path_buf(),
        };
        let config_dir = store.config_dir();
        atomic::create_private_dir(&config_dir).map_err(|source| StateError::Io {
            path: config_dir,
            source,
        })?;
        Ok(store)
    }

    /// Opens a data directory that must already exist; nothing is created.
    pub fn open_existing(data_dir: &Path) -> Result<StateStore, StateError> {
        let store = StateStore {
            data_dir: data_dir.to_path_buf(),
        };
        if !store.config_dir().is_dir() {
            let shown = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
            return Err(StateError::Missing(shown));
        }
        Ok(store)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Serialises state-changing commands on this data directory until the lock is dropped.
    pub fn lock(&self) -> Result<FileLock, StateError> {
        let path = self.config_dir().join(".lock");
        FileLock::acquire(&path).map_err(|source| StateError::Io { path, source })
    }

    /// Finishes a certificate replacement a crash interrupted ([`crate::tls::pair::finish_interrupted`]),
    /// unless a command holds the data directory now (its own write may be under way).
    pub fn settle_certificates(&self, paths: &CertPaths) {
        let path = self.config_dir().join(".lock");
        if let Ok(Some(_lock)) = FileLock::try_acquire(&path) {
            let _ = crate::tls::pair::finish_interrupted(paths);
        }
    }

    /// The applied state (defaults when nothing was ever applied).
    pub fn applied(&self) -> Result<AppliedState, StateError> {
        Ok(read_toml(&self.applied_path())?.unwrap_or_default())
    }

    /// The staged changes, normalised against the applied state.
    pub fn pending(&self) -> Result<PendingChanges, StateError> {
        let applied = self.applied()?;
        let pending: PendingChanges = read_toml(&self.pending_path())?.unwrap_or_default();
        Ok(pending.normalised_against(&applied))
    }

    /// Replaces the staged changes (removing the file when nothing is left staged).
    pub fn save_pending(&self, pending: &PendingChanges) -> Result<(), StateError> {
        let pending = pending.clone().normalised_against(&self.applied()?);
        if pending.is_empty() {
            self.discard_pending()?;
            return Ok(());
        }
        write_toml(&self.pending_path(), &pending)
    }

    /// Removes the staged changes; returns whether there were any.
    pub fn discard_pending(&self) -> Result<bool, StateError> {
        let had = !self.pending()?.is_empty();
        let path = self.pending_path();
        atomic::remove_file(&path).map_err(|source| StateError::Io { path, source })?;
        Ok(had)
    }

    /// Makes `next` the applied state and clears the staged changes.
    pub fn promote(&self, next: &AppliedState) -> Result<(), StateError> {
        write_toml(&self.applied_path(), next)?;
        let path = self.pending_path();
        atomic::remove_file(&path).map_err(|source| StateError::Io { path, source })?;
        Ok(())
    }

    /// `config/pgsql<major>/security/server.{crt,key}`.
    pub fn cert_paths(&self, postgres_major: u32) -> CertPaths {
        CertPaths::in_dir(
            &self
                .config_dir()
                .join(format!("pgsql{postgres_major}"))
                .join("security"),
        )
    }

    /// The certificate paths of a state, if it names a certificate folder.
    pub fn cert_paths_of(&self, state: &AppliedState) -> Option<CertPaths> {
        state
            .repository_ssl
            .postgres_major
            .map(|m| self.cert_paths(m))
    }

    /// The folder of an external certificate's copies.
    pub fn external_ssl_dir(&self, id: &str) -> PathBuf {
        self.config_dir().join(EXTERNAL_SSL_DIR).join(id)
    }

    /// The copies of an external certificate.
    pub fn external_ssl_paths(&self, id: &str) -> CertPaths {
        CertPaths::in_dir(&self.external_ssl_dir(id))
    }

    /// The certificate a state serves to clients: the administrator's own with external SSL, else the
    /// generated one (if a certificate folder is recorded).
    pub fn served_cert_paths(&self, state: &AppliedState) -> Option<CertPaths> {
        match &state.external_ssl {
            Some(external) => Some(self.external_ssl_paths(&external.id)),
            None => self.cert_paths_of(state),
        }
    }

    /// The certificate a state serves now: [`StateStore::served_cert_paths`] while its mode offers
    /// TLS, else none.
    pub fn serving_cert_paths(&self, state: &AppliedState) -> Option<CertPaths> {
        state
            .repository_ssl
            .mode
            .offers_tls()
            .then(|| self.served_cert_paths(state))
            .flatten()
    }

    /// The custom CA's copy.
    pub fn custom_ca_path(&self, id: &str) -> PathBuf {
        self.config_dir()
            .join(CUSTOM_CA_DIR)
            .join(format!("{id}.crt"))
    }

    /// The copies of a mutual-SSL record's files.
    pub fn mutual_ssl_dir(&self, id: &str) -> PathBuf {
        self.config_dir().join(MUTUAL_SSL_DIR).join(id)
    }

    /// The external service certificate's copy.
    pub fn extsvc_cert_path(&self, id: &str) -> PathBuf {
        self.config_dir().join(EXTSVC_DIR).join(format!("{id}.crt"))
    }

    /// Removes the copies and secrets of records that neither the applied state nor the staged
    /// changes refer to any more (left by `disable`, `delete`, `discard` or a replaced staging).
    pub fn prune(&self, keystore: &mut Keystore) -> Result<(), PruneError> {
        let applied = self.applied()?;
        let next = self.pending()?.merged_into(&applied);
        let ids = |f: &dyn Fn(&AppliedState) -> Option<String>| -> Vec<String> {
            [&applied, &next].into_iter().filter_map(f).collect()
        };
        let external = ids(&|s| s.external_ssl.as_ref().map(|e| e.id.clone()));
        let custom = ids(&|s| s.custom_ca.as_ref().map(|c| format!("{}.crt", c.id)));
        let extsvc = ids(&|s| s.extsvc.as_ref().map(|x| format!("{}.crt", x.id)));
        self.prune_dir(EXTERNAL_SSL_DIR, &external)?;
        self.prune_dir(CUSTOM_CA_DIR, &custom)?;
        self.prune_dir(EXTSVC_DIR, &extsvc)?;
        let mutual = ids(&|s| s.mutual_ssl.as_ref().map(|m| m.id.clone()));
        self.prune_dir(MUTUAL_SSL_DIR, &mutual)?;
        let keep_external: Vec<String> = external
            .iter()
            .map(|id| security::passphrase_name(id))
            .collect();
        let keep_extsvc: Vec<String> = [&applied, &next]
            .into_iter()
            .filter_map(|s| s.extsvc.as_ref())
            .map(|x| security::extsvc_password_name(&x.id))
            .collect();
        let keep_lookup: Vec<String> = [&applied, &next]
            .into_iter()
            .filter_map(|s| s.lookup_user.as_ref())
            .map(|l| security::lookup_password_name(&l.id))
            .collect();
        let stale: Vec<String> = keystore
            .names()
            .filter(|n| {
                (n.starts_with("external-ssl/") && !keep_external.iter().any(|k| k == n))
                    || (n.starts_with("extsvc/") && !keep_extsvc.iter().any(|k| k == n))
                    || (n.starts_with("auth/lookup/") && !keep_lookup.iter().any(|k| k == n))
            })
            .map(str::to_string)
            .collect();
        for name in stale {
            keystore.remove(&name)?;
        }
        Ok(())
    }

    fn prune_dir(&self, dir: &str, keep: &[String]) -> Result<(), PruneError> {
        let dir = self.config_dir().join(dir);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StateError::Io { path: dir, source }.into()),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|source| StateError::Io { path, source })?;
        }
        Ok(())
    }

    /// The control socket a running server listens on.
    pub fn control_socket_path(&self) -> PathBuf {
        StateStore::control_socket_path_in(&self.data_dir)
    }

    /// The control socket of the data directory at `data_dir`, which need not exist.
    pub fn control_socket_path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("run").join("control.sock")
    }

    /// `<data-dir>/config`: state, certificates and the keystore.
    pub fn config_dir(&self) -> PathBuf {
        self.data_dir.join("config")
    }

    fn applied_path(&self) -> PathBuf {
        self.config_dir().join("applied.toml")
    }

    fn pending_path(&self) -> PathBuf {
        self.config_dir().join("pending.toml")
    }
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
}

fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = toml::to_string(value).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let body = format!("# Written by pgssl; change it with the pgssl CLI.\n{text}");
    atomic::write_file(path, body.as_bytes(), PRIVATE_MODE).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl StateError {
    /// A data directory that does not exist is the caller's (a mistyped `--data-dir`); a state file
    /// that cannot be read or written is pgssl's.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            StateError::Missing(_) => ErrorKind::User,
            StateError::Io { .. } | StateError::Corrupt { .. } => ErrorKind::Server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::policy::Mode;

    #[test]
    fn stage_apply_discard_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.applied().unwrap().repository_ssl.mode, Mode::Off);
        assert!(store.pending().unwrap().is_empty());

        let stage_off = || {
            store
                .save_pending(&PendingChanges {
                    repository_ssl_mode: Some(Mode::Off),
                    ..PendingChanges::default()
                })
                .unwrap()
        };
        // Staging the applied value stages nothing.
        stage_off();
        assert!(store.pending().unwrap().is_empty());

        let staged = PendingChanges {
            repository_ssl_mode: Some(Mode::Required),
            postgres_major: Some(15),
            ..PendingChanges::default()
        };
        store.save_pending(&staged).unwrap();
        assert_eq!(store.pending().unwrap(), staged);
        let next = staged.merged_into(&store.applied().unwrap());
        store.promote(&next).unwrap();
        assert_eq!(store.applied().unwrap().repository_ssl.mode, Mode::Required);
        assert_eq!(
            store.applied().unwrap().repository_ssl.postgres_major,
            Some(15)
        );
        assert!(store.pending().unwrap().is_empty());

        stage_off();
        assert!(store.discard_pending().unwrap());
        assert!(!store.discard_pending().unwrap());
    }

    #[test]
    fn a_pending_file_left_by_a_crash_after_promotion_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let staged = PendingChanges {
            repository_ssl_mode: Some(Mode::Optional),
            postgres_major: Some(15),
            ..PendingChanges::default()
        };
        store.save_pending(&staged).unwrap();
        write_toml(
            &store.applied_path(),
            &staged.merged_into(&AppliedState::default()),
        )
        .unwrap();
        assert!(store.pending().unwrap().is_empty());
    }

    #[test]
    fn a_repeated_disable_stages_nothing_but_a_new_password_always_does() {
        let mut applied = AppliedState::default();
        applied
            .data_access
            .insert("tableau".into(), Access::Disabled);
        applied
            .data_access
            .insert("readonly".into(), Access::Enabled);
        let mut pending = PendingChanges::default();
        pending
            .data_access
            .insert("tableau".into(), Access::Disabled);
        pending
            .data_access
            .insert("readonly".into(), Access::Enabled);
        let normalised = pending.normalised_against(&applied);
        assert_eq!(normalised.data_access.len(), 1);
        assert_eq!(
            normalised.data_access.get("readonly"),
            Some(&Access::Enabled)
        );
    }

    #[test]
    fn a_damaged_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        fs::write(
            store.applied_path(),
            "[repository_ssl]\nmode = \"sometimes\"\n",
        )
        .unwrap();
        let err = store.applied().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("applied.toml"));
    }
}
