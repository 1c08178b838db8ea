//! A secret in memory: zeroed on drop, never printed by `Debug`, written out only where it must go.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::KeystoreError;

/// A secret in memory; zeroed on drop and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a plaintext secret.
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// A random secret of `len` URL-safe characters (about 6 bits each).
    pub fn generate(len: usize) -> Result<Secret, KeystoreError> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut raw = Zeroizing::new(vec![0u8; len]);
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| KeystoreError::Random)?;
        Ok(Secret::new(
            raw.iter()
                .map(|b| ALPHABET[usize::from(b & 63)] as char)
                .collect(),
        ))
    }

    /// The plaintext; keep its uses short-lived.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A secret travels as a plain JSON string: a request body to the admin API (over TLS) is the one
/// place it is written out.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}
