//! Cancel keys minted by pgssl. A pooled repository session serves many clients in turn, so its own
//! BackendKeyData cannot be given to any of them: a client that kept it could cancel the queries of
//! whoever holds the session later. Each client gets a random key of its own instead, valid while it
//! holds the session; a CancelRequest carrying it is sent on with the session's real key, and any
//! other key — an earlier client's, a guess — cancels nothing.
//!
//! In a cluster a client's cancel may reach another node than its session's (a TCP balancer picks
//! one per connection), so a node's keys carry its node id in their first byte, and a node given a
//! key of another's forwards the request to that node ([`Peer`]) over TLS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, RwLock};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bytes::{BufMut, Bytes, BytesMut};

use crate::proxy::protocol::first_packet::CANCEL_REQUEST_CODE;

/// A key a client was given, in BackendKeyData's layout after the type and length: the process ID
/// (4 bytes) then the secret (4 bytes in protocol 3.0, 32 in 3.2).
pub type ClientKey = Bytes;

/// Each live key's cancel packet and host, keyed with foldhash: the key is pgssl's random choice, and
/// a pooled client's is retargeted twice per transaction.
type Live = HashMap<ClientKey, Option<(Bytes, usize)>, foldhash::fast::RandomState>;

/// The registry of minted keys, shared by every connection of a server.
#[derive(Debug, Default)]
pub struct CancelKeys {
    /// Each key's session's cancel packet and host; `None` while a transaction-pooled client holds
    /// no backend (its cancel then cancels nothing).
    live: Mutex<Live>,
    /// This node's id in its cluster (1–127), 0 when it is not in one.
    node: AtomicU8,
    /// The other nodes, by id.
    peers: RwLock<HashMap<u8, Peer>>,
}

/// Another cluster node, as a forwarded cancel reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its listener, `host:port`.
    pub address: String,
    /// The SHA-256 fingerprint of the certificate it reported serving ("" before it served one): the
    /// forwarded request goes inside TLS, to that certificate or the one this node serves.
    pub fingerprint: String,
}

/// Whose key a CancelRequest carries ([`CancelKeys::owner`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node minted it: it cancels one of this node's sessions or nothing.
    ThisNode,
    /// Another node of the cluster minted it: only that node may act on it.
    Peer(Peer),
    /// No cluster node's: this node's own key when it is in no cluster, or the repository's key
    /// of a passthrough session.
    Nobody,
}

/// The random source failed (the key is not minted; the session is refused).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct NoRandom;

impl CancelKeys {
    /// Mints a key for a client whose session's own cancel packet is `target`, on repository host
    /// `host`: a secret of 32 bytes when the session speaks protocol 3.2 or later, else of 4. The key
    /// stays valid until [`CancelKeys::revoke`].
    pub fn mint(&self, minor: u16, target: Bytes, host: usize) -> Result<ClientKey, NoRandom> {
        self.mint_for(minor, Some((target, host)))
    }

    /// Mints a key for a client that holds no backend yet ([`CancelKeys::retarget`] points it at
    /// one).
    pub fn mint_for(
        &self,
        minor: u16,
        target: Option<(Bytes, usize)>,
    ) -> Result<ClientKey, NoRandom> {
        let secret_len = if minor >= 2 { 32 } else { 4 };
        let rng = SystemRandom::new();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut key = vec![0u8; 4 + secret_len];
            rng.fill(&mut key).map_err(|_| NoRandom)?;
            // A positive process ID, as a real one is (some clients print it); in a cluster its first
            // byte is the node's id.
            match self.node.load(Ordering::Relaxed) {
                0 => key[0] &= 0x7f,
                node => key[0] = node,
            }
            let key = Bytes::from(key);
            if !live.contains_key(&key) {
                live.insert(key.clone(), target);
                return Ok(key);
            }
        }
    }

    /// Points a valid key at the backend its client holds now (`None`: none).
    pub fn retarget(&self, key: &ClientKey, target: Option<(Bytes, usize)>) {
        if let Some(t) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
        {
            *t = target;
        }
    }

    /// Ends a key's validity (its client has left the session).
    pub fn revoke(&self, key: &ClientKey) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The CancelRequest to send to the repository for a client's CancelRequest `packet`, and the
    /// host to send it to, or `None` when its key is not one pgssl minted and still valid.
    pub fn route(&self, packet: &[u8]) -> Option<(Bytes, usize)> {
        let key = packet.get(8..)?;
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .flatten()
    }

    /// Makes this node `id` of a cluster whose other nodes are `peers`; later keys carry the id.
    pub fn set_cluster(&self, id: u8, peers: HashMap<u8, Peer>) {
        self.node.store(id & 0x7f, Ordering::Relaxed);
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// Whose key a CancelRequest `packet` carries. A key whose first byte is a cluster node's id
    /// is that node's alone: only it minted the key, so only it can cancel with it, and a node
    /// never hands such a key to anyone else — not to the repository, not back to the node that
    /// forwarded it. That is what keeps one spoofed packet from travelling between two nodes
    /// forever (a passthrough node's repository may be another node).
    pub fn owner(&self, packet: &[u8]) -> Owner {
        let Some(&first) = packet.get(8) else {
            return Owner::Nobody;
        };
        let node = self.node.load(Ordering::Relaxed);
        if node == 0 {
            return Owner::Nobody;
        }
        if first == node {
            return Owner::ThisNode;
        }
        match self
            .peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&first)
        {
            Some(peer) => Owner::Peer(peer.clone()),
            None => Owner::Nobody,
        }
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
        let old = keys.mint(0, target.clone(), 1).unwrap();
        assert_eq!(old.len(), 8);
        assert!(old[0] < 0x80);
        assert_eq!(keys.route(&cancel_packet(&old)), Some((target.clone(), 1)));
        keys.revoke(&old);
        // The next client of the same session gets another key; the old one cancels nothing.
        let new = keys.mint(0, target.clone(), 1).unwrap();
        assert_ne!(old, new);
        assert_eq!(keys.route(&cancel_packet(&old)), None);
        assert_eq!(keys.route(&cancel_packet(&new)), Some((target, 1)));
        assert_eq!(keys.route(b"short"), None);
    }

    #[test]
    fn a_cluster_nodes_keys_name_it_and_route_to_their_node() {
        let keys = CancelKeys::default();
        let peer = Peer {
            address: "127.0.0.3:6432".into(),
            fingerprint: "AB".into(),
        };
        keys.set_cluster(2, HashMap::from([(3, peer.clone())]));
        let mine = keys.mint(0, cancel_packet(&[0; 8]), 0).unwrap();
        assert_eq!(mine[0], 2);
        assert_eq!(keys.owner(&cancel_packet(&mine)), Owner::ThisNode);
        // A key with this node's id that no session holds is still this node's: never passed on.
        let spoofed = cancel_packet(&[2, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(keys.owner(&spoofed), Owner::ThisNode);
        assert_eq!(keys.route(&spoofed), None);
        let theirs = cancel_packet(&[3, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(keys.owner(&theirs), Owner::Peer(peer));
        assert_eq!(
            keys.owner(&cancel_packet(&[9, 0, 0, 0, 0, 0, 0, 0])),
            Owner::Nobody
        );
        assert_eq!(
            keys.owner(&cancel_packet(&[0, 0, 0, 7, 1, 2, 3, 4])),
            Owner::Nobody
        );
        assert_eq!(CancelKeys::default().owner(&theirs), Owner::Nobody);
        assert_eq!(keys.owner(b"short"), Owner::Nobody);
    }

    #[test]
    fn protocol_3_2_gets_a_32_byte_secret() {
        let keys = CancelKeys::default();
        let key = keys.mint(2, cancel_packet(&[0; 8]), 0).unwrap();
        assert_eq!(key.len(), 4 + 32);
        assert_eq!(cancel_packet(&key).len(), 8 + 36);
    }
}
