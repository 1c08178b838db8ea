//! The publish/follow state machine in process: nodes are temporary config folders sharing one
//! [`MemoryStore`], a command is a [`Change`] on one of them, and a follower runs against a fake
//! server that records what it reloaded. Tests run on tokio's paused clock, so the follower's
//! one-second ticks take no time.

mod errors;
mod following;
mod publishing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::follow::{Following, Reloaded, Serving};
use super::memory::{MemoryStore, REPOSITORY};
use super::publish::Change;
use super::questions::{Answer, Question};
use super::snapshot::{PURPOSE, Snapshot};
use super::store::Store;
use super::{ClusterError, Membership};
use crate::keystore::{self, Keystore};
use crate::proxy::backend::cancel::Peer;

/// The file every version changes (what a server serves, in a real node).
const APPLIED: &str = "applied.toml";

/// A cluster node's config folder.
struct Node {
    name: String,
    dir: tempfile::TempDir,
}

impl Node {
    fn config(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.config().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// What the node's `applied.toml` says.
    fn applied(&self) -> String {
        std::fs::read_to_string(self.config().join(APPLIED)).unwrap()
    }

    fn membership(&self) -> Membership {
        Membership::read(self.config()).unwrap().unwrap()
    }

    fn digest(&self) -> String {
        Snapshot::read(self.config()).unwrap().digest()
    }

    /// A command that sets `applied.toml` to `text` and commits.
    async fn change(&self, store: &MemoryStore, text: &str) -> Result<Option<u64>, ClusterError> {
        let mut change = Change::begin_on(store.clone(), self.config())
            .await?
            .unwrap();
        self.write(APPLIED, text);
        change.commit(&format!("{}: test", self.name), None).await
    }

    /// A command begun on this node, which is one.
    async fn begin(&self, store: &MemoryStore) -> Change<MemoryStore> {
        Change::begin_on(store.clone(), self.config())
            .await
            .unwrap()
            .expect("a cluster node")
    }

    /// Why a command cannot begin on this node.
    async fn cannot_begin(&self, store: &MemoryStore) -> ClusterError {
        Change::begin_on(store.clone(), self.config())
            .await
            .unwrap_err()
    }
}

fn membership(name: &str, version: u64, digest: String) -> Membership {
    Membership {
        node_name: name.into(),
        repository: REPOSITORY.into(),
        socket_port: 5432,
        bootstrap_repository: None,
        repository_fingerprints: Vec::new(),
        database: "postgres".into(),
        version,
        digest,
        through_node: false,
    }
}

/// The first node of a new cluster on `store`: its state, `applied.toml` saying `version one`, is
/// committed as version 1 by a command like any other.
async fn first_node(store: &MemoryStore, name: &str) -> Node {
    let node = Node {
        name: name.into(),
        dir: tempfile::tempdir().unwrap(),
    };
    Keystore::open(node.config()).unwrap();
    node.write("pgsql15/security/server.crt", "CERT");
    membership(name, 0, String::new())
        .write(node.config())
        .unwrap();
    assert_eq!(node.change(store, "version one").await.unwrap(), Some(1));
    node
}

/// A new store, and the first node of a cluster on it, `a`.
async fn one_node() -> (MemoryStore, Node) {
    let store = MemoryStore::new();
    let a = first_node(&store, "a").await;
    (store, a)
}

/// A new store, and a cluster of two nodes on it: `a` made it, `b` joined at version 1.
async fn two_nodes() -> (MemoryStore, Node, Node) {
    let (store, a) = one_node().await;
    let b = join(&store, &a, "b").await;
    (store, a, b)
}

/// A node joined to `first`'s cluster as `topology join` does: the master key, then the store's
/// newest version.
async fn join(store: &MemoryStore, first: &Node, name: &str) -> Node {
    let node = Node {
        name: name.into(),
        dir: tempfile::tempdir().unwrap(),
    };
    join_as(store, first, &node);
    node
}

/// Joins the (empty) config folder of `node` to `first`'s cluster.
fn join_as(store: &MemoryStore, first: &Node, node: &Node) {
    let (id, key) = Keystore::open(first.config())
        .unwrap()
        .export_master_key()
        .unwrap();
    let stored = store.stored().unwrap();
    let plain = keystore::open_with(&key, PURPOSE, &stored.sealed).unwrap();
    keystore::import_master_key(node.config(), &id, &key).unwrap();
    let snapshot = Snapshot::from_bytes(&plain).unwrap();
    snapshot.install(node.config()).unwrap();
    membership(&node.name, stored.head.version, snapshot.digest())
        .write(node.config())
        .unwrap();
}

/// A session of `node` on `store`.
async fn session(store: &MemoryStore, node: &Node) -> <MemoryStore as Store>::Session {
    store
        .connect(&node.membership(), node.config())
        .await
        .unwrap()
}

/// A server that records what each reload served (its `applied.toml`) and refuses, when told, a
/// state saying `refused`.
struct FakeServer {
    config_dir: PathBuf,
    reloads: Mutex<Vec<String>>,
    refuse: Mutex<Option<String>>,
    cluster: Mutex<Option<(u8, HashMap<u8, Peer>)>>,
}

impl FakeServer {
    fn reloads(&self) -> Vec<String> {
        self.reloads.lock().unwrap().clone()
    }

    /// The node id and the peers' addresses it was given.
    fn cluster(&self) -> Option<(u8, Vec<(u8, String)>)> {
        self.cluster.lock().unwrap().as_ref().map(|(id, peers)| {
            let mut peers: Vec<(u8, String)> = peers
                .iter()
                .map(|(id, p)| (*id, p.address.clone()))
                .collect();
            peers.sort();
            (*id, peers)
        })
    }
}

impl Serving for Arc<FakeServer> {
    type Error = String;

    fn reload(&self) -> Result<Reloaded, String> {
        let applied =
            std::fs::read_to_string(self.config_dir.join(APPLIED)).map_err(|e| e.to_string())?;
        if self.refuse.lock().unwrap().as_deref() == Some(applied.as_str()) {
            return Err(format!("cannot load '{applied}'"));
        }
        self.reloads.lock().unwrap().push(applied.clone());
        Ok(Reloaded {
            mode: "require".into(),
            fingerprint: Some(format!("fingerprint of {applied}")),
        })
    }

    fn set_cluster(&self, id: u8, peers: HashMap<u8, Peer>) {
        *self.cluster.lock().unwrap() = Some((id, peers));
    }

    /// Answers with its own name: one session per node, whose user is the node's name.
    async fn answer(&self, question: Question, me: &str) -> Answer {
        match question {
            Question::Sessions(_) => {
                let registered = crate::proxy::sessions::Sessions::for_test();
                let mut info = registered.info(|_| None);
                info.user = me.to_string();
                Answer::Sessions(vec![info])
            }
            Question::Terminate(t) => Answer::Terminated(t.selector.id.into_iter().collect()),
            Question::Inventory => Answer::Inventory(Vec::new()),
        }
    }
}

/// A running follower of `node`; it stops when dropped.
struct Followed {
    server: Arc<FakeServer>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn follow(store: &MemoryStore, node: &Node) -> Followed {
    let server = Arc::new(FakeServer {
        config_dir: node.config().to_path_buf(),
        reloads: Mutex::default(),
        refuse: Mutex::default(),
        cluster: Mutex::default(),
    });
    let stop = CancellationToken::new();
    let following = Following {
        config_dir: node.config().to_path_buf(),
        store: store.clone(),
        node: server.clone(),
        address: format!("{}.test:6432", node.name),
        fingerprint: String::new(),
    };
    let task = tokio::spawn(following.run(stop.clone()));
    Followed { server, stop, task }
}

/// Waits (on the paused clock: no real time passes) until `done`, failing after a minute.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that `e` is the conflict of a change made on version `base` while the store holds
/// `current`.
fn assert_conflict(e: &ClusterError, base: u64, current: u64) {
    assert!(
        matches!(e, ClusterError::Conflict { base: b, current: c } if (*b, *c) == (base, current)),
        "{e:?}"
    );
}

/// The kind an operation gives this error (what the admin API answers, the CLI's log level).
fn kind(e: ClusterError) -> crate::control::operations::ErrorKind {
    crate::control::operations::CommandError::from(e).kind()
}
