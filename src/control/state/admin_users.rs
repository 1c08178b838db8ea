//! Administrators of the admin server: `<data-dir>/config/admin-users.toml` (0600, written atomically),
//! each a name and an Argon2id password hash (PHC string). Plaintext passwords are never stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use aws_lc_rs::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::atomic::{self, PRIVATE_MODE};
use crate::keystore::Secret;

const FILE: &str = "admin-users.toml";

/// A problem with the administrators file or a name.
#[derive(Debug, thiserror::Error)]
pub enum AdminUserError {
    /// The file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error(
        "{path} is damaged: {message} (restore it, or remove it and add the administrators again)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The name is not allowed.
    #[error("'{0}' is not a valid administrator name (1 to 64 letters, digits, '.', '_' or '-')")]
    BadName(String),
    /// Adding a name that exists.
    #[error("administrator '{0}' already exists; delete it first to set a new password")]
    Exists(String),
    /// Deleting a name that does not exist.
    #[error("there is no administrator '{0}'")]
    Unknown(String),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    /// Argon2id PHC string.
    hash: String,
}

/// What an unknown name is checked against: the default Argon2id parameters (as `add` uses), a fixed
/// salt, and a hash no password produces. It only makes the check cost what a real one costs.
const NO_SUCH_USER: &str = "$argon2id$v=19$m=19456,t=2,p=1$cGdzc2wtbm8tc3VjaC11c2Vy$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Working memory for Argon2id checks (~19 MiB with the default parameters), kept and reused.
///
/// Allocating it per check lets the allocator keep one freed copy per thread that ever ran one:
/// 60 concurrent sign-ins grew the admin server by hundreds of MiB that it never gave back. A fixed
/// set of these, one per concurrent check, bounds that memory for good.
#[derive(Debug, Default)]
pub struct HashMemory(Vec<argon2::Block>);

/// The administrators of one data directory.
#[derive(Debug, Clone)]
pub struct AdminUsers {
    path: PathBuf,
}

impl AdminUsers {
    /// The administrators file in `config_dir`.
    pub fn open(config_dir: &Path) -> AdminUsers {
        AdminUsers {
            path: config_dir.join(FILE),
        }
    }

    /// Adds `name` with `password`, hashed with Argon2id.
    pub fn add(&self, name: &str, password: &Secret) -> Result<(), AdminUserError> {
        if !valid_name(name) {
            return Err(AdminUserError::BadName(name.to_string()));
        }
        let mut file = self.read()?;
        if file.users.contains_key(name) {
            return Err(AdminUserError::Exists(name.to_string()));
        }
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| {
                AdminUserError::Hash("the system random number generator failed".into())
            })?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| AdminUserError::Hash(e.to_string()))?;
        let hash = Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map_err(|e| AdminUserError::Hash(e.to_string()))?
            .to_string();
        file.users.insert(name.to_string(), UserEntry { hash });
        self.write(&file)
    }

    /// Removes `name`.
    pub fn delete(&self, name: &str) -> Result<(), AdminUserError> {
        let mut file = self.read()?;
        if file.users.remove(name).is_none() {
            return Err(AdminUserError::Unknown(name.to_string()));
        }
        self.write(&file)
    }

    /// The names, sorted.
    pub fn list(&self) -> Result<Vec<String>, AdminUserError> {
        Ok(self.read()?.users.into_keys().collect())
    }

    /// Whether `password` is `name`'s, computed in `memory`. Unknown names cost the same hash (with
    /// the default parameters), so neither the answer nor its timing reveals which names exist.
    pub fn verify_with(
        &self,
        name: &str,
        password: &str,
        memory: &mut HashMemory,
    ) -> Result<bool, AdminUserError> {
        let file = self.read()?;
        let entry = file.users.get(name);
        let phc = entry.map_or(NO_SUCH_USER, |e| e.hash.as_str());
        let corrupt = |e: &dyn std::fmt::Display| AdminUserError::Corrupt {
            path: self.path.clone(),
            message: format!("the hash of '{name}' is invalid: {e}"),
        };
        let hash = PasswordHash::new(phc).map_err(|e| corrupt(&e))?;
        let params = argon2::Params::try_from(&hash).map_err(|e| corrupt(&e))?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm).map_err(|e| corrupt(&e))?;
        let version = hash
            .version
            .map(argon2::Version::try_from)
            .transpose()
            .map_err(|e| corrupt(&e))?
            .unwrap_or_default();
        let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
            return Err(corrupt(&"no salt or hash"));
        };
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).map_err(|e| corrupt(&e))?;
        let blocks = params.block_count();
        if memory.0.len() < blocks {
            memory.0.resize(blocks, argon2::Block::new());
        }
        let mut out = [0u8; 64];
        let out = &mut out[..expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut *out,
                &mut memory.0[..blocks],
            )
            .map_err(|e| corrupt(&e))?;
        // `Output`'s comparison is constant-time.
        let computed = argon2::password_hash::Output::new(out).map_err(|e| corrupt(&e))?;
        Ok(entry.is_some() && computed == expected)
    }

    /// [`AdminUsers::verify_with`] with memory allocated for this one check.
    pub fn verify(&self, name: &str, password: &str) -> Result<bool, AdminUserError> {
        self.verify_with(name, password, &mut HashMemory::default())
    }

    fn read(&self) -> Result<UsersFile, AdminUserError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UsersFile::default()),
            Err(source) => {
                return Err(AdminUserError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| AdminUserError::Corrupt {
            path: self.path.clone(),
            message: e.message().to_string(),
        })
    }

    fn write(&self, file: &UsersFile) -> Result<(), AdminUserError> {
        let text = toml::to_string(file).map_err(|e| AdminUserError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let body = format!("# Written by pgssl admin-user; Argon2id hashes only.\n{text}");
        atomic::write_file(&self.path, body.as_bytes(), PRIVATE_MODE).map_err(|source| {
            AdminUserError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl AdminUserError {
    /// A name that is wrong, taken or unknown is the caller's; the file and the hashing are pgssl's.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            AdminUserError::BadName(_) | AdminUserError::Exists(_) | AdminUserError::Unknown(_) => {
                ErrorKind::User
            }
            AdminUserError::Io { .. }
            | AdminUserError::Corrupt { .. }
            | AdminUserError::Hash(_) => ErrorKind::Server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_delete() {
        let dir = tempfile::tempdir().unwrap();
        let users = AdminUsers::open(dir.path());
        users.add("admin", &Secret::new("pw-1".into())).unwrap();
        assert!(users.verify("admin", "pw-1").unwrap());
        assert!(!users.verify("admin", "pw-2").unwrap());
        assert!(!users.verify("nobody", "pw-1").unwrap());
        assert!(matches!(
            users.add("admin", &Secret::new("x".into())),
            Err(AdminUserError::Exists(_))
        ));
        assert!(matches!(
            users.add("bad name", &Secret::new("x".into())),
            Err(AdminUserError::BadName(_))
        ));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("pw-1"));
        assert_eq!(users.list().unwrap(), vec!["admin".to_string()]);
        users.delete("admin").unwrap();
        assert!(matches!(
            users.delete("admin"),
            Err(AdminUserError::Unknown(_))
        ));
    }
}
