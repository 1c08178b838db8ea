//! The bootstrap file: what a new node needs to join — the repository's address and certificate
//! fingerprint, the cluster role's password and the master key — sealed with a passphrase
//! (PBKDF2-HMAC-SHA256, then ChaCha20-Poly1305), written 0600.

use std::num::NonZeroU32;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::ClusterError;
use crate::keystore::{self, Secret};

const FORMAT: &str = "pgssl-bootstrap-v1";
/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
const ITERATIONS: u32 = 600_000;
/// Shortest passphrase taken.
pub const MIN_PASSPHRASE: usize = 8;

/// The file as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    iterations: u32,
    salt: String,
    sealed: String,
}

/// What a bootstrap file carries, in the clear only in memory.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    /// The repository, `host:port`, or the hosts of one replicated cluster (`h1:5432,h2:5432`).
    pub repository: String,
    /// Its certificates' fingerprints, one per host (none: it offers no TLS); written as one
    /// string when there is one, as files made before there could be several hold it.
    #[serde(
        rename = "repository_fingerprint",
        default,
        with = "super::hosts::pins_format",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub repository_fingerprints: Vec<String>,
    /// The database of the `pgssl` schema.
    pub database: String,
    /// The cluster role's password.
    pub password: String,
    /// The master key's id.
    pub master_key_id: String,
    /// The master key, base64.
    pub master_key: String,
    /// The cluster's generation when the file was made.
    pub generation: u64,
    /// Whether `repository` is the listener of a first node in front of its managed repository
    /// (files made before this was recorded read as `false`).
    #[serde(default)]
    pub through_node: bool,
}

impl Drop for Contents {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
        self.master_key.zeroize();
    }
}

impl Contents {
    /// The password as a secret.
    pub fn password(&self) -> Secret {
        Secret::new(self.password.clone())
    }

    /// The master key's bytes.
    pub fn master_key(&self) -> Result<Zeroizing<Vec<u8>>, ClusterError> {
        BASE64
            .decode(self.master_key.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| {
                ClusterError::Bootstrap("the bootstrap file's master key is damaged".into())
            })
    }
}

fn derive(
    passphrase: &Secret,
    salt: &[u8],
    iterations: u32,
) -> Result<Zeroizing<[u8; 32]>, ClusterError> {
    let rounds = NonZeroU32::new(iterations).ok_or_else(|| {
        ClusterError::Bootstrap("the bootstrap file is damaged (0 iterations)".into())
    })?;
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        passphrase.expose().as_bytes(),
        key.as_mut(),
    );
    Ok(key)
}

/// Checks a passphrase given to `get-bootstrap-file`.
pub fn check_passphrase(passphrase: &Secret) -> Result<(), ClusterError> {
    if passphrase.expose().chars().count() < MIN_PASSPHRASE {
        return Err(ClusterError::ShortPassphrase {
            min: MIN_PASSPHRASE,
        });
    }
    Ok(())
}

/// The file's text for `contents`, sealed with `passphrase`.
pub fn seal(contents: &Contents, passphrase: &Secret) -> Result<String, ClusterError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| keystore::KeystoreError::Random)?;
    let key = derive(passphrase, &salt, ITERATIONS)?;
    let plain = Zeroizing::new(serde_json::to_vec(contents).unwrap_or_default());
    let sealed = keystore::seal_with(key.as_ref(), FORMAT, &plain)?;
    let file = File {
        format: FORMAT.into(),
        iterations: ITERATIONS,
        salt: BASE64.encode(salt),
        sealed: BASE64.encode(sealed),
    };
    let text = toml::to_string(&file).map_err(|e| ClusterError::Bootstrap(e.to_string()))?;
    Ok(format!(
        "# pgssl bootstrap file: joins a node to the cluster with 'pgssl topology join'. It holds the\n# cluster's master key, sealed with the passphrase; keep it private and delete it once used.\n{text}"
    ))
}

/// A bootstrap file's parts, checked but not yet opened.
#[derive(Debug)]
pub struct Parsed {
    iterations: u32,
    salt: Vec<u8>,
    sealed: Vec<u8>,
}

fn damaged(what: &str) -> ClusterError {
    ClusterError::Bootstrap(format!("this is not a usable pgssl bootstrap file: {what}"))
}

/// Parses a bootstrap file's `text` (what the fuzz target `cluster_files` feeds), before the costly
/// key derivation.
pub fn parse(text: &str) -> Result<Parsed, ClusterError> {
    let file: File = toml::from_str(text).map_err(|e| damaged(e.message()))?;
    if file.format != FORMAT {
        return Err(damaged(&format!(
            "format '{}' is not {FORMAT}",
            file.format
        )));
    }
    if !(1..=10_000_000).contains(&file.iterations) {
        return Err(damaged("iterations"));
    }
    Ok(Parsed {
        iterations: file.iterations,
        salt: BASE64
            .decode(file.salt.as_bytes())
            .map_err(|_| damaged("salt"))?,
        sealed: BASE64
            .decode(file.sealed.as_bytes())
            .map_err(|_| damaged("sealed"))?,
    })
}

/// Opens a bootstrap file's `text` with `passphrase`.
pub fn open(text: &str, passphrase: &Secret) -> Result<Contents, ClusterError> {
    let file = parse(text)?;
    let key = derive(passphrase, &file.salt, file.iterations)?;
    let plain = keystore::open_with(key.as_ref(), FORMAT, &file.sealed).map_err(|_| {
        ClusterError::Bootstrap(
            "the passphrase does not open this bootstrap file (or the file was altered)".into(),
        )
    })?;
    serde_json::from_slice(&plain).map_err(|e| damaged(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> Contents {
        Contents {
            repository: "127.0.0.1:5432,127.0.0.1:5433".into(),
            repository_fingerprints: vec!["AB:CD".into(), "EF:01".into()],
            database: "postgres".into(),
            password: "pw".into(),
            master_key_id: "abcd".into(),
            master_key: BASE64.encode([7u8; 32]),
            generation: 3,
            through_node: true,
        }
    }

    #[test]
    fn opens_with_its_passphrase_only() {
        let pass = Secret::new("correct horse".into());
        let text = seal(&contents(), &pass).unwrap();
        assert!(!text.contains("127.0.0.1"), "{text}");
        let back = open(&text, &pass).unwrap();
        assert_eq!(back.repository, "127.0.0.1:5432,127.0.0.1:5433");
        assert_eq!(back.repository_fingerprints, ["AB:CD", "EF:01"]);
        assert_eq!(back.generation, 3);
        assert_eq!(&back.master_key().unwrap()[..], &[7u8; 32]);
        let wrong = open(&text, &Secret::new("wrong horse".into()))
            .err()
            .unwrap();
        assert!(
            wrong.to_string().contains("passphrase does not open"),
            "{wrong}"
        );
        assert!(open("garbage", &pass).is_err());
        let bent = text.replace("format = \"pgssl-bootstrap-v1\"", "format = \"v0\"");
        assert!(open(&bent, &pass).err().unwrap().to_string().contains("v0"));
        assert!(check_passphrase(&Secret::new("short".into())).is_err());
    }
}
