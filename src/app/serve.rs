//! `pgssl serve [--listen ADDR] [--repository ADDR]`: run the proxy until SIGINT or SIGTERM, in front
//! of an external repository or of a managed repository that it starts and stops itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::AdminServer;
use crate::app::node::{Node, NodeOptions, ServerError};
use crate::config::{self, AuthMode, RepositoryAddress};
use crate::control::operations::{CommandError, Context};
use crate::control::state::StateStore;
use crate::control::state::admin_users::AdminUsers;
use crate::keystore::Keystore;
use crate::proxy::auth::AuthPlan;
use crate::proxy::repository::RepositoryAddr;
use crate::repository::lookup::ManagedLookup;
use crate::repository::managed::{self, ManagedRepository, SUPERUSER, role_secret_name};

mod error;
pub use error::ServeError;

/// The command-line flags of `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeFlags {
    /// Address to listen on, e.g. 127.0.0.1:8060 [default: server.listen].
    #[arg(long, value_name = "ADDR", env = "PGSSL_LISTEN")]
    pub listen: Option<String>,
    /// Repository address: host:port or unix:/socket/dir [default: repository.address, else a
    /// managed repository].
    #[arg(long, value_name = "ADDR", env = "PGSSL_REPOSITORY")]
    pub repository: Option<String>,
    /// The old name of --repository (and PGSSL_UPSTREAM of PGSSL_REPOSITORY): still accepted, with a
    /// warning.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PGSSL_UPSTREAM",
        hide = true,
        conflicts_with = "repository"
    )]
    pub upstream: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, value_name = "ADDR", env = "PGSSL_METRICS")]
    pub metrics: Option<String>,
    /// Address of the HTTPS admin server [default: admin.listen, 127.0.0.1:8850].
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "no_admin",
        env = "PGSSL_ADMIN_LISTEN"
    )]
    pub admin_listen: Option<String>,
    /// Run no admin server.
    #[arg(long, env = "PGSSL_NO_ADMIN")]
    pub no_admin: bool,
}

/// Runs the proxy until SIGINT or SIGTERM; with no repository address at all, a managed repository
/// is run.
///
/// Sessions run on the server's own per-core workers; the runtime this runs in (the binary's one)
/// only carries the control socket, signals, metrics, the admin server and the managed
/// repository's supervisor.
pub async fn serve(ctx: &Context, flags: &ServeFlags) -> Result<(), ServeError> {
    if flags.upstream.is_some() {
        warn!(
            "--upstream (PGSSL_UPSTREAM) is the old name of --repository (PGSSL_REPOSITORY); rename it: the old name will stop working"
        );
    }
    crate::tls::policy::set_served(ctx.config.tls.served_provider()?);
    let metrics = flags
        .metrics
        .as_deref()
        .map(config::parse_listen)
        .transpose()?;
    let admin = match (&flags.admin_listen, flags.no_admin) {
        (_, true) => None,
        (Some(a), false) => Some(config::parse_listen(a)?),
        (None, false) => Some(ctx.config.admin.listen),
    };
    let listen = match &flags.listen {
        Some(l) => config::parse_listen(l)?,
        None => ctx.config.server.listen,
    };
    let socket_port = ctx.config.repository.port;
    // Parsed here, not by clap: a bad address fails as a bad --listen does (exit 1, the config's
    // wording), not as a usage error naming the hidden --upstream.
    let given = flags
        .repository
        .as_deref()
        .or(flags.upstream.as_deref())
        .map(str::parse::<RepositoryAddress>)
        .transpose()
        .map_err(crate::config::ConfigError::from)?;
    if let Some(given) = &given {
        ctx.config.repository.check_hosts(Some(given))?;
    }
    let upstream = match given.as_ref().or(ctx.config.repository.address.as_ref()) {
        Some(address) => Some(address.upstreams(socket_port)),
        None => {
            // A cluster node relays to the cluster's repository unless told otherwise.
            // (not the first node of a managed store, which runs that repository itself).
            crate::control::cluster::Membership::read(&ctx.data_dir.join("config"))?
                .filter(|m| m.bootstrap_repository.is_none())
                .map(|m| m.repository.parse::<RepositoryAddress>())
                .transpose()
                .map_err(crate::config::ConfigError::from)?
                .map(|address| address.upstreams(socket_port))
        }
    };
    run(ctx, listen, upstream, metrics, admin).await
}

/// A running managed repository and how to stop it.
struct RunningRepository {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Verifier lookups through its superuser, for `auth.mode = "proxy"`.
    lookup: Arc<ManagedLookup>,
}

/// What the mock SCRAM secret is derived for (a new purpose string would change every unknown
/// user's salt).
const MOCK_SCRAM_PURPOSE: &str = "pgssl mock SCRAM secret v1";

/// What the key that carries client addresses between cluster nodes is derived for.
const RELAYED_CLIENT_PURPOSE: &str = "pgssl relayed client v1";

/// Who authenticates clients, from `auth.mode` and the repository, and why (for the start-up line).
fn auth_plan(
    ctx: &Context,
    store: &StateStore,
    managed: Option<&RunningRepository>,
) -> Result<(AuthPlan, &'static str), CommandError> {
    let proxy = |lookup: Option<&Arc<ManagedLookup>>, required| -> Result<AuthPlan, CommandError> {
        // An unknown user's mock salt must not change across restarts, nor from node to node of a
        // cluster, while a real role's does not: derived from the master key, which every node of
        // a cluster shares (as PostgreSQL keeps its mock nonce in pg_control).
        let mock_secret = *Keystore::open(&store.config_dir())?.derive(MOCK_SCRAM_PURPOSE)?;
        let ttl = ctx.config.auth.managed_cache_ttl();
        Ok(AuthPlan::Proxy {
            lookup: lookup.map(|l| crate::proxy::auth::cache::cached(l.clone(), ttl)),
            mock_secret,
            required,
        })
    };
    Ok(match (ctx.config.auth.mode, managed) {
        (AuthMode::Passthrough, _) => (AuthPlan::Passthrough, "auth.mode = passthrough"),
        (AuthMode::Proxy | AuthMode::Auto, Some(r)) => (
            proxy(Some(&r.lookup), true)?,
            "the managed repository's verifiers are read by pgssl's superuser",
        ),
        (AuthMode::Auto, None) => (
            proxy(None, false)?,
            "an external repository: pgssl authenticates once a lookup user is applied, the repository until then",
        ),
        (AuthMode::Proxy, None) => (
            proxy(None, true)?,
            "an external repository: verifiers are read as the applied lookup user",
        ),
    })
}

impl RunningRepository {
    async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Raises the open-file limit as far as allowed, and says so when it cannot fit the connection limits.
fn check_open_file_limit(config: &config::Config) {
    match crate::app::node::raise_open_file_limit(config) {
        Ok((limit, needed)) if limit < needed => warn!(
            limit,
            needed,
            "the open-file limit is below what server.max_startups + 2 x server.max_connections may need; raise it (ulimit -n, systemd LimitNOFILE) or lower those settings"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Binds the Prometheus listener and serves it until `stop`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    stop: CancellationToken,
) -> Result<(), CommandError> {
    crate::telemetry::prometheus();
    let bind_err = |source| {
        crate::app::node::ServerError::Bind(crate::proxy::server::BindError { addr, source })
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    info!(metrics = %bound, "serving Prometheus metrics at /metrics");
    tokio::spawn(crate::telemetry::serve_metrics(listener, stop));
    Ok(())
}

/// Logs where the admin server is and the fingerprint to check, and warns when no one can sign in.
fn announce_admin(admin: &AdminServer, store: &StateStore) {
    let at = admin
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    info!(admin = %format!("https://{at}/"), certificate = admin.fingerprint(),
          "admin server (API and web pages) is serving; its certificate is self-signed, check this fingerprint");
    if AdminUsers::open(&store.config_dir())
        .list()
        .is_ok_and(|u| u.is_empty())
    {
        warn!(
            "no administrators yet: add one with 'pgssl admin-user add --username NAME --password -'"
        );
    }
}

async fn run(
    ctx: &Context,
    listen: std::net::SocketAddr,
    upstream: Option<Vec<RepositoryAddr>>,
    metrics: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
) -> Result<(), ServeError> {
    let signals = Signals::register()?;
    let store = ctx.store_or_create()?;
    check_open_file_limit(&ctx.config);
    let services_stop = CancellationToken::new();
    if let Some(addr) = metrics {
        serve_metrics(addr, services_stop.clone()).await?;
    }
    let (upstream, repository) = match upstream {
        Some(u) => (u, None),
        None => {
            let (addr, running) = start_managed(ctx, &store).await?;
            (vec![addr], Some(running))
        }
    };
    let bound = bind(ctx, &store, listen, &upstream, repository.as_ref(), admin).await;
    let (server, admin, auth, auth_reason) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            if let Some(r) = repository {
                r.shutdown().await;
            }
            return Err(e);
        }
    };
    let shutdown = CancellationToken::new();
    let signals = signals.spawn(server.reloader(), shutdown.clone());
    let settings = server.settings();
    let addr = server.local_addr().map_err(|source| {
        ServerError::Bind(crate::proxy::server::BindError {
            addr: listen,
            source,
        })
    })?;
    let auth_mode = auth_label(&auth, settings.lookup.is_some());
    if let Some(warning) = crate::control::operations::authentication::passthrough_over_tls_warning(
        &ctx.config,
        repository.is_none(),
        settings.lookup.is_some(),
    ) {
        warn!("{warning}");
    }
    info!(listen = %addr, upstream = %server.repository_addresses(), managed = repository.is_some(), mode = %settings.mode,
          certificate = settings.cert_fingerprint.as_deref().unwrap_or("none"), auth = %auth_mode,
          auth_reason, "pgssl is serving");
    tokio::spawn(crate::control::expiry::watch(
        store.clone(),
        services_stop.clone(),
    ));
    let renewing = Context {
        out: crate::control::operations::Output::collect(),
        node: Arc::new(server.handle()),
        actor: "pgssl (certificate renewal)".into(),
        ..ctx.clone()
    };
    tokio::spawn(crate::control::renewal::watch(
        renewing,
        services_stop.clone(),
    ));
    let inventory = (
        server.inventory(),
        crate::control::inventory::path(&ctx.data_dir),
    );
    tokio::spawn(crate::control::inventory::keep(
        inventory.0.clone(),
        inventory.1.clone(),
        services_stop.clone(),
    ));
    tokio::spawn(
        crate::control::cluster::follow::Follower {
            config_dir: store.config_dir(),
            reloader: server.reloader(),
            cancels: server.cancel_keys(),
            address: crate::control::cluster::membership::advertised(addr),
            fingerprint: settings.cert_fingerprint.clone().unwrap_or_default(),
            node: Arc::new(server.handle()),
        }
        .run(services_stop.clone()),
    );
    if let Some(admin) = admin {
        announce_admin(&admin, &store);
        tokio::spawn(admin.run(services_stop.clone()));
    }

    let served = server.run(shutdown).await;
    signals.abort();
    services_stop.cancel();
    // Here, not in its task: the runtime may end before that task runs again.
    crate::control::inventory::save(&inventory.0, &inventory.1);
    if let Some(r) = repository {
        r.shutdown().await;
    }
    Ok(served?)
}

/// What `serve` binds once the repository is up: the node (proxy and reload socket) with its
/// authentication plan, and the admin server.
async fn bind(
    ctx: &Context,
    store: &StateStore,
    listen: std::net::SocketAddr,
    upstream: &[RepositoryAddr],
    repository: Option<&RunningRepository>,
    admin: Option<std::net::SocketAddr>,
) -> Result<(Node, Option<AdminServer>, AuthPlan, &'static str), ServeError> {
    let (auth, auth_reason) = auth_plan(ctx, store, repository)?;
    let options = NodeOptions {
        data_dir: ctx.data_dir.clone(),
        listen,
        repository: upstream.to_vec(),
        managed: repository.is_some(),
        config: ctx.config.clone(),
        auth: auth.clone(),
        // Derived from the master key, so every node of a cluster holds the same one.
        relay_key: Some(crate::proxy::relayed_client::RelayKey::new(
            &*Keystore::open(&store.config_dir())?.derive(RELAYED_CLIENT_PURPOSE)?,
        )),
        // A joined node in front of a managed first node: its repository is that node.
        repository_is_node: repository.is_none()
            && crate::control::cluster::Membership::joined_through_node(&store.config_dir()),
        probe_password: std::env::var(crate::repository::version::PASSWORD_ENV)
            .ok()
            .map(crate::keystore::Secret::new),
    };
    let server = Node::bind(options).await?;
    let admin = match admin {
        // The admin server asks this node in-process, not through its own control socket.
        Some(addr) => Some(
            AdminServer::bind(
                addr,
                ctx.data_dir.clone(),
                ctx.config.clone(),
                Arc::new(server.handle()),
            )
            .await?,
        ),
        None => None,
    };
    Ok((server, admin, auth, auth_reason))
}

/// How the start-up line names the authentication mode in force.
fn auth_label(auth: &AuthPlan, lookup_user: bool) -> &'static str {
    match (auth, lookup_user) {
        (AuthPlan::Passthrough, _) => "passthrough",
        (
            AuthPlan::Proxy {
                lookup: Some(_), ..
            },
            _,
        )
        | (AuthPlan::Proxy { .. }, true) => "proxy",
        (AuthPlan::Proxy { required: true, .. }, false) => "proxy (no lookup user yet)",
        (AuthPlan::Proxy { .. }, false) => "passthrough (until a lookup user is applied)",
    }
}

async fn start_managed(
    ctx: &Context,
    store: &StateStore,
) -> Result<(RepositoryAddr, RunningRepository), ServeError> {
    // Locating runs `pg_config`: off the runtime's one worker.
    let repo = crate::control::operations::blocking(|| {
        ManagedRepository::locate(&ctx.data_dir, &ctx.config)
    })?;
    repo.prepare_dirs(&ctx.data_dir)?;
    let config_dir = store.config_dir();
    // CLI commands that change the keystore (data-access, regenerate) wait while this start creates
    // or reconciles secrets.
    let lock = crate::control::operations::lock(store)?;
    let mut keystore = Keystore::open(&config_dir)?;
    repo.stop_orphan().await;
    if !repo.is_initialized() {
        info!(pgdata = %repo.pgdata.display(), bindir = %repo.bindir.display(), "creating the managed repository");
        repo.initdb(&mut keystore).await?;
    }
    let mut child = repo.start()?;
    let password = keystore
        .get(&role_secret_name(SUPERUSER))?
        .ok_or_else(|| ServeError::NoSuperuserPassword(config_dir.clone()))?;
    if let Err(e) = repo
        .wait_ready(&password, &mut child, Duration::from_secs(120))
        .await
    {
        let _ = child.start_kill();
        return Err(e.into());
    }
    drop(password);
    repo.reconcile(&mut keystore).await?;
    drop(lock);
    info!(socket = %repo.upstream(), "the managed repository is running (Unix socket only)");
    let stop = CancellationToken::new();
    let addr = repo.upstream();
    let lookup = Arc::new(ManagedLookup::new(repo.clone(), PathBuf::from(&config_dir)));
    let task = tokio::spawn(managed::supervise(
        repo,
        child,
        PathBuf::from(&config_dir),
        stop.clone(),
    ));
    Ok((addr, RunningRepository { stop, task, lookup }))
}

/// SIGTERM, SIGINT and SIGHUP, registered before anything else starts so that a signal arriving during
/// start-up is queued for the handler instead of killing the process outright.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Result<Signals, ServeError> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(ServeError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(ServeError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(ServeError::Signals)?,
        })
    }

    /// Handles signals until SIGTERM or SIGINT, which cancel `shutdown`; SIGHUP reloads.
    fn spawn(
        mut self,
        reloader: crate::control::reload::Reloader,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = self.term.recv() => { info!("SIGTERM: shutting down"); break; }
                    _ = self.int.recv() => { info!("SIGINT: shutting down"); break; }
                    _ = self.hup.recv() => {
                        // The reloader loads off the one worker (see Reloader::reload).
                        if let Err(e) = reloader.reload() {
                            warn!(error = %e, "SIGHUP reload refused; keeping the previous settings");
                        }
                    }
                }
            }
            shutdown.cancel();
        })
    }
}
