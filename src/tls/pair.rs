//! A server certificate and its key replaced as a pair, so that a crash leaves them matching.

use std::path::{Path, PathBuf};

use crate::atomic::{self, PRIVATE_MODE, PUBLIC_MODE};
use crate::tls::certs::{CertError, CertPaths};

/// Where a new key or certificate waits until the pair is complete: beside its file, a dot file.
fn next_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.next"))
}

/// Replaces the key and certificate as a pair, so that a crash at any point leaves a matching pair
/// behind once [`finish_interrupted`] has run: both are written beside their files first, then the
/// key is renamed into place (the commit point), then the certificate.
pub(crate) fn write(paths: &CertPaths, key_pem: &[u8], cert_pem: &[u8]) -> Result<(), CertError> {
    let write = |path: &Path, bytes: &[u8], mode| {
        atomic::write_file(path, bytes, mode).map_err(|source| CertError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    finish_interrupted(paths)?;
    let (key_next, cert_next) = (next_path(&paths.key), next_path(&paths.cert));
    write(&key_next, key_pem, PRIVATE_MODE)?;
    write(&cert_next, cert_pem, PUBLIC_MODE)?;
    atomic::rename(&key_next, &paths.key).map_err(|source| CertError::Write {
        path: paths.key.clone(),
        source,
    })?;
    atomic::rename(&cert_next, &paths.cert).map_err(|source| CertError::Write {
        path: paths.cert.clone(),
        source,
    })
}

/// Finishes a pair replacement a crash interrupted: after the commit point (the key renamed, the new
/// certificate still beside it) the certificate is moved into place; before it, the waiting files are
/// removed and the old pair stays. Run by writers before they write, and by loaders while no command
/// holds the data directory.
pub fn finish_interrupted(paths: &CertPaths) -> Result<(), CertError> {
    let (key_next, cert_next) = (next_path(&paths.key), next_path(&paths.cert));
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Write { path, source }
    };
    if cert_next.is_file() && !key_next.exists() {
        return atomic::rename(&cert_next, &paths.cert).map_err(failed(&paths.cert));
    }
    for stale in [key_next, cert_next] {
        atomic::remove_file(&stale).map_err(failed(&stale))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::generate;
    use std::fs;

    #[test]
    fn an_interrupted_pair_replacement_leaves_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_dir(dir.path());
        generate(&paths, &["localhost".into()], 10).unwrap();
        let (old_key, old_cert) = (
            fs::read(&paths.key).unwrap(),
            fs::read(&paths.cert).unwrap(),
        );
        // Crashed before the commit point: the old pair stays, the waiting files go.
        fs::write(next_path(&paths.key), b"new key").unwrap();
        fs::write(next_path(&paths.cert), b"new cert").unwrap();
        finish_interrupted(&paths).unwrap();
        assert_eq!(fs::read(&paths.key).unwrap(), old_key);
        assert_eq!(fs::read(&paths.cert).unwrap(), old_cert);
        assert!(!next_path(&paths.key).exists() && !next_path(&paths.cert).exists());
        // Crashed after it (the key in place): the certificate follows.
        fs::write(next_path(&paths.cert), b"new cert").unwrap();
        finish_interrupted(&paths).unwrap();
        assert_eq!(fs::read(&paths.cert).unwrap(), b"new cert");
        assert!(!next_path(&paths.cert).exists());
    }
}
