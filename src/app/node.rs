//! One pgssl node: the applied state, the settings snapshot the control plane builds from it, the
//! reload socket, and the proxy server serving that snapshot. `pgssl serve` runs one (after starting
//! a managed repository when there is no upstream); the integration tests bind one in-process.

use crate::proxy::identity::IdentityOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::control::node::LocalNode;
use crate::control::operations::CommandError;
use crate::control::reload::{ControlError, Reloader, ServeStatus};
use crate::control::settings::{self, LoadError};
use crate::control::socket;
use crate::control::state::{StateError, StateStore};
use crate::proxy::auth::AuthPlan;
use crate::proxy::repository::hosts::{Hosts, HostsOptions, Targets};
use crate::proxy::repository::tls::RepositoryTlsMode;
use crate::proxy::repository::{RepositoryAddr, RepositoryConnector, Target};
use crate::proxy::server::{BindError, Limits, RunError, Server, ServerOptions};
use crate::proxy::settings::{LiveSettings, SettingsCell};
use crate::repository::patroni::{PatroniClient, PatroniError, PatroniOptions};
use crate::repository::probe::ProbeOptions;

/// What a node is started with.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The data directory with the applied state.
    pub data_dir: PathBuf,
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The repository: one address, or the hosts of one replicated cluster (never empty).
    pub repository: Vec<RepositoryAddr>,
    /// Whether the repository is the managed one (reported to `status` requests).
    pub managed: bool,
    /// Limits, timeouts and client users.
    pub config: Config,
    /// How sessions authenticate.
    pub auth: AuthPlan,
    /// The key client addresses travel between cluster nodes under.
    pub relay_key: Option<crate::proxy::relayed_client::RelayKey>,
    /// Whether the repository is another node of this cluster.
    pub repository_is_node: bool,
    /// The password of `repository.probe_user`, which probes the hosts when there are several
    /// (`PGSSL_UPSTREAM_PASSWORD` for `serve`).
    pub probe_password: Option<crate::keystore::Secret>,
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
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The control socket cannot be bound.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// `repository.patroni` cannot be used.
    #[error("repository.patroni: {0}")]
    Patroni(#[from] PatroniError),
    /// Repository TLS was configured for a repository on a Unix socket.
    #[error(
        "repository.tls = {0} needs a TCP repository address (host:port); PostgreSQL does not use TLS on Unix sockets (set repository.tls = \"disable\")"
    )]
    TlsOverUnixSocket(RepositoryTlsMode),
}

impl From<ServerError> for CommandError {
    fn from(e: ServerError) -> CommandError {
        match e {
            ServerError::State(e) => e.into(),
            ServerError::Load(e) => e.into(),
            ServerError::Bind(e) => e.into(),
            ServerError::Control(e) => e.into(),
            e @ ServerError::Patroni(_) => ConfigError::Invalid {
                key: "repository.patroni",
                message: e.to_string(),
            }
            .into(),
            e @ ServerError::TlsOverUnixSocket(_) => ConfigError::Invalid {
                key: "repository.tls",
                message: e.to_string(),
            }
            .into(),
        }
    }
}

/// A bound node, ready to run.
#[derive(Debug)]
pub struct Node {
    server: Server,
    control: UnixListener,
    control_path: PathBuf,
    reloader: Reloader,
    managed: bool,
    probe: ProbeOptions,
}

impl Node {
    /// Loads the applied settings and binds the listener and the control socket.
    pub async fn bind(options: NodeOptions) -> Result<Node, ServerError> {
        let store = StateStore::open(&options.data_dir)?;
        let repository_tls = options.config.repository.tls;
        if repository_tls != RepositoryTlsMode::Disable
            && options
                .repository
                .iter()
                .any(|a| matches!(a, RepositoryAddr::Unix { .. }))
        {
            return Err(ServerError::TlsOverUnixSocket(repository_tls));
        }
        let hosts = hosts(&options);
        let lookups = lookup_builder(&options, &hosts);
        let cell = SettingsCell::new(settings::load(&store, repository_tls, lookups.as_ref())?);
        let config = &options.config;
        let verifiers = match &options.auth {
            AuthPlan::Proxy { lookup, .. } => lookup.clone(),
            AuthPlan::Passthrough => None,
        };
        let server = Server::bind(
            ServerOptions {
                listen: options.listen,
                repository: hosts,
                classifier: config.classifier(),
                limits: limits(config),
                pool: pool_options(config, &options.auth),
                auth: options.auth,
                relay_key: options.relay_key,
                repository_is_node: options.repository_is_node,
                identity: config.identity.enabled.then(|| IdentityOptions {
                    node: crate::control::cluster::Membership::joined(&store.config_dir())
                        .map(|m| m.node_name)
                        .unwrap_or_else(crate::control::cluster::membership::default_node_name),
                }),
            },
            cell.clone(),
        )
        .await?;
        let control_path = store.control_socket_path();
        let control = socket::bind(&control_path)?;
        Ok(Node {
            server,
            control,
            control_path,
            reloader: Reloader::new(store, cell, repository_tls, lookups, verifiers),
            managed: options.managed,
            probe: probe_options(&options.config, options.probe_password.clone())?,
        })
    }

    /// The repository's hosts as configured (`h1:5432,h2:5432`).
    pub fn repository_addresses(&self) -> String {
        self.server.repository().addresses()
    }

    /// The server's cancel keys.
    pub fn cancel_keys(&self) -> Arc<crate::proxy::backend::cancel::CancelKeys> {
        self.server.cancel_keys()
    }

    /// Who has logged in (the pre-flight report's inventory).
    pub fn inventory(&self) -> Arc<crate::proxy::inventory::Inventory> {
        self.server.inventory()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// A handle that reloads the applied state, as SIGHUP or the control socket do.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The settings new connections get now.
    pub fn settings(&self) -> Arc<LiveSettings> {
        self.server.settings()
    }

    /// The node as operations ask it in-process (the admin server's), and as its control socket
    /// answers: reload, status, pool.
    pub fn handle(&self) -> LocalNode {
        let status = ServeStatus {
            listen: self
                .server
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            upstream: self.server.repository().addresses(),
            managed: self.managed,
        };
        LocalNode::new(
            self.reloader.clone(),
            status,
            self.server.pool(),
            self.server.repository(),
            (self.server.sessions(), self.server.inventory()),
        )
    }

    /// Serves until `shutdown` is cancelled, answering the control socket meanwhile.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let node = Arc::new(self.handle());
        let control_stop = CancellationToken::new();
        let control_task = tokio::spawn(socket::serve(
            self.control,
            self.control_path,
            node,
            control_stop.clone(),
        ));
        // With several repository hosts, each is probed until the server has stopped.
        let probing = tokio::spawn(crate::repository::probe::run(
            self.server.repository(),
            self.probe.clone(),
            self.server.settings_cell(),
            control_stop.clone(),
        ));
        let served = self.server.run(shutdown).await;
        control_stop.cancel();
        let _ = control_task.await;
        let _ = probing.await;
        tracing::info!("pgssl stopped");
        served
    }
}

/// The repository's hosts, routed by `[repository]`.
fn hosts(options: &NodeOptions) -> Arc<Hosts> {
    let r = &options.config.repository;
    let connectors = options
        .repository
        .iter()
        .map(|a| Arc::new(Target::new(a.clone())) as Arc<dyn RepositoryConnector>)
        .collect();
    Arc::new(Hosts::new(
        connectors,
        HostsOptions {
            failover_wait: r.failover_wait,
            max_standby_lag: r.max_standby_lag,
            targets: Targets::new(r.targets.clone()),
        },
    ))
}

/// How the hosts are probed (only when there are several).
fn probe_options(
    config: &Config,
    password: Option<crate::keystore::Secret>,
) -> Result<ProbeOptions, ServerError> {
    let r = &config.repository;
    let patroni = match r.patroni.is_empty() {
        true => None,
        false => Some(Arc::new(PatroniClient::new(PatroniOptions::from_config(
            config,
        ))?)),
    };
    Ok(ProbeOptions {
        patroni,
        interval: r.probe_interval,
        timeout: r.probe_timeout,
        user: r.probe_user.clone(),
        database: r.probe_database.clone(),
        password,
    })
}

/// How a lookup user reaches an external repository, when pgssl may authenticate its clients.
fn lookup_builder(options: &NodeOptions, hosts: &Arc<Hosts>) -> Option<settings::LookupBuilder> {
    let may_proxy = matches!(options.auth, AuthPlan::Proxy { lookup: None, .. });
    if !may_proxy || options.managed {
        return None;
    }
    let (hosts, auth) = (hosts.clone(), options.config.auth.clone());
    let timeout = options.config.connect_timeout();
    Some(settings::LookupBuilder(Arc::new(
        move |credentials, tls| {
            let query = auth
                .lookup_query
                .clone()
                .unwrap_or_else(|| crate::repository::lookup::DEFAULT_LOOKUP_QUERY.to_string());
            let lookup = Arc::new(crate::repository::lookup::ExternalLookup::new(
                crate::repository::lookup::ExternalLookupOptions {
                    hosts: hosts.clone(),
                    tls: tls.clone(),
                    user: credentials.username,
                    password: credentials.password,
                    database: auth.lookup_database.clone(),
                    query,
                    timeout,
                },
            ));
            crate::proxy::auth::cache::cached(lookup, auth.lookup_cache_ttl())
        },
    )))
}

/// The data plane's limits from `[server]`.
pub fn limits(config: &Config) -> Limits {
    Limits {
        max_connections: config.server.max_connections,
        max_startups: config.server.max_startups,
        handshake_timeout: config.handshake_timeout(),
        connect_timeout: config.connect_timeout(),
        shutdown_grace: config.shutdown_grace(),
        workers: match config.server.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        proxy_protocol_from: config.server.proxy_protocol_from.clone(),
        lockout: crate::proxy::auth::lockout::LockoutPolicy {
            max_failures: config.auth.max_failures,
            window: config.auth.failure_window,
            lockout: config.auth.lockout,
        },
    }
}

/// The pool's options: on as configured when pgssl authenticates clients itself; in passthrough
/// nothing is kept (pgssl cannot log in again without the client) and nothing is bounded beyond
/// what it was before the pool.
fn pool_options(config: &Config, auth: &AuthPlan) -> crate::proxy::backend::PoolOptions {
    let mut options = config.pool.options(config.repository.max_connections);
    if matches!(auth, AuthPlan::Passthrough) || !config.pool.enabled {
        options.enabled = false;
        options.max_idle = 0;
        options.max_backends = usize::MAX;
    }
    options
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
