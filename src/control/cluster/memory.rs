//! An in-memory shared store for the tests of the publish/follow state machine: the same rules as
//! the repository's statements ([`super::repo`]) — a commit only on the version it was based on,
//! a notification to every listening session when one commits, a node's row keeping its id, the
//! lowest free id for a new node, nothing for a removed one — on a clock that tokio's paused test
//! clock drives. It can be cut off from a node, refuse a node's role, stay silent (so only the
//! followers' polls see a commit) or make a node lose its next commit race, on demand.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::repo::{Beat, Head, MAX_NODES, NodeRow, Stored};
use super::store::{Store, StoreSession};
use super::{ClusterError, Membership};

/// The address the in-memory store is named by in errors.
pub(crate) const REPOSITORY: &str = "memory";

/// What a node's sessions meet instead of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Connections and statements fail as with a store that is down or cut off.
    Unreachable,
    /// The store refuses the cluster role (its password was rotated).
    Refused,
}

/// What listening sessions hear.
#[derive(Debug, Clone)]
enum Event {
    /// A version committed.
    Committed,
    /// A node was cut off: its sessions end.
    Fault,
}

/// One node's row.
#[derive(Debug, Clone)]
struct NodeEntry {
    id: u8,
    address: String,
    version: u64,
    fingerprint: String,
    beat: Instant,
    removed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    stored: Option<Stored>,
    applied_by: Vec<String>,
    nodes: BTreeMap<String, NodeEntry>,
    faults: HashMap<String, Fault>,
    silent: bool,
    lose_next_commit: bool,
    /// Questions by id: the body, and each node's answer.
    questions: BTreeMap<i64, (String, BTreeMap<String, String>)>,
}

/// The store; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<Event>,
}

impl MemoryStore {
    /// An empty store: no version committed, no node.
    pub(crate) fn new() -> MemoryStore {
        MemoryStore {
            shared: Arc::default(),
            events: broadcast::channel(64).0,
        }
    }

    /// Asks every node `body` (as a command's `questions::ask` does); its id.
    pub(crate) fn ask(&self, body: &str) -> i64 {
        let mut shared = self.shared();
        let id = shared
            .questions
            .keys()
            .next_back()
            .map_or(1, |last| last + 1);
        shared
            .questions
            .insert(id, (body.to_string(), BTreeMap::new()));
        id
    }

    /// The answers to question `id`, by node.
    pub(crate) fn answers(&self, id: i64) -> BTreeMap<String, String> {
        self.shared()
            .questions
            .get(&id)
            .map(|(_, answers)| answers.clone())
            .unwrap_or_default()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The committed head.
    pub(crate) fn head(&self) -> Option<Head> {
        self.shared().stored.as_ref().map(|s| s.head)
    }

    /// The committed version with its sealed snapshot.
    pub(crate) fn stored(&self) -> Option<Stored> {
        self.shared().stored.clone()
    }

    /// Who applied each version, in order.
    pub(crate) fn applied_by(&self) -> Vec<String> {
        self.shared().applied_by.clone()
    }

    /// Commits `sealed` as the next version, as some other node would, and notifies.
    pub(crate) fn put(&self, sealed: Vec<u8>, by: &str) -> u64 {
        let version = put(&mut self.shared(), None, sealed, by);
        self.notify(Event::Committed);
        version
    }

    /// `node`'s sessions meet `fault` (`None`: the store is back for it).
    pub(crate) fn set_fault(&self, node: &str, fault: Option<Fault>) {
        match fault {
            Some(f) => self.shared().faults.insert(node.to_string(), f),
            None => self.shared().faults.remove(node),
        };
        if fault.is_some() {
            self.notify(Event::Fault);
        }
    }

    /// Whether commits notify (when not, only the followers' polls see them).
    pub(crate) fn set_silent(&self, silent: bool) {
        self.shared().silent = silent;
    }

    /// The next commit finds that another node committed first.
    pub(crate) fn lose_next_commit(&self) {
        self.shared().lose_next_commit = true;
    }

    /// Marks `node` removed, as `topology remove-node` does.
    pub(crate) fn remove(&self, node: &str) {
        if let Some(n) = self.shared().nodes.get_mut(node) {
            n.removed = true;
        }
    }

    /// `node`'s row.
    pub(crate) fn node(&self, node: &str) -> Option<NodeRow> {
        node_rows(&self.shared())
            .into_iter()
            .find(|n| n.name == node)
    }

    fn notify(&self, event: Event) {
        // Nobody listening is not a failure: a notification then reaches no one, as in PostgreSQL.
        let _ = self.events.send(event);
    }
}

/// Commits the next version; `generation` `None` keeps the cluster's (1 for the first version).
fn put(shared: &mut Shared, generation: Option<u64>, sealed: Vec<u8>, by: &str) -> u64 {
    let head = shared.stored.as_ref().map(|s| s.head);
    let version = head.map_or(1, |h| h.version + 1);
    let generation = match head {
        None => 1,
        Some(h) => generation.unwrap_or(h.generation),
    };
    shared.stored = Some(Stored {
        head: Head {
            version,
            generation,
        },
        sealed,
    });
    shared.applied_by.push(by.to_string());
    version
}

fn node_rows(shared: &Shared) -> Vec<NodeRow> {
    shared
        .nodes
        .iter()
        .map(|(name, n)| NodeRow {
            name: name.clone(),
            id: n.id,
            address: n.address.clone(),
            version: n.version,
            fingerprint: n.fingerprint.clone(),
            heartbeat: format!("{:?} ago", n.beat.elapsed()),
            age_secs: n.beat.elapsed().as_secs_f64(),
            removed: n.removed,
        })
        .collect()
}

/// A node's session on the in-memory store.
#[derive(Debug)]
pub(crate) struct MemorySession {
    store: MemoryStore,
    node: String,
    events: Option<broadcast::Receiver<Event>>,
}

impl MemorySession {
    /// Fails as the store would for this node now.
    fn check(&self) -> Result<(), ClusterError> {
        check(&self.store, &self.node)
    }
}

/// Fails as `store` would for `node` now.
fn check(store: &MemoryStore, node: &str) -> Result<(), ClusterError> {
    fault_error(store.shared().faults.get(node).copied())
}

fn fault_error(fault: Option<Fault>) -> Result<(), ClusterError> {
    let repository = REPOSITORY.to_string();
    match fault {
        None => Ok(()),
        Some(Fault::Unreachable) => Err(ClusterError::Unreachable {
            repository,
            message: "connection refused".into(),
        }),
        Some(Fault::Refused) => Err(ClusterError::Refused {
            repository,
            // A stand-in for the repository's 28P01: only the variant matters to the state machine.
            source: crate::repository::SessionError::Connect(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "password authentication failed for user \"pgssl_cluster\"",
            )),
        }),
    }
}

impl Store for MemoryStore {
    type Session = MemorySession;

    async fn connect(
        &self,
        membership: &Membership,
        _config_dir: &Path,
    ) -> Result<MemorySession, ClusterError> {
        let session = MemorySession {
            store: self.clone(),
            node: membership.node_name.clone(),
            events: None,
        };
        session.check()?;
        Ok(session)
    }
}

impl StoreSession for MemorySession {
    async fn head(&mut self) -> Result<Option<Head>, ClusterError> {
        self.check()?;
        Ok(self.store.head())
    }

    async fn fetch(&mut self) -> Result<Option<Stored>, ClusterError> {
        self.check()?;
        Ok(self.store.stored())
    }

    async fn commit(
        &mut self,
        base: u64,
        generation: Option<u64>,
        sealed: &[u8],
        by: &str,
    ) -> Result<u64, ClusterError> {
        self.check()?;
        let (version, silent) = {
            let mut shared = self.store.shared();
            if std::mem::take(&mut shared.lose_next_commit) {
                let theirs = shared.stored.as_ref().map(|s| s.sealed.clone());
                put(
                    &mut shared,
                    None,
                    theirs.unwrap_or_default(),
                    "another node",
                );
            }
            let current = shared.stored.as_ref().map_or(0, |s| s.head.version);
            if current != base {
                return Err(ClusterError::Conflict { base, current });
            }
            (
                put(&mut shared, generation, sealed.to_vec(), by),
                shared.silent,
            )
        };
        if !silent {
            self.store.notify(Event::Committed);
        }
        Ok(version)
    }

    async fn listen(&mut self) -> Result<(), ClusterError> {
        self.check()?;
        self.events = Some(self.store.events.subscribe());
        Ok(())
    }

    async fn wait_change(&mut self, timeout: Duration) -> Result<bool, ClusterError> {
        self.check()?;
        let deadline = Instant::now() + timeout;
        let Some(events) = self.events.as_mut() else {
            tokio::time::sleep_until(deadline).await;
            return self.check().map(|()| false);
        };
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Ok(false),
                Ok(Ok(Event::Committed) | Err(broadcast::error::RecvError::Lagged(_))) => {
                    return Ok(true);
                }
                Ok(Ok(Event::Fault)) => check(&self.store, &self.node)?,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return fault_error(Some(Fault::Unreachable)).map(|()| false);
                }
            }
        }
    }

    async fn heartbeat(&mut self, beat: &Beat<'_>) -> Result<Option<u8>, ClusterError> {
        self.check()?;
        let mut shared = self.store.shared();
        if let Some(n) = shared.nodes.get_mut(beat.name) {
            if n.removed {
                return Ok(None);
            }
            n.address = beat.address.to_string();
            n.version = beat.version;
            n.fingerprint = beat.fingerprint.to_string();
            n.beat = Instant::now();
            return Ok(Some(n.id));
        }
        let taken: Vec<u8> = shared.nodes.values().map(|n| n.id).collect();
        let id = (1..=MAX_NODES)
            .filter_map(|i| u8::try_from(i).ok())
            .find(|i| !taken.contains(i))
            .ok_or_else(|| ClusterError::IdsExhausted {
                max: super::repo::MAX_NODES,
            })?;
        shared.nodes.insert(
            beat.name.to_string(),
            NodeEntry {
                id,
                address: beat.address.to_string(),
                version: beat.version,
                fingerprint: beat.fingerprint.to_string(),
                beat: Instant::now(),
                removed: false,
            },
        );
        Ok(Some(id))
    }

    async fn nodes(&mut self) -> Result<Vec<NodeRow>, ClusterError> {
        self.check()?;
        Ok(node_rows(&self.store.shared()))
    }

    async fn questions(&mut self, node: &str) -> Result<Vec<(i64, String)>, ClusterError> {
        self.check()?;
        let shared = self.store.shared();
        Ok(shared
            .questions
            .iter()
            .filter(|(_, (_, answers))| !answers.contains_key(node))
            .map(|(id, (body, _))| (*id, body.clone()))
            .collect())
    }

    async fn answer(&mut self, id: i64, node: &str, body: &str) -> Result<(), ClusterError> {
        self.check()?;
        if let Some((_, answers)) = self.store.shared().questions.get_mut(&id) {
            answers
                .entry(node.to_string())
                .or_insert_with(|| body.to_string());
        }
        Ok(())
    }

    fn host(&self) -> &str {
        REPOSITORY
    }

    async fn close(self) {}
}
