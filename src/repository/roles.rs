//! Roles and databases of a repository, as its superuser: create a login role, set a password (as a
//! SCRAM verifier computed here), check that a role exists, create a database. Every name and value
//! is quoted by [`super::sql`]. Idempotent, so a re-run after a failure finishes the job.

use super::client::{ClientError, Session};
use super::sql;
use crate::keystore::Secret;
use crate::proxy::upstream::UpstreamStream;

/// Creates `role` with LOGIN if it does not exist, then sets its password; returns whether it was
/// created.
pub async fn ensure_login_role(
    admin: &mut Session<UpstreamStream>,
    role: &str,
    password: &Secret,
) -> Result<bool, ClientError> {
    let created = !role_exists(admin, role).await?;
    if created {
        admin
            .simple_query(&format!("CREATE ROLE {} LOGIN", sql::ident(role)))
            .await?;
    }
    set_password(admin, role, password).await?;
    Ok(created)
}

/// Whether the role `name` exists.
pub async fn role_exists(
    admin: &mut Session<UpstreamStream>,
    name: &str,
) -> Result<bool, ClientError> {
    let rows = admin
        .simple_query(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = {}",
            sql::literal(name)
        ))
        .await?;
    Ok(!rows.is_empty())
}

/// Creates the database `name` (owned by `owner`, else by the superuser) unless it exists; returns
/// whether it was created.
pub async fn ensure_database(
    admin: &mut Session<UpstreamStream>,
    name: &str,
    owner: Option<&str>,
) -> Result<bool, ClientError> {
    let rows = admin
        .simple_query(&format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            sql::literal(name)
        ))
        .await?;
    if !rows.is_empty() {
        return Ok(false);
    }
    let owner = owner
        .map(|o| format!(" OWNER {}", sql::ident(o)))
        .unwrap_or_default();
    admin
        .simple_query(&format!("CREATE DATABASE {}{owner}", sql::ident(name)))
        .await?;
    Ok(true)
}

/// Sets `role`'s password by sending a SCRAM verifier computed here, so the plaintext never reaches the
/// server, its logs or `pg_stat_activity`.
pub async fn set_password(
    admin: &mut Session<UpstreamStream>,
    role: &str,
    password: &Secret,
) -> Result<(), ClientError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    admin
        .simple_query(&format!(
            "ALTER ROLE {} WITH LOGIN PASSWORD {}",
            sql::ident(role),
            sql::literal(&verifier)
        ))
        .await?;
    Ok(())
}
