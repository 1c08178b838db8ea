//! `pgssl pending-changes list | apply [--ignore-prompt] | discard`.

use std::time::Duration;

use super::{CommandError, Context};
use crate::control::{self, ControlError};
use crate::live::LiveSettings;

/// Prints the staged changes.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let store = ctx.store()?;
    let pending = store.pending()?;
    if pending.is_empty() {
        println!("No pending changes.");
        return Ok(());
    }
    println!("Pending changes:");
    for line in pending.describe(&store.applied()?) {
        println!("  {line}");
    }
    Ok(())
}

/// Validates and promotes the staged changes, then tells a running server to reload.
///
/// `--ignore-prompt` is accepted for compatibility with the model's grammar: pgssl applies changes
/// without a restart, so there is nothing to confirm.
pub fn apply(ctx: &Context, _ignore_prompt: bool) -> Result<(), CommandError> {
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    if pending.is_empty() {
        return Err(CommandError::Refused(
            "there are no pending changes to apply (stage one with 'pgssl security repository-ssl enable' or 'disable')".into(),
        ));
    }
    let next = pending.merged_into(&applied);
    // The same loader a server uses: what passes here, a server can serve.
    LiveSettings::for_state(&store, &next)?;
    let lines = pending.describe(&applied);
    store.promote(&next)?;
    println!("Applied:");
    for line in lines {
        println!("  {line}");
    }
    match control::request_reload(&store.control_socket_path(), Duration::from_secs(30)) {
        Ok(report) => {
            println!(
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
            println!(
                "No pgssl server is running on this data directory; 'pgssl serve' will use the change when it starts."
            );
            Ok(())
        }
        Err(e) => Err(CommandError::Refused(format!(
            "the change is applied on disk, but {e}; the server keeps serving its previous settings (fix the cause, then send it SIGHUP or restart it)"
        ))),
    }
}

/// Drops the staged changes.
pub fn discard(ctx: &Context) -> Result<(), CommandError> {
    let store = ctx.store()?;
    let _lock = store.lock()?;
    if store.discard_pending()? {
        println!("Discarded the pending changes.");
    } else {
        println!("No pending changes to discard.");
    }
    Ok(())
}
