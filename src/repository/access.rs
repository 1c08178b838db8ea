//! Direct-connection users of a managed repository (`data-access repository-access`): `tableau` may
//! read and write the `repository` database's public schema, `readonly` may only read it, present and
//! future tables alike.

use tracing::info;

use super::managed::{
    ManagedError, REPOSITORY_DATABASE, ensure_database, ensure_login_role, role_exists,
};
use super::session::SessionError;
use super::sql;
use crate::keystore::Secret;

/// The users `data-access repository-access` manages.
pub const DIRECT_USERS: [&str; 2] = ["tableau", "readonly"];

/// Keystore name of a direct user's current password.
pub fn password_name(user: &str) -> String {
    super::managed::role_secret_name(user)
}

/// Gives `user` LOGIN with `password` and its landing database. Idempotent. Its grants follow from
/// [`regrant`], which must run after every change.
pub async fn enable(admin: &mut Admin, user: &str, password: &Secret) -> Result<(), ManagedError> {
    ensure_login_role(admin, user, password).await?;
    ensure_landing_database(admin, user).await?;
    info!(user, "direct access enabled");
    Ok(())
}

/// Takes LOGIN away from `user` and ends its open sessions. Idempotent.
pub async fn disable(admin: &mut Admin, user: &str) -> Result<(), ManagedError> {
    if role_exists(admin, user).await? {
        admin
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", sql::ident(user)))
            .await
            .map_err(SessionError::from)?;
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = $1",
                &[&user],
            )
            .await
            .map_err(SessionError::from)?;
    }
    info!(user, "direct access disabled");
    Ok(())
}

/// Grants every direct user that exists its privileges again, with `owners` (the internal roles) and
/// tableau as the creators whose future tables they reach.
///
/// Default privileges tie a creator (tableau) to a reader (readonly) and can only be granted once
/// both roles exist, so one user's grants cannot be set up when only that user changes: after any
/// change every direct user is granted again (it is idempotent), whatever the order in which the
/// users were enabled.
pub async fn regrant(admin: &mut Admin, owners: &[String]) -> Result<(), ManagedError> {
    let mut creators: Vec<&str> = Vec::new();
    for creator in owners.iter().map(String::as_str).chain(["tableau"]) {
        if role_exists(admin, creator).await? {
            creators.push(creator);
        }
    }
    for user in DIRECT_USERS {
        if role_exists(admin, user).await? {
            admin
                .batch_execute(&grants(user, &creators))
                .await
                .map_err(SessionError::from)?;
        }
    }
    Ok(())
}

/// A superuser session on the repository database.
type Admin = super::session::Session;

/// An empty database named after the user, so that clients relying on libpq's default database (the
/// user name) connect instead of failing with "database does not exist"; the data lives in
/// `repository`. Only that user (and superusers) may connect to it.
async fn ensure_landing_database(admin: &mut Admin, user: &str) -> Result<(), ManagedError> {
    ensure_database(admin, user, None).await?;
    let (db, user) = (sql::ident(user), sql::ident(user));
    admin
        .batch_execute(&format!(
            "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {user}"
        ))
        .await
        .map_err(SessionError::from)?;
    Ok(())
}

/// The privileges of a direct user, run inside the `repository` database: on what exists now, and
/// on what each of `creators` (roles that exist) creates later.
fn grants(user: &str, creators: &[&str]) -> String {
    let db = sql::ident(REPOSITORY_DATABASE);
    let who = sql::ident(user);
    let mut sql = format!("GRANT CONNECT ON DATABASE {db} TO {who};");
    let (schema, tables, sequences) = if user == "tableau" {
        (
            "USAGE, CREATE",
            "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER",
            "USAGE, SELECT, UPDATE",
        )
    } else {
        ("USAGE", "SELECT", "SELECT")
    };
    sql.push_str(&format!(
        "GRANT {schema} ON SCHEMA public TO {who};\
         GRANT {tables} ON ALL TABLES IN SCHEMA public TO {who};\
         GRANT {sequences} ON ALL SEQUENCES IN SCHEMA public TO {who};"
    ));
    for creator in creators.iter().filter(|c| **c != user) {
        let creator = sql::ident(creator);
        sql.push_str(&format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public GRANT {tables} ON TABLES TO {who};\
             ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public GRANT {sequences} ON SEQUENCES TO {who};"
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::grants;

    #[test]
    fn readonly_gets_select_only_and_tableau_read_write() {
        let ro = grants("readonly", &["pgssl_internal", "tableau"]);
        assert!(ro.contains("GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"readonly\""));
        assert!(!ro.contains("INSERT"));
        assert!(ro.contains("FOR ROLE \"tableau\""));
        let rw = grants("tableau", &["pgssl_internal", "tableau"]);
        assert!(rw.contains("INSERT, UPDATE, DELETE"));
        assert!(!rw.contains("FOR ROLE \"tableau\""));
        let odd = grants("readonly", &["Svc \"Odd\""]);
        assert!(odd.contains("FOR ROLE \"Svc \"\"Odd\"\"\""), "{odd}");
    }
}
