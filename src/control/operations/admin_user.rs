//! `pgssl admin-user add --username NAME --password PW|- | delete --username NAME | list`: who may sign in
//! to the admin server.

use super::{CommandError, Context, check_secret};
use crate::control::state::admin_users::AdminUsers;
use crate::keystore::Secret;

/// Adds an administrator.
pub fn add(ctx: &Context, name: &str, password: &Secret) -> Result<(), CommandError> {
    let out = &ctx.out;
    check_secret(password, "the password")?;
    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    AdminUsers::open(&store.config_dir()).add(name, password)?;
    say!(
        out,
        "Added administrator '{name}' (password stored as an Argon2id hash)."
    );
    Ok(())
}

/// Deletes an administrator; their open admin sessions end at their next request.
pub fn delete(ctx: &Context, name: &str) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    AdminUsers::open(&store.config_dir()).delete(name)?;
    say!(out, "Deleted administrator '{name}'.");
    Ok(())
}

/// Lists the administrators.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let names = AdminUsers::open(&store.config_dir()).list()?;
    if names.is_empty() {
        say!(
            out,
            "No administrators; add one with 'pgssl admin-user add --username NAME --password -'."
        );
    }
    for name in names {
        say!(out, "{name}");
    }
    Ok(())
}
