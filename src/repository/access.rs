//! Direct-connection users of a managed repository (`data-access repository-access`): `tableau` may
//! read and write the `repository` database's public schema, `readonly` may only read it, present and
//! future tables alike.

use std::collections::BTreeMap;

use tracing::info;

use super::managed::{
    ManagedError, ManagedRepository, REPOSITORY_DATABASE, ensure_database, ensure_login_role,
    role_exists,
};
use crate::control::state::keystore::{Keystore, Secret};
use crate::control::state::store::{Access, pending_password_name};

/// The users `data-access repository-access` manages.
pub const DIRECT_USERS: [&str; 2] = ["tableau", "readonly"];

/// Keystore name of a direct user's current password.
pub fn password_name(user: &str) -> String {
    super::managed::role_secret_name(user)
}

/// Applies staged access changes to the running repository. Each change is idempotent, so a re-run
/// after a failure finishes the job; staged passwords move to their final keystore names only after
/// the repository accepted them.
pub async fn apply(
    repo: &ManagedRepository,
    keystore: &mut Keystore,
    changes: &BTreeMap<String, Access>,
) -> Result<(), ManagedError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut admin = repo.connect_admin(keystore, REPOSITORY_DATABASE).await?;
    let owners: Vec<&str> = repo.internal_roles.iter().map(String::as_str).collect();
    for (user, access) in changes {
        if !DIRECT_USERS.contains(&user.as_str()) {
            continue;
        }
        match access {
            Access::Enabled => {
                let staged = pending_password_name(user);
                let password: Secret = match keystore.get(&staged)? {
                    Some(p) => p,
                    // Already moved by an earlier, interrupted apply.
                    None => keystore.get(&password_name(user))?.ok_or_else(|| {
                        ManagedError::NotReady(
                            format!("no staged password for {user}; stage it again with 'pgssl data-access repository-access enable'"),
                            repo.log_file.clone(),
                        )
                    })?,
                };
                ensure_login_role(&mut admin, user, &password).await?;
                ensure_landing_database(&mut admin, user).await?;
                keystore.set(&password_name(user), &password)?;
                keystore.remove(&staged)?;
                info!(user, "direct access enabled");
            }
            Access::Disabled => {
                if role_exists(&mut admin, user).await? {
                    admin
                        .simple_query(&format!("ALTER ROLE {user} NOLOGIN"))
                        .await?;
                    admin
                        .simple_query(&format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'"
                        ))
                        .await?;
                }
                keystore.remove(&password_name(user))?;
                info!(user, "direct access disabled");
            }
        }
    }
    // Default privileges tie a creator (tableau) to a reader (readonly) and can only be granted once
    // both roles exist, so one user's grants cannot be set up when only that user changes: after any
    // change, every direct user that exists gets its grants again (they are idempotent), whatever the
    // order in which the users were enabled.
    for user in DIRECT_USERS {
        if role_exists(&mut admin, user).await? {
            admin.simple_query(&grants(user, &owners)).await?;
        }
    }
    let _ = admin.terminate().await;
    Ok(())
}

/// An empty database named after the user, so that clients relying on libpq's default database (the
/// user name) connect instead of failing with "database does not exist"; the data lives in
/// `repository`. Only that user (and superusers) may connect to it.
async fn ensure_landing_database(
    admin: &mut crate::repository::Session<crate::proxy::upstream::UpstreamStream>,
    user: &str,
) -> Result<(), ManagedError> {
    ensure_database(admin, user, None).await?;
    admin
        .simple_query(&format!(
            "REVOKE CONNECT ON DATABASE {user} FROM PUBLIC; GRANT CONNECT ON DATABASE {user} TO {user}"
        ))
        .await?;
    Ok(())
}

/// The privileges of a direct user, run inside the `repository` database.
fn grants(user: &str, owners: &[&str]) -> String {
    let db = REPOSITORY_DATABASE;
    let mut sql = format!("GRANT CONNECT ON DATABASE {db} TO {user};");
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
        "GRANT {schema} ON SCHEMA public TO {user};\
         GRANT {tables} ON ALL TABLES IN SCHEMA public TO {user};\
         GRANT {sequences} ON ALL SEQUENCES IN SCHEMA public TO {user};"
    ));
    // Future tables: whoever may create them (the internal roles, and tableau) grants on creation.
    let mut creators: Vec<&str> = owners.to_vec();
    creators.push("tableau");
    for creator in creators {
        if creator == user {
            continue;
        }
        sql.push_str(&format!(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{creator}') THEN \
             ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public GRANT {tables} ON TABLES TO {user}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public GRANT {sequences} ON SEQUENCES TO {user}; \
             END IF; END $$;"
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::grants;

    #[test]
    fn readonly_gets_select_only_and_tableau_read_write() {
        let ro = grants("readonly", &["pgssl_internal"]);
        assert!(ro.contains("GRANT SELECT ON ALL TABLES IN SCHEMA public TO readonly"));
        assert!(!ro.contains("INSERT"));
        assert!(ro.contains("FOR ROLE tableau"));
        let rw = grants("tableau", &["pgssl_internal"]);
        assert!(rw.contains("INSERT, UPDATE, DELETE"));
        assert!(!rw.contains("FOR ROLE tableau"));
    }
}
