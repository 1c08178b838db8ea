//! The cluster's tables in the repository's `pgssl` schema: created by an administrator's session
//! when a cluster is made, and brought up to date by every node when it connects.
//!
//! ```text
//! pgssl.state   one row (id 1): version, generation, sealed snapshot (bytea, `sealed_bytes`), who
//!               applied it, when
//! pgssl.nodes   one row per node: name, id (1–127), address, version served, fingerprint,
//!               heartbeat, removed
//! ```
//!
//! Versions before this one kept the sealed snapshot as base64 in a text column named `sealed`;
//! [`migrate`] turns it into `bytea` and renames it `sealed_bytes`, in place, once, whichever node
//! connects first. The rename is what keeps a node of an older version that is still running from
//! harming the cluster: its statements name `sealed`, so they fail ("column does not exist")
//! instead of writing base64 text that PostgreSQL would take as escape-format `bytea`.

use super::repo::Conn;
use super::{CHANNEL, CLUSTER_ROLE};
use crate::keystore::Secret;
use crate::repository::SessionError;
use crate::repository::roles::ensure_login_role;

/// The schema and its tables, owned by the cluster role; nobody else but superusers may read them.
/// DDL takes no bound parameters: the role name and the node id bound are the constants
/// [`CLUSTER_ROLE`] and [`MAX_NODES`](super::repo::MAX_NODES) (a test checks they match).
const SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS pgssl;
     GRANT USAGE, CREATE ON SCHEMA pgssl TO pgssl_cluster;
     SET ROLE pgssl_cluster;
     CREATE TABLE IF NOT EXISTS pgssl.state (
       id int PRIMARY KEY CHECK (id = 1),
       version bigint NOT NULL,
       generation bigint NOT NULL,
       sealed_bytes bytea NOT NULL,
       applied_by text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE IF NOT EXISTS pgssl.nodes (
       name text PRIMARY KEY,
       id int NOT NULL UNIQUE CHECK (id BETWEEN 1 AND 127),
       address text NOT NULL,
       version bigint NOT NULL,
       fingerprint text NOT NULL,
       heartbeat timestamptz NOT NULL DEFAULT now(),
       removed boolean NOT NULL DEFAULT false);
     REVOKE ALL ON pgssl.state, pgssl.nodes FROM PUBLIC;
     RESET ROLE";

/// Creates (or gives a new password to) the cluster role, then the schema, on an administrator's
/// session. Idempotent: on a repository that holds an older cluster's schema it changes nothing but
/// the password, and [`migrate`] brings the tables up to date.
pub async fn create(admin: &mut Conn, password: &Secret) -> Result<(), SessionError> {
    ensure_login_role(admin, CLUSTER_ROLE, password).await?;
    admin.batch_execute(SCHEMA).await?;
    Ok(())
}

/// The type of an older version's `pgssl.state.sealed`, if the table has that column.
const OLD_SEALED_TYPE: &str = "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
     WHERE attrelid = to_regclass('pgssl.state') AND attname = 'sealed' AND NOT attisdropped";

/// Turns an older version's `pgssl.state.sealed` into this version's `sealed_bytes`: base64 text is
/// decoded into `bytea` (a column already `bytea` keeps its bytes), and the column renamed. One
/// statement, so one transaction: an old node's write lands before it (and is converted) or fails
/// after it. The table is locked and the new column looked for again first, so two nodes
/// connecting at once migrate it once.
const SEALED_TO_BYTES: &str = "DO $$ BEGIN
       LOCK TABLE pgssl.state IN ACCESS EXCLUSIVE MODE;
       IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
            WHERE attrelid = 'pgssl.state'::regclass AND attname = 'sealed_bytes'
              AND NOT attisdropped) THEN
         IF (SELECT atttypid FROM pg_catalog.pg_attribute
              WHERE attrelid = 'pgssl.state'::regclass AND attname = 'sealed'
                AND NOT attisdropped) = 'text'::regtype THEN
           ALTER TABLE pgssl.state ALTER COLUMN sealed TYPE bytea USING decode(sealed, 'base64');
         END IF;
         ALTER TABLE pgssl.state RENAME COLUMN sealed TO sealed_bytes;
       END IF;
     END $$";

/// Brings the tables an older version made up to date, on a session as the cluster role (their
/// owner); whether the state table needed it. Nothing but two catalog reads when they are
/// current.
pub async fn migrate(conn: &Conn) -> Result<bool, SessionError> {
    let questions = conn
        .query_one("SELECT to_regclass('pgssl.answers') IS NOT NULL", &[])
        .await?;
    if !questions.try_get::<_, bool>(0)? {
        // Two nodes connecting at once may both create them: the one that loses finds them made
        // the next time it connects, and meanwhile only cannot answer the cluster's questions.
        match conn.batch_execute(super::questions::TABLES).await {
            Ok(()) => tracing::info!(
                "made the cluster's question tables (pgssl.questions, pgssl.answers)"
            ),
            Err(e) => {
                tracing::debug!(error = %e, "another node is making the cluster's question tables")
            }
        }
    }
    let old: Option<String> = conn
        .query_opt(OLD_SEALED_TYPE, &[])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let Some(old) = old else {
        return Ok(false);
    };
    conn.batch_execute(SEALED_TO_BYTES).await?;
    tracing::info!(
        "the cluster's state is now kept as bytea in pgssl.state.sealed_bytes (it was {old} in \
         pgssl.state.sealed); nodes of older versions can no longer read or write it"
    );
    Ok(true)
}

/// `LISTEN` on the channel new versions are announced on (a channel is a name: it cannot be bound).
pub fn listen_sql() -> String {
    format!("LISTEN {}", crate::repository::sql::ident(CHANNEL))
}

#[cfg(test)]
mod tests {
    use super::super::repo::MAX_NODES;
    use super::*;

    #[test]
    fn the_schema_names_the_cluster_role_and_the_node_id_bound() {
        assert!(SCHEMA.contains(&format!("TO {CLUSTER_ROLE};")));
        assert!(SCHEMA.contains(&format!("SET ROLE {CLUSTER_ROLE};")));
        assert!(SCHEMA.contains(&format!("CHECK (id BETWEEN 1 AND {MAX_NODES})")));
        assert!(SCHEMA.contains("sealed_bytes bytea NOT NULL"));
        assert!(!SCHEMA.contains("sealed bytea"));
        assert_eq!(listen_sql(), "LISTEN \"pgssl_state\"");
    }
}
