//! What Patroni's `GET /patroni` and `GET /cluster` answers say, parsed from their JSON bodies.
//!
//! Bytes come in from the network and leave as typed values; nothing here touches a socket. Fields
//! Patroni may leave out (a stopped member has no timeline and no WAL position; the leader has no
//! lag) are `Option`s, unknown fields are ignored (every Patroni release adds some), and the role
//! names of Patroni 3.x and 4.x (`master` became `primary` in 4.0.0) read the same.
//! See Patroni's REST API documentation: <https://patroni.readthedocs.io/en/latest/rest_api.html>.

use serde::Deserialize;

/// The role a member reports for itself in `GET /patroni`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Runs as the primary and holds the leader lock: `master` (Patroni 3.x) or `primary` (4.x).
    Primary,
    /// A streaming or recovering standby.
    Replica,
    /// The leader of a standby cluster: a standby itself, following a remote primary.
    StandbyLeader,
    /// Was primary and has given up the leader lock (after a crash or during a switchover).
    Demoted,
    /// Any other role (`uninitialized`, or one a later Patroni adds), as Patroni wrote it.
    Other(String),
}

impl Role {
    /// Reads Patroni's role name.
    pub fn from_patroni(name: &str) -> Role {
        match name {
            "master" | "primary" => Role::Primary,
            "replica" => Role::Replica,
            "standby_leader" => Role::StandbyLeader,
            "demoted" => Role::Demoted,
            other => Role::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Demoted => "demoted",
            Role::Other(name) => name,
        })
    }
}

/// Where a member's write-ahead log stands, in bytes since the start of the WAL (a PostgreSQL LSN
/// as an integer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPosition {
    /// On a primary: the current write position.
    pub location: Option<u64>,
    /// On a replica: how far it has received.
    pub received_location: Option<u64>,
    /// On a replica: how far it has replayed.
    pub replayed_location: Option<u64>,
    /// On a replica: whether replay is paused (`pg_wal_replay_pause()`).
    pub paused: Option<bool>,
}

/// One member's own view of itself: the answer of its `GET /patroni`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// PostgreSQL's state as Patroni sees it: `running`, `starting`, `stopped`, `crashed`, …
    pub state: String,
    /// The member's role.
    pub role: Role,
    /// PostgreSQL's version as a number (150004 for 15.4), when it runs.
    pub server_version: Option<u32>,
    /// The timeline PostgreSQL runs on, when it runs.
    pub timeline: Option<u32>,
    /// Where its WAL stands (empty when PostgreSQL is not running).
    pub xlog: WalPosition,
    /// The Patroni cluster's name (`scope` in patroni.yml).
    pub scope: Option<String>,
    /// Patroni's own version.
    pub patroni_version: Option<String>,
    /// No member holds the leader lock (set by Patroni when it sees the cluster without a leader).
    pub cluster_unlocked: bool,
    /// The cluster is in maintenance mode: Patroni will not fail over.
    pub pause: bool,
    /// A changed setting waits for a restart.
    pub pending_restart: bool,
}

impl MemberStatus {
    /// Parses a `GET /patroni` body. `state` and `role` are required, everything else optional.
    pub fn parse(body: &[u8]) -> Result<MemberStatus, serde_json::Error> {
        let raw: RawMember = serde_json::from_slice(body)?;
        let patroni = raw.patroni.unwrap_or_default();
        let xlog = raw.xlog.unwrap_or_default();
        Ok(MemberStatus {
            state: raw.state,
            role: Role::from_patroni(&raw.role),
            server_version: raw.server_version,
            timeline: raw.timeline,
            xlog: WalPosition {
                location: xlog.location,
                received_location: xlog.received_location,
                replayed_location: xlog.replayed_location,
                paused: xlog.paused,
            },
            scope: patroni.scope,
            patroni_version: patroni.version,
            cluster_unlocked: raw.cluster_unlocked.unwrap_or(false),
            pause: raw.pause.unwrap_or(false),
            pending_restart: raw.pending_restart.unwrap_or(false),
        })
    }

    /// Whether PostgreSQL runs (`state` is `running`).
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

#[derive(Deserialize)]
struct RawMember {
    state: String,
    role: String,
    #[serde(default)]
    server_version: Option<u32>,
    #[serde(default)]
    timeline: Option<u32>,
    #[serde(default)]
    xlog: Option<RawXlog>,
    #[serde(default)]
    patroni: Option<RawPatroni>,
    #[serde(default)]
    cluster_unlocked: Option<bool>,
    #[serde(default)]
    pause: Option<bool>,
    #[serde(default)]
    pending_restart: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawXlog {
    #[serde(default)]
    location: Option<u64>,
    #[serde(default)]
    received_location: Option<u64>,
    #[serde(default)]
    replayed_location: Option<u64>,
    #[serde(default)]
    paused: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawPatroni {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// A member's role as `GET /cluster` names it (names of the DCS view, not of `GET /patroni`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRole {
    /// Holds the leader lock (the primary, in a cluster that is not a standby cluster).
    Leader,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// A synchronous standby.
    SyncStandby,
    /// A quorum-commit standby (Patroni 4.x).
    QuorumStandby,
    /// An asynchronous standby.
    Replica,
    /// Any other role, as Patroni wrote it.
    Other(String),
}

impl ClusterRole {
    /// Reads Patroni's role name.
    pub fn from_patroni(name: &str) -> ClusterRole {
        match name {
            "leader" => ClusterRole::Leader,
            "standby_leader" => ClusterRole::StandbyLeader,
            "sync_standby" => ClusterRole::SyncStandby,
            "quorum_standby" => ClusterRole::QuorumStandby,
            "replica" => ClusterRole::Replica,
            other => ClusterRole::Other(other.to_string()),
        }
    }
}

/// How far a member's WAL is behind the leader's, as `GET /cluster` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// Behind by this many bytes.
    Bytes(u64),
    /// Patroni does not know (`"unknown"`: the member reports no WAL position, e.g. stopped).
    Unknown,
}

/// One member in `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// The member's name (`name` in its patroni.yml).
    pub name: String,
    /// Its role in the cluster.
    pub role: ClusterRole,
    /// PostgreSQL's state: `running`, `stopped`, …
    pub state: String,
    /// The host PostgreSQL is reached at (`postgresql.connect_address`).
    pub host: Option<String>,
    /// The port PostgreSQL is reached at.
    pub port: Option<u16>,
    /// The member's REST API, as a URL ending in `/patroni`.
    pub api_url: Option<String>,
    /// The timeline it runs on, when it runs.
    pub timeline: Option<u32>,
    /// How far it is behind; `None` when not reported (the leader reports none).
    pub lag: Option<Lag>,
}

/// The whole cluster as the DCS shows it: the answer of `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Every member that has registered in the DCS.
    pub members: Vec<ClusterMember>,
    /// The cluster is in maintenance mode: Patroni will not fail over.
    pub pause: bool,
}

impl ClusterView {
    /// Parses a `GET /cluster` body.
    pub fn parse(body: &[u8]) -> Result<ClusterView, serde_json::Error> {
        let raw: RawCluster = serde_json::from_slice(body)?;
        let members = raw
            .members
            .into_iter()
            .map(|m| ClusterMember {
                name: m.name,
                role: ClusterRole::from_patroni(&m.role),
                state: m.state.unwrap_or_default(),
                host: m.host,
                port: m.port,
                api_url: m.api_url,
                timeline: m.timeline,
                lag: m.lag.map(RawLag::into_lag),
            })
            .collect();
        Ok(ClusterView {
            members,
            pause: raw.pause.unwrap_or(false),
        })
    }

    /// The member holding the leader lock, if one does (the DCS holds one leader key, so at most
    /// one member is named leader).
    pub fn leader(&self) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.role == ClusterRole::Leader)
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

#[derive(Deserialize)]
struct RawCluster {
    members: Vec<RawClusterMember>,
    #[serde(default)]
    pause: Option<bool>,
}

#[derive(Deserialize)]
struct RawClusterMember {
    name: String,
    role: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    timeline: Option<u32>,
    #[serde(default)]
    lag: Option<RawLag>,
}

/// `lag` is a number of bytes, or the string `"unknown"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawLag {
    Bytes(i64),
    // Any text (Patroni writes "unknown"); its content is not needed, only that it is text.
    Text(#[allow(dead_code)] String),
}

impl RawLag {
    fn into_lag(self) -> Lag {
        match self {
            // A member ahead of the leader's last known position shows a negative difference: it
            // is not behind.
            RawLag::Bytes(b) => Lag::Bytes(u64::try_from(b).unwrap_or(0)),
            RawLag::Text(_) => Lag::Unknown,
        }
    }
}
