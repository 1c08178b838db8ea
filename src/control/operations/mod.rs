//! The control-plane operations behind each command, one file per command family, over the
//! operation model in [`model`]: each command is a typed request whose `run` takes a [`Context`] and
//! returns a typed report; failures are returned as [`CommandError`] and printed once, as one line,
//! by the binary (or answered with their kind's status by the admin API).

/// Appends a line to a command's [`Output`], formatted like `println!`.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => { $out.info(format!($($arg)*)) };
}

/// Appends a warning or note (stderr on a terminal) to a command's [`Output`].
macro_rules! note {
    ($out:expr, $($arg:tt)*) => { $out.warning(format!($($arg)*)) };
}

pub mod admin_user;
pub mod authentication;
pub mod custom_cert;
pub mod data_access;
pub mod external_ssl;
pub mod internal_credentials;
pub mod model;
pub mod mutual_ssl;
pub mod pending_changes;
pub mod pool;
pub mod regenerate_tokens;
pub mod repository_ssl;
pub mod topology;
pub mod vizql_extsvc;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, ConfigError};
use crate::control::reload::{ControlError, ServeStatus};
use crate::control::settings::LoadError;
use crate::control::state::{CertError, StateError, StateStore};
use crate::keystore::{Keystore, Secret};

/// One line of a command's report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "text", rename_all = "lowercase")]
pub enum OutputLine {
    /// What the user asked for (stdout).
    Info(String),
    /// A warning or note beside it (stderr).
    Warning(String),
}

/// Where a command's report goes: printed as it is made (the local CLI), or collected for the admin
/// API and web pages, so that all three ways in say the same words.
#[derive(Debug, Clone, Default)]
pub struct Output {
    collected: Option<Arc<Mutex<Vec<OutputLine>>>>,
}

impl Output {
    /// Prints info lines on stdout and warnings on stderr.
    pub fn print() -> Output {
        Output { collected: None }
    }

    /// Keeps the lines for [`Output::take`].
    pub fn collect() -> Output {
        Output {
            collected: Some(Arc::new(Mutex::new(Vec::new()))),
        }
    }

    /// Reports a line.
    pub fn info(&self, line: String) {
        match &self.collected {
            Some(lines) => lock(lines).push(OutputLine::Info(line)),
            None => print_line(&mut std::io::stdout(), &line),
        }
    }

    /// Reports a warning or note.
    pub fn warning(&self, line: String) {
        match &self.collected {
            Some(lines) => lock(lines).push(OutputLine::Warning(line)),
            None => print_line(&mut std::io::stderr(), &line),
        }
    }

    /// The collected lines so far (empty when printing).
    pub fn take(&self) -> Vec<OutputLine> {
        self.collected
            .as_ref()
            .map(|lines| std::mem::take(&mut *lock(lines)))
            .unwrap_or_default()
    }
}

/// Writes one line, ignoring a closed pipe (`pgssl … | head` must not panic; the command's work is
/// done either way).
pub fn print_line(to: &mut dyn std::io::Write, line: &str) {
    let _ = writeln!(to, "{line}");
}

fn lock(lines: &Mutex<Vec<OutputLine>>) -> std::sync::MutexGuard<'_, Vec<OutputLine>> {
    // A panic while holding the lock leaves only a partial report behind: keep using it.
    lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every command runs with.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The loaded `--config`.
    pub config: Config,
    /// Where the command's report goes.
    pub out: Output,
}

impl Context {
    /// Opens the data directory's state, which must exist: a command that only reads or applies state
    /// says so for a mistyped `--data-dir` instead of creating an empty one and reporting "off".
    pub fn store(&self) -> Result<StateStore, CommandError> {
        Ok(StateStore::open_existing(&self.data_dir)?)
    }

    /// Opens the data directory's state, creating it: for `serve` and the commands that stage a change.
    pub fn store_or_create(&self) -> Result<StateStore, CommandError> {
        Ok(StateStore::open(&self.data_dir)?)
    }
}

/// A command that failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state files are unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// A certificate or key is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The staged settings cannot be served.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The listener could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::proxy::server::BindError),
    /// The listener could not be served.
    #[error(transparent)]
    Run(#[from] crate::proxy::server::RunError),
    /// The managed repository failed.
    #[error(transparent)]
    Managed(#[from] crate::repository::managed::ManagedError),
    /// The administrators file is unusable, or a name is wrong.
    #[error(transparent)]
    AdminUser(#[from] crate::control::state::admin_users::AdminUserError),
    /// The keystore is unusable.
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    /// Talking to a running server failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Cluster coordination failed.
    #[error(transparent)]
    Cluster(#[from] crate::control::cluster::ClusterError),
    /// The request cannot be done as asked: bad input, a conflict with what is staged or applied,
    /// something that does not exist, nothing pending. The message says what to do instead.
    #[error("{0}")]
    Invalid(String),
    /// Something pgssl needs is out of reach: the repository, the running server, the admin server.
    #[error("{0}")]
    Unavailable(String),
    /// pgssl itself failed (a file it owns, an internal task); the message says what to do.
    #[error("{0}")]
    Fault(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Who has to act on a failure (defined beside every layer's errors, in [`crate::error`]).
pub use crate::error::ErrorKind;

impl CommandError {
    /// The failure's kind; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        use crate::control::state::admin_users::AdminUserError as A;
        use crate::repository::managed::ManagedError as M;
        match self {
            CommandError::Config(_)
            | CommandError::Cert(_)
            | CommandError::Load(_)
            | CommandError::Invalid(_)
            | CommandError::State(StateError::Missing(_))
            | CommandError::Control(ControlError::AlreadyRunning(_))
            | CommandError::AdminUser(A::BadName(_) | A::Exists(_) | A::Unknown(_)) => {
                ErrorKind::User
            }
            CommandError::Cluster(e) if e.is_user_error() => ErrorKind::User,
            CommandError::Cluster(e) if e.is_unreachable() => ErrorKind::Upstream,
            CommandError::Unavailable(_)
            | CommandError::Control(ControlError::NotRunning)
            | CommandError::Managed(M::Unreachable { .. } | M::NotReady(..) | M::Client(_)) => {
                ErrorKind::Upstream
            }
            CommandError::State(_)
            | CommandError::Bind(_)
            | CommandError::Run(_)
            | CommandError::Managed(_)
            | CommandError::AdminUser(_)
            | CommandError::Keystore(_)
            | CommandError::Cluster(_)
            | CommandError::Control(_)
            | CommandError::Fault(_)
            | CommandError::Runtime(_) => ErrorKind::Server,
        }
    }

    /// Logs the failure at its kind's level and counts it: a user error is the caller's (INFO), a
    /// server fault or an unreachable upstream is the operator's (WARN).
    pub fn record(&self, operation: &str) {
        let kind = self.kind();
        metrics::counter!(crate::telemetry::names::COMMAND_FAILURES, "kind" => kind.as_str())
            .increment(1);
        match kind {
            ErrorKind::User => {
                tracing::info!(operation, kind = kind.as_str(), error = %self, "operation refused")
            }
            _ => tracing::warn!(operation, kind = kind.as_str(), error = %self, "operation failed"),
        }
    }
}

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

/// How `list` words a staged record (external SSL, custom CA, external service).
pub(crate) struct RecordListing<'a, T> {
    /// The heading.
    pub title: &'a str,
    /// The line when none is applied.
    pub none: &'a str,
    /// What a staged record will do, e.g. "add ca.pem".
    pub staged: &'a dyn Fn(&T) -> String,
    /// What a staged removal will do, e.g. "delete".
    pub removed: &'a str,
}

/// The answer of a `list` of an optional record: the applied one and any staged change, each with
/// the details a listing shows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordList<T> {
    /// The applied record, if any.
    pub applied: Option<T>,
    /// The staged change, if any.
    pub pending: Option<crate::control::state::security::Change<T>>,
}

impl<T> RecordList<T> {
    /// Reads the details of the applied record and of a staged one with `detail`.
    pub(crate) fn read<R>(
        applied: Option<&R>,
        pending: Option<&crate::control::state::security::Change<R>>,
        detail: impl Fn(&R) -> Result<T, CommandError>,
    ) -> Result<RecordList<T>, CommandError> {
        use crate::control::state::security::Change;
        Ok(RecordList {
            applied: applied.map(&detail).transpose()?,
            pending: match pending {
                Some(Change::Set(r)) => Some(Change::Set(detail(r)?)),
                Some(Change::Remove) => Some(Change::Remove),
                None => None,
            },
        })
    }
}

/// Renders a [`RecordList`]: the applied record, then any staged change, each record printed with
/// `print(out, record, indent)`.
pub(crate) fn list_record<T>(
    out: &Output,
    how: RecordListing<'_, T>,
    list: &RecordList<T>,
    print: impl Fn(&Output, &T, &str),
) {
    use crate::control::state::security::Change;
    say!(out, "{}", how.title);
    match &list.applied {
        Some(record) => print(out, record, "  "),
        None => say!(out, "  {}", how.none),
    }
    match &list.pending {
        Some(Change::Set(record)) => {
            say!(
                out,
                "  pending: {}; run 'pgssl pending-changes apply'",
                (how.staged)(record)
            );
            print(out, record, "    ");
        }
        Some(Change::Remove) => say!(
            out,
            "  pending: {}; run 'pgssl pending-changes apply'",
            how.removed
        ),
        None => {}
    }
}

/// One of the optional records a command family stages (external SSL, custom CA, external service):
/// where it is in the pending changes and in the applied state.
pub(crate) struct RecordSlot<T> {
    /// The record's staged change.
    pub pending: fn(
        &mut crate::control::state::PendingChanges,
    ) -> &mut Option<crate::control::state::security::Change<T>>,
    /// Whether a state has the record.
    pub present: fn(&crate::control::state::AppliedState) -> bool,
}

/// What staging the removal of a record found.
pub(crate) enum Removal {
    /// Neither applied nor staged: nothing was staged.
    Absent,
    /// Only staged: the staged record was dropped.
    DroppedStaged,
    /// Applied: its removal is staged.
    Staged,
}

/// Stages removing a record (or drops one that is only staged), and removes the copies and secrets
/// nothing refers to any more.
pub(crate) fn stage_removal<T>(
    ctx: &Context,
    slot: RecordSlot<T>,
) -> Result<Removal, CommandError> {
    use crate::control::state::security::Change;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let mut pending = store.pending()?;
    if !(slot.present)(&pending.merged_into(&applied)) {
        return Ok(Removal::Absent);
    }
    *(slot.pending)(&mut pending) = Some(Change::Remove);
    store.save_pending(&pending)?;
    prune(&store, &ctx.out);
    Ok(if (slot.present)(&applied) {
        Removal::Staged
    } else {
        Removal::DroppedStaged
    })
}

/// The last component of a path: how listings name a file the administrator gave, without saying where
/// it was.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The running `serve` on this data directory, as it reports itself (`None` when none runs).
pub(crate) fn running_serve(store: &StateStore) -> Result<Option<ServeStatus>, ControlError> {
    match crate::control::reload::request_status(
        &store.control_socket_path(),
        std::time::Duration::from_secs(5),
    ) {
        Ok(status) => Ok(Some(status)),
        Err(ControlError::NotRunning) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The external repository this data directory fronts, or `None` for the managed one: what the
/// running server uses (`serve --repository` may differ from the config), else the config.
pub(crate) fn external_upstream(ctx: &Context, running: Option<&ServeStatus>) -> Option<String> {
    match running {
        Some(status) => (!status.managed).then(|| status.upstream.clone()),
        None => ctx
            .config
            .repository
            .address
            .as_ref()
            .map(ToString::to_string),
    }
}

/// The external repository this data directory fronts, or `None` for the managed one — one answer
/// for `serve` and every command: what the running `serve` reports (`serve --repository` may name
/// one the config does not), else what `serve` would choose, the config's `repository.address`, else,
/// on a node that joined a cluster, the cluster's repository.
pub(crate) fn served_upstream(ctx: &Context, store: &StateStore) -> Option<String> {
    if let Ok(Some(running)) = running_serve(store) {
        return external_upstream(ctx, Some(&running));
    }
    ctx.config
        .repository
        .address
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| {
            crate::control::cluster::Membership::joined(&store.config_dir()).map(|m| m.repository)
        })
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
pub(crate) fn check_secret(secret: &Secret, what: &str) -> Result<(), CommandError> {
    if secret.expose().is_empty() || secret.expose().contains('\0') {
        return Err(CommandError::Invalid(format!(
            "{what} must not be empty or contain NUL bytes"
        )));
    }
    Ok(())
}

/// Runs a future on a small runtime; CLI commands only need one thread.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, CommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_one_kind_and_one_status() {
        let user = CommandError::Invalid("there are no pending changes to apply".into());
        let upstream = CommandError::Control(ControlError::NotRunning);
        let server = CommandError::Fault("the operation failed".into());
        assert_eq!(
            (user.kind(), user.kind().http_status()),
            (ErrorKind::User, 400)
        );
        assert_eq!(
            (upstream.kind(), upstream.kind().http_status()),
            (ErrorKind::Upstream, 503)
        );
        assert_eq!(
            (server.kind(), server.kind().http_status()),
            (ErrorKind::Server, 500)
        );
        let missing = CommandError::State(StateError::Missing("/nowhere".into()));
        assert_eq!(missing.kind(), ErrorKind::User);
        let corrupt = CommandError::State(StateError::Corrupt {
            path: "/x/applied.toml".into(),
            message: "bad".into(),
        });
        assert_eq!(corrupt.kind(), ErrorKind::Server);
    }
}
