//! The client's own address, carried from one cluster node to another. A node that relays its
//! clients to another node (a joined node in front of a managed first node) would otherwise make
//! every one of them look like itself: the failed-login lockout, counted per address, would let one
//! client lock out everybody behind that node, and the logs would name the node.
//!
//! The relaying node adds a start-up parameter, `pgssl.relayed_client = "ADDRESS TAG"`, where TAG
//! is an HMAC-SHA256, under a key derived from the master key every node of a cluster shares, of
//! the address and of a TLS exporter value (RFC 5705) of that very connection. The receiving node
//! computes the same exporter on its side, so a tag is good for one TLS connection only: it cannot
//! be replayed on another, nor made without the master key, nor sent in plaintext. The parameter is
//! taken out of the start-up before anything else sees it. A client that sends it itself is
//! refused (28000), as PostgreSQL refuses a start-up it cannot honour.
//!
//! The relaying node adds it only when its repository presents the certificate it serves itself —
//! that is, when its repository is another node of its cluster — so no PostgreSQL ever sees it.

use std::net::SocketAddr;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use bytes::{BufMut, BytesMut};

use crate::proxy::protocol::StartupMessage;

/// The start-up parameter.
pub const PARAM: &str = "pgssl.relayed_client";

/// The RFC 5705 exporter label both ends use.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-pgssl-relayed-client";

/// The key the tags are made with (derived from the cluster's master key by the composition root).
#[derive(Clone)]
pub struct RelayKey(hmac::Key);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(…)")
    }
}

/// Why a relayed address was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Not over TLS, or this node has no key: it cannot have come from a node of its cluster.
    #[error("pgssl.relayed_client is set only by a pgssl node of this cluster, over TLS")]
    NotFromANode,
    /// The value is not `ADDRESS TAG`, or the tag is not this connection's.
    #[error("pgssl.relayed_client does not carry a valid tag for this connection")]
    BadTag,
}

impl RelayKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: &[u8; 32]) -> RelayKey {
        RelayKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The parameter's value naming `client` on the connection whose exporter value is
    /// `exporter`.
    pub fn claim(&self, exporter: &[u8], client: SocketAddr) -> String {
        let client = client.to_string();
        let tag = hmac::sign(&self.0, &[exporter, client.as_bytes()].concat());
        format!("{client} {}", BASE64.encode(tag))
    }

    /// The client address `value` names, when its tag is this connection's.
    pub fn verify(&self, exporter: &[u8], value: &str) -> Result<SocketAddr, RelayError> {
        let (client, tag) = value.split_once(' ').ok_or(RelayError::BadTag)?;
        let tag = BASE64.decode(tag).map_err(|_| RelayError::BadTag)?;
        hmac::verify(&self.0, &[exporter, client.as_bytes()].concat(), &tag)
            .map_err(|_| RelayError::BadTag)?;
        client.parse().map_err(|_| RelayError::BadTag)
    }
}

/// The exporter value of a finished TLS connection, either side's (both compute the same).
pub fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Option<[u8; 32]> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .ok()
}

/// `startup` with `name = value` added at the end of its parameters.
pub fn with_param(startup: &StartupMessage, name: &str, value: &str) -> StartupMessage {
    let mut params = startup.params.clone();
    params.push((name.to_string(), value.to_string()));
    rebuild(startup, params)
}

/// `startup` without the parameter `name`.
pub fn without_param(startup: &StartupMessage, name: &str) -> StartupMessage {
    let params = startup
        .params
        .iter()
        .filter(|(n, _)| n != name)
        .cloned()
        .collect();
    rebuild(startup, params)
}

/// A start-up packet of `startup`'s version with `params`, in order.
fn rebuild(startup: &StartupMessage, params: Vec<(String, String)>) -> StartupMessage {
    let mut body = BytesMut::new();
    body.put_u32(0);
    body.put_u16(startup.major);
    body.put_u16(startup.minor);
    for (k, v) in &params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let len = body.len() as u32;
    body[..4].copy_from_slice(&len.to_be_bytes());
    StartupMessage {
        raw: body.freeze(),
        major: startup.major,
        minor: startup.minor,
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_verifies_only_on_its_connection_and_under_its_key() {
        let key = RelayKey::new(&[7; 32]);
        let client: SocketAddr = "127.0.0.20:5555".parse().unwrap();
        let claim = key.claim(&[1; 32], client);
        assert_eq!(key.verify(&[1; 32], &claim), Ok(client));
        // Another connection, another key, another address, garbage.
        assert_eq!(key.verify(&[2; 32], &claim), Err(RelayError::BadTag));
        let other = RelayKey::new(&[8; 32]);
        assert_eq!(other.verify(&[1; 32], &claim), Err(RelayError::BadTag));
        let tag = claim.split_once(' ').unwrap().1;
        let forged = format!("127.0.0.21:5555 {tag}");
        assert_eq!(key.verify(&[1; 32], &forged), Err(RelayError::BadTag));
        for bad in ["", "127.0.0.20:5555", "x y", "127.0.0.20:5555 !!"] {
            assert_eq!(key.verify(&[1; 32], bad), Err(RelayError::BadTag), "{bad}");
        }
    }

    #[test]
    fn a_parameter_is_added_and_taken_out_of_the_start_up_packet() {
        let raw = {
            let mut b = BytesMut::new();
            b.put_u32(0);
            b.put_u32(3 << 16);
            b.put_slice(b"user\0tableau\0database\0repository\0\0");
            let len = b.len() as u32;
            b[..4].copy_from_slice(&len.to_be_bytes());
            b.freeze()
        };
        let startup = StartupMessage {
            raw: raw.clone(),
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "tableau".into()),
                ("database".into(), "repository".into()),
            ],
        };
        let with = with_param(&startup, PARAM, "v");
        assert_eq!(with.param(PARAM), Some("v"));
        assert_eq!(&with.raw[..4], &(with.raw.len() as u32).to_be_bytes());
        assert!(with.raw.ends_with(b"pgssl.relayed_client\0v\0\0"));
        assert_eq!(without_param(&with, PARAM), startup);
    }
}
