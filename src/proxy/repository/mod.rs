//! Connecting to the repository: the upstream PostgreSQL, over TCP or its Unix socket.

pub mod address;
pub mod connector;
pub mod hosts;
pub mod identity;
pub mod tls;

pub use address::{BadRepositoryAddr, RepositoryEndpoint};
pub use connector::RepositoryConnector;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};

use crate::proxy::repository::tls::{RepositoryTls, RepositoryTlsFailure, RepositoryTlsMode};

/// Where the repository listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryAddr {
    /// `host:port` (a name, an IPv4 address or a bracketed IPv6 address).
    Tcp(String),
    /// A Unix socket directory and port: the socket is `<dir>/.s.PGSQL.<port>`, PostgreSQL's convention.
    Unix {
        /// The socket directory (`unix_socket_directories`).
        dir: PathBuf,
        /// The port that names the socket file.
        port: u16,
    },
}

impl RepositoryAddr {
    /// Parses `host:port`, `unix:/dir` or `/dir` (as [`RepositoryEndpoint`] does);
    /// `unix_port` names the socket file of a directory.
    pub fn parse(text: &str, unix_port: u16) -> Result<Self, BadRepositoryAddr> {
        Ok(match text.parse::<RepositoryEndpoint>()? {
            // Kept as written (a port of `05432` stays so).
            RepositoryEndpoint::Tcp { .. } => RepositoryAddr::Tcp(text.to_string()),
            unix => unix.upstream(unix_port),
        })
    }

    /// Connects in plaintext, giving up after `timeout`. TCP connections get `TCP_NODELAY`: the
    /// protocol is request/response and small writes must not wait for Nagle.
    pub async fn connect(&self, timeout: Duration) -> io::Result<RepositoryStream> {
        self.connect_with(timeout, &RepositoryTls::disabled())
            .await
            .map_err(|e| match e {
                RepositoryConnectError::Io(e) => e,
                other => io::Error::other(other.to_string()),
            })
    }

    /// Connects and, unless `tls` is `disable`, negotiates TLS with the repository; the whole of it
    /// must finish within `timeout`. Resolves the address for this one call: the data plane connects
    /// through a [`Target`] instead.
    pub async fn connect_with(
        &self,
        timeout: Duration,
        tls: &RepositoryTls,
    ) -> Result<RepositoryStream, RepositoryConnectError> {
        Target::new(self.clone()).connect(timeout, tls).await
    }

    /// The host part of a TCP address, without IPv6 brackets (what `verify-full` checks).
    pub fn host(&self) -> &str {
        match self {
            RepositoryAddr::Tcp(addr) => {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                host.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host)
            }
            RepositoryAddr::Unix { .. } => "localhost",
        }
    }

    fn socket_path(&self) -> PathBuf {
        match self {
            RepositoryAddr::Unix { dir, port } => dir.join(format!(".s.PGSQL.{port}")),
            RepositoryAddr::Tcp(addr) => PathBuf::from(addr),
        }
    }
}

/// How long a resolved host name is used before it is looked up again: PgBouncer's `dns_max_ttl`
/// default, short enough for DNS fail-over, long enough that a busy proxy does not ask the resolver
/// for every connection.
pub const DNS_TTL: Duration = Duration::from_secs(15);

/// The repository as connections reach it: the address parsed once, a host name resolved at most
/// every [`DNS_TTL`], and the TLS server name (what `verify-full` checks) validated once.
#[derive(Debug)]
pub struct Target {
    addr: RepositoryAddr,
    endpoint: Endpoint,
    server_name: Option<ServerName<'static>>,
}

#[derive(Debug)]
enum Endpoint {
    /// An IP address and port: nothing to resolve.
    Literal(SocketAddr),
    /// A host name, with its last resolution.
    Name {
        host: String,
        port: u16,
        cache: std::sync::Mutex<Option<(Vec<SocketAddr>, Instant)>>,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

impl Target {
    /// Parses `addr` once; nothing is resolved until the first connection.
    pub fn new(addr: RepositoryAddr) -> Target {
        let (endpoint, server_name) = match &addr {
            RepositoryAddr::Unix { .. } => (Endpoint::Unix(addr.socket_path()), None),
            RepositoryAddr::Tcp(text) => {
                let host = addr.host().to_string();
                let port = text
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(5432);
                let server_name = ServerName::try_from(host.clone()).ok();
                let endpoint = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => Endpoint::Literal(SocketAddr::new(ip, port)),
                    Err(_) => Endpoint::Name {
                        host,
                        port,
                        cache: std::sync::Mutex::new(None),
                    },
                };
                (endpoint, server_name)
            }
        };
        Target {
            addr,
            endpoint,
            server_name,
        }
    }

    /// The address as configured.
    pub fn addr(&self) -> &RepositoryAddr {
        &self.addr
    }

    /// Connects and, unless `tls` is `disable`, negotiates TLS; all within `timeout`.
    pub async fn connect(
        &self,
        timeout: Duration,
        tls: &RepositoryTls,
    ) -> Result<RepositoryStream, RepositoryConnectError> {
        let connect = async {
            let addrs = match &self.endpoint {
                Endpoint::Unix(_) if tls.mode() != RepositoryTlsMode::Disable => {
                    return Err(RepositoryConnectError::TlsOverUnixSocket(tls.mode()));
                }
                Endpoint::Unix(path) => {
                    return Ok(RepositoryStream::Unix(UnixStream::connect(path).await?));
                }
                Endpoint::Literal(addr) => vec![*addr],
                Endpoint::Name { host, port, cache } => self.resolve(host, *port, cache).await?,
            };
            let s = connect_any(&addrs).await?;
            s.set_nodelay(true)?;
            if tls.mode() == RepositoryTlsMode::Disable {
                return Ok(RepositoryStream::Tcp(s));
            }
            let name = self
                .server_name
                .clone()
                .ok_or_else(|| RepositoryTlsFailure::BadHost(self.addr.host().to_string()))?;
            Ok(RepositoryStream::Tls(Box::new(
                tls.negotiate(s, name).await?,
            )))
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| RepositoryConnectError::TimedOut)?
    }

    async fn resolve(
        &self,
        host: &str,
        port: u16,
        cache: &std::sync::Mutex<Option<(Vec<SocketAddr>, Instant)>>,
    ) -> io::Result<Vec<SocketAddr>> {
        let lock = || {
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((addrs, at)) = lock().as_ref()
            && at.elapsed() < DNS_TTL
        {
            return Ok(addrs.clone());
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            ));
        }
        *lock() = Some((addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

/// Connects to the first of `addrs` that accepts, as libpq does with a host name's addresses.
async fn connect_any(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to")))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

impl fmt::Display for RepositoryAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryAddr::Tcp(addr) => f.write_str(addr),
            RepositoryAddr::Unix { .. } => write!(f, "unix:{}", self.socket_path().display()),
        }
    }
}

/// Why the repository could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryConnectError {
    /// Connecting failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Connecting (and negotiating TLS) took too long.
    #[error("connection timed out")]
    TimedOut,
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] RepositoryTlsFailure),
    /// TLS was asked for on a Unix socket, where PostgreSQL never offers it.
    #[error(
        "repository.tls = {0} needs a TCP repository address (host:port); PostgreSQL does not use TLS on Unix sockets"
    )]
    TlsOverUnixSocket(RepositoryTlsMode),
}

impl RepositoryConnectError {
    /// Whether the host did not answer at all (refused, reset, timed out): what a host that is down
    /// does, unlike a TLS failure, which another attempt would repeat.
    pub fn unreachable(&self) -> bool {
        use io::ErrorKind::*;
        match self {
            RepositoryConnectError::TimedOut => true,
            // Not a local shortage (no file descriptors, no free port): that says nothing of the host.
            RepositoryConnectError::Io(e) => matches!(
                e.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | HostUnreachable
                    | NetworkUnreachable
                    | NotConnected
                    | TimedOut
                    | UnexpectedEof
            ),
            _ => false,
        }
    }

    /// What a client may be told: the kind of failure, never the repository's address, host names or
    /// certificate details, which only the operator's log carries.
    pub fn client_summary(&self) -> String {
        match self {
            RepositoryConnectError::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
                    "the repository refused the connection".into()
                }
                _ => "the connection to the repository failed".into(),
            },
            RepositoryConnectError::TimedOut => "the repository did not answer in time".into(),
            RepositoryConnectError::Tls(RepositoryTlsFailure::Handshake { mode, .. }) => {
                format!("TLS handshake with the repository failed (repository.tls = {mode})")
            }
            RepositoryConnectError::Tls(RepositoryTlsFailure::BadHost(_)) => {
                "the repository's host name is not valid for TLS".into()
            }
            // The remaining causes name no address: the text itself is the summary.
            RepositoryConnectError::Tls(e) => e.to_string(),
            RepositoryConnectError::TlsOverUnixSocket(_) => self.to_string(),
        }
    }
}

/// A connection to the repository.
#[derive(Debug)]
pub enum RepositoryStream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over the repository's Unix socket.
    Unix(UnixStream),
    /// Over TCP with TLS (`repository.tls`); boxed for the size of the rustls state.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

forward_io!(RepositoryStream: Tcp, Unix, Tls);

impl RepositoryStream {
    /// The repository's certificate, on a TLS leg (for channel binding to it).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            RepositoryStream::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
            _ => None,
        }
    }

    /// Registers the connection's socket with this thread's runtime. A socket is watched by the
    /// runtime that registered it: used from another worker's thread, each of its readiness events
    /// wakes both threads. The socket is duplicated and the copy registered here before the old
    /// handle is dropped (which deregisters it), so a failure leaves the connection as it was.
    pub fn reregister(&mut self) -> io::Result<()> {
        use std::os::fd::AsFd;
        fn moved(s: &TcpStream) -> io::Result<TcpStream> {
            TcpStream::from_std(std::net::TcpStream::from(s.as_fd().try_clone_to_owned()?))
        }
        match self {
            RepositoryStream::Tcp(s) => *s = moved(s)?,
            RepositoryStream::Unix(s) => {
                let copy = std::os::unix::net::UnixStream::from(s.as_fd().try_clone_to_owned()?);
                *s = UnixStream::from_std(copy)?;
            }
            RepositoryStream::Tls(s) => {
                let (tcp, _) = s.get_mut();
                *tcp = moved(tcp)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_target_parses_once_and_resolves_a_name_at_most_every_ttl() {
        let literal = Target::new(RepositoryAddr::parse("[::1]:6000", 5432).unwrap());
        assert!(
            matches!(literal.endpoint, Endpoint::Literal(a) if a.port() == 6000 && a.ip().is_loopback())
        );
        assert!(matches!(
            literal.server_name,
            Some(ServerName::IpAddress(_))
        ));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let named = Target::new(RepositoryAddr::parse(&format!("localhost:{port}"), 5432).unwrap());
        let Endpoint::Name { cache, .. } = &named.endpoint else {
            panic!("{:?}", named.endpoint)
        };
        assert!(cache.lock().unwrap().is_none());
        let mut resolved_at = Vec::new();
        for _ in 0..2 {
            named
                .connect(Duration::from_secs(5), &RepositoryTls::disabled())
                .await
                .unwrap();
            let (addrs, at) = cache.lock().unwrap().clone().unwrap();
            assert!(addrs.iter().any(|a| a.port() == port));
            resolved_at.push(at);
        }
        // The second connection used the first one's resolution.
        assert_eq!(resolved_at[0], resolved_at[1]);
        drop(listener);
    }

    #[test]
    fn parses_tcp_and_unix_forms() {
        assert_eq!(
            RepositoryAddr::parse("unix:/run/pg/.s.PGSQL.6000", 5432),
            Ok(RepositoryAddr::Unix {
                dir: PathBuf::from("/run/pg"),
                port: 6000
            })
        );
        assert_eq!(
            RepositoryAddr::parse("127.0.0.1:5432", 5432),
            Ok(RepositoryAddr::Tcp("127.0.0.1:5432".into()))
        );
        assert_eq!(
            RepositoryAddr::parse("[::1]:6000", 5432),
            Ok(RepositoryAddr::Tcp("[::1]:6000".into()))
        );
        assert_eq!(
            RepositoryAddr::parse("unix:/run/postgresql", 5433),
            Ok(RepositoryAddr::Unix {
                dir: "/run/postgresql".into(),
                port: 5433
            })
        );
        assert_eq!(
            RepositoryAddr::parse("[::1]:6000", 5432).unwrap().host(),
            "::1"
        );
        assert_eq!(
            RepositoryAddr::parse("db.example:5432", 5432)
                .unwrap()
                .host(),
            "db.example"
        );
        let unix = RepositoryAddr::parse("/tmp/pg", 5432).unwrap();
        assert_eq!(unix.to_string(), "unix:/tmp/pg/.s.PGSQL.5432");
        for bad in address::tests::UNUSABLE {
            assert!(RepositoryAddr::parse(bad, 5432).is_err(), "{bad}");
        }
    }
}
