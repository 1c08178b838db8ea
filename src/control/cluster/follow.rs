//! A running node following its cluster: it LISTENs for new versions (polling once a second as
//! well, since a notification sent while it was disconnected is lost), installs and serves them,
//! records a heartbeat with what it serves, and keeps the table of its peers for forwarded cancels.
//! Cut off from the repository it keeps serving what it last installed, says so, and catches up on
//! reconnecting by reading the whole state again.
//!
//! [`Follower`] is what a server starts; it runs `Following`, the same loop over any shared
//! [`Store`] and any `Serving` node, which is how the tests drive it in memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::publish;
use super::questions::{Answer, Question};
use super::repo::Beat;
use super::store::{PgStore, Store, StoreSession};
use super::{ClusterError, Membership};
use crate::control::node::RunningNode;
use crate::control::reload::Reloader;
use crate::control::settings::LoadError;
use crate::proxy::backend::cancel::{CancelKeys, Peer};
use crate::telemetry::names;

/// How often a node beats and polls.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// How soon a node looks again while a command on it holds the state.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// What a following node needs from the server it runs in.
pub struct Follower {
    /// `<data-dir>/config`.
    pub config_dir: PathBuf,
    /// Swaps in what is installed.
    pub reloader: Reloader,
    /// The server's cancel keys: its node id and peers are set on them.
    pub cancels: Arc<CancelKeys>,
    /// This node's listener as other nodes reach it.
    pub address: String,
    /// The fingerprint of the certificate served now ("" without one).
    pub fingerprint: String,
    /// The node itself, as the cluster's questions ask it ([`super::questions`]).
    pub node: Arc<dyn RunningNode>,
}

/// What a reload serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// The SSL mode, as logged.
    pub mode: String,
    /// The served certificate's fingerprint, if any.
    pub fingerprint: Option<String>,
}

/// The node a follower serves with: it reloads what is installed and learns its id and peers.
pub(crate) trait Serving: Send + Sync {
    /// Why a reload failed (it keeps what it served).
    type Error: std::fmt::Display;

    /// Serves what `config/` holds now; on failure nothing changes.
    fn reload(&self) -> Result<Reloaded, Self::Error>;

    /// This node's id in its cluster and the other nodes, for forwarded cancels.
    fn set_cluster(&self, id: u8, peers: HashMap<u8, Peer>);

    /// Its answer to a cluster's question; `me` is its name.
    fn answer(&self, question: Question, me: &str) -> impl Future<Output = Answer> + Send;
}

/// The server a [`Follower`] runs in.
struct Server {
    reloader: Reloader,
    cancels: Arc<CancelKeys>,
    node: Arc<dyn RunningNode>,
}

impl Serving for Server {
    type Error = LoadError;

    fn reload(&self) -> Result<Reloaded, LoadError> {
        // Off the runtime's one worker: the reloader loads through `operations::blocking`.
        let settings = self.reloader.reload()?;
        Ok(Reloaded {
            mode: settings.mode.to_string(),
            fingerprint: settings.cert_fingerprint.clone(),
        })
    }

    fn set_cluster(&self, id: u8, peers: HashMap<u8, Peer>) {
        self.cancels.set_cluster(id, peers);
    }

    async fn answer(&self, question: Question, me: &str) -> Answer {
        let answered = match question {
            Question::Sessions(selector) => self
                .node
                .sessions(selector)
                .await
                .map(|s| s.map(Answer::Sessions)),
            // Another node's session: not this node's to end.
            Question::Terminate(t) if t.selector.node.as_deref().is_some_and(|n| n != me) => {
                Ok(Some(Answer::Terminated(Vec::new())))
            }
            Question::Terminate(t) => self
                .node
                .terminate(t.selector, t.by)
                .await
                .map(|ended| ended.map(Answer::Terminated)),
            Question::Inventory => self
                .node
                .inventory()
                .await
                .map(|seen| seen.map(Answer::Inventory)),
        };
        match answered {
            Ok(Some(answer)) => answer,
            Ok(None) => Answer::Failed("no server runs on this node".into()),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// A node following its cluster through `store`, serving with `node`.
pub(crate) struct Following<S, N> {
    /// `<data-dir>/config`.
    pub config_dir: PathBuf,
    /// The shared store.
    pub store: S,
    /// Reloads and takes the peers.
    pub node: N,
    /// This node's listener as other nodes reach it.
    pub address: String,
    /// The fingerprint of the certificate served now ("" without one).
    pub fingerprint: String,
}

/// State kept across reconnects.
struct Progress {
    /// The version the server serves; 0 (versions start at 1) until the follower has reloaded
    /// once, since the server may have loaded its state before this node joined or before a command
    /// committed a newer version and the follower began.
    served: u64,
    /// A version that failed to load here, not tried again.
    rejected: Option<u64>,
    /// Last time the repository confirmed this node is current.
    confirmed: Instant,
    /// Whether the last attempt failed (to log an outage once).
    cut_off: bool,
    /// Why the newest version could not be installed here (to log each new reason once).
    install_failed: Option<String>,
    /// The repository host the last session reached (to log a failover to another once).
    host: Option<String>,
}

impl Follower {
    /// Follows until `stop`.
    /// A server that is in no cluster waits for one (`topology get-bootstrap-file` makes it the
    /// first node while it runs).
    pub async fn run(self, stop: CancellationToken) {
        Following {
            config_dir: self.config_dir,
            store: PgStore,
            node: Server {
                reloader: self.reloader,
                cancels: self.cancels,
                node: self.node,
            },
            address: self.address,
            fingerprint: self.fingerprint,
        }
        .run(stop)
        .await;
    }
}

impl<S: Store, N: Serving> Following<S, N> {
    /// Follows until `stop`, or until this node is removed from the cluster.
    pub async fn run(mut self, stop: CancellationToken) {
        let m = loop {
            match Membership::read(&self.config_dir) {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read this node's cluster membership"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        };
        let mut progress = Progress {
            served: 0,
            rejected: None,
            confirmed: Instant::now(),
            cut_off: false,
            install_failed: None,
            host: None,
        };
        metrics::gauge!(names::CLUSTER_STATE_VERSION).set(m.version as f64);
        info!(node = %m.node_name, repository = %m.repository, version = m.version, "following the cluster");
        loop {
            let session = tokio::select! {
                () = stop.cancelled() => return,
                s = self.session(&mut progress) => s,
            };
            match session {
                Ok(()) => {
                    warn!(
                        "this node was removed from the cluster ('pgssl topology remove-node'): it keeps serving its last state but no longer follows the cluster"
                    );
                    return;
                }
                Err(e) => {
                    if !progress.cut_off {
                        warn!(error = %e, version = progress.served, "cut off from the cluster's repository: serving the last applied state from the local cache until it is back");
                        progress.cut_off = true;
                    }
                }
            }
            metrics::gauge!(names::CLUSTER_STATE_AGE)
                .set(progress.confirmed.elapsed().as_secs_f64());
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// One connection's life: fails when the connection does; `Ok` when the node was removed.
    async fn session(&mut self, progress: &mut Progress) -> Result<(), ClusterError> {
        let mut session = self.connect().await?;
        session.listen().await?;
        let host = session.host();
        if progress.host.as_deref() != Some(host) {
            if let Some(before) = &progress.host {
                info!(host, before = %before, "the cluster's state now follows the repository's new primary");
            }
            progress.host = Some(host.to_string());
        }
        if progress.cut_off {
            info!("the cluster's repository is reachable again; catching up");
            progress.cut_off = false;
        }
        loop {
            let waiting = self.sync(&mut session, progress).await?;
            if self.beat(&mut session, progress).await?.is_none() {
                return Ok(());
            }
            // A question that cannot be answered is the asker's loss (it reports the node as
            // silent), never a reason to drop the follower's session.
            if let Err(e) = self.answer_questions(&mut session).await {
                warn!(error = %e, "could not answer a question of the cluster's");
            }
            // A node that cannot install the newest version is in touch but not current: its
            // state age keeps growing for whoever alerts on it.
            if progress.install_failed.is_none() {
                progress.confirmed = Instant::now();
            }
            metrics::gauge!(names::CLUSTER_STATE_AGE)
                .set(progress.confirmed.elapsed().as_secs_f64());
            // A command on this node holds the state: look again soon, not a tick later (its apply
            // is waiting for this node too).
            session
                .wait_change(if waiting { BUSY_RETRY } else { TICK })
                .await?;
        }
    }

    fn membership(&self) -> Result<Membership, ClusterError> {
        Membership::read(&self.config_dir)?.ok_or(ClusterError::LeftCluster)
    }

    async fn connect(&self) -> Result<S::Session, ClusterError> {
        let m = self.membership()?;
        self.store.connect(&m, &self.config_dir).await
    }

    /// Installs a newer version and serves what is installed; `true` when a command holds the
    /// cluster lock, so nothing could be looked at.
    async fn sync(
        &mut self,
        session: &mut S::Session,
        progress: &mut Progress,
    ) -> Result<bool, ClusterError> {
        let config_dir = self.config_dir.clone();
        let lock = tokio::task::spawn_blocking(move || publish::try_cluster_lock(&config_dir))
            .await
            .unwrap_or(Ok(None));
        let mut m = self.membership()?;
        // The lock is held until this version is served or put back.
        let (_lock, installed) = match lock {
            Ok(None) => return Ok(true),
            Ok(Some(lock)) => (
                Some(lock),
                publish::catch_up_on(session, &self.config_dir, &mut m).await,
            ),
            Err(e) => (None, Err(e)),
        };
        let replaced = match installed {
            Ok(replaced) => {
                if progress.install_failed.take().is_some() {
                    info!("this node can install the cluster's state again");
                }
                replaced
            }
            // This node's disk, not the repository: it stays in touch (its heartbeat says which
            // version it serves, so an apply reports it as lagging) and tries again every tick.
            // The install changed no file, so what it serves is intact.
            Err(e) if e.is_local() => {
                let reason = e.to_string();
                if progress.install_failed.as_deref() != Some(reason.as_str()) {
                    error!(version = m.version, error = %e, "cannot install the cluster's newest state version on this node; it keeps serving the version it has and tries again every second");
                    progress.install_failed = Some(reason);
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if m.version == progress.served || progress.rejected == Some(m.version) {
            return Ok(false);
        }
        match self.node.reload() {
            Ok(settings) => {
                info!(version = m.version, mode = %settings.mode, certificate = settings.fingerprint.as_deref().unwrap_or("none"), "serving the cluster's state version");
                self.fingerprint = settings.fingerprint.unwrap_or_default();
                progress.served = m.version;
                metrics::gauge!(names::CLUSTER_STATE_VERSION).set(m.version as f64);
            }
            Err(e) => {
                error!(version = m.version, error = %e, "the cluster's state version cannot be served on this node; it keeps serving the previous one");
                progress.rejected = Some(m.version);
                if let Some(before) = replaced {
                    before.install(&self.config_dir)?;
                    // What is installed is what this node keeps serving, so that catch_up does
                    // not take it for an interrupted command's leftovers.
                    m.digest = before.digest();
                    m.write(&self.config_dir)?;
                }
            }
        }
        Ok(false)
    }

    /// Answers the questions a command asked every node ([`super::questions`]).
    async fn answer_questions(&self, session: &mut S::Session) -> Result<(), ClusterError> {
        let me = self.membership()?.node_name;
        for (id, body) in session.questions(&me).await? {
            let answer = match serde_json::from_str::<Question>(&body) {
                Ok(question) => self.node.answer(question, &me).await,
                // A newer node's question: said, not ignored (the asker would wait for it).
                Err(e) => Answer::Failed(format!("a question this node does not know: {e}")),
            };
            let body =
                serde_json::to_string(&answer).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
            session.answer(id, &me, &body).await?;
        }
        Ok(())
    }

    /// Records the heartbeat and refreshes the peers; `None` when the node was removed.
    async fn beat(
        &self,
        session: &mut S::Session,
        progress: &Progress,
    ) -> Result<Option<u8>, ClusterError> {
        let m = self.membership()?;
        let beat = Beat {
            name: &m.node_name,
            address: &self.address,
            version: progress.served,
            fingerprint: &self.fingerprint,
        };
        let Some(id) = session.heartbeat(&beat).await? else {
            return Ok(None);
        };
        let peers: HashMap<u8, Peer> = session
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.id != id && !n.removed)
            .map(|n| {
                (
                    n.id,
                    Peer {
                        address: n.address,
                        fingerprint: n.fingerprint,
                    },
                )
            })
            .collect();
        self.node.set_cluster(id, peers);
        Ok(Some(id))
    }
}
