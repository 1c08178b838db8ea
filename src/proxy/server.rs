//! The listener: accept loop, connection limit, control socket, graceful shutdown.
//!
//! [`Server::bind`] binds everything and loads the applied settings, so start-up errors surface before
//! anything is served; [`Server::run`] serves until its shutdown token is cancelled, then stops
//! accepting, gives open sessions the grace period, and closes what is left.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use crate::config::Config;
use crate::control::reload::{self, ControlError, Reloader};
use crate::control::state::{StateError, StateStore};
use crate::proxy::connection::{self, ConnectionContext};
use crate::proxy::settings::{LiveSettings, LoadError, SettingsCell};
use crate::proxy::upstream::UpstreamAddr;
use crate::proxy::upstream::tls::UpstreamTlsMode;

/// What a server is started with.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The data directory with the applied state.
    pub data_dir: PathBuf,
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The repository.
    pub upstream: UpstreamAddr,
    /// Whether the repository is the managed one (reported to `status` requests).
    pub managed: bool,
    /// Limits, timeouts and client users.
    pub config: Config,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The applied settings cannot be served.
    #[error("cannot serve the applied settings: {0}")]
    Load(#[from] LoadError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control socket cannot be bound.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Upstream TLS was configured for a Unix-socket upstream.
    #[error(
        "server.upstream_tls = {0} needs a TCP upstream (host:port); PostgreSQL does not use TLS on Unix sockets (set server.upstream_tls = \"disable\")"
    )]
    TlsOverUnixSocket(UpstreamTlsMode),
}

/// Refused connections lingering at once while their FATAL 53300 is delivered; past this, a refused
/// connection still gets its answer but is closed at once, so a flood cannot pile up tasks.
const MAX_LINGERING_REFUSALS: usize = 1024;

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    control: UnixListener,
    control_path: PathBuf,
    reloader: Reloader,
    cell: SettingsCell,
    max_startups: usize,
    workers: usize,
    grace: Duration,
    ctx: Arc<ConnectionContext>,
    managed: bool,
}

impl Server {
    /// Loads the applied settings and binds the listener and the control socket.
    pub async fn bind(options: ServerOptions) -> Result<Server, ServerError> {
        let store = StateStore::open(&options.data_dir)?;
        let upstream_tls = options.config.server.upstream_tls;
        if upstream_tls != UpstreamTlsMode::Disable
            && matches!(options.upstream, UpstreamAddr::Unix { .. })
        {
            return Err(ServerError::TlsOverUnixSocket(upstream_tls));
        }
        let settings = LiveSettings::load(&store, upstream_tls)?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let control_path = store.control_socket_path();
        let control = reload::bind(&control_path)?;
        let cell = SettingsCell::new(settings);
        let config = &options.config;
        Ok(Server {
            listener,
            control,
            control_path,
            reloader: Reloader::new(store, cell.clone(), upstream_tls),
            cell,
            max_startups: config.server.max_startups,
            workers: match config.server.worker_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            grace: config.shutdown_grace(),
            managed: options.managed,
            ctx: Arc::new(ConnectionContext {
                classifier: config.classifier(),
                upstream: options.upstream,
                handshake_timeout: config.handshake_timeout(),
                connect_timeout: config.connect_timeout(),
                draining: CancellationToken::new(),
                closing: CancellationToken::new(),
                sessions: Arc::new(Semaphore::new(config.server.max_connections)),
            }),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that reloads the applied state, as SIGHUP or the control socket do.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
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
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            listener,
            control,
            control_path,
            reloader,
            cell,
            max_startups,
            workers,
            grace,
            ctx,
            managed,
        } = self;
        let tracker = TaskTracker::new();
        let control_stop = CancellationToken::new();
        let status = reload::ServeStatus {
            listen: listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            upstream: ctx.upstream.to_string(),
            managed,
        };
        let control_task = tokio::spawn(reload::serve(
            control,
            control_path,
            reloader,
            status,
            control_stop.clone(),
        ));
        let shared = Arc::new(AcceptShared {
            cell,
            ctx: ctx.clone(),
            tracker: tracker.clone(),
            startups: Arc::new(Semaphore::new(max_startups)),
            lingering: Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS)),
            shutdown: shutdown.clone(),
        });
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
                    accept_loops
                        .push(pool.spawn_pinned_by_idx(move || accept_loop(copy, shared), idx));
                }
            }
            Err(e) => error!(error = %e, "cannot hand the listening socket to the workers"),
        }
        for accept in accept_loops {
            let _ = accept.await;
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
        control_stop.cancel();
        let _ = control_task.await;
        info!("pgssl stopped");
    }
}

/// Raises the process's open-file limit to its hard limit and returns it with the number of
/// descriptors the configured limits may need: one per connection starting up, two per session
/// (client and repository), and some room for the rest.
pub fn raise_open_file_limit(config: &Config) -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    let needed = config.server.max_startups as u64 + 2 * config.server.max_connections as u64 + 256;
    Ok((limit.rlim_cur, needed))
}

/// What every accept loop shares.
struct AcceptShared {
    cell: SettingsCell,
    ctx: Arc<ConnectionContext>,
    tracker: TaskTracker,
    startups: Arc<Semaphore>,
    lingering: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Accepts on one worker until shutdown; every connection is served on this worker's runtime.
async fn accept_loop(listener: std::net::TcpListener, shared: Arc<AcceptShared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "a worker cannot register the listening socket");
            return;
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
                match shared.startups.clone().try_acquire_owned() {
                    Ok(startup) => {
                        let settings = shared.cell.current();
                        let ctx = shared.ctx.clone();
                        let span = tracing::info_span!("connection", %peer);
                        shared.tracker.spawn(
                            connection::handle(tcp, peer, settings, ctx, startup).instrument(span),
                        );
                    }
                    Err(_) => {
                        connection::refuse_at_accept(tcp, peer, &shared.lingering, &shared.tracker)
                    }
                }
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
}
