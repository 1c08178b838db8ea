//! How the file's strings become typed values, once, while the file is read: listen addresses,
//! networks and durations. Each refusal says what was expected; the key and the file are added by
//! [`Config::parse`](super::Config::parse).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de::Error as _};

/// Parses a listen address such as `127.0.0.1:8060` or `[::1]:8060`; the error says what is
/// expected, without a key (the caller names it).
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an IP address and port, e.g. 127.0.0.1:8060"))
}

/// Parses a network: `10.0.0.0/8`, `::1/128`, or a bare address meaning that one host (`/32` or
/// `/128`). Spaces around either side of the `/` are allowed (`10.0.0.0 / 8`), as they always were.
pub fn network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let bad = || format!("'{text}' is not a network such as 10.0.0.0/8, 192.0.2.7 or ::1/128");
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    match prefix {
        Some(prefix) => {
            let prefix = prefix.trim().parse::<u8>().map_err(|_| bad())?;
            IpNet::new(addr, prefix).map_err(|_| bad())
        }
        None => Ok(IpNet::from(addr)),
    }
}

/// `deserialize_with` for a listen address.
pub(super) fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    socket_addr(&String::deserialize(d)?).map_err(D::Error::custom)
}

/// `deserialize_with` for a list of networks.
pub(super) fn de_networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|n| network(n).map_err(D::Error::custom))
        .collect()
}

/// `deserialize_with` for a duration written with its unit (`"10s"`, `"5m"`, `"1h 30m"`, `"250ms"`).
pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    humantime_serde::deserialize(d).map_err(|e: D::Error| {
        D::Error::custom(format!(
            "{}: write a duration with its unit in quotes, e.g. \"10s\", \"5m\" or \"250ms\"",
            e.to_string().trim_end()
        ))
    })
}

/// [`de_duration`] for a key whose absence means a default chosen where it is used.
pub(super) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_has_a_prefix_and_a_bare_address_is_one_host() {
        let net = network("10.0.0.0/8").unwrap();
        assert_eq!(
            (net.addr(), net.prefix_len()),
            ("10.0.0.0".parse().unwrap(), 8)
        );
        assert_eq!(
            network(" 127.0.0.1 ").unwrap(),
            "127.0.0.1/32".parse().unwrap()
        );
        assert_eq!(network("::1").unwrap(), "::1/128".parse().unwrap());
        assert_eq!(network("::/0").unwrap().prefix_len(), 0);
        assert_eq!(
            network(" 10.0.0.0 / 8 ").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(network("fd00:: /\t8").unwrap(), "fd00::/8".parse().unwrap());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "nowhere",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/8/8",
            "10.0.0.0/-1",
            "10.0.0.0/x",
            "",
        ] {
            let err = network(bad).unwrap_err();
            assert!(err.contains("is not a network"), "{bad}: {err}");
        }
    }

    #[test]
    fn listen_addresses_need_an_ip_and_a_port() {
        assert_eq!(
            socket_addr("[::1]:8060").unwrap(),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8060))
        );
        let err = socket_addr("localhost:8060").unwrap_err();
        assert!(err.contains("'localhost:8060'"), "{err}");
        assert!(socket_addr("127.0.0.1").is_err());
    }
}
