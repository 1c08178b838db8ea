//! `[repository]`: the PostgreSQL server behind pgssl, the repository, whether an external one
//! (`address`) or the managed one pgssl runs itself; and the typed form of its address.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

pub use crate::proxy::repository::RepositoryEndpoint;
pub use crate::proxy::repository::hosts::{StandbyLag, TargetRole};
use crate::proxy::repository::tls::RepositoryTlsMode;
use crate::proxy::repository::{BadRepositoryAddr, RepositoryAddr};

/// `[repository]`. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// An external repository: `host:port` or `unix:/socket/dir`, or a list of the hosts of one
    /// replicated cluster (`serve --repository` overrides it). Default none: pgssl runs a managed
    /// repository in `<data-dir>/pgdata`. Formerly `server.upstream`.
    pub address: Option<RepositoryAddress>,
    /// With several hosts: how long a login waits for a primary while there is none (a failover)
    /// before it is refused with 08006. Default 30 s.
    #[serde(deserialize_with = "super::values::de_duration")]
    pub failover_wait: Duration,
    /// With several hosts: how often each is asked whether it is the primary. Default 1 s (every
    /// 200 ms while there is no primary).
    #[serde(deserialize_with = "super::values::de_duration")]
    pub probe_interval: Duration,
    /// With several hosts: how long one probe may take, connecting included. Default 2 s.
    #[serde(deserialize_with = "super::values::de_duration")]
    pub probe_timeout: Duration,
    /// How far behind the primary a standby may be and still take sessions: bytes (`"16MB"`) or a
    /// time (`"10s"`). Default none: any lag.
    pub max_standby_lag: Option<StandbyLag>,
    /// Where each user's sessions go, by role name or user class (`tableau`, `readonly`, `internal`,
    /// `client`): `primary`, `prefer-standby`, `standby` or `any`. A role's own entry wins over its
    /// class's. Default: everyone `primary`.
    pub targets: BTreeMap<String, TargetRole>,
    /// Patroni's REST API of each host, in the order of `address` (`http://h1:8008`, or `https://`):
    /// the probes then also ask Patroni which host leads, and `topology failover-repository` asks
    /// it for a switchover. Default none.
    pub patroni: Vec<String>,
    /// The CA of Patroni's certificate (`https://` URLs). Default: the system's CAs.
    pub patroni_ca: Option<PathBuf>,
    /// A client certificate for Patroni's `restapi.verify_client` (PEM), with `patroni_key`.
    pub patroni_cert: Option<PathBuf>,
    /// Its key.
    pub patroni_key: Option<PathBuf>,
    /// Patroni's `restapi.authentication.username`, sent with a switchover; the password comes from
    /// `PGSSL_PATRONI_PASSWORD`, never from this file.
    pub patroni_user: Option<String>,
    /// The host `topology failover-repository --preferred` makes the primary (Tableau's
    /// `pgsql.preferred_host`): one of `address`.
    pub preferred_host: Option<String>,
    /// TLS from pgssl to the repository, with libpq's `sslmode` meaning. Default `disable`. Formerly
    /// `server.upstream_tls`.
    pub tls: RepositoryTlsMode,
    /// Port that names the socket file when `address` is a Unix socket directory. Default 5432.
    pub port: u16,
    /// Major version assumed when the repository cannot be asked. Default 15.
    pub postgres_major: u32,
    /// Role used to read the repository's `server_version`; its password comes from the environment
    /// variable `PGSSL_UPSTREAM_PASSWORD`, never from this file. Default `postgres`.
    pub probe_user: String,
    /// Database used for that probe. Default `postgres`.
    pub probe_database: String,
    /// `max_connections` of a managed repository (each proxied session holds one). Default 100.
    pub max_connections: u32,
    /// Operating-system user that runs a managed repository when pgssl runs as root. Default `postgres`.
    pub os_user: String,
    /// Internal service roles of a managed repository, created with generated passwords. The first
    /// owns the `repository` database. Default `["pgssl_internal"]`.
    pub internal_roles: Vec<String>,
}

impl RepositoryConfig {
    /// The relations between the HA keys: one Patroni URL per host, a preferred host among the
    /// hosts. `address` is the one `serve` uses (its `--repository` may replace the file's).
    pub fn check_hosts(
        &self,
        address: Option<&RepositoryAddress>,
    ) -> Result<(), super::ConfigError> {
        let invalid = |key, message: String| super::ConfigError::Invalid { key, message };
        let hosts = address.map_or(&[][..], RepositoryAddress::endpoints);
        if !self.patroni.is_empty() && self.patroni.len() != hosts.len() {
            return Err(invalid(
                "repository.patroni",
                format!(
                    "lists {} URLs for {} hosts: give one Patroni REST API URL per host of repository.address, in the same order",
                    self.patroni.len(),
                    hosts.len()
                ),
            ));
        }
        if let Some(preferred) = &self.preferred_host {
            let named = preferred
                .parse::<RepositoryEndpoint>()
                .ok()
                .filter(|p| hosts.contains(p));
            if named.is_none() {
                return Err(invalid(
                    "repository.preferred_host",
                    format!("'{preferred}' is not one of repository.address"),
                ));
            }
        }
        let durations = [
            ("repository.failover_wait", self.failover_wait),
            ("repository.probe_interval", self.probe_interval),
            ("repository.probe_timeout", self.probe_timeout),
        ];
        if let Some((key, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(invalid(key, "must be greater than 0".into()));
        }
        Ok(())
    }
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            address: None,
            failover_wait: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            max_standby_lag: None,
            targets: BTreeMap::new(),
            patroni: Vec::new(),
            patroni_ca: None,
            patroni_cert: None,
            patroni_key: None,
            patroni_user: None,
            preferred_host: None,
            tls: RepositoryTlsMode::Disable,
            port: 5432,
            postgres_major: 15,
            probe_user: "postgres".into(),
            probe_database: "postgres".into(),
            max_connections: 100,
            os_user: "postgres".into(),
            internal_roles: vec!["pgssl_internal".into()],
        }
    }
}

/// `repository.address`: where the repository listens. Written as one string, a list, or on the
/// command line as libpq does, separated by commas (`h1:5432,h2:5432`): the hosts of one replicated
/// cluster, of which pgssl follows whichever is the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryAddress {
    /// Never empty.
    endpoints: Vec<RepositoryEndpoint>,
}

impl RepositoryAddress {
    /// The first address given.
    pub fn first(&self) -> &RepositoryEndpoint {
        &self.endpoints[0]
    }

    /// Every address, in the order given.
    pub fn endpoints(&self) -> &[RepositoryEndpoint] {
        &self.endpoints
    }

    /// The addresses connections use, in the order given (see [`RepositoryEndpoint::upstream`]).
    pub fn upstreams(&self, socket_port: u16) -> Vec<RepositoryAddr> {
        self.endpoints
            .iter()
            .map(|e| e.upstream(socket_port))
            .collect()
    }
}

/// `repository.address` (or `--repository`) is not a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAddressList {
    /// An empty list.
    #[error("needs an address, e.g. \"db:5432\"")]
    Empty,
    /// One host twice: it would be probed and counted twice.
    #[error("the repository address '{0}' is given twice")]
    Twice(String),
    /// One of them is not an address.
    #[error(transparent)]
    Address(#[from] BadRepositoryAddr),
}

impl From<RepositoryEndpoint> for RepositoryAddress {
    fn from(endpoint: RepositoryEndpoint) -> RepositoryAddress {
        RepositoryAddress {
            endpoints: vec![endpoint],
        }
    }
}

impl FromStr for RepositoryAddress {
    type Err = BadAddressList;

    /// One address, or several separated by commas (the command line's `--repository`).
    fn from_str(text: &str) -> Result<Self, BadAddressList> {
        let endpoints = text
            .split(',')
            .map(|t| t.trim().parse::<RepositoryEndpoint>())
            .collect::<Result<Vec<_>, _>>()?;
        RepositoryAddress::new(endpoints)
    }
}

impl RepositoryAddress {
    /// The hosts, when there is at least one and none is given twice.
    pub fn new(endpoints: Vec<RepositoryEndpoint>) -> Result<RepositoryAddress, BadAddressList> {
        if endpoints.is_empty() {
            return Err(BadAddressList::Empty);
        }
        for (i, e) in endpoints.iter().enumerate() {
            if endpoints[..i].contains(e) {
                return Err(BadAddressList::Twice(e.to_string()));
            }
        }
        Ok(RepositoryAddress { endpoints })
    }
}

impl fmt::Display for RepositoryAddress {
    /// The libpq-style list: `h1:5432,h2:5432`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for RepositoryAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "an address such as \"db:5432\", or a list of them"
        )]
        enum Written {
            One(String),
            List(Vec<String>),
        }
        let texts = match Written::deserialize(d)? {
            // One string may list hosts libpq's way, as `--repository` does.
            Written::One(text) => return text.parse().map_err(D::Error::custom),
            Written::List(texts) => texts,
        };
        let endpoints = texts
            .iter()
            .map(|t| t.parse().map_err(D::Error::custom))
            .collect::<Result<_, _>>()?;
        RepositoryAddress::new(endpoints).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> RepositoryEndpoint {
        text.parse().unwrap()
    }

    #[test]
    fn patroni_urls_go_one_per_host_and_the_preferred_host_is_one_of_them() {
        let two: RepositoryAddress = "h1:5432,h2:5432".parse().unwrap();
        let mut r = RepositoryConfig::default();
        assert!(r.check_hosts(Some(&two)).is_ok());
        r.patroni = vec!["http://h1:8008".into()];
        let e = r.check_hosts(Some(&two)).unwrap_err().to_string();
        assert!(e.contains("1 URLs for 2 hosts"), "{e}");
        r.patroni.push("http://h2:8008".into());
        assert!(r.check_hosts(Some(&two)).is_ok());
        r.preferred_host = Some("h3:5432".into());
        let e = r.check_hosts(Some(&two)).unwrap_err().to_string();
        assert!(e.contains("not one of repository.address"), "{e}");
        r.preferred_host = Some("h2:5432".into());
        assert!(r.check_hosts(Some(&two)).is_ok());
        r.probe_interval = Duration::ZERO;
        let e = r.check_hosts(Some(&two)).unwrap_err().to_string();
        assert!(e.contains("repository.probe_interval"), "{e}");
    }

    #[test]
    fn an_address_is_one_string_or_a_list() {
        #[derive(Deserialize)]
        struct T {
            address: RepositoryAddress,
        }
        let read = |text: &str| toml::from_str::<T>(text).map(|t| t.address);
        let one = read("address = \"db:5432\"").unwrap();
        assert_eq!(one.endpoints(), [endpoint("db:5432")]);
        assert_eq!(read("address = [\"db:5432\"]").unwrap(), one);
        let two = read("address = [\"h1:5432\", \"h2:5432\"]").unwrap();
        assert_eq!(two.endpoints(), [endpoint("h1:5432"), endpoint("h2:5432")]);
        assert_eq!(two.to_string(), "h1:5432,h2:5432");
        assert_eq!(
            "h1:5432, h2:5432".parse::<RepositoryAddress>(),
            Ok(two.clone())
        );
        assert_eq!(read("address = \"h1:5432,h2:5432\"").unwrap(), two);
        let twice = read("address = [\"h1:5432\", \"h1:5432\"]").unwrap_err();
        assert!(twice.message().contains("given twice"), "{twice}");
        assert!("h1:5432,".parse::<RepositoryAddress>().is_err());
        let none = read("address = []").unwrap_err();
        assert!(none.message().contains("needs an address"), "{none}");
        let bad = read("address = \"nowhere\"").unwrap_err();
        assert!(bad.message().contains("'nowhere'"), "{bad}");
        assert!(read("address = 5432").is_err());
    }
}
