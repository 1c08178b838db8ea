//! The cluster's tables in the repository and the statements on them.
//!
//! Every change is one statement (PostgreSQL runs it atomically): a commit is an UPDATE guarded by
//! the version it was based on, with `pg_notify` in the same statement so the announcement is sent
//! exactly when the version commits.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{CHANNEL, CLUSTER_ROLE, ClusterError, Membership, NEXT_PASSWORD_ENTRY, PASSWORD_ENTRY};
use crate::keystore::{Keystore, Secret};
use crate::proxy::upstream::tls::UpstreamTls;
use crate::proxy::upstream::{UpstreamAddr, UpstreamStream};
use crate::repository::client::{ClientError, Session};
use crate::repository::sql::literal;

/// A session on the repository.
pub type Conn = Session<UpstreamStream>;

/// Most nodes: a node's id travels in the first byte of the cancel keys it mints (1–127).
pub const MAX_NODES: u32 = 127;

/// A node is live while its heartbeat is this recent (nodes beat every second).
pub const LIVE_SECS: f64 = 5.0;

/// The schema, created by an administrator's session when a cluster is made. Owned by the cluster
/// role; nobody else but superusers may read it.
fn schema_sql(password: &Secret) -> String {
    let role = CLUSTER_ROLE;
    format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
             CREATE ROLE {role} LOGIN;
           END IF;
         END $$;
         ALTER ROLE {role} LOGIN PASSWORD {verifier};
         CREATE SCHEMA IF NOT EXISTS pgssl;
         GRANT USAGE, CREATE ON SCHEMA pgssl TO {role};
         SET ROLE {role};
         CREATE TABLE IF NOT EXISTS pgssl.state (
           id int PRIMARY KEY CHECK (id = 1),
           version bigint NOT NULL,
           generation bigint NOT NULL,
           sealed text NOT NULL,
           applied_by text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS pgssl.nodes (
           name text PRIMARY KEY,
           id int NOT NULL UNIQUE CHECK (id BETWEEN 1 AND {MAX_NODES}),
           address text NOT NULL,
           version bigint NOT NULL,
           fingerprint text NOT NULL,
           heartbeat timestamptz NOT NULL DEFAULT now(),
           removed boolean NOT NULL DEFAULT false);
         REVOKE ALL ON pgssl.state, pgssl.nodes FROM PUBLIC;
         RESET ROLE",
        verifier = literal(&verifier(password)),
    )
}

/// The SCRAM verifier of `password`: the role's password is set as a verifier, so the plaintext
/// never reaches the repository's statement log.
fn verifier(password: &Secret) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

/// Creates (or re-creates the password of) the cluster role and the schema, on an administrator's
/// session.
pub async fn create(admin: &mut Conn, password: &Secret) -> Result<(), ClientError> {
    admin.simple_query(&schema_sql(password)).await.map(|_| ())
}

/// Where and how a node reaches the repository as the cluster role.
#[derive(Debug, Clone)]
pub struct Reach<'a> {
    /// `host:port` or `unix:/dir`.
    pub repository: &'a str,
    /// The socket's port for `unix:/dir`.
    pub socket_port: u16,
    /// Fingerprints the repository's certificate may have; empty: plaintext.
    pub pins: Vec<String>,
    /// The database of the `pgssl` schema.
    pub database: &'a str,
}

/// Opens a session as the cluster role with `password`.
pub async fn connect_as(
    reach: &Reach<'_>,
    password: &Secret,
    timeout: Duration,
) -> Result<Conn, ClusterError> {
    let repository = reach.repository;
    let unreachable = |message: String| ClusterError::Unreachable {
        repository: repository.to_string(),
        message,
    };
    let addr = UpstreamAddr::parse(repository, reach.socket_port).map_err(|e| unreachable(e.0))?;
    let tls = match (&addr, reach.pins.is_empty()) {
        (UpstreamAddr::Unix { .. }, _) | (_, true) => UpstreamTls::disabled(),
        (_, false) => {
            UpstreamTls::pinned(reach.pins.clone()).map_err(|e| unreachable(e.to_string()))?
        }
    };
    let attempt = async {
        let stream = addr
            .connect_with(timeout, &tls)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let params = [
            ("user", CLUSTER_ROLE),
            ("database", reach.database),
            ("application_name", "pgssl cluster"),
        ];
        Session::start(stream, &params, Some(password.expose()))
            .await
            .map_err(|e| match e.sqlstate() {
                Some("28P01" | "28000") => ClusterError::Refused {
                    repository: repository.to_string(),
                    message: e.to_string(),
                },
                _ => unreachable(e.to_string()),
            })
    };
    tokio::time::timeout(timeout * 2, attempt)
        .await
        .map_err(|_| unreachable(format!("no answer within {:?}", timeout * 2)))?
}

/// Opens a session as the cluster role for the node whose config folder is `config_dir`, with the
/// keystore's password or, while a rotation is under way, the one it rotates to.
pub async fn connect(
    membership: &Membership,
    config_dir: &std::path::Path,
    keystore: &Keystore,
    timeout: Duration,
) -> Result<Conn, ClusterError> {
    let reach = Reach {
        repository: &membership.repository,
        socket_port: membership.socket_port,
        pins: membership.pins(config_dir),
        database: &membership.database,
    };
    let missing = || ClusterError::Invalid("the keystore holds no cluster password".into());
    let current = keystore.get(PASSWORD_ENTRY)?.ok_or_else(missing)?;
    let first = connect_as(&reach, &current, timeout).await;
    match (first, keystore.get(NEXT_PASSWORD_ENTRY)?) {
        (Err(ClusterError::Refused { .. }), Some(next)) => connect_as(&reach, &next, timeout).await,
        (result, _) => result,
    }
}

/// What a failed statement means for a caller: the repository went away or answered an error.
fn failed(conn_repository: &str) -> impl Fn(ClientError) -> ClusterError + '_ {
    move |e| ClusterError::Unreachable {
        repository: conn_repository.to_string(),
        message: e.to_string(),
    }
}

/// The committed version and generation, if any version was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Increases by one with every commit.
    pub version: u64,
    /// Increases with every `regenerate-internal-tokens`: bootstrap files of an older one are stale.
    pub generation: u64,
}

/// A committed version with its sealed snapshot.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Version and generation.
    pub head: Head,
    /// The snapshot, sealed under the master key.
    pub sealed: Vec<u8>,
}

fn number(value: Option<&Option<String>>, what: &str) -> Result<u64, ClusterError> {
    value
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ClusterError::Corrupt(format!("{what} is not a number")))
}

/// The head, without the snapshot (what the poll reads every second).
pub async fn head(conn: &mut Conn, repository: &str) -> Result<Option<Head>, ClusterError> {
    let rows = conn
        .simple_query("SELECT version, generation FROM pgssl.state WHERE id = 1")
        .await
        .map_err(failed(repository))?;
    rows.first().map(|row| head_of(row)).transpose()
}

/// The head in the first two columns of a `pgssl.state` row.
fn head_of(row: &[Option<String>]) -> Result<Head, ClusterError> {
    Ok(Head {
        version: number(row.first(), "pgssl.state.version")?,
        generation: number(row.get(1), "pgssl.state.generation")?,
    })
}

/// The committed version and its snapshot.
pub async fn fetch(conn: &mut Conn, repository: &str) -> Result<Option<Stored>, ClusterError> {
    let rows = conn
        .simple_query("SELECT version, generation, sealed FROM pgssl.state WHERE id = 1")
        .await
        .map_err(failed(repository))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let sealed = row
        .get(2)
        .and_then(|v| v.as_deref())
        .and_then(|v| BASE64.decode(v).ok())
        .ok_or_else(|| ClusterError::Corrupt("pgssl.state.sealed does not decode".into()))?;
    Ok(Some(Stored {
        head: head_of(row)?,
        sealed,
    }))
}

/// Commits `sealed` as the version after `base` (0: the first version), with `generation` (`None`
/// keeps it), and
/// announces it; [`ClusterError::Conflict`] when another commit came first.
pub async fn commit(
    conn: &mut Conn,
    repository: &str,
    base: u64,
    generation: Option<u64>,
    sealed: &[u8],
    by: &str,
) -> Result<u64, ClusterError> {
    let (sealed, by) = (literal(&BASE64.encode(sealed)), literal(by));
    let next = base + 1;
    let generation = generation.map_or_else(|| "generation".to_string(), |g| g.to_string());
    let sql = if base == 0 {
        format!(
            "WITH c AS (INSERT INTO pgssl.state (id, version, generation, sealed, applied_by)
                        VALUES (1, 1, 1, {sealed}, {by}) ON CONFLICT (id) DO NOTHING
                        RETURNING version)
             SELECT version, pg_notify('{CHANNEL}', version::text) FROM c"
        )
    } else {
        format!(
            "WITH c AS (UPDATE pgssl.state SET version = {next}, generation = {generation},
                          sealed = {sealed}, applied_by = {by}, applied_at = now()
                        WHERE id = 1 AND version = {base} RETURNING version)
             SELECT version, pg_notify('{CHANNEL}', version::text) FROM c"
        )
    };
    let rows = conn.simple_query(&sql).await.map_err(failed(repository))?;
    if rows.is_empty() {
        let current = head(conn, repository).await?.map_or(0, |h| h.version);
        return Err(ClusterError::Conflict { base, current });
    }
    Ok(next)
}

/// Starts receiving the announcements of new versions on this session.
pub async fn listen(conn: &mut Conn, repository: &str) -> Result<(), ClusterError> {
    conn.simple_query(&format!("LISTEN {CHANNEL}"))
        .await
        .map(|_| ())
        .map_err(failed(repository))
}

/// A node's heartbeat: what it serves, where its listener is.
#[derive(Debug, Clone)]
pub struct Beat<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its listener, `host:port`, for cancel requests forwarded by other nodes.
    pub address: &'a str,
    /// The state version it serves.
    pub version: u64,
    /// The fingerprint of the certificate it serves ("" without one).
    pub fingerprint: &'a str,
}

/// Records `beat` and returns the node's id; `None` when the node was removed from the cluster.
///
/// A node's row keeps its id. A node with no row (its join was killed before it registered) gets
/// the lowest id no row holds — not one past the highest, which ran out after 127 joins however many
/// nodes had been removed, and since PostgreSQL checks a proposed row before `ON CONFLICT`, then failed
/// every node's heartbeat. A removed node's row is left as it is.
pub async fn heartbeat(
    conn: &mut Conn,
    repository: &str,
    beat: &Beat<'_>,
) -> Result<Option<u8>, ClusterError> {
    let name = literal(beat.name);
    let sql = format!(
        "WITH known AS (
           UPDATE pgssl.nodes SET address = {addr}, version = {v}, fingerprint = {fp},
                  heartbeat = now()
            WHERE name = {name} AND NOT removed
           RETURNING id),
         added AS (
           INSERT INTO pgssl.nodes (name, id, address, version, fingerprint)
           SELECT {name}, i, {addr}, {v}, {fp} FROM generate_series(1, {MAX_NODES}) AS i
            WHERE NOT EXISTS (SELECT 1 FROM pgssl.nodes WHERE name = {name})
              AND NOT EXISTS (SELECT 1 FROM pgssl.nodes AS n WHERE n.id = i)
            ORDER BY i LIMIT 1
           ON CONFLICT (name) DO NOTHING
           RETURNING id)
         SELECT id FROM known UNION ALL SELECT id FROM added",
        addr = literal(beat.address),
        v = beat.version,
        fp = literal(beat.fingerprint),
    );
    let rows = conn.simple_query(&sql).await.map_err(failed(repository))?;
    if let Some(row) = rows.first() {
        let id = number(row.first(), "pgssl.nodes.id")?;
        return u8::try_from(id)
            .map(Some)
            .map_err(|_| ClusterError::Corrupt(format!("node id {id} is out of range")));
    }
    let removed = conn
        .simple_query(&format!(
            "SELECT 1 FROM pgssl.nodes WHERE name = {name} AND removed"
        ))
        .await
        .map_err(failed(repository))?;
    if removed.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "every one of the cluster's {MAX_NODES} node ids is taken: remove nodes that are gone ('pgssl topology remove-node NAME'), then join this one again"
        )));
    }
    Ok(None)
}

/// Frees an id for a node about to register as `name` when every id is taken: the row of the
/// removed node seen longest ago goes (its id is the only thing it still held; a node that is
/// removed has stopped following). Nothing when an id is free or no node is removed.
pub async fn reclaim_id(conn: &mut Conn, repository: &str, name: &str) -> Result<(), ClusterError> {
    let name = literal(name);
    conn.simple_query(&format!(
        "DELETE FROM pgssl.nodes
          WHERE name = (SELECT name FROM pgssl.nodes WHERE removed AND name <> {name}
                         ORDER BY heartbeat LIMIT 1)
            AND (SELECT count(*) FROM pgssl.nodes WHERE name <> {name}) >= {MAX_NODES}"
    ))
    .await
    .map(|_| ())
    .map_err(failed(repository))
}

/// Lets a node of this name join again after a `remove-node` (a new machine taking the name).
pub async fn readmit(conn: &mut Conn, repository: &str, name: &str) -> Result<(), ClusterError> {
    conn.simple_query(&format!(
        "UPDATE pgssl.nodes SET removed = false WHERE name = {}",
        literal(name)
    ))
    .await
    .map(|_| ())
    .map_err(failed(repository))
}

/// One row of `pgssl.nodes`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeRow {
    /// Its name.
    pub name: String,
    /// Its id (in the cancel keys it mints).
    pub id: u8,
    /// Its listener.
    pub address: String,
    /// The state version it serves.
    pub version: u64,
    /// The fingerprint of the certificate it serves.
    pub fingerprint: String,
    /// Its last heartbeat, UTC.
    pub heartbeat: String,
    /// Seconds since.
    pub age_secs: f64,
    /// Removed with `topology remove-node` (it no longer follows the cluster).
    pub removed: bool,
}

impl NodeRow {
    /// Whether its heartbeat is recent.
    pub fn is_live(&self) -> bool {
        !self.removed && self.age_secs < LIVE_SECS
    }
}

/// Every node, by name.
pub async fn nodes(conn: &mut Conn, repository: &str) -> Result<Vec<NodeRow>, ClusterError> {
    let rows = conn
        .simple_query(
            "SELECT name, id, address, version, fingerprint,
                    to_char(heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    extract(epoch FROM now() - heartbeat), removed
             FROM pgssl.nodes ORDER BY name",
        )
        .await
        .map_err(failed(repository))?;
    rows.iter().map(|r| node_row(r)).collect()
}

fn node_row(row: &[Option<String>]) -> Result<NodeRow, ClusterError> {
    let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let id = number(row.get(1), "pgssl.nodes.id")?;
    Ok(NodeRow {
        name: text(0),
        id: u8::try_from(id).map_err(|_| ClusterError::Corrupt(format!("node id {id}")))?,
        address: text(2),
        version: number(row.get(3), "pgssl.nodes.version")?,
        fingerprint: text(4),
        heartbeat: text(5),
        age_secs: text(6).parse().unwrap_or(f64::INFINITY),
        removed: text(7) == "t",
    })
}

/// Marks `name` removed; whether it was a node.
pub async fn remove(conn: &mut Conn, repository: &str, name: &str) -> Result<bool, ClusterError> {
    let rows = conn
        .simple_query(&format!(
            "UPDATE pgssl.nodes SET removed = true WHERE name = {} RETURNING name",
            literal(name)
        ))
        .await
        .map_err(failed(repository))?;
    Ok(!rows.is_empty())
}

/// Sets the cluster role's password (its own session may do it).
pub async fn set_password(
    conn: &mut Conn,
    repository: &str,
    password: &Secret,
) -> Result<(), ClusterError> {
    conn.simple_query(&format!(
        "ALTER ROLE {CLUSTER_ROLE} PASSWORD {}",
        literal(&verifier(password))
    ))
    .await
    .map(|_| ())
    .map_err(failed(repository))
}
