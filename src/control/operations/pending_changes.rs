//! `pgssl pending-changes list | apply [--ignore-prompt] | discard`.

use std::time::Duration;

use super::{CommandError, Context, block_on};
use crate::control::reload::{self, ControlError};
use crate::keystore::Keystore;
use crate::repository::managed::ManagedRepository;

/// Prints the staged changes.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let pending = store.pending()?;
    if pending.is_empty() {
        say!(out, "No pending changes.");
        return Ok(());
    }
    say!(out, "Pending changes:");
    for line in pending.describe(&store.applied()?) {
        say!(out, "  {line}");
    }
    Ok(())
}

/// One line per staged change (empty when nothing is staged).
pub fn describe(ctx: &Context) -> Result<Vec<String>, CommandError> {
    let store = ctx.store()?;
    Ok(store.pending()?.describe(&store.applied()?))
}

/// Validates and promotes the staged changes, then tells a running server to reload.
///
/// `--ignore-prompt` is accepted for compatibility with the model's grammar: pgssl applies changes
/// without a restart, so there is nothing to confirm.
pub fn apply(ctx: &Context, _ignore_prompt: bool) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    if pending.is_empty() {
        return Err(CommandError::Invalid(
            "there are no pending changes to apply (stage one with 'pgssl security repository-ssl enable' or 'disable')".into(),
        ));
    }
    let next = pending.merged_into(&applied);
    // The same loader a server uses: what passes here, a server can serve.
    crate::control::settings::for_state(&store, &next, ctx.config.server.upstream_tls)?;
    if !pending.data_access.is_empty() {
        apply_data_access(ctx, &store, &pending)?;
    }
    let lines = pending.describe(&applied);
    store.promote(&next)?;
    super::prune(&store, out);
    say!(out, "Applied:");
    for line in lines {
        say!(out, "  {line}");
    }
    match reload::request_reload(&store.control_socket_path(), Duration::from_secs(30)) {
        Ok(report) => {
            say!(
                out,
                "The running pgssl server took the change: new connections use mode {}{}; open sessions were kept.",
                report.mode,
                report
                    .cert_fingerprint
                    .map(|f| format!(" with certificate SHA256 {f}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Err(ControlError::NotRunning) => {
            say!(
                out,
                "No pgssl server is running on this data directory; 'pgssl serve' will use the change when it starts."
            );
            Ok(())
        }
        Err(e) => Err(CommandError::Fault(format!(
            "the change is applied on disk, but {e}; the server keeps serving its previous settings (fix the cause, then send it SIGHUP or restart it)"
        ))),
    }
}

/// Runs staged direct-user changes on the managed repository; they must succeed before anything is
/// promoted, and re-running finishes an interrupted run.
fn apply_data_access(
    ctx: &Context,
    store: &crate::control::state::StateStore,
    pending: &crate::control::state::PendingChanges,
) -> Result<(), CommandError> {
    let repo = ManagedRepository::locate(&ctx.data_dir, &ctx.config)?;
    let mut keystore = Keystore::open(&store.config_dir())?;
    block_on(super::data_access::apply_staged(&repo, &mut keystore, &pending.data_access))?.map_err(|e| {
        CommandError::Unavailable(format!(
            "cannot change direct access on the managed repository ({e}); is 'pgssl serve' running on this data directory? The pending changes were kept"
        ))
    })
}

/// Drops the staged changes.
pub fn discard(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let staged_users: Vec<String> = store.pending()?.data_access.into_keys().collect();
    if !staged_users.is_empty() {
        let mut keystore = Keystore::open(&store.config_dir())?;
        for user in staged_users {
            keystore.remove(&crate::control::state::store::pending_password_name(&user))?;
        }
    }
    let discarded = store.discard_pending()?;
    super::prune(&store, out);
    if discarded {
        say!(out, "Discarded the pending changes.");
    } else {
        say!(out, "No pending changes to discard.");
    }
    Ok(())
}
