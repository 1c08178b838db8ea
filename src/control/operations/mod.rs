//! The control-plane operations behind each command, one file per command family, over the
//! operation model in [`model`]: each command is a typed request whose async `run` takes a
//! [`Context`] and returns a typed report; failures are returned as [`CommandError`] and printed
//! once, as one line, by the binary (or answered with their kind's status by the admin API).
//! Operations run in the process's one runtime: the CLI's, or `serve`'s for the admin server.

/// Appends a line to a command's [`Output`], formatted like `println!`.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => { $out.info(format!($($arg)*)) };
}

/// Appends a warning or note (stderr on a terminal) to a command's [`Output`].
macro_rules! note {
    ($out:expr, $($arg:tt)*) => { $out.warning(format!($($arg)*)) };
}

/// The [`RecordSlot`] of the optional record in the field `$field` of both the applied state and
/// the pending changes.
macro_rules! record_slot {
    ($field:ident) => {
        $crate::control::operations::RecordSlot {
            applied: |s| s.$field.as_ref(),
            pending: |p| &mut p.$field,
        }
    };
}

pub mod admin_user;
pub mod authentication;
mod context;
pub mod custom_cert;
pub mod data_access;
mod error;
pub mod external_ssl;
pub mod failover;
pub mod internal_credentials;
pub mod model;
pub mod mutual_ssl;
mod output;
pub mod pending_changes;
pub mod pool;
pub mod preflight;
mod record;
pub mod regenerate_tokens;
pub mod repository_hosts;
pub mod repository_ssl;
pub mod sessions;
pub mod status;
pub mod topology;
pub mod vizql_extsvc;

pub use context::Context;
pub(crate) use context::{Staging, blocking, external_repository, lock, served_repository};
pub use error::{CommandError, ErrorKind};
pub use output::{Output, OutputLine, print_line};
pub use record::RecordList;
pub(crate) use record::{RecordListing, RecordSlot, Removal, list_record, stage_removal};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::control::state::StateStore;
use crate::keystore::{Keystore, Secret};

/// An expiry date with the days left, or how long ago it passed.
pub(crate) fn describe_expiry(not_after: OffsetDateTime) -> String {
    let when = not_after
        .format(&Rfc3339)
        .unwrap_or_else(|_| not_after.to_string());
    let days = (not_after - OffsetDateTime::now_utc()).whole_days();
    if days < 0 {
        format!("{when} (EXPIRED {} days ago)", -days)
    } else {
        format!("{when} (in {days} days)")
    }
}

/// The last component of a path: how listings name a file the administrator gave, without saying where
/// it was.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The line every staging command ends with.
pub(crate) fn apply_hint(out: &Output) {
    out.info("Run 'pgssl pending-changes apply' to make it take effect.".into());
}

/// Removes copies and secrets nothing refers to any more. A failure leaves only stale files behind,
/// so it is reported and the command still succeeds.
pub(crate) fn prune(store: &StateStore, out: &Output) {
    let pruned = Keystore::open(&store.config_dir())
        .map_err(crate::control::state::store::PruneError::from)
        .and_then(|mut keystore| store.prune(&mut keystore));
    if let Err(e) = pruned {
        out.warning(format!(
            "warning: could not remove files no longer used: {e}"
        ));
    }
}

/// Refuses an empty secret or one with NUL bytes (which PostgreSQL and libpq cannot carry).
pub(crate) fn check_secret(secret: &Secret, what: &'static str) -> Result<(), CommandError> {
    if secret.expose().is_empty() || secret.expose().contains('\0') {
        return Err(CommandError::BadSecret { what });
    }
    Ok(())
}
