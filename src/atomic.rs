//! Crash-safe file writes and the data directory lock.
//!
//! A reader (the server on reload, a CLI command) must never see half a file, and a crash must leave
//! either the old or the new content: write a temporary file beside the target, fsync it, rename it over
//! the target, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Owner read/write only: private keys and state.
pub const PRIVATE_MODE: u32 = 0o600;
/// World-readable: public certificates.
pub const PUBLIC_MODE: u32 = 0o644;

/// Atomically replaces `path` with `contents`, created with exactly `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    stage_file(path, contents, mode)?.commit()
}

/// A file's new contents written and synced beside it, not yet in its place: [`Staged::commit`]
/// renames it over the target; dropped uncommitted, it is removed. Writing several files' contents
/// first and renaming them after means that running out of room (the writes' failure, not the
/// renames') changes none of them.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

/// Writes `contents` (with exactly `mode`) to a temporary file beside `path`, synced.
pub fn stage_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<Staged> {
    let staged = Staged {
        tmp: temp_path(path),
        path: path.to_path_buf(),
        committed: false,
    };
    // create_new: never follow or reuse a file someone planted at the temporary name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staged.tmp)?;
    // The umask may have removed bits from a public file's mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(staged)
}

impl Staged {
    /// Renames the staged contents over the target and makes the rename durable.
    pub fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        sync_dir(&parent_dir(&self.path))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Removes `path` durably; a missing file is not an error. Returns whether it existed.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(&parent_dir(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its parents; directories pgssl creates are private (0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Renames `from` to `to` (same folder) and makes the rename durable.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    File::open(parent_dir(to))?.sync_all()
}

/// An exclusive advisory lock on a file, released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created 0600 if missing) is held.
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        let file = lock_file(path)?;
        // SAFETY: flock on a valid, owned descriptor has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock { _file: file })
    }

    /// The lock on `path` if nobody holds it now, else `None` (without waiting).
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = lock_file(path)?;
        // SAFETY: as in `acquire`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(FileLock { _file: file }))
    }
}

fn lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_MODE)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_the_exact_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        write_file(&key, b"one", PRIVATE_MODE).unwrap();
        write_file(&key, b"two", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"two");
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let crt = dir.path().join("server.crt");
        write_file(&crt, b"c", PUBLIC_MODE).unwrap();
        assert_eq!(
            fs::metadata(&crt).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        // Renaming a file over a directory fails: the directory must survive untouched.
        assert!(write_file(&target, b"x", PRIVATE_MODE).is_err());
        assert!(target.is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_staged_file_changes_nothing_until_committed_and_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_file(&a, b"old a", PRIVATE_MODE).unwrap();
        write_file(&b, b"old b", PRIVATE_MODE).unwrap();
        let staged_a = stage_file(&a, b"new a", PRIVATE_MODE).unwrap();
        let staged_b = stage_file(&b, b"new b", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 4);
        staged_a.commit().unwrap();
        drop(staged_b);
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"old b");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
    }
}
