//! Cancel keys minted by pgssl. A pooled repository session serves many clients in turn, so its own
//! BackendKeyData cannot be given to any of them: a client that kept it could cancel the queries of
//! whoever holds the session later. Each client gets a random key of its own instead, valid while it
//! holds the session; a CancelRequest carrying it is sent on with the session's real key, and any
//! other key — an earlier client's, a guess — cancels nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use ring::rand::{SecureRandom, SystemRandom};

use crate::proxy::protocol::first_packet::CANCEL_REQUEST_CODE;

/// A key a client was given, in BackendKeyData's layout after the type and length: the process ID
/// (4 bytes) then the secret (4 bytes in protocol 3.0, 32 in 3.2).
pub type ClientKey = Bytes;

/// The registry of minted keys, shared by every connection of a server.
#[derive(Debug, Default)]
pub struct CancelKeys {
    live: Mutex<HashMap<ClientKey, Bytes>>,
}

/// The random source failed (the key is not minted; the session is refused).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct NoRandom;

impl CancelKeys {
    /// Mints a key for a client whose session's own cancel packet is `target`: a secret of 32
    /// bytes when the session speaks protocol 3.2 or later, else of 4. The key stays valid until
    /// [`CancelKeys::revoke`].
    pub fn mint(&self, minor: u16, target: Bytes) -> Result<ClientKey, NoRandom> {
        let secret_len = if minor >= 2 { 32 } else { 4 };
        let rng = SystemRandom::new();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut key = vec![0u8; 4 + secret_len];
            rng.fill(&mut key).map_err(|_| NoRandom)?;
            // A positive process ID, as a real one is (some clients print it).
            key[0] &= 0x7f;
            let key = Bytes::from(key);
            if !live.contains_key(&key) {
                live.insert(key.clone(), target);
                return Ok(key);
            }
        }
    }

    /// Ends a key's validity (its client has left the session).
    pub fn revoke(&self, key: &ClientKey) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The CancelRequest to send to the repository for a client's CancelRequest `packet`, or `None`
    /// when its key is not one pgssl minted and still valid.
    pub fn route(&self, packet: &[u8]) -> Option<Bytes> {
        let key = packet.get(8..)?;
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// How many keys are valid now.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The CancelRequest packet for a backend whose BackendKeyData body (process ID, then secret) is
/// `key`.
pub fn cancel_packet(key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + key.len());
    out.put_u32(8 + key.len() as u32);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_slice(key);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_routes_to_its_session_until_revoked() {
        let keys = CancelKeys::default();
        let target = cancel_packet(&[0, 0, 0, 42, 1, 2, 3, 4]);
        let old = keys.mint(0, target.clone()).unwrap();
        assert_eq!(old.len(), 8);
        assert!(old[0] < 0x80);
        assert_eq!(keys.route(&cancel_packet(&old)), Some(target.clone()));
        keys.revoke(&old);
        // The next client of the same session gets another key; the old one cancels nothing.
        let new = keys.mint(0, target.clone()).unwrap();
        assert_ne!(old, new);
        assert_eq!(keys.route(&cancel_packet(&old)), None);
        assert_eq!(keys.route(&cancel_packet(&new)), Some(target));
        assert_eq!(keys.route(b"short"), None);
    }

    #[test]
    fn protocol_3_2_gets_a_32_byte_secret() {
        let keys = CancelKeys::default();
        let key = keys.mint(2, cancel_packet(&[0; 8])).unwrap();
        assert_eq!(key.len(), 4 + 32);
        assert_eq!(cancel_packet(&key).len(), 8 + 36);
    }
}
