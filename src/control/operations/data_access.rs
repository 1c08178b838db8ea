//! `pgssl data-access repository-access enable --repository-username U --repository-password PW|-`
//! and `disable --repository-username U`: direct-connection users of the managed repository.

use std::collections::BTreeMap;

use super::{CommandError, Context, apply_hint, check_secret};
use crate::control::state::store::{Access, pending_password_name};
use crate::keystore::{Keystore, Secret};
use crate::repository::access;
use crate::repository::managed::{ManagedError, ManagedRepository, REPOSITORY_DATABASE};

/// Stages LOGIN with a new password for `user`.
pub fn enable(ctx: &Context, user: &str, secret: &Secret) -> Result<(), CommandError> {
    let out = &ctx.out;
    require_managed(ctx)?;
    check_secret(secret, "the password")?;
    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let mut keystore = Keystore::open(&store.config_dir())?;
    keystore.set(&pending_password_name(user), secret)?;
    let mut pending = store.pending()?;
    pending
        .data_access
        .insert(user.to_string(), Access::Enabled);
    store.save_pending(&pending)?;
    say!(
        out,
        "Staged: enable login for '{user}' with a new password."
    );
    apply_hint(out);
    Ok(())
}

/// Stages NOLOGIN for `user`; apply also ends the user's open sessions.
pub fn disable(ctx: &Context, user: &str) -> Result<(), CommandError> {
    let out = &ctx.out;
    require_managed(ctx)?;
    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let mut pending = store.pending()?;
    pending
        .data_access
        .insert(user.to_string(), Access::Disabled);
    let mut keystore = Keystore::open(&store.config_dir())?;
    keystore.remove(&pending_password_name(user))?;
    store.save_pending(&pending)?;
    if store.pending()?.data_access.contains_key(user) {
        say!(
            out,
            "Staged: disable login for '{user}' and end its sessions."
        );
        apply_hint(out);
    } else {
        say!(
            out,
            "Direct access for '{user}' is already disabled; nothing to stage."
        );
    }
    Ok(())
}

fn require_managed(ctx: &Context) -> Result<(), CommandError> {
    if ctx.config.server.upstream.is_some() {
        return Err(CommandError::Invalid(
            "data-access needs the managed repository; server.upstream is set, so manage roles on that PostgreSQL directly".into(),
        ));
    }
    Ok(())
}

/// Runs staged direct-user changes on the running managed repository. Each change is idempotent, so
/// a re-run after a failure finishes the job; a staged password moves to its final keystore name only
/// after the repository accepted it.
pub(crate) async fn apply_staged(
    repo: &ManagedRepository,
    keystore: &mut Keystore,
    changes: &BTreeMap<String, Access>,
) -> Result<(), ManagedError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut admin = repo.connect_admin(keystore, REPOSITORY_DATABASE).await?;
    for (user, change) in changes {
        if !access::DIRECT_USERS.contains(&user.as_str()) {
            continue;
        }
        match change {
            Access::Enabled => {
                let staged = pending_password_name(user);
                let password: Secret = match keystore.get(&staged)? {
                    Some(p) => p,
                    // Already moved by an earlier, interrupted apply.
                    None => keystore.get(&access::password_name(user))?.ok_or_else(|| {
                        ManagedError::NotReady(
                            format!("no staged password for {user}; stage it again with 'pgssl data-access repository-access enable'"),
                            repo.log_file.clone(),
                        )
                    })?,
                };
                access::enable(&mut admin, user, &password).await?;
                keystore.set(&access::password_name(user), &password)?;
                keystore.remove(&staged)?;
            }
            Access::Disabled => {
                access::disable(&mut admin, user).await?;
                keystore.remove(&access::password_name(user))?;
            }
        }
    }
    access::regrant(&mut admin, &repo.internal_roles).await?;
    let _ = admin.terminate().await;
    Ok(())
}
