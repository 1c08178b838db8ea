//! The running node an operation may ask things of: the `serve` on its data directory.
//!
//! Operations see it as one small trait, [`RunningNode`], in their
//! [`Context`](crate::control::operations::Context). Inside `serve` (its admin server and API) it is
//! [`LocalNode`], which answers in-process from the node's own reloader, status and pool; from the
//! CLI it is [`SocketNode`](crate::control::socket::SocketNode), which asks the same questions over
//! the control socket (`<data-dir>/run/control.sock`), where a `LocalNode` answers them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::warn;

use crate::control::reload::{ControlError, ReloadReport, Reloader, ServeStatus};
use crate::proxy::backend::Pool;
use crate::proxy::backend::pool::KeyStats;
use crate::proxy::inventory::{Inventory, Seen};
use crate::proxy::repository::hosts::{HostStatus, Hosts};
use crate::proxy::sessions::{Selector, SessionInfo, Sessions};

/// What a [`RunningNode`] question resolves to.
pub type NodeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlError>> + Send + 'a>>;

/// The `serve` running on a data directory, as operations may ask it: reload, status, pool, hosts
/// and client sessions. Every answer is `None` when no `serve` runs there.
pub trait RunningNode: std::fmt::Debug + Send + Sync {
    /// What it runs with (`serve --upstream` may differ from the config).
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>>;

    /// Re-reads the applied state and swaps it in for new connections; an error when it refuses
    /// the state (it keeps serving the previous one).
    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>>;

    /// What its pool of warm repository sessions holds.
    fn pool(&self) -> NodeFuture<'_, Option<PoolSnapshot>>;

    /// Its repository hosts: role, timeline, lag, sessions and warm backends on each.
    fn repository_hosts(&self) -> NodeFuture<'_, Option<Vec<HostStatus>>>;

    /// The client sessions it serves that `selector` names, oldest first.
    fn sessions(&self, selector: Selector) -> NodeFuture<'_, Option<Vec<SessionInfo>>>;

    /// Ends the client sessions `selector` names on `by`'s word (each client is told, with FATAL
    /// 57P01); the ids it ended.
    fn terminate(&self, selector: Selector, by: String) -> NodeFuture<'_, Option<Vec<u64>>>;

    /// The clients it has seen log in within the inventory's window.
    fn inventory(&self) -> NodeFuture<'_, Option<Vec<Seen>>>;
}

/// A running node's pool, as `pool list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolSnapshot {
    /// Whether it keeps sessions warm (proxy mode with `pool.enabled`).
    pub enabled: bool,
    /// Per (role, database), sorted.
    pub keys: Vec<KeyStats>,
    /// How long clients hold a backend unless a rule says otherwise (`pool.mode`).
    #[serde(default)]
    pub mode: crate::proxy::backend::pool::PoolMode,
    /// `pool.rules`, in order.
    #[serde(default)]
    pub rules: Vec<crate::proxy::backend::pool::PoolRule>,
    /// Clients waiting for a backend now.
    #[serde(default)]
    pub waiting: usize,
}

/// The node this process runs, answered in-process: what `serve` hands its admin server, and
/// what answers its control socket.
#[derive(Debug, Clone)]
pub struct LocalNode {
    reloader: Reloader,
    status: ServeStatus,
    pool: Arc<Pool>,
    hosts: Arc<Hosts>,
    sessions: Arc<Sessions>,
    inventory: Arc<Inventory>,
}

impl LocalNode {
    /// The node that reloads with `reloader`, reports `status`, whose pool is `pool`, whose
    /// repository hosts are `hosts`, and whose client sessions and inventory of logins are
    /// `sessions`.
    pub fn new(
        reloader: Reloader,
        status: ServeStatus,
        pool: Arc<Pool>,
        hosts: Arc<Hosts>,
        sessions: (Arc<Sessions>, Arc<Inventory>),
    ) -> LocalNode {
        LocalNode {
            reloader,
            status,
            pool,
            hosts,
            sessions: sessions.0,
            inventory: sessions.1,
        }
    }
}

impl RunningNode for LocalNode {
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>> {
        Box::pin(async { Ok(Some(self.status.clone())) })
    }

    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>> {
        Box::pin(async {
            // The reloader loads off the runtime's one worker (see Reloader::reload).
            match self.reloader.reload() {
                Ok(settings) => Ok(Some(ReloadReport {
                    mode: settings.mode,
                    cert_fingerprint: settings.cert_fingerprint.clone(),
                })),
                Err(e) => {
                    warn!(error = %e, "reload refused; keeping the previous settings");
                    // One line: the answer travels as one line of the control socket, and the
                    // CLI prints it as one.
                    Err(ControlError::Refused(
                        e.to_string().replace(['\n', '\r'], " "),
                    ))
                }
            }
        })
    }

    fn pool(&self) -> NodeFuture<'_, Option<PoolSnapshot>> {
        Box::pin(async {
            Ok(Some(PoolSnapshot {
                enabled: self.pool.options().enabled,
                keys: self.pool.stats(),
                mode: self.pool.options().mode,
                rules: self.pool.options().rules.clone(),
                waiting: self.pool.waiting(),
            }))
        })
    }

    fn repository_hosts(&self) -> NodeFuture<'_, Option<Vec<HostStatus>>> {
        Box::pin(async {
            let warm = self.pool.idle_per_host(self.hosts.len());
            Ok(Some(self.hosts.status(&warm)))
        })
    }

    fn sessions(&self, selector: Selector) -> NodeFuture<'_, Option<Vec<SessionInfo>>> {
        Box::pin(async move {
            let host_name = |i: usize| self.hosts.connector(i).map(|c| c.to_string());
            let listed = self.sessions.select(&selector);
            Ok(Some(listed.iter().map(|e| e.info(host_name)).collect()))
        })
    }

    fn terminate(&self, selector: Selector, by: String) -> NodeFuture<'_, Option<Vec<u64>>> {
        Box::pin(async move {
            let ended = self.sessions.terminate(&selector, &by);
            tracing::info!(by = %crate::telemetry::LogSafe(&by), sessions = ?ended,
                           "terminating client sessions on an administrator's word");
            Ok(Some(ended))
        })
    }

    fn inventory(&self) -> NodeFuture<'_, Option<Vec<Seen>>> {
        Box::pin(async {
            let start = crate::control::inventory::window_start();
            Ok(Some(self.inventory.snapshot(start)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::time::Duration;

    use super::*;
    use crate::control::state::{AppliedState, StateStore};
    use crate::proxy::backend::pool::PoolOptions;
    use crate::proxy::repository::tls::RepositoryTlsMode;
    use crate::proxy::settings::SettingsCell;

    /// While a reload is held up loading the state (as by an encrypted key's derivation), the
    /// one-worker runtime (as in `serve`) keeps answering everything else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_reload_leaves_the_runtime_to_its_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let tls = RepositoryTlsMode::default();
        let initial = crate::control::settings::load(&store, tls, None).unwrap();
        let mode = initial.mode;
        let node = LocalNode::new(
            Reloader::new(store.clone(), SettingsCell::new(initial), tls, None, None),
            ServeStatus {
                listen: "127.0.0.1:5432".parse().unwrap(),
                upstream: "managed".into(),
                managed: true,
            },
            Pool::new(PoolOptions::default()),
            Arc::new(Hosts::single(Arc::new(
                crate::proxy::repository::Target::new(
                    crate::proxy::repository::RepositoryAddr::Tcp("h:5432".into()),
                ),
            ))),
            (Sessions::new(), Default::default()),
        );
        // The applied state becomes a FIFO: loading it waits, without awaiting, until this test
        // writes it.
        let applied = store.config_dir().join("applied.toml");
        std::fs::remove_file(&applied).ok();
        let path = CString::new(applied.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let (started, reloads) = tokio::sync::oneshot::channel();
        let reloading = tokio::spawn(async move {
            let _ = started.send(());
            node.reload().await
        });
        reloads.await.unwrap();
        // From here the reload task does not await until it has loaded: another task is served
        // only if the load left the worker (watched from this thread, which is not the worker).
        let (served, answer) = std::sync::mpsc::channel();
        tokio::spawn(async move { served.send("served") });
        let meanwhile = answer.recv_timeout(Duration::from_secs(10));
        let still_loading = !reloading.is_finished();
        // Written before asserting, so that a failure frees the worker instead of hanging.
        std::fs::write(&applied, toml::to_string(&AppliedState::default()).unwrap()).unwrap();
        assert_eq!(meanwhile, Ok("served"));
        assert!(still_loading);
        let got = tokio::time::timeout(Duration::from_secs(10), reloading).await;
        let report = got.unwrap().unwrap().unwrap().unwrap();
        assert_eq!(report.mode, mode);
    }
}
