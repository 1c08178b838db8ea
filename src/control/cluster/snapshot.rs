//! The shared state as one value: every file of `config/` but what belongs to this node alone.
//!
//! Left out: the master key (never in the repository), `cluster.toml` (this node's membership), the
//! admin server's own certificate (`admin/`, made per node for its address), the command lock and
//! temporary files (dot files). Installing a snapshot writes each file atomically, `applied.toml`
//! last, so a server reloading mid-way reads either the old applied state or the new one with its
//! files already in place; files the snapshot no longer has are removed after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::atomic;
use crate::control::state::StateError;
use crate::keystore::Keystore;

/// What the sealed blob is bound to.
pub const PURPOSE: &str = "pgssl-cluster-state-v1";
/// Written last: it is what a server serves, and names the other files.
const APPLIED: &str = "applied.toml";

/// The shared files: path under `config/` → contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    files: BTreeMap<String, SnapshotFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    mode: u32,
    base64: String,
}

/// Whether `rel` (a path under `config/`) is this node's own and stays out of snapshots.
fn node_local(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or(rel);
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.starts_with('.')
        || first == "admin"
        || rel == "cluster.toml"
        || (first.starts_with("master-") && first.ends_with(".key"))
}

impl Snapshot {
    /// Reads the shared files of `config_dir`.
    pub fn read(config_dir: &Path) -> Result<Snapshot, ClusterError> {
        let mut files = BTreeMap::new();
        for rel in shared_files(config_dir)? {
            let path = config_dir.join(&rel);
            let io = |source| StateError::Io {
                path: path.clone(),
                source,
            };
            let bytes = std::fs::read(&path).map_err(io)?;
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).map_err(io)?.permissions(),
            ) & 0o777;
            files.insert(
                rel,
                SnapshotFile {
                    mode,
                    base64: BASE64.encode(bytes),
                },
            );
        }
        Ok(Snapshot { files })
    }

    /// SHA-256 of the snapshot, hex: equal snapshots, equal digests.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The serialised form (sealed before it leaves the node).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The snapshot sealed under `keystore`'s master key, as the store keeps it.
    pub fn seal(&self, keystore: &Keystore) -> Result<Vec<u8>, ClusterError> {
        Ok(keystore.seal_blob(PURPOSE, &self.to_bytes())?)
    }

    /// Opens what [`Snapshot::seal`] made, committed as `version`, with `keystore`'s master key;
    /// [`ClusterError::Corrupt`] when it was sealed under another key, altered, or is no snapshot.
    pub fn open(
        keystore: &Keystore,
        version: u64,
        sealed: &[u8],
    ) -> Result<Snapshot, ClusterError> {
        let plain = keystore.open_blob(PURPOSE, sealed).map_err(|_| {
            ClusterError::Corrupt(format!(
                "version {version} does not open with this node's master key (was the node joined with a bootstrap file of this cluster?)"
            ))
        })?;
        Snapshot::from_bytes(&plain)
    }

    /// Parses and checks a serialised snapshot: every path must be a plain relative path of a shared
    /// file, so a snapshot cannot write outside `config/` or over this node's own files.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, ClusterError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(|e| {
            ClusterError::Corrupt(format!("the state snapshot does not parse: {e}"))
        })?;
        for (rel, file) in &snapshot.files {
            let plain = !rel.is_empty()
                && !rel.starts_with('/')
                && rel
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..");
            if !plain || node_local(rel) {
                return Err(ClusterError::Corrupt(format!(
                    "the state snapshot names the file '{rel}', which is not a shared state file"
                )));
            }
            BASE64.decode(file.base64.as_bytes()).map_err(|e| {
                ClusterError::Corrupt(format!("the snapshot's file '{rel}' does not decode: {e}"))
            })?;
        }
        Ok(snapshot)
    }

    /// Makes `config_dir`'s shared files exactly the snapshot's.
    pub fn install(&self, config_dir: &Path) -> Result<(), ClusterError> {
        let mut order: Vec<(&String, &SnapshotFile)> = self
            .files
            .iter()
            .filter(|(rel, _)| *rel != APPLIED)
            .collect();
        order.extend(self.files.get_key_value(APPLIED));
        // Every changed file is written beside its target before any is renamed into place: a
        // full or read-only disk fails the writes, and then no file has changed (the staged ones
        // are removed as `staged` drops).
        let mut staged = Vec::new();
        for (rel, file) in order {
            let path = config_dir.join(rel);
            let bytes = BASE64
                .decode(file.base64.as_bytes())
                .map_err(|e| ClusterError::Corrupt(e.to_string()))?;
            let io = |source| StateError::Io {
                path: path.clone(),
                source,
            };
            if let Some(parent) = path.parent() {
                atomic::create_private_dir(parent).map_err(io)?;
            }
            if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                // Never wider than 0644, and secrets' 0600 kept.
                staged.push((
                    atomic::stage_file(&path, &bytes, file.mode & 0o644).map_err(io)?,
                    path,
                ));
            }
        }
        // In order, `applied.toml` last: a crash between renames leaves files whose digest is not
        // the version `cluster.toml` names, which the next catch-up puts back.
        for (file, path) in staged {
            file.commit()
                .map_err(|source| StateError::Io { path, source })?;
        }
        for rel in shared_files(config_dir)? {
            if !self.files.contains_key(&rel) {
                let path = config_dir.join(&rel);
                atomic::remove_file(&path).map_err(|source| StateError::Io { path, source })?;
            }
        }
        Ok(())
    }
}

/// Relative paths of the shared files under `config_dir`, sorted.
fn shared_files(config_dir: &Path) -> Result<Vec<String>, ClusterError> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = config_dir.join(&rel_dir);
        let entries = std::fs::read_dir(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let rel = rel_dir.join(entry.file_name());
            let rel_text = rel.to_string_lossy().into_owned();
            if node_local(&rel_text) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(rel),
                Ok(t) if t.is_file() => out.push(rel_text),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn carries_the_shared_files_and_nothing_of_the_node() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "applied.toml", "mode = 1");
        write(a.path(), "pgsql15/security/server.crt", "CERT");
        write(a.path(), "keystore", "sealed");
        write(a.path(), "master-abcd.key", "KEY");
        write(a.path(), "cluster.toml", "me");
        write(a.path(), "admin/server.key", "admin");
        write(a.path(), ".lock", "");
        write(a.path(), ".applied.toml.tmp.1.2", "half");
        let snap = Snapshot::read(a.path()).unwrap();
        let names: Vec<&String> = snap.files.keys().collect();
        assert_eq!(
            names,
            ["applied.toml", "keystore", "pgsql15/security/server.crt"]
        );
        let again = Snapshot::from_bytes(&snap.to_bytes()).unwrap();
        assert_eq!(again.digest(), snap.digest());

        let b = tempfile::tempdir().unwrap();
        write(b.path(), "applied.toml", "old");
        write(b.path(), "external-ssl/x/server.crt", "stale");
        write(b.path(), "master-ffff.key", "MINE");
        again.install(b.path()).unwrap();
        assert_eq!(Snapshot::read(b.path()).unwrap().digest(), snap.digest());
        assert!(!b.path().join("external-ssl/x/server.crt").exists());
        assert_eq!(
            std::fs::read_to_string(b.path().join("master-ffff.key")).unwrap(),
            "MINE"
        );
    }

    #[test]
    fn an_install_that_cannot_write_every_file_changes_none() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "applied.toml", "new");
        write(a.path(), "keystore", "new sealed");
        write(a.path(), "pgsql15/security/server.crt", "NEW");
        let snap = Snapshot::read(a.path()).unwrap();
        let b = tempfile::tempdir().unwrap();
        write(b.path(), "applied.toml", "old");
        write(b.path(), "keystore", "old sealed");
        // The certificate's folder cannot be made (a file is in its place): the install fails after
        // the keystore's new contents were written, and must have renamed nothing.
        write(b.path(), "pgsql15", "in the way");
        let before = Snapshot::read(b.path()).unwrap().digest();
        assert!(snap.install(b.path()).is_err());
        assert_eq!(Snapshot::read(b.path()).unwrap().digest(), before);
        let stray: Vec<_> = std::fs::read_dir(b.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    /// A config folder with shared files and its keystore, and another node's folder given the
    /// same master key (as `topology join` does).
    fn two_nodes() -> (tempfile::TempDir, Snapshot, tempfile::TempDir) {
        let a = tempfile::tempdir().unwrap();
        let (id, key) = Keystore::open(a.path())
            .unwrap()
            .export_master_key()
            .unwrap();
        write(a.path(), "applied.toml", "mode = 1");
        write(a.path(), "pgsql15/security/server.crt", "CERT");
        let snap = Snapshot::read(a.path()).unwrap();
        let b = tempfile::tempdir().unwrap();
        crate::keystore::import_master_key(b.path(), &id, &key).unwrap();
        std::fs::copy(a.path().join("keystore"), b.path().join("keystore")).unwrap();
        (a, snap, b)
    }

    #[test]
    fn a_sealed_snapshot_opens_on_every_node_with_the_master_key() {
        let (a, snap, b) = two_nodes();
        let sealed = snap.seal(&Keystore::open(a.path()).unwrap()).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("CERT"));
        for dir in [a.path(), b.path()] {
            let opened = Snapshot::open(&Keystore::open(dir).unwrap(), 4, &sealed).unwrap();
            assert_eq!(opened, snap);
            assert_eq!(opened.digest(), snap.digest());
        }
    }

    #[test]
    fn a_snapshot_sealed_under_another_master_key_is_refused_as_corrupt() {
        let (a, snap, _) = two_nodes();
        let sealed = snap.seal(&Keystore::open(a.path()).unwrap()).unwrap();
        let stranger = tempfile::tempdir().unwrap();
        let e = Snapshot::open(&Keystore::open(stranger.path()).unwrap(), 4, &sealed).unwrap_err();
        assert!(matches!(e, ClusterError::Corrupt(_)), "{e:?}");
        assert!(e.to_string().contains("version 4 does not open"), "{e}");
        assert!(!e.is_local() && !e.is_user_error() && !e.is_unreachable());
    }

    #[test]
    fn an_altered_or_cut_sealed_snapshot_is_refused() {
        let (a, snap, _) = two_nodes();
        let ks = Keystore::open(a.path()).unwrap();
        let sealed = snap.seal(&ks).unwrap();
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        for bent in [&flipped[..], &sealed[..sealed.len() - 1], &sealed[..4], b""] {
            let e = Snapshot::open(&ks, 1, bent).unwrap_err();
            assert!(matches!(e, ClusterError::Corrupt(_)), "{e:?}");
        }
        // Sealed with the key, but not for the cluster's state.
        let other = ks.seal_blob("another purpose", &snap.to_bytes()).unwrap();
        assert!(Snapshot::open(&ks, 1, &other).is_err());
    }

    #[test]
    fn a_sealed_blob_that_is_no_snapshot_is_refused() {
        let (a, _, _) = two_nodes();
        let ks = Keystore::open(a.path()).unwrap();
        let not_json = ks.seal_blob(PURPOSE, b"{not json").unwrap();
        let e = Snapshot::open(&ks, 1, &not_json).unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
        let escaping = br#"{"files":{"../x":{"mode":384,"base64":""}}}"#;
        let e = Snapshot::open(&ks, 1, &ks.seal_blob(PURPOSE, escaping).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a shared state file"), "{e}");
        let undecodable = br#"{"files":{"x":{"mode":384,"base64":"***"}}}"#;
        let e = Snapshot::from_bytes(undecodable).unwrap_err();
        assert!(e.to_string().contains("does not decode"), "{e}");
    }

    #[test]
    fn any_change_to_a_shared_file_changes_the_digest() {
        let (a, snap, _) = two_nodes();
        write(a.path(), "pgsql15/security/server.crt", "CERT2");
        assert_ne!(Snapshot::read(a.path()).unwrap().digest(), snap.digest());
        write(a.path(), "pgsql15/security/server.crt", "CERT");
        assert_eq!(Snapshot::read(a.path()).unwrap().digest(), snap.digest());
        use std::os::unix::fs::PermissionsExt as _;
        let cert = a.path().join("pgsql15/security/server.crt");
        let mode = std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777;
        let other = if mode == 0o600 { 0o640 } else { 0o600 };
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(other)).unwrap();
        assert_ne!(Snapshot::read(a.path()).unwrap().digest(), snap.digest());
        // A node's own files are no part of it.
        write(a.path(), "cluster.toml", "me");
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(Snapshot::read(a.path()).unwrap().digest(), snap.digest());
    }

    #[test]
    fn refuses_paths_outside_the_shared_files() {
        for rel in [
            "../escape",
            "/etc/passwd",
            "a//b",
            "master-1.key",
            "cluster.toml",
            "admin/x",
            "",
        ] {
            let json = format!(r#"{{"files":{{"{rel}":{{"mode":384,"base64":""}}}}}}"#);
            assert!(Snapshot::from_bytes(json.as_bytes()).is_err(), "{rel}");
        }
        assert!(Snapshot::from_bytes(b"not json").is_err());
    }
}
