//! The cluster's tables in the repository's `pgssl` schema: created by an administrator's session
//! when a cluster is made, and brought up to date by every node when it connects.
//!
//! ```text
//! pgssl.state   one row (id 1): version, generation, sealed snapshot (bytea), who applied it, when
//! pgssl.nodes   one row per node: name, id (1–127), address, version served, fingerprint,
//!               heartbeat, removed
//! ```
//!
//! Versions before this one kept the sealed snapshot as base64 in a text column; [`migrate`] turns it
//! into `bytea` in place, once, whichever node connects first.

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
       sealed bytea NOT NULL,
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

/// The type of `pgssl.state.sealed`, if the table exists.
const SEALED_TYPE: &str = "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
     WHERE attrelid = to_regclass('pgssl.state') AND attname = 'sealed' AND NOT attisdropped";

/// Turns the base64 text of an older version's `pgssl.state.sealed` into `bytea`. The table is
/// locked and its column type read again first, so two nodes connecting at once convert it once.
const SEALED_TO_BYTEA: &str = "DO $$ BEGIN
       LOCK TABLE pgssl.state IN ACCESS EXCLUSIVE MODE;
       IF (SELECT atttypid FROM pg_catalog.pg_attribute
            WHERE attrelid = 'pgssl.state'::regclass AND attname = 'sealed') = 'text'::regtype THEN
         ALTER TABLE pgssl.state ALTER COLUMN sealed TYPE bytea USING decode(sealed, 'base64');
       END IF;
     END $$";

/// Brings the tables an older version made up to date, on a session as the cluster role (their
/// owner). Nothing but one catalog read when they are current.
pub async fn migrate(conn: &Conn) -> Result<bool, SessionError> {
    let sealed: Option<String> = conn
        .query_opt(SEALED_TYPE, &[])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    if sealed.as_deref() != Some("text") {
        return Ok(false);
    }
    conn.batch_execute(SEALED_TO_BYTEA).await?;
    tracing::info!("the cluster's state is now kept as bytea (it was base64 text)");
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
        assert!(SCHEMA.contains("sealed bytea NOT NULL"));
        assert_eq!(listen_sql(), "LISTEN \"pgssl_state\"");
    }
}
