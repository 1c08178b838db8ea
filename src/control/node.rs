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

/// What a [`RunningNode`] question resolves to.
pub type NodeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlError>> + Send + 'a>>;

/// The `serve` running on a data directory, as operations may ask it: reload, status, pool (and,
/// later, its sessions). Every answer is `None` when no `serve` runs there.
pub trait RunningNode: std::fmt::Debug + Send + Sync {
    /// What it runs with (`serve --upstream` may differ from the config).
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>>;

    /// Re-reads the applied state and swaps it in for new connections; an error when it refuses
    /// the state (it keeps serving the previous one).
    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>>;

    /// What its pool of warm repository sessions holds.
    fn pool(&self) -> NodeFuture<'_, Option<PoolSnapshot>>;
}

/// A running node's pool, as `pool list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolSnapshot {
    /// Whether it keeps sessions warm (proxy mode with `pool.enabled`).
    pub enabled: bool,
    /// Per (role, database), sorted.
    pub keys: Vec<KeyStats>,
}

/// The node this process runs, answered in-process: what `serve` hands its admin server, and
/// what answers its control socket.
#[derive(Debug, Clone)]
pub struct LocalNode {
    reloader: Reloader,
    status: ServeStatus,
    pool: Arc<Pool>,
}

impl LocalNode {
    /// The node that reloads with `reloader`, reports `status` and whose pool is `pool`.
    pub fn new(reloader: Reloader, status: ServeStatus, pool: Arc<Pool>) -> LocalNode {
        LocalNode {
            reloader,
            status,
            pool,
        }
    }
}

impl RunningNode for LocalNode {
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>> {
        Box::pin(async { Ok(Some(self.status.clone())) })
    }

    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>> {
        Box::pin(async {
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
            }))
        })
    }
}
