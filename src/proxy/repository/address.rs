//! A repository address as written — in the config file, on `serve --repository`, in a cluster's
//! membership — read by one parser: `host:port`, or a Unix socket directory (`unix:/dir`, `/dir`)
//! or the socket itself (`unix:/dir/.s.PGSQL.5432`). [`RepositoryEndpoint::upstream`] turns it into
//! the [`RepositoryAddr`] connections use.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::RepositoryAddr;

/// A repository address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid repository address '{0}': expected host:port (e.g. 127.0.0.1:5432) or unix:/socket/dir"
)]
pub struct BadRepositoryAddr(pub String);

/// One place the repository listens, as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryEndpoint {
    /// `host:port`: a name, an IPv4 address, or an IPv6 address (in brackets, as written).
    Tcp {
        /// The host as written.
        host: String,
        /// The port, never 0.
        port: u16,
    },
    /// A Unix socket directory: the socket is `<dir>/.s.PGSQL.<port>`, PostgreSQL's convention.
    Unix {
        /// The socket directory (`unix_socket_directories`).
        dir: PathBuf,
        /// The port the address named (`unix:/dir/.s.PGSQL.6000`); `None` for a bare directory,
        /// whose socket is named by a port given elsewhere (`repository.port`).
        port: Option<u16>,
    },
}

impl FromStr for RepositoryEndpoint {
    type Err = BadRepositoryAddr;

    /// Parses `host:port`, `unix:/dir`, `/dir` or the socket itself, `unix:/dir/.s.PGSQL.5432`.
    fn from_str(text: &str) -> Result<Self, BadRepositoryAddr> {
        let bad = || BadRepositoryAddr(text.to_string());
        if let Some(dir) = text
            .strip_prefix("unix:")
            .or_else(|| text.starts_with('/').then_some(text))
        {
            if !dir.starts_with('/') {
                return Err(bad());
            }
            // The socket itself (as a Unix address prints) names its port.
            let path = PathBuf::from(dir);
            let socket_port = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_prefix(".s.PGSQL."))
                .and_then(|p| u16::from_str(p).ok());
            return Ok(match (socket_port, path.parent()) {
                (Some(port), Some(parent)) => RepositoryEndpoint::Unix {
                    dir: parent.to_path_buf(),
                    port: Some(port),
                },
                _ => RepositoryEndpoint::Unix {
                    dir: path,
                    port: None,
                },
            });
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        match u16::from_str(port) {
            // A comma is a list of hosts (`repository::RepositoryAddress`), never one host name.
            Ok(port) if port != 0 && !host.is_empty() && !host.contains(',') => {
                Ok(RepositoryEndpoint::Tcp {
                    host: host.to_string(),
                    port,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl RepositoryEndpoint {
    /// The address connections use; `socket_port` (`repository.port`) names the socket of a bare
    /// Unix socket directory.
    pub fn upstream(&self, socket_port: u16) -> RepositoryAddr {
        match self {
            RepositoryEndpoint::Tcp { .. } => RepositoryAddr::Tcp(self.to_string()),
            RepositoryEndpoint::Unix { dir, port } => RepositoryAddr::Unix {
                dir: dir.clone(),
                port: port.unwrap_or(socket_port),
            },
        }
    }
}

impl fmt::Display for RepositoryEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryEndpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            RepositoryEndpoint::Unix {
                dir,
                port: Some(port),
            } => write!(f, "unix:{}", dir.join(format!(".s.PGSQL.{port}")).display()),
            RepositoryEndpoint::Unix { dir, port: None } => write!(f, "unix:{}", dir.display()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Addresses no parser may take: no port, no host, port 0 or not a number, a relative socket
    /// directory.
    pub(in crate::proxy::repository) const UNUSABLE: [&str; 8] = [
        "",
        "h1:5432,h2:5432",
        "localhost",
        "host:",
        ":5432",
        "host:0",
        "host:x",
        "unix:rel",
    ];

    fn endpoint(text: &str) -> RepositoryEndpoint {
        text.parse().unwrap()
    }

    #[test]
    fn tcp_and_unix_forms_parse_once_and_the_socket_port_applies_to_a_bare_directory() {
        assert_eq!(
            endpoint("[::1]:6000"),
            RepositoryEndpoint::Tcp {
                host: "[::1]".into(),
                port: 6000
            }
        );
        assert_eq!(
            endpoint("[::1]:6000").upstream(5432),
            RepositoryAddr::Tcp("[::1]:6000".into())
        );
        assert_eq!(
            endpoint("unix:/run/pg/.s.PGSQL.6000").upstream(5433),
            RepositoryAddr::Unix {
                dir: "/run/pg".into(),
                port: 6000
            }
        );
        assert_eq!(
            endpoint("unix:/run/postgresql").upstream(5433),
            RepositoryAddr::Unix {
                dir: "/run/postgresql".into(),
                port: 5433
            }
        );
        assert_eq!(endpoint("/tmp/pg").to_string(), "unix:/tmp/pg");
        assert_eq!(
            endpoint("unix:/run/pg/.s.PGSQL.6000").to_string(),
            "unix:/run/pg/.s.PGSQL.6000"
        );
        assert_eq!(endpoint("db.example:5432").to_string(), "db.example:5432");
        for bad in UNUSABLE {
            let err = bad.parse::<RepositoryEndpoint>().unwrap_err();
            assert_eq!(err, BadRepositoryAddr(bad.into()));
        }
    }
}
