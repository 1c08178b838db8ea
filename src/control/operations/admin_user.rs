//! `pgssl admin-user add --username NAME --password PW|- | delete --username NAME | list`: who may sign in
//! to the admin server.

use super::model::Said;
use super::{CommandError, Context, check_secret, lock};
use crate::control::state::admin_users::AdminUsers;
use crate::keystore::Secret;

/// Adds an administrator.
pub fn add(ctx: &Context, name: &str, password: &Secret) -> Result<Said, CommandError> {
    check_secret(password, "the password")?;
    let store = ctx.store_or_create()?;
    let _lock = lock(&store)?;
    AdminUsers::open(&store.config_dir()).add(name, password)?;
    Ok(Said::one(format!(
        "Added administrator '{name}' (password stored as an Argon2id hash)."
    )))
}

/// Deletes an administrator; their open admin sessions end at their next request.
pub fn delete(ctx: &Context, name: &str) -> Result<Said, CommandError> {
    let store = ctx.store()?;
    let _lock = lock(&store)?;
    AdminUsers::open(&store.config_dir()).delete(name)?;
    Ok(Said::one(format!("Deleted administrator '{name}'.")))
}

/// Lists the administrators.
pub fn list(ctx: &Context) -> Result<Said, CommandError> {
    let store = ctx.store()?;
    let names = AdminUsers::open(&store.config_dir()).list()?;
    if names.is_empty() {
        return Ok(Said::one(
            "No administrators; add one with 'pgssl admin-user add --username NAME --password -'.",
        ));
    }
    Ok(Said { said: names })
}
