//! The statements on the cluster's tables (their schema is in [`super::schema`]), every value a
//! bound parameter.
//!
//! Every change is one statement (PostgreSQL runs it atomically): a commit is an UPDATE guarded by
//! the version it was based on, with `pg_notify` in the same statement so the announcement is sent
//! exactly when the version commits.

use std::time::Duration;

use tokio_postgres::Row;

use super::{CHANNEL, CLUSTER_ROLE, ClusterError, Membership, NEXT_PASSWORD_ENTRY, PASSWORD_ENTRY};
use super::{hosts, schema};
use crate::keystore::{Keystore, Secret};
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::repository::tls::RepositoryTls;
use crate::repository::roles::{AndLogin, set_password_sql};
use crate::repository::{Login, Session, SessionError};

/// A session on the repository.
pub type Conn = Session;

/// Most nodes: a node's id travels in the first byte of the cancel keys it mints (1–127).
pub const MAX_NODES: u32 = 127;

/// A node is live while its heartbeat is this recent (nodes beat every second).
pub const LIVE_SECS: f64 = 5.0;

/// Creates (or re-creates the password of) the cluster role and the schema, on an administrator's
/// session.
pub async fn create(admin: &mut Conn, password: &Secret) -> Result<(), SessionError> {
    schema::create(admin, password).await
}

/// Where and how a node reaches the repository as the cluster role.
#[derive(Debug, Clone)]
pub struct Reach<'a> {
    /// `host:port`, the hosts of one replicated cluster (`h1:5432,h2:5432`), or `unix:/dir`.
    pub repository: &'a str,
    /// The socket's port for `unix:/dir`.
    pub socket_port: u16,
    /// Fingerprints the hosts' certificates may have; empty: plaintext.
    pub pins: Vec<String>,
    /// The database of the `pgssl` schema.
    pub database: &'a str,
}

/// A session as the cluster role on one host.
struct ClusterLogin<'a> {
    /// TLS pinned to the hosts' certificates; `None`: plaintext.
    pinned: Option<RepositoryTls>,
    /// For a Unix socket.
    plaintext: RepositoryTls,
    database: &'a str,
    password: &'a Secret,
    timeout: Duration,
}

impl hosts::LogIn for ClusterLogin<'_> {
    async fn log_in(&self, addr: &RepositoryAddr) -> Result<Conn, ClusterError> {
        let host = addr.to_string();
        let tls = match (addr, &self.pinned) {
            (RepositoryAddr::Tcp(_), Some(pinned)) => pinned,
            _ => &self.plaintext,
        };
        let stream =
            addr.connect_with(self.timeout, tls)
                .await
                .map_err(|e| ClusterError::Unreachable {
                    repository: host.clone(),
                    message: e.to_string(),
                })?;
        let login = Login {
            user: CLUSTER_ROLE,
            database: self.database,
            application_name: "pgssl cluster",
            password: Some(self.password),
        };
        Session::start(stream, &login)
            .await
            .map_err(|source| match source.sqlstate() {
                Some("28P01" | "28000") => ClusterError::Refused {
                    repository: host.clone(),
                    source,
                },
                _ => failed(&host)(source),
            })
    }
}

/// Opens a session as the cluster role with `password` on the repository's primary (see
/// [`hosts::primary`]), its tables brought up to date; the session and its host.
pub async fn connect_as(
    reach: &Reach<'_>,
    password: &Secret,
    timeout: Duration,
) -> Result<(Conn, String), ClusterError> {
    let repository = reach.repository;
    let hosts = hosts::parse(repository, reach.socket_port)?;
    let pinned = if reach.pins.is_empty() {
        None
    } else {
        let tls =
            RepositoryTls::pinned(reach.pins.clone()).map_err(|e| ClusterError::Unreachable {
                repository: repository.to_string(),
                message: e.to_string(),
            })?;
        Some(tls)
    };
    let login = ClusterLogin {
        pinned,
        plaintext: RepositoryTls::disabled(),
        database: reach.database,
        password,
        timeout,
    };
    let (conn, host) = hosts::primary(repository, &hosts, timeout * 2, &login).await?;
    // Only now, on the primary: a migration is a write.
    match tokio::time::timeout(timeout * 2, schema::migrate(&conn)).await {
        Ok(Ok(_)) => Ok((conn, host)),
        Ok(Err(e)) => Err(failed(&host)(e)),
        Err(_) => Err(ClusterError::Unreachable {
            repository: host,
            message: format!("no answer within {:?}", timeout * 2),
        }),
    }
}

/// Opens a session as the cluster role on the repository's primary for the node whose config
/// folder is `config_dir`, with the keystore's password or, while a rotation is under way, the one
/// it rotates to; the session and its host.
pub async fn connect(
    membership: &Membership,
    config_dir: &std::path::Path,
    keystore: &Keystore,
    timeout: Duration,
) -> Result<(Conn, String), ClusterError> {
    let reach = Reach {
        repository: &membership.repository,
        socket_port: membership.socket_port,
        pins: membership.pins(config_dir),
        database: &membership.database,
    };
    let current = keystore
        .get(PASSWORD_ENTRY)?
        .ok_or(ClusterError::NoPassword)?;
    let first = connect_as(&reach, &current, timeout).await;
    match (first, keystore.get(NEXT_PASSWORD_ENTRY)?) {
        (Err(ClusterError::Refused { .. }), Some(next)) => connect_as(&reach, &next, timeout).await,
        (result, _) => result,
    }
}

/// What a failed statement means for a caller: the repository went away or answered an error.
pub(super) fn failed<E: Into<SessionError>>(repository: &str) -> impl Fn(E) -> ClusterError + '_ {
    move |e| ClusterError::Repository {
        repository: repository.to_string(),
        source: e.into(),
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

/// A `bigint` column that holds a count (a version, a generation, an id): never negative.
fn count(row: &Row, column: usize, what: &str) -> Result<u64, ClusterError> {
    let corrupt = |why: String| ClusterError::Corrupt(format!("{what} {why}"));
    let value: i64 = match row.columns().get(column).map(|c| c.type_().clone()) {
        Some(tokio_postgres::types::Type::INT4) => row
            .try_get::<_, i32>(column)
            .map(i64::from)
            .map_err(|e| corrupt(format!("does not read: {e}")))?,
        _ => row
            .try_get(column)
            .map_err(|e| corrupt(format!("does not read: {e}")))?,
    };
    u64::try_from(value).map_err(|_| corrupt(format!("is negative ({value})")))
}

/// A version or generation as the `bigint` it is stored as.
fn bigint(value: u64) -> Result<i64, ClusterError> {
    i64::try_from(value).map_err(|_| ClusterError::Corrupt(format!("version {value} is too large")))
}

/// The head, without the snapshot (what the poll reads every second).
pub async fn head(conn: &mut Conn, repository: &str) -> Result<Option<Head>, ClusterError> {
    let row = conn
        .query_opt(
            "SELECT version, generation FROM pgssl.state WHERE id = 1",
            &[],
        )
        .await
        .map_err(failed(repository))?;
    row.as_ref().map(head_of).transpose()
}

/// The head in the first two columns of a `pgssl.state` row.
fn head_of(row: &Row) -> Result<Head, ClusterError> {
    Ok(Head {
        version: count(row, 0, "pgssl.state.version")?,
        generation: count(row, 1, "pgssl.state.generation")?,
    })
}

/// The committed version and its snapshot.
pub async fn fetch(conn: &mut Conn, repository: &str) -> Result<Option<Stored>, ClusterError> {
    let row = conn
        .query_opt(
            "SELECT version, generation, sealed_bytes FROM pgssl.state WHERE id = 1",
            &[],
        )
        .await
        .map_err(failed(repository))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let sealed: Vec<u8> = row.try_get(2).map_err(|e| {
        ClusterError::Corrupt(format!("pgssl.state.sealed_bytes does not read: {e}"))
    })?;
    Ok(Some(Stored {
        head: head_of(&row)?,
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
    let rows = if base == 0 {
        conn.query(
            "WITH c AS (INSERT INTO pgssl.state (id, version, generation, sealed_bytes, applied_by)
                        VALUES (1, 1, 1, $1, $2) ON CONFLICT (id) DO NOTHING
                        RETURNING version)
             SELECT version, pg_notify($3, version::text) FROM c",
            &[&sealed, &by, &CHANNEL],
        )
        .await
    } else {
        let generation = generation.map(bigint).transpose()?;
        conn.query(
            "WITH c AS (UPDATE pgssl.state SET version = $1::bigint + 1,
                          generation = coalesce($2::bigint, generation),
                          sealed_bytes = $3, applied_by = $4, applied_at = now()
                        WHERE id = 1 AND version = $1::bigint RETURNING version)
             SELECT version, pg_notify($5, version::text) FROM c",
            &[&bigint(base)?, &generation, &sealed, &by, &CHANNEL],
        )
        .await
    }
    .map_err(failed(repository))?;
    if rows.is_empty() {
        let current = head(conn, repository).await?.map_or(0, |h| h.version);
        return Err(ClusterError::Conflict { base, current });
    }
    Ok(base + 1)
}

/// Starts receiving the announcements of new versions on this session.
pub async fn listen(conn: &mut Conn, repository: &str) -> Result<(), ClusterError> {
    conn.batch_execute(&schema::listen_sql())
        .await
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
    let rows = conn
        .query(
            "WITH known AS (
               UPDATE pgssl.nodes SET address = $2, version = $3::bigint, fingerprint = $4,
                      heartbeat = now()
                WHERE name = $1 AND NOT removed
               RETURNING id),
             added AS (
               INSERT INTO pgssl.nodes (name, id, address, version, fingerprint)
               SELECT $1, i, $2, $3::bigint, $4 FROM generate_series(1, $5::int) AS i
                WHERE NOT EXISTS (SELECT 1 FROM pgssl.nodes WHERE name = $1)
                  AND NOT EXISTS (SELECT 1 FROM pgssl.nodes AS n WHERE n.id = i)
                ORDER BY i LIMIT 1
               ON CONFLICT (name) DO NOTHING
               RETURNING id)
             SELECT id FROM known UNION ALL SELECT id FROM added",
            &[
                &beat.name,
                &beat.address,
                &bigint(beat.version)?,
                &beat.fingerprint,
                &max_nodes(),
            ],
        )
        .await
        .map_err(failed(repository))?;
    if let Some(row) = rows.first() {
        return node_id(row, 0).map(Some);
    }
    let removed = conn
        .query_opt(
            "SELECT 1 FROM pgssl.nodes WHERE name = $1 AND removed",
            &[&beat.name],
        )
        .await
        .map_err(failed(repository))?;
    if removed.is_none() {
        return Err(ClusterError::IdsExhausted { max: MAX_NODES });
    }
    Ok(None)
}

/// [`MAX_NODES`] as the `int` the statements compare it with.
fn max_nodes() -> i32 {
    i32::try_from(MAX_NODES).unwrap_or(i32::MAX)
}

/// A node id column: 1–127.
fn node_id(row: &Row, column: usize) -> Result<u8, ClusterError> {
    let id = count(row, column, "pgssl.nodes.id")?;
    u8::try_from(id).map_err(|_| ClusterError::Corrupt(format!("node id {id} is out of range")))
}

/// Frees an id for a node about to register as `name` when every id is taken: the row of the
/// removed node seen longest ago goes (its id is the only thing it still held; a node that is
/// removed has stopped following). Nothing when an id is free or no node is removed.
pub async fn reclaim_id(conn: &mut Conn, repository: &str, name: &str) -> Result<(), ClusterError> {
    conn.execute(
        "DELETE FROM pgssl.nodes
          WHERE name = (SELECT name FROM pgssl.nodes WHERE removed AND name <> $1
                         ORDER BY heartbeat LIMIT 1)
            AND (SELECT count(*) FROM pgssl.nodes WHERE name <> $1) >= $2::int",
        &[&name, &max_nodes()],
    )
    .await
    .map(|_| ())
    .map_err(failed(repository))
}

/// Lets a node of this name join again after a `remove-node` (a new machine taking the name).
pub async fn readmit(conn: &mut Conn, repository: &str, name: &str) -> Result<(), ClusterError> {
    conn.execute(
        "UPDATE pgssl.nodes SET removed = false WHERE name = $1",
        &[&name],
    )
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
        .query(
            "SELECT name, id, address, version, fingerprint,
                    to_char(heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    extract(epoch FROM now() - heartbeat)::float8, removed
             FROM pgssl.nodes ORDER BY name",
            &[],
        )
        .await
        .map_err(failed(repository))?;
    rows.iter().map(node_row).collect()
}

fn node_row(row: &Row) -> Result<NodeRow, ClusterError> {
    let corrupt = |e: tokio_postgres::Error| ClusterError::Corrupt(format!("pgssl.nodes: {e}"));
    Ok(NodeRow {
        name: row.try_get(0).map_err(corrupt)?,
        id: node_id(row, 1)?,
        address: row.try_get(2).map_err(corrupt)?,
        version: count(row, 3, "pgssl.nodes.version")?,
        fingerprint: row.try_get(4).map_err(corrupt)?,
        heartbeat: row.try_get(5).map_err(corrupt)?,
        age_secs: row.try_get(6).map_err(corrupt)?,
        removed: row.try_get(7).map_err(corrupt)?,
    })
}

/// Marks `name` removed; whether it was a node.
pub async fn remove(conn: &mut Conn, repository: &str, name: &str) -> Result<bool, ClusterError> {
    let removed = conn
        .execute(
            "UPDATE pgssl.nodes SET removed = true WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(failed(repository))?;
    Ok(removed > 0)
}

/// Sets the cluster role's password (its own session may do it).
pub async fn set_password(
    conn: &mut Conn,
    repository: &str,
    password: &Secret,
) -> Result<(), ClusterError> {
    // The role has no CREATEROLE: on its own session it may change its password, nothing else.
    conn.batch_execute(&set_password_sql(CLUSTER_ROLE, password, AndLogin::Leave))
        .await
        .map_err(failed(repository))
}
