//! `pgssl serve [--listen ADDR] [--upstream ADDR]`: run the proxy until SIGINT or SIGTERM.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{CommandError, Context};
use crate::config;
use crate::server::{Server, ServerOptions};
use crate::state::certs;
use crate::upstream::UpstreamAddr;

/// Runs the proxy. `listen` and `upstream` override the config file.
pub fn serve(
    ctx: &Context,
    listen: Option<&str>,
    upstream: Option<&str>,
) -> Result<(), CommandError> {
    let listen = match listen {
        Some(l) => config::parse_listen(l)?,
        None => ctx.config.listen_addr()?,
    };
    let upstream = match upstream {
        Some(u) => UpstreamAddr::parse(u, ctx.config.repository.port)
            .map_err(crate::config::ConfigError::from)?,
        None => ctx.config.upstream_addr()?,
    };
    let options = ServerOptions {
        data_dir: ctx.data_dir.clone(),
        listen,
        upstream,
        config: ctx.config.clone(),
    };
    // One worker per core: the proxy is CPU-bound on TLS and has nothing else to share the cores with.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    runtime.block_on(run(options))
}

async fn run(options: ServerOptions) -> Result<(), CommandError> {
    let upstream = options.upstream.clone();
    let server = Server::bind(options.clone()).await?;
    let settings = server.settings();
    let addr = server
        .local_addr()
        .map_err(|source| crate::server::ServerError::Bind {
            addr: options.listen,
            source,
        })?;
    info!(listen = %addr, upstream = %upstream, mode = %settings.mode,
          certificate = settings.cert_fingerprint.as_deref().unwrap_or("none"), "pgssl is serving");
    warn_if_expiring(&options);

    let shutdown = CancellationToken::new();
    let reloader = server.reloader();
    let signals = {
        let shutdown = shutdown.clone();
        let mut term = signal(SignalKind::terminate()).map_err(CommandError::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(CommandError::Runtime)?;
        let mut hup = signal(SignalKind::hangup()).map_err(CommandError::Runtime)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
                    _ = int.recv() => { info!("SIGINT: shutting down"); break; }
                    _ = hup.recv() => {
                        if let Err(e) = reloader.reload() {
                            warn!(error = %e, "SIGHUP reload refused; keeping the previous settings");
                        }
                    }
                }
            }
            shutdown.cancel();
        })
    };
    server.run(shutdown).await;
    signals.abort();
    Ok(())
}

fn warn_if_expiring(options: &ServerOptions) {
    let Ok(store) = crate::state::StateStore::open(&options.data_dir) else {
        return;
    };
    let Some(paths) = store.applied().ok().and_then(|a| {
        a.repository_ssl
            .mode
            .offers_tls()
            .then(|| store.cert_paths_of(&a))
            .flatten()
    }) else {
        return;
    };
    if let Ok(info) = certs::read_info(&paths.cert) {
        let days = (info.not_after - time::OffsetDateTime::now_utc()).whole_days();
        if days < 30 {
            warn!(certificate = %paths.cert.display(), days_left = days,
                  "the repository certificate expires soon; renew it");
        }
    }
}
