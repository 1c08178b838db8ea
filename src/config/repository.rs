//! `[repository]`: the PostgreSQL server behind pgssl, the repository, whether an external one
//! (`address`) or the managed one pgssl runs itself; and the typed form of its address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de::Error as _};

pub use crate::proxy::repository::RepositoryEndpoint;
use crate::proxy::repository::tls::RepositoryTlsMode;
use crate::proxy::repository::{BadRepositoryAddr, RepositoryAddr};

/// `[repository]`. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// An external repository: `host:port` or `unix:/socket/dir` (`serve --repository` overrides
    /// it). Default none: pgssl runs a managed repository in `<data-dir>/pgdata`. Formerly
    /// `server.upstream`.
    pub address: Option<RepositoryAddress>,
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

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            address: None,
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

/// `repository.address`: where the repository listens. Written as one string or, the form fail-over
/// will use, a list; so far the list holds exactly one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryAddress {
    /// Never empty.
    endpoints: Vec<RepositoryEndpoint>,
}

impl RepositoryAddress {
    /// The address connections go to.
    pub fn primary(&self) -> &RepositoryEndpoint {
        &self.endpoints[0]
    }

    /// Every address, in the order given.
    pub fn endpoints(&self) -> &[RepositoryEndpoint] {
        &self.endpoints
    }

    /// The address connections use (see [`RepositoryEndpoint::upstream`]).
    pub fn upstream(&self, socket_port: u16) -> RepositoryAddr {
        self.primary().upstream(socket_port)
    }
}

impl From<RepositoryEndpoint> for RepositoryAddress {
    fn from(endpoint: RepositoryEndpoint) -> RepositoryAddress {
        RepositoryAddress {
            endpoints: vec![endpoint],
        }
    }
}

impl FromStr for RepositoryAddress {
    type Err = BadRepositoryAddr;

    /// One address (the command line's `--repository`).
    fn from_str(text: &str) -> Result<Self, BadRepositoryAddr> {
        text.parse::<RepositoryEndpoint>()
            .map(RepositoryAddress::from)
    }
}

impl fmt::Display for RepositoryAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.primary().fmt(f)
    }
}

impl<'de> Deserialize<'de> for RepositoryAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "an address such as \"db:5432\", or a list of one"
        )]
        enum Written {
            One(String),
            List(Vec<String>),
        }
        let texts = match Written::deserialize(d)? {
            Written::One(text) => vec![text],
            Written::List(texts) => texts,
        };
        match texts.len() {
            0 => return Err(D::Error::custom("needs an address, e.g. \"db:5432\"")),
            1 => {}
            // Until pgssl fails over between them, a second address would be silently unused.
            _ => {
                return Err(D::Error::custom(
                    "only one repository address is supported so far",
                ));
            }
        }
        let endpoints = texts
            .iter()
            .map(|t| t.parse().map_err(D::Error::custom))
            .collect::<Result<_, _>>()?;
        Ok(RepositoryAddress { endpoints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> RepositoryEndpoint {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_is_one_string_or_a_list_of_one() {
        #[derive(Deserialize)]
        struct T {
            address: RepositoryAddress,
        }
        let read = |text: &str| toml::from_str::<T>(text).map(|t| t.address);
        let one = read("address = \"db:5432\"").unwrap();
        assert_eq!(one.endpoints(), [endpoint("db:5432")]);
        assert_eq!(read("address = [\"db:5432\"]").unwrap(), one);
        let two = read("address = [\"h1:5432\", \"h2:5432\"]").unwrap_err();
        assert!(two.message().contains("only one"), "{two}");
        let none = read("address = []").unwrap_err();
        assert!(none.message().contains("needs an address"), "{none}");
        let bad = read("address = \"nowhere\"").unwrap_err();
        assert!(bad.message().contains("'nowhere'"), "{bad}");
        assert!(read("address = 5432").is_err());
    }
}
