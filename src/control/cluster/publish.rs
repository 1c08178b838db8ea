//! A state-changing command on a cluster node: before it runs, the node is brought up to the
//! cluster's newest version (so the command works on what the cluster serves); after, what it
//! changed is committed as the next version, or — when another node committed first, or the
//! repository cannot be reached — the node's files are put back and nothing is changed anywhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

use super::repo::{self, Conn, Stored};
use super::snapshot::Snapshot;
use super::store::{PgSession, PgStore, Store, StoreSession};
use super::{ClusterError, Membership};
use crate::atomic::FileLock;
use crate::control::state::StateError;
use crate::keystore::Keystore;

/// How long one statement or connection attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Held by a command from before it reads the state until its change is committed, and taken by the
/// node's follower before it installs a version, so neither overwrites the other's files.
fn cluster_lock_path(config_dir: &Path) -> PathBuf {
    config_dir.join(".cluster.lock")
}

/// Takes the cluster lock, waiting for a command that holds it.
pub fn cluster_lock(config_dir: &Path) -> Result<FileLock, ClusterError> {
    let path = cluster_lock_path(config_dir);
    FileLock::acquire(&path).map_err(|source| StateError::Io { path, source }.into())
}

/// The cluster lock if no command holds it now (the follower's: it looks again soon instead); an
/// error when the lock file cannot be opened (a read-only data directory).
pub fn try_cluster_lock(config_dir: &Path) -> Result<Option<FileLock>, ClusterError> {
    let path = cluster_lock_path(config_dir);
    FileLock::try_acquire(&path).map_err(|source| StateError::Io { path, source }.into())
}

/// A change under way on a node, made through the shared store `S` (the repository but in tests).
pub struct Change<S = PgStore> {
    store: S,
    config_dir: PathBuf,
    membership: Membership,
    before: Snapshot,
    lock: Option<FileLock>,
}

impl<S> std::fmt::Debug for Change<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("node", &self.membership.node_name)
            .field("version", &self.membership.version)
            .finish_non_exhaustive()
    }
}

/// Opens a stored version's snapshot with this node's master key.
pub fn open_stored(config_dir: &Path, stored: &Stored) -> Result<Snapshot, ClusterError> {
    let keystore = Keystore::open(config_dir)?;
    Snapshot::open(&keystore, stored.head.version, &stored.sealed)
}

/// [`catch_up_on`] over a repository connection the caller keeps, to `host`.
pub async fn catch_up(
    conn: &mut Conn,
    host: &str,
    config_dir: &Path,
    membership: &mut Membership,
) -> Result<Option<Snapshot>, ClusterError> {
    let mut session = PgSession::new(conn, host);
    catch_up_on(&mut session, config_dir, membership).await
}

/// Installs the store's newest version when this node holds an older one, or holds files that
/// are not the version it says it holds; the files it replaced when it did. Call with the cluster
/// lock held.
///
/// Files that differ from the version held are what a command killed between changing them and
/// committing leaves behind (or a half-installed snapshot): a change the repository never took.
/// Serving them would make this node the one that differs from the cluster, and the next command's
/// commit would publish them as if they were its own, so they are put back to the committed version:
/// the interrupted command did not happen, and running it again does it.
pub async fn catch_up_on<T: StoreSession>(
    session: &mut T,
    config_dir: &Path,
    membership: &mut Membership,
) -> Result<Option<Snapshot>, ClusterError> {
    let Some(head) = session.head().await? else {
        return Ok(None);
    };
    if head.version <= membership.version {
        let intact = Snapshot::read(config_dir).is_ok_and(|s| s.digest() == membership.digest);
        if intact {
            return Ok(None);
        }
        warn!(
            version = membership.version,
            "this node's shared files are not the version it holds (a command was interrupted before it committed?); putting the committed version back"
        );
    }
    let Some(stored) = session.fetch().await? else {
        return Ok(None);
    };
    let snapshot = open_stored(config_dir, &stored)?;
    let replaced = Snapshot::read(config_dir)?;
    snapshot.install(config_dir)?;
    membership.version = stored.head.version;
    membership.digest = snapshot.digest();
    membership.write(config_dir)?;
    Ok(Some(replaced))
}

impl Change {
    /// Begins a command on the data directory whose config folder is `config_dir`; `None` when it
    /// is not a cluster node. Fails, changing nothing, when the repository cannot be reached: a
    /// change made then would reach no other node.
    pub async fn begin(config_dir: &Path) -> Result<Option<Change>, ClusterError> {
        Change::begin_on(PgStore, config_dir).await
    }

    /// Opens a session as the cluster role on the repository's primary (for a command's own
    /// statements): the session and its host.
    pub async fn connect(&self) -> Result<(Conn, String), ClusterError> {
        let session = self
            .store
            .connect(&self.membership, &self.config_dir)
            .await?;
        let host = session.host().to_string();
        Ok((session.into_conn(), host))
    }
}

impl<S: Store> Change<S> {
    /// [`Change::begin`] through `store`.
    pub async fn begin_on(store: S, config_dir: &Path) -> Result<Option<Change<S>>, ClusterError> {
        if Membership::read(config_dir)?.is_none() {
            return Ok(None);
        }
        let lock = cluster_lock(config_dir)?;
        let Some(mut membership) = Membership::read(config_dir)? else {
            return Ok(None);
        };
        let mut session = store.connect(&membership, config_dir).await?;
        catch_up_on(&mut session, config_dir, &mut membership).await?;
        session.close().await;
        Ok(Some(Change {
            store,
            config_dir: config_dir.to_path_buf(),
            before: Snapshot::read(config_dir)?,
            membership,
            lock: Some(lock),
        }))
    }

    /// Lets this node's follower install and serve again (after the commit: a command waiting for
    /// the nodes must not keep its own node from taking the change).
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// The config folder.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// This node's membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Commits what the command changed, if anything, as the next version; `generation` (when set)
    /// replaces the cluster's. Returns the new version.
    pub async fn commit(
        &mut self,
        by: &str,
        generation: Option<u64>,
    ) -> Result<Option<u64>, ClusterError> {
        let now = Snapshot::read(&self.config_dir)?;
        let digest = now.digest();
        if digest == self.membership.digest && generation.is_none() {
            return Ok(None);
        }
        let sealed = now.seal(&Keystore::open(&self.config_dir)?)?;
        let m = &self.membership;
        let committed = async {
            let mut session = self.store.connect(m, &self.config_dir).await?;
            let result = session.commit(m.version, generation, &sealed, by).await;
            Ok::<_, ClusterError>((session, result))
        }
        .await;
        match committed {
            Ok((session, Ok(version))) => {
                self.membership.version = version;
                self.membership.digest = digest;
                self.membership.write(&self.config_dir)?;
                self.before = now;
                session.close().await;
                Ok(Some(version))
            }
            Ok((mut session, Err(conflict @ ClusterError::Conflict { .. }))) => {
                self.before.install(&self.config_dir)?;
                catch_up_on(&mut session, &self.config_dir, &mut self.membership).await?;
                session.close().await;
                Err(conflict)
            }
            Ok((_, Err(e))) | Err(e) => {
                self.before.install(&self.config_dir)?;
                Err(e)
            }
        }
    }
}

/// How one node took a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeOutcome {
    /// The node.
    pub name: String,
    /// Its listener.
    pub address: String,
    /// What happened, in a sentence.
    pub outcome: String,
    /// Whether it serves the version.
    pub took: bool,
    /// Whether its heartbeat is recent (a node that is not live takes the change when it starts).
    #[serde(default)]
    pub live: bool,
}

/// How long a command waits for every live node of the cluster to serve what it committed.
pub const NODE_WAIT: Duration = Duration::from_secs(10);

/// Waits, up to `limit`, until every live node serves `version`; one outcome per node.
pub async fn wait_for_nodes<S: Store>(
    change: &Change<S>,
    version: u64,
    limit: Duration,
) -> Result<Vec<NodeOutcome>, ClusterError> {
    let started = Instant::now();
    let mut session = change
        .store
        .connect(&change.membership, &change.config_dir)
        .await?;
    loop {
        let nodes = session.nodes().await?;
        let waiting = nodes.iter().any(|n| n.is_live() && n.version < version);
        if !waiting || started.elapsed() >= limit {
            let elapsed = started.elapsed();
            session.close().await;
            return Ok(nodes
                .into_iter()
                .filter(|n| !n.removed)
                .map(|n| outcome(n, version, elapsed))
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn outcome(n: repo::NodeRow, version: u64, elapsed: Duration) -> NodeOutcome {
    let live = n.is_live();
    let (took, outcome) = if n.version >= version {
        (
            true,
            format!("took the change (serves version {})", n.version),
        )
    } else if !n.is_live() {
        (
            false,
            format!(
                "unreachable since {} (serves version {}); it will take the change when it starts",
                n.heartbeat, n.version
            ),
        )
    } else {
        (
            false,
            format!(
                "did not take the change within {:.1} s (serves version {}); see its log",
                elapsed.as_secs_f64(),
                n.version
            ),
        )
    };
    NodeOutcome {
        name: n.name,
        address: n.address,
        outcome,
        took,
        live,
    }
}
