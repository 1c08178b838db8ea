//! The listener: accept loop, connection limits, graceful shutdown.
//!
//! [`Server::bind`] binds the listening socket, so start-up errors surface before anything is served;
//! [`Server::run`] serves until its shutdown token is cancelled, then stops accepting, gives open
//! sessions the grace period, and closes what is left. What it serves comes from the
//! [`SettingsCell`] it is given; the control plane swaps that cell's snapshot on reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use crate::proxy::auth::AuthPlan;
use crate::proxy::auth::lockout::{Lockout, LockoutPolicy};
use crate::proxy::backend::cancel::CancelKeys;
use crate::proxy::backend::maintain::{self, Housekeeping};
use crate::proxy::backend::{Pool, PoolOptions};
use crate::proxy::connection::{self, ConnectionContext};
use crate::proxy::metrics::{Limit, ProxyMetrics};
use crate::proxy::policy::UserClassifier;
use crate::proxy::prefill::{self, Prefill};
use crate::proxy::repository::hosts::Hosts;
use crate::proxy::settings::{LiveSettings, SettingsCell};
use crate::proxy::startups::Startups;

/// Limits and timeouts of the data plane (`[server]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Client sessions at once (`server.max_connections`).
    pub max_connections: usize,
    /// Connections still negotiating at once (`server.max_startups`); past it the oldest is closed.
    pub max_startups: usize,
    /// Accept-to-start-up limit.
    pub handshake_timeout: Duration,
    /// Limit for connecting to the repository.
    pub connect_timeout: Duration,
    /// Time open sessions get after shutdown begins.
    pub shutdown_grace: Duration,
    /// Accepting workers, each a single-threaded runtime (at least 1).
    pub workers: usize,
    /// Failed-login limiting per (address, user).
    pub lockout: LockoutPolicy,
    /// Sources whose connections start with a PROXY protocol v2 header (`server.proxy_protocol_from`).
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

/// What a server is started with.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The repository's hosts (one, or the hosts of a replicated cluster, probed by the composition
    /// root).
    pub repository: Arc<Hosts>,
    /// Who is a client user.
    pub classifier: UserClassifier,
    /// Limits and timeouts.
    pub limits: Limits,
    /// How sessions authenticate.
    pub auth: AuthPlan,
    /// Warm repository sessions (used in proxy mode).
    pub pool: PoolOptions,
    /// The key client addresses travel between cluster nodes under ([`crate::proxy::relayed_client`]).
    pub relay_key: Option<crate::proxy::relayed_client::RelayKey>,
    /// Whether the repository is another node of this cluster (the first node's listener in front
    /// of its managed repository): client addresses are relayed to it, and a cancel key minted by
    /// this node is never passed to it.
    pub repository_is_node: bool,
    /// The client's identity for the repository (`pgssl.*`); `None` when it is off.
    pub identity: Option<crate::proxy::identity::IdentityOptions>,
}

impl ServerOptions {
    /// What every connection of a server with these options shares.
    pub(crate) fn context(self) -> ConnectionContext {
        let limits = self.limits;
        ConnectionContext {
            classifier: self.classifier,
            // Every session's epoch is a child of it: the end of the grace period ends them all.
            closing: self.repository.closing().clone(),
            repository: self.repository,
            handshake_timeout: limits.handshake_timeout,
            connect_timeout: limits.connect_timeout,
            draining: CancellationToken::new(),
            sessions: Arc::new(Semaphore::new(limits.max_connections)),
            metrics: ProxyMetrics::register(),
            auth: self.auth,
            lockout: Lockout::new(limits.lockout),
            prefill: Prefill::new(self.pool.min_warm.clone()),
            pool: Pool::new(self.pool),
            cancels: Arc::new(CancelKeys::default()),
            cancel_forwards: tokio::sync::Semaphore::new(
                crate::proxy::cancel_route::MAX_CANCEL_FORWARDS,
            ),
            proxy_protocol_from: limits.proxy_protocol_from,
            relay_key: self.relay_key,
            repository_is_node: self.repository_is_node,
            // A node in front of another node leaves them to that node, which knows the client.
            identity: self
                .identity
                .filter(|_| !self.repository_is_node)
                .map(Arc::new),
            registry: crate::proxy::sessions::Sessions::new(),
            inventory: Default::default(),
        }
    }
}

/// No worker could accept on the listening socket.
#[derive(Debug, thiserror::Error)]
#[error("no worker could accept connections on the listening socket (see the errors logged above)")]
pub struct RunError;

/// The listen address cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    cell: SettingsCell,
    max_startups: usize,
    workers: usize,
    grace: Duration,
    ctx: Arc<ConnectionContext>,
}

impl Server {
    /// Binds the listener; connections will be served with `cell`'s current settings.
    pub async fn bind(options: ServerOptions, cell: SettingsCell) -> Result<Server, BindError> {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| BindError {
                addr: options.listen,
                source,
            })?;
        let limits = &options.limits;
        let (max_startups, workers, grace) = (
            limits.max_startups,
            limits.workers.max(1),
            limits.shutdown_grace,
        );
        Ok(Server {
            listener,
            cell,
            max_startups,
            workers,
            grace,
            ctx: Arc::new(options.context()),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The repository's hosts this server relays to.
    pub fn repository(&self) -> Arc<Hosts> {
        self.ctx.repository.clone()
    }

    /// The warm pool (for `pool list`).
    pub fn pool(&self) -> Arc<Pool> {
        self.ctx.pool.clone()
    }

    /// Who has logged in (for the pre-flight report).
    pub fn inventory(&self) -> Arc<crate::proxy::inventory::Inventory> {
        self.ctx.inventory.clone()
    }

    /// The sessions it serves (for `sessions list` and `sessions terminate`).
    pub fn sessions(&self) -> Arc<crate::proxy::sessions::Sessions> {
        self.ctx.registry.clone()
    }

    /// The cancel keys (a cluster node's id and peers are set on it).
    pub fn cancel_keys(&self) -> Arc<CancelKeys> {
        self.ctx.cancels.clone()
    }

    /// The settings cell (the probes read the repository TLS in force from it).
    pub fn settings_cell(&self) -> SettingsCell {
        self.cell.clone()
    }

    /// The settings new connections get now.
    pub fn settings(&self) -> Arc<LiveSettings> {
        self.cell.current()
    }

    /// Serves until `shutdown` is cancelled, then drains.
    ///
    /// Connections are accepted and served on one single-threaded runtime per worker
    /// (`server.worker_threads`, default one per core), all accepting on the same listening socket: a
    /// session's socket events are then handled by the thread that owns it, without the cross-thread
    /// wake-ups of a work-stealing pool, which measurably cost steady-state throughput.
    ///
    /// Fails when no worker could accept on the listening socket; the open sessions of any that
    /// could are still drained first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let Server {
            listener,
            cell,
            max_startups,
            workers,
            grace,
            ctx,
        } = self;
        let tracker = TaskTracker::new();
        let shared = Arc::new(AcceptShared {
            cell,
            ctx: ctx.clone(),
            tracker: tracker.clone(),
            startups: Startups::new(max_startups),
            shutdown: shutdown.clone(),
        });
        let sweeping = CancellationToken::new();
        let sweeper = spawn_housekeeping(&shared.cell, &ctx, sweeping.clone());
        let pool = tokio_util::task::LocalPoolHandle::new(workers);
        let mut accept_loops = Vec::with_capacity(workers);
        match listener.into_std() {
            Ok(listener) => {
                for idx in 0..workers {
                    let copy = match listener.try_clone() {
                        Ok(copy) => copy,
                        Err(e) => {
                            error!(error = %e, "cannot share the listening socket with a worker");
                            continue;
                        }
                    };
                    let shared = shared.clone();
                    accept_loops.push(
                        pool.spawn_pinned_by_idx(move || accept_loop(copy, shared, idx), idx),
                    );
                }
            }
            Err(e) => error!(error = %e, "cannot hand the listening socket to the workers"),
        }
        let mut accepted_until_shutdown = false;
        for accept in accept_loops {
            accepted_until_shutdown |= matches!(accept.await, Ok(true));
        }
        ctx.draining.cancel();
        tracker.close();
        let open = tracker.len();
        if open > 0 {
            info!(
                open,
                grace_secs = grace.as_secs(),
                "stopped accepting; waiting for open sessions to finish"
            );
        }
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                open = tracker.len(),
                "shutdown grace period over; closing the remaining sessions"
            );
            ctx.closing.cancel();
            tracker.wait().await;
        }
        sweeping.cancel();
        let _ = sweeper.await;
        info!("the proxy stopped");
        if accepted_until_shutdown {
            Ok(())
        } else {
            Err(RunError)
        }
    }
}

/// Starts the pool's housekeeping ([`maintain::run`]) and its top-ups ([`prefill::run`]) until
/// `stop`.
fn spawn_housekeeping(
    cell: &SettingsCell,
    ctx: &Arc<ConnectionContext>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let housekeeping = Housekeeping {
        cell: cell.clone(),
        lookup: match &ctx.auth {
            AuthPlan::Proxy { lookup, .. } => lookup.clone(),
            AuthPlan::Passthrough => None,
        },
        metrics: ctx.metrics.pool.clone(),
    };
    let sweep = maintain::run(ctx.pool.clone(), housekeeping, stop.clone());
    let top_up = prefill::run(ctx.clone(), cell.clone(), stop);
    tokio::spawn(async move {
        tokio::join!(sweep, top_up);
    })
}

/// What every accept loop shares.
struct AcceptShared {
    cell: SettingsCell,
    ctx: Arc<ConnectionContext>,
    tracker: TaskTracker,
    startups: Arc<Startups>,
    shutdown: CancellationToken,
}

/// Accepts on one worker until shutdown; every connection is served on this worker's runtime.
/// Returns whether it accepted until shutdown (false: it could not start).
async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<AcceptShared>,
    worker: usize,
) -> bool {
    crate::proxy::backend::pool::set_worker(worker);
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "a worker cannot register the listening socket");
            return false;
        }
    };
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(5);
                let (startup, evicted) = shared.startups.admit();
                if evicted {
                    shared
                        .ctx
                        .metrics
                        .over_limit(Limit::MaxStartups)
                        .increment(1);
                }
                let settings = shared.cell.current();
                let ctx = shared.ctx.clone();
                let span = tracing::info_span!("connection", %peer);
                shared
                    .tracker
                    .spawn(connection::handle(tcp, peer, settings, ctx, startup).instrument(span));
            }
            // EMFILE and friends are transient: back off instead of ending the server. Another
            // worker winning the race for a connection shows up as WouldBlock and is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                error!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    true
}
