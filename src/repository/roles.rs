//! Roles and databases of a repository, as its superuser: create a login role, set a password (as a
//! SCRAM verifier computed here), check that a role exists, create a database. Values are bound
//! parameters; names, which SQL cannot bind, are quoted by [`super::sql`]. Idempotent, so a re-run
//! after a failure finishes the job.

use super::session::{Session, SessionError};
use super::sql;
use crate::keystore::Secret;

/// Creates `role` with LOGIN if it does not exist, then sets its password; returns whether it was
/// created.
pub async fn ensure_login_role(
    admin: &mut Session,
    role: &str,
    password: &Secret,
) -> Result<bool, SessionError> {
    let created = !role_exists(admin, role).await?;
    if created {
        admin
            .batch_execute(&format!("CREATE ROLE {} LOGIN", sql::ident(role)))
            .await?;
    }
    set_password(admin, role, password).await?;
    Ok(created)
}

/// Whether the role `name` exists.
pub async fn role_exists(admin: &mut Session, name: &str) -> Result<bool, SessionError> {
    let row = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await?;
    Ok(row.is_some())
}

/// Creates the database `name` (owned by `owner`, else by the superuser) unless it exists; returns
/// whether it was created.
pub async fn ensure_database(
    admin: &mut Session,
    name: &str,
    owner: Option<&str>,
) -> Result<bool, SessionError> {
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&name],
        )
        .await?;
    if exists.is_some() {
        return Ok(false);
    }
    let owner = owner
        .map(|o| format!(" OWNER {}", sql::ident(o)))
        .unwrap_or_default();
    admin
        .batch_execute(&format!("CREATE DATABASE {}{owner}", sql::ident(name)))
        .await?;
    Ok(true)
}

/// Sets `role`'s password by sending a SCRAM verifier computed here, so the plaintext never reaches the
/// server, its logs or `pg_stat_activity`.
pub async fn set_password(
    admin: &mut Session,
    role: &str,
    password: &Secret,
) -> Result<(), SessionError> {
    admin
        .batch_execute(&set_password_sql(role, password, AndLogin::Grant))
        .await?;
    Ok(())
}

/// What an `ALTER ROLE … PASSWORD` says about LOGIN besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AndLogin {
    /// Grants LOGIN too: an administrator's session, re-enabling a role a `NOLOGIN` disabled.
    Grant,
    /// Nothing: a role without CREATEROLE may change its own password on its own session, but no
    /// attribute, LOGIN included.
    Leave,
}

/// `ALTER ROLE … PASSWORD` with `password`'s SCRAM verifier (and LOGIN as `login` says). Utility
/// statements take no bound parameters, so the verifier is a quoted literal: it is what the server
/// would store anyway, and the password itself is never in the statement.
pub fn set_password_sql(role: &str, password: &Secret, login: AndLogin) -> String {
    let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    let with = match login {
        AndLogin::Grant => "WITH LOGIN ",
        AndLogin::Leave => "",
    };
    format!(
        "ALTER ROLE {} {with}PASSWORD {}",
        sql::ident(role),
        sql::literal(&verifier)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_sent_as_its_scram_verifier_never_in_the_clear() {
        let secret = Secret::new("s3cr'et".into());
        let sql = set_password_sql("Svc \"Odd\"", &secret, AndLogin::Grant);
        assert!(
            sql.starts_with(
                "ALTER ROLE \"Svc \"\"Odd\"\"\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:"
            ),
            "{sql}"
        );
        assert!(!sql.contains("s3cr"), "{sql}");
        // A role's own session may only change its password.
        let own = set_password_sql("pgssl_cluster", &secret, AndLogin::Leave);
        assert!(
            own.starts_with("ALTER ROLE \"pgssl_cluster\" PASSWORD 'SCRAM-SHA-256$4096:"),
            "{own}"
        );
        assert!(!own.contains("s3cr"), "{own}");
    }
}
