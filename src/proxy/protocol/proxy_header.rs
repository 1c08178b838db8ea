//! The PROXY protocol version 2 header (HAProxy's specification, section 2.2) that a TCP load
//! balancer sends before the client's bytes, so that pgssl logs and rate-limits the client's own
//! address instead of the balancer's. Accepted only from `server.proxy_protocol_from`, and required
//! from there; from anywhere else the header's bytes are not special (the start-up parser refuses
//! them as it refuses any garbage).
//!
//! Layout: a 12-byte signature, one byte of version (2) and command (0 LOCAL: the balancer's own
//! connection, e.g. a health check; 1 PROXY), one byte of address family and transport, a 16-bit
//! length, then the addresses (TCP over IPv4: 12 bytes; IPv6: 36) and TLVs, which pgssl skips.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The header's first 12 bytes.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
pub const FIXED_LEN: usize = 16;
/// The most address and TLV bytes accepted (a balancer sends tens).
pub const MAX_BODY: usize = 1024;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer's own connection (LOCAL), or a family pgssl does not use: keep the socket's
    /// address.
    Local,
    /// A proxied TCP connection from `source`.
    Proxied {
        /// The client's address.
        source: SocketAddr,
    },
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The first 12 bytes are not the signature.
    #[error("the connection does not start with a PROXY protocol v2 header")]
    Signature,
    /// Version other than 2, or a command other than LOCAL and PROXY.
    #[error("unsupported PROXY protocol version or command 0x{0:02x}")]
    Version(u8),
    /// More address and TLV bytes than [`MAX_BODY`].
    #[error("PROXY protocol header of {0} bytes is too long")]
    TooLong(usize),
    /// The addresses do not fit the length.
    #[error("PROXY protocol addresses are truncated")]
    Truncated,
}

/// Checks the fixed part; returns how many address and TLV bytes follow.
pub fn body_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, ProxyHeaderError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyHeaderError::Signature);
    }
    let version_command = fixed[12];
    if version_command >> 4 != 2 || version_command & 0x0f > 1 {
        return Err(ProxyHeaderError::Version(version_command));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_BODY {
        return Err(ProxyHeaderError::TooLong(len));
    }
    Ok(len)
}

/// Reads the header from its fixed part and its `body` (exactly [`body_len`] bytes).
pub fn parse(fixed: &[u8; FIXED_LEN], body: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    if body_len(fixed)? != body.len() {
        return Err(ProxyHeaderError::Truncated);
    }
    if fixed[12] & 0x0f == 0 {
        return Ok(ProxyHeader::Local);
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match fixed[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = body.get(..12).ok_or(ProxyHeaderError::Truncated)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(ip), port(&a[8..10])),
            })
        }
        // TCP over IPv6.
        0x21 => {
            let a = body.get(..36).ok_or(ProxyHeaderError::Truncated)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port(&a[32..34])),
            })
        }
        // UNSPEC, UDP, Unix sockets: nothing pgssl can use as a client address.
        _ => Ok(ProxyHeader::Local),
    }
}

/// Whether a connection from `ip` comes from one of the trusted networks `from`
/// (`server.proxy_protocol_from`); an IPv4-mapped IPv6 address (what a dual-stack listener reports
/// for an IPv4 client) counts as its IPv4 address.
pub fn trusted(from: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    from.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(command: u8, family: u8, body: &[u8]) -> ([u8; FIXED_LEN], Vec<u8>) {
        let mut fixed = [0u8; FIXED_LEN];
        fixed[..12].copy_from_slice(&SIGNATURE);
        fixed[12] = 0x20 | command;
        fixed[13] = family;
        fixed[14..16].copy_from_slice(&(body.len() as u16).to_be_bytes());
        (fixed, body.to_vec())
    }

    #[test]
    fn ipv4_and_ipv6_sources_are_read_and_local_keeps_the_socket_address() {
        let v4 = [10, 1, 2, 3, 127, 0, 0, 1, 0x15, 0xb3, 0x1f, 0x7c, 0xaa];
        let (fixed, body) = header(1, 0x11, &v4);
        assert_eq!(
            parse(&fixed, &body),
            Ok(ProxyHeader::Proxied {
                source: "10.1.2.3:5555".parse().unwrap()
            })
        );
        let mut v6 = vec![0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&4242u16.to_be_bytes());
        let (fixed, body) = header(1, 0x21, &v6);
        assert_eq!(
            parse(&fixed, &body),
            Ok(ProxyHeader::Proxied {
                source: "[::1]:4242".parse().unwrap()
            })
        );
        let (fixed, body) = header(0, 0x00, &[]);
        assert_eq!(parse(&fixed, &body), Ok(ProxyHeader::Local));
    }

    #[test]
    fn a_wrong_signature_version_length_or_truncation_is_refused() {
        let (mut fixed, body) = header(1, 0x11, &[0; 12]);
        fixed[0] = b'X';
        assert_eq!(parse(&fixed, &body), Err(ProxyHeaderError::Signature));
        let (mut fixed, body) = header(1, 0x11, &[0; 12]);
        fixed[12] = 0x11;
        assert_eq!(parse(&fixed, &body), Err(ProxyHeaderError::Version(0x11)));
        let (fixed, _) = header(1, 0x11, &[0; 12]);
        assert_eq!(parse(&fixed, &[0; 3]), Err(ProxyHeaderError::Truncated));
        let (fixed, body) = header(1, 0x11, &[0; 4]);
        assert_eq!(parse(&fixed, &body), Err(ProxyHeaderError::Truncated));
        let (mut fixed, _) = header(1, 0x11, &[]);
        fixed[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(body_len(&fixed), Err(ProxyHeaderError::TooLong(2000)));
    }

    #[test]
    fn trusted_networks_match_by_prefix() {
        let net = ["10.0.0.0/8".parse().unwrap()];
        assert!(trusted(&net, "10.200.1.1".parse().unwrap()));
        assert!(!trusted(&net, "11.0.0.1".parse().unwrap()));
        assert!(trusted(&net, "::ffff:10.0.0.9".parse().unwrap()));
        let host = ["127.0.0.1/32".parse().unwrap()];
        assert!(trusted(&host, "127.0.0.1".parse().unwrap()));
        assert!(!trusted(&host, "127.0.0.2".parse().unwrap()));
        let all = ["::/0".parse().unwrap()];
        assert!(trusted(&all, "2001:db8::1".parse().unwrap()));
        assert!(!trusted(&all, "10.0.0.1".parse().unwrap()));
        assert!(!trusted(&[], "10.0.0.1".parse().unwrap()));
    }
}
