//! `[server]` and `[policy]`: the proxy's listener, limits and timeouts, and who counts as a client
//! user.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{de_duration, de_networks, de_socket_addr};

/// `[server]`. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the proxy listens on (`serve --listen` overrides it). Default `127.0.0.1:8060`.
    #[serde(deserialize_with = "de_socket_addr")]
    pub listen: SocketAddr,
    /// Most client sessions (connections past start-up, each holding a repository connection) at
    /// once; the next start-up gets FATAL 53300, as PostgreSQL answers it. Default 1000.
    pub max_connections: usize,
    /// Most connections still in their TLS handshake or start-up at once (each for at most
    /// `handshake_timeout`); past it, a new connection takes the place of the one negotiating
    /// longest, which is answered FATAL 53300 and closed. Kept apart from
    /// `max_connections` so that sockets that never finish start-up cannot take the slots sessions
    /// need. Default 4096.
    pub max_startups: usize,
    /// From accept to a complete start-up (TLS handshake included). Default 10 s. Formerly
    /// `handshake_timeout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub handshake_timeout: Duration,
    /// How long to wait for the repository to accept a connection. Default 5 s. Formerly
    /// `connect_timeout_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// How long open sessions get to finish after SIGINT/SIGTERM before they are closed. Default
    /// 30 s. Formerly `shutdown_grace_secs`.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// Threads that accept and serve connections, each with its own single-threaded runtime; 0 means
    /// one per CPU core. Default 0.
    pub worker_threads: usize,
    /// Networks (e.g. a load balancer's) whose connections start with a PROXY protocol v2 header
    /// giving the client's address; required from them, not honoured from anywhere else. A bare
    /// address is that one host. Default none.
    #[serde(deserialize_with = "de_networks")]
    pub proxy_protocol_from: Vec<IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8060)),
            max_connections: 1000,
            max_startups: 4096,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            worker_threads: 0,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[policy]`. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Direct-connection users who may choose plaintext in `optional` mode. Every other user is
    /// internal. Default `["tableau", "readonly"]`.
    pub client_users: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            client_users: vec!["tableau".into(), "readonly".into()],
        }
    }
}
