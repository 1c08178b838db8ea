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

/// `startup` with `name = value` added at the end of its parameters. The packet is the client's own
/// bytes with one pair appended (its parameters are kept as sent, not as decoded text).
pub fn with_param(startup: &StartupMessage, name: &str, value: &str) -> StartupMessage {
    let raw = &startup.raw;
    // The packet ends with the terminating NUL after the last pair.
    let body_end = raw.len().saturating_sub(1);
    let mut out = BytesMut::with_capacity(raw.len() + name.len() + value.len() + 2);
    out.put_slice(&raw[..body_end]);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
    out.put_u8(0);
    let mut params = startup.params.clone();
    params.push((name.to_string(), value.to_string()));
    finish(startup, out, params)
}

/// `startup` without the parameter `name`: the client's own bytes less that one pair.
pub fn without_param(startup: &StartupMessage, name: &str) -> StartupMessage {
    let raw = &startup.raw;
    let mut out = BytesMut::with_capacity(raw.len());
    // Length and protocol version, then NUL-terminated name/value pairs, then a NUL.
    out.put_slice(raw.get(..8).unwrap_or_default());
    let mut rest = raw.get(8..).unwrap_or_default();
    while let Some(end) = rest.iter().position(|b| *b == 0) {
        if end == 0 {
            break;
        }
        let key = &rest[..end];
        let after = &rest[end + 1..];
        let value_end = after.iter().position(|b| *b == 0).unwrap_or(after.len());
        let pair_len = end + 1 + (value_end + 1).min(after.len());
        if key != name.as_bytes() {
            out.put_slice(&rest[..pair_len]);
        }
        rest = &rest[pair_len..];
    }
    out.put_u8(0);
    let params = startup
        .params
        .iter()
        .filter(|(n, _)| n != name)
        .cloned()
        .collect();
    finish(startup, out, params)
}

/// Writes the packet's new length into `raw` and makes the message.
fn finish(
    startup: &StartupMessage,
    mut raw: BytesMut,
    params: Vec<(String, String)>,
) -> StartupMessage {
    if raw.len() >= 4 {
        let len = raw.len() as u32;
        raw[..4].copy_from_slice(&len.to_be_bytes());
    }
    StartupMessage {
        raw: raw.freeze(),
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
        // Bytes that are not UTF-8 pass through as the client sent them.
        let mut latin1 = BytesMut::new();
        latin1.put_u32(0);
        latin1.put_u32(3 << 16);
        latin1.put_slice(b"user\0jos\xe9\0\0");
        let len = latin1.len() as u32;
        latin1[..4].copy_from_slice(&len.to_be_bytes());
        let mut buf = latin1.clone();
        let Ok(Some(crate::proxy::protocol::first_packet::FirstPacket::Startup(parsed))) =
            crate::proxy::protocol::first_packet::parse(&mut buf)
        else {
            panic!("a start-up")
        };
        let relayed = with_param(&parsed, PARAM, "127.0.0.1:1 t");
        assert!(relayed.raw.windows(5).any(|w| w == b"jos\xe9\0"));
        assert_eq!(&without_param(&relayed, PARAM).raw[..], &latin1[..]);
    }
}
