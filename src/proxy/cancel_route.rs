//! Where a CancelRequest goes: to the repository with the session's own key, or, in a cluster, to
//! the node whose session the key belongs to.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use crate::proxy::backend::cancel::{Owner, Peer};
use crate::proxy::connection::ConnectionContext;
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::repository::tls::RepositoryTls;
use crate::proxy::settings::LiveSettings;
use crate::proxy::stream::NegotiatedStream;

/// Delivers a CancelRequest to the repository on a fresh connection and replies nothing, as PostgreSQL
/// does; the client learns the outcome from its own session. A key pgssl minted is exchanged for its
/// session's own; another cluster node's goes to that node and nowhere else; any other is sent on
/// unchanged only while passthrough sessions (whose keys are the repository's) may exist, and
/// otherwise cancels nothing. At most [`MAX_CANCEL_FORWARDS`] are on their way at once.
pub async fn forward_cancel(
    mut client: NegotiatedStream,
    packet: &[u8],
    peer: SocketAddr,
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) {
    let owner = ctx.cancels.owner(packet);
    if let Owner::Peer(node) = &owner {
        let Ok(_forwarding) = ctx.cancel_forwards.try_acquire() else {
            let _ = client.shutdown().await;
            warn!(%peer, outcome = "cancel_dropped", "too many cancel requests are being forwarded at once; dropped one");
            return;
        };
        let result = to_peer(node, packet, settings, ctx).await;
        let _ = client.shutdown().await;
        match result {
            Ok(()) => {
                ctx.metrics.cancels.increment(1);
                info!(%peer, node = %node.address, outcome = "cancel_forwarded_to_node", "forwarded a cancel request to the cluster node of its session")
            }
            Err(e) => {
                warn!(%peer, node = %node.address, error = %e, outcome = "cancel_failed", "could not forward a cancel request to the cluster node of its session")
            }
        }
        return;
    }
    let routed = ctx.cancels.route(packet);
    let (packet, host) = match &routed {
        Some((p, host)) => (&p[..], Some(*host)),
        // A key carrying this node's id is one it minted when the repository is another node of
        // the cluster (which would send it straight back); any other repository may hold it (a
        // pooler in front of PostgreSQL mints random keys).
        None if (owner == Owner::Nobody || !ctx.repository_is_node)
            && ctx.auth.may_pass_through(settings) =>
        {
            // A passthrough session's key is its repository host's own: which host is not known,
            // and a key is unique only per host, so every host gets it (a wrong one ignores it).
            (packet, None)
        }
        None => {
            let _ = client.shutdown().await;
            info!(%peer, outcome = "cancel_unknown_key", "a cancel request's key is not a current session's; ignored");
            return;
        }
    };
    let Ok(_forwarding) = ctx.cancel_forwards.try_acquire() else {
        let _ = client.shutdown().await;
        warn!(%peer, outcome = "cancel_dropped", "too many cancel requests are being forwarded at once; dropped one");
        return;
    };
    let hosts: Vec<usize> = match host {
        Some(h) => vec![h],
        None => (0..ctx.repository.len()).collect(),
    };
    // Delivered when any host took it (the session's own host, for a key pgssl minted).
    let mut result = Err(std::io::Error::other("no repository host"));
    for h in hosts {
        result = result.or(to_host(h, packet, settings, ctx).await);
    }
    let _ = client.shutdown().await;
    match result {
        Ok(()) => {
            ctx.metrics.cancels.increment(1);
            info!(%peer, outcome = "cancel_forwarded", "forwarded a cancel request")
        }
        Err(e) => {
            warn!(%peer, error = %e, outcome = "cancel_failed", "could not forward a cancel request")
        }
    }
}

/// Sends the CancelRequest `packet` to repository host `host`, the way a session reaches it (inside
/// TLS when upstream TLS is on): for a forwarded cancel, and for the query of a session an
/// administrator terminated.
pub(crate) async fn to_host(
    host: usize,
    packet: &[u8],
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> std::io::Result<()> {
    let connector = ctx
        .repository
        .connector(host)
        .ok_or_else(|| std::io::Error::other("the repository host is no longer configured"))?;
    let mut upstream = connector
        .connect(ctx.connect_timeout, &settings.repository_tls)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    deliver(&mut upstream, packet, ctx).await
}

/// Cancel requests forwarded at once, at most: a cancel takes a few milliseconds, so this is far
/// above any real burst, and it bounds what a flood of spoofed ones (or a misconfiguration that
/// makes two servers each other's repository) can hold open.
pub const MAX_CANCEL_FORWARDS: usize = 64;

/// Writes a CancelRequest and waits for the server to close: the server closes once it has read the
/// request, and waiting for that keeps the cancel ordered before the client's next action.
async fn deliver(
    to: &mut (impl AsyncRead + AsyncWrite + Unpin),
    packet: &[u8],
    ctx: &ConnectionContext,
) -> std::io::Result<()> {
    to.write_all(packet).await?;
    to.flush().await?;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(
        ctx.connect_timeout,
        tokio::io::AsyncReadExt::read(to, &mut sink),
    )
    .await;
    Ok(())
}

/// Forwards a CancelRequest to the cluster node `node` inside TLS, trusting only the certificate
/// that node reported serving or the one this node serves (the cluster's, which a node that has just
/// taken a change may not have reported yet).
async fn to_peer(
    node: &Peer,
    packet: &[u8],
    settings: &LiveSettings,
    ctx: &ConnectionContext,
) -> std::io::Result<()> {
    let other = |e: String| std::io::Error::other(e);
    let addr = RepositoryAddr::parse(&node.address, 5432).map_err(|e| other(e.0))?;
    let pins: Vec<String> = [Some(&node.fingerprint), settings.cert_fingerprint.as_ref()]
        .into_iter()
        .flatten()
        .filter(|f| !f.is_empty())
        .cloned()
        .collect();
    if pins.is_empty() {
        return Err(other(
            "neither node serves a certificate: a cancel is forwarded only inside TLS".into(),
        ));
    }
    let tls = RepositoryTls::pinned(pins).map_err(|e| other(e.to_string()))?;
    let mut stream = addr
        .connect_with(ctx.connect_timeout, &tls)
        .await
        .map_err(|e| other(e.to_string()))?;
    deliver(&mut stream, packet, ctx).await
}
