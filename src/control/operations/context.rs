//! What every command runs with ([`Context`]): the data directory, the configuration, where its
//! report goes and the running node it may ask things of; and the hold a staging command takes on
//! the data directory ([`Staging`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::{CommandError, Output};
use crate::atomic::FileLock;
use crate::config::Config;
use crate::control::node::RunningNode;
use crate::control::reload::{ControlError, ServeStatus};
use crate::control::socket::SocketNode;
use crate::control::state::{AppliedState, PendingChanges, StateError, StateStore};

/// What every command runs with.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The loaded `--config`.
    pub config: Config,
    /// Where the command's report goes.
    pub out: Output,
    /// The `serve` running on the data directory: in-process inside `serve`, over the control
    /// socket from the CLI.
    pub node: Arc<dyn RunningNode>,
    /// Who runs the command, as a client whose session it ends is told: the signed-in
    /// administrator and their address, or the local account running the CLI.
    pub actor: String,
}

impl Context {
    /// A command on the data directory at `data_dir` from outside `serve`: the node it asks is the
    /// one listening on that directory's control socket, if any.
    pub fn local(data_dir: PathBuf, config: Config, out: Output) -> Context {
        let socket = StateStore::control_socket_path_in(&data_dir);
        Context {
            data_dir,
            config,
            out,
            node: Arc::new(SocketNode::new(socket)),
            actor: local_actor(),
        }
    }

    /// Opens the data directory's state, which must exist: a command that only reads or applies state
    /// says so for a mistyped `--data-dir` instead of creating an empty one and reporting "off".
    pub fn store(&self) -> Result<StateStore, CommandError> {
        Ok(StateStore::open_existing(&self.data_dir)?)
    }

    /// Opens the data directory's state, creating it: for `serve` and the commands that stage a change.
    pub fn store_or_create(&self) -> Result<StateStore, CommandError> {
        Ok(StateStore::open(&self.data_dir)?)
    }

    /// The running `serve` on this data directory, as it reports itself (`None` when none runs).
    pub async fn running(&self) -> Result<Option<ServeStatus>, ControlError> {
        self.node.status().await
    }
}

/// The local account running the CLI, by its effective uid (not `$USER`, which anyone sets):
/// `root (uid 0) on the pgssl host (CLI)`.
fn local_actor() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let name = account_name(uid).unwrap_or_else(|| "?".into());
    format!("{name} (uid {uid}) on the pgssl host (CLI)")
}

/// The name of the account `uid`, from the password database.
fn account_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter for getpwuid_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `buf` outlives the read of `pw_name`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Takes the data directory's lock, which serialises the commands that change it. Another command
/// may hold it for as long as it runs (a rotation, a cluster commit), and another operation of
/// this very process may be what holds it: the wait is [`blocking`].
pub(crate) fn lock(store: &StateStore) -> Result<FileLock, StateError> {
    blocking(|| store.lock())
}

/// Runs `work`, which may take long without awaiting anything (waiting for a lock another command
/// holds; deriving the key of an encrypted file whose cost the caller's file chose), without
/// holding up the runtime's other tasks: `serve`'s runtime has one worker, which also answers the
/// admin server, the control socket and the signals. On a multi-threaded runtime this worker's
/// tasks go to another thread meanwhile (`block_in_place`); elsewhere (a test's current-thread
/// runtime, no runtime) `work` just runs.
pub(crate) fn blocking<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A staging command's hold on the data directory: its lock, and the applied state and staged
/// changes as they were when it was taken; [`Staging::save`] writes the changes back.
pub(crate) struct Staging {
    /// The data directory's state.
    pub store: StateStore,
    /// The applied state.
    pub applied: AppliedState,
    /// The staged changes, to change and save.
    pub pending: PendingChanges,
    _lock: FileLock,
}

impl Staging {
    /// Takes `store`'s lock and reads its state.
    pub fn begin(store: StateStore) -> Result<Staging, CommandError> {
        let lock = lock(&store)?;
        Ok(Staging {
            applied: store.applied()?,
            pending: store.pending()?,
            store,
            _lock: lock,
        })
    }

    /// The state once the staged changes are applied.
    pub fn next(&self) -> AppliedState {
        self.pending.merged_into(&self.applied)
    }

    /// Writes the staged changes.
    pub fn save(&self) -> Result<(), CommandError> {
        Ok(self.store.save_pending(&self.pending)?)
    }
}

/// The external repository this data directory fronts, or `None` for the managed one: what the
/// running server uses (`serve --repository` may differ from the config), else the config.
pub(crate) fn external_repository(ctx: &Context, running: Option<&ServeStatus>) -> Option<String> {
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
/// one the config does not), else what `serve` would choose, the config's `repository.address`,
/// else, on a node that joined a cluster, the cluster's repository.
pub(crate) async fn served_repository(ctx: &Context, store: &StateStore) -> Option<String> {
    if let Ok(Some(running)) = ctx.running().await {
        return external_repository(ctx, Some(&running));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// While one operation waits for the data directory's lock, the one-worker runtime (as in
    /// `serve`) keeps running everything else, among which may be what holds the lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_lock_wait_leaves_the_runtime_to_its_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let held = lock(&store).unwrap();
        let (started, waits) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move {
                let _ = started.send(());
                lock(&store).map(drop)
            }
        });
        waits.await.unwrap();
        // Another task is served meanwhile (watched from this thread, which is not the worker);
        // then the holder lets go and the waiter gets the lock.
        let (served, answer) = std::sync::mpsc::channel();
        tokio::spawn(async move { served.send("served") });
        assert_eq!(answer.recv_timeout(Duration::from_secs(10)), Ok("served"));
        assert!(!waiting.is_finished());
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(got.unwrap().unwrap().is_ok());
    }
}
