//! The client sessions this node serves, as an operator sees them (`pgssl sessions list`) and stops
//! them (`pgssl sessions terminate`).
//!
//! Every start-up that gets past negotiation is registered ([`Sessions::register`]) with what is
//! known of it then: who, from where, over what TLS. Its login adds how it authenticated; its
//! relay or pooled loop publishes its state, backend and bytes as they change, with relaxed atomic
//! stores where it already wakes (no lock, no allocation per query). The [`Registered`] handle lives
//! in the session's `Who` (its facts for the policy and every log line) and takes the entry out when the session
//! ends, however it ends.
//!
//! Terminating a session cancels its stop token: the relay or pooled loop ends as at the end of a
//! shutdown grace period, sees why ([`Entry::terminated`]) and tells the client with FATAL 57P01,
//! naming the administrator's action.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::proxy::metrics::AuthMechanism;
use crate::proxy::relay::Transferred;

#[cfg(test)]
mod tests;

/// What a session is doing, as `sessions list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum SessionState {
    /// Between its start-up and the end of its login.
    Login = 0,
    /// Logged in, nothing to run (a transaction-pooled client between transactions holds no
    /// backend).
    Idle = 1,
    /// Waiting for a backend: the pool's bounds are reached.
    Waiting = 2,
    /// A request is running.
    Active = 3,
    /// Inside a transaction block, between requests (holding its backend).
    InTransaction = 4,
    /// Passthrough: the repository's session, relayed as it is; pgssl does not read it.
    Relayed = 5,
    /// A state a newer node reported that this version does not know (never set here).
    #[serde(other)]
    Other = 6,
}

impl SessionState {
    fn from_u8(v: u8) -> SessionState {
        match v {
            1 => SessionState::Idle,
            2 => SessionState::Waiting,
            3 => SessionState::Active,
            4 => SessionState::InTransaction,
            5 => SessionState::Relayed,
            6 => SessionState::Other,
            _ => SessionState::Login,
        }
    }

    /// The word `sessions list` prints.
    pub fn label(self) -> &'static str {
        match self {
            SessionState::Login => "login",
            SessionState::Idle => "idle",
            SessionState::Waiting => "waiting",
            SessionState::Active => "active",
            SessionState::InTransaction => "in transaction",
            SessionState::Relayed => "relayed",
            SessionState::Other => "other",
        }
    }

    /// The state of a session whose last ReadyForQuery said `status` (`I`, `T`, `E`) and which
    /// does (`awaiting`) or does not wait for an answer to a request.
    pub(crate) fn of(awaiting: bool, status: u8) -> SessionState {
        match (awaiting, status) {
            (true, _) => SessionState::Active,
            (false, b'T' | b'E') => SessionState::InTransaction,
            (false, _) => SessionState::Idle,
        }
    }
}

/// What the handshake told of a TLS session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFacts {
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: Cow<'static, str>,
    /// The cipher suite's IANA name.
    pub cipher: Cow<'static, str>,
    /// The key-exchange group (`X25519MLKEM768`, `X25519`, …).
    pub group: Option<Cow<'static, str>>,
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The subject DN of the client's certificate, if it presented one.
    pub client_cert_subject: Option<String>,
}

/// What is known of a session when it is registered, and never changes.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The client's address (the PROXY protocol's or a relaying node's source, when trusted).
    pub peer: SocketAddr,
    /// The role it asked for.
    pub user: String,
    /// The database it asked for.
    pub database: String,
    /// Its start-up's `application_name`.
    pub application_name: String,
    /// `None` in plaintext.
    pub tls: Option<TlsFacts>,
}

/// One registered session: its facts and what its task publishes.
#[derive(Debug)]
pub struct Entry {
    id: u64,
    facts: Facts,
    started: SystemTime,
    state: AtomicU8,
    /// `AuthMechanism` + 1; 0 until the login succeeds.
    auth: AtomicU8,
    /// The backend's process ID, 0 without one.
    pid: AtomicI32,
    /// The backend's host (its index in `repository.address`) + 1; 0 without one.
    host: AtomicU8,
    to_repository: AtomicU64,
    to_client: AtomicU64,
    /// Cancelled to end the session: a child of the server's closing token.
    stop: CancellationToken,
    /// The relay's own token (a child of its host's epoch), cancelled with `stop`.
    relay_stop: Mutex<Option<CancellationToken>>,
    /// Who ended it, once an administrator did.
    terminated: OnceLock<String>,
}

impl Entry {
    /// The session's id on this node.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its state now.
    pub fn state(&self) -> SessionState {
        SessionState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Publishes its state.
    pub(crate) fn set_state(&self, state: SessionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Publishes the bytes moved so far and the state, from a poll that found nothing more to do.
    pub(crate) fn publish(&self, moved: Transferred, state: SessionState) {
        self.publish_moved(moved.to_upstream, moved.to_client, state);
    }

    /// [`Entry::publish`] with the two directions' counts.
    pub(crate) fn publish_moved(&self, to_repository: u64, to_client: u64, state: SessionState) {
        self.to_repository.store(to_repository, Ordering::Relaxed);
        self.to_client.store(to_client, Ordering::Relaxed);
        self.set_state(state);
    }

    /// The login succeeded with `mechanism`.
    pub(crate) fn logged_in(&self, mechanism: AuthMechanism) {
        self.auth.store(mechanism as u8 + 1, Ordering::Relaxed);
    }

    /// The session holds the backend with process ID `pid` on host `host`, or none (`None`).
    pub(crate) fn on_backend(&self, backend: Option<(i32, usize)>) {
        let (pid, host) = backend.map_or((0, 0), |(pid, host)| {
            (pid, u8::try_from(host + 1).unwrap_or(u8::MAX))
        });
        self.pid.store(pid, Ordering::Relaxed);
        self.host.store(host, Ordering::Relaxed);
    }

    /// The token that ends a transaction-pooled session's loop (a child of the server's closing).
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// A token for a relay that already stops with `epoch`: it stops with a termination too.
    pub(crate) fn relay_stop(&self, epoch: &CancellationToken) -> CancellationToken {
        let token = epoch.child_token();
        let mut slot = self.relay_stop.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(token.clone());
        // Terminated between the check and the registration: the relay stops at once.
        if self.stop.is_cancelled() {
            token.cancel();
        }
        token
    }

    /// Who terminated the session, if an administrator did.
    pub fn terminated(&self) -> Option<&str> {
        self.terminated.get().map(String::as_str)
    }

    /// Ends the session on `by`'s word; `false` when it was already being terminated.
    pub fn terminate(&self, by: &str) -> bool {
        if self.terminated.set(by.to_string()).is_err() {
            return false;
        }
        self.stop.cancel();
        let slot = self.relay_stop.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = slot.as_ref() {
            token.cancel();
        }
        true
    }

    /// The session as `sessions list` reports it; `host_name` names a host by its index.
    pub fn info(&self, host_name: impl Fn(usize) -> Option<String>) -> SessionInfo {
        let f = &self.facts;
        let pid = self.pid.load(Ordering::Relaxed);
        let host = usize::from(self.host.load(Ordering::Relaxed));
        let auth = self.auth.load(Ordering::Relaxed);
        let age = SystemTime::now()
            .duration_since(self.started)
            .unwrap_or_default();
        SessionInfo {
            id: self.id,
            node: None,
            user: f.user.clone(),
            database: f.database.clone(),
            application_name: f.application_name.clone(),
            client_addr: f.peer.to_string(),
            tls: f.tls.clone(),
            auth_method: auth
                .checked_sub(1)
                .and_then(|i| crate::proxy::metrics::AUTH_MECHANISMS.get(usize::from(i)))
                .map(|s| (*s).to_string()),
            backend_host: (host > 0).then(|| host_name(host - 1)).flatten(),
            backend_pid: (pid != 0).then_some(pid),
            state: self.state(),
            started_at: crate::proxy::repository::hosts::status::rfc3339(self.started),
            age_secs: age.as_secs(),
            bytes_to_repository: self.to_repository.load(Ordering::Relaxed),
            bytes_to_client: self.to_client.load(Ordering::Relaxed),
        }
    }

    /// The facts it was registered with.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

/// A session as `sessions list`, its API and its page report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// Its id on its node.
    pub id: u64,
    /// Its node's name in a cluster (`None` on a node of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The role it asked for.
    pub user: String,
    /// The database.
    pub database: String,
    /// Its start-up's `application_name`.
    pub application_name: String,
    /// The client's address and port.
    pub client_addr: String,
    /// The TLS session, `None` in plaintext.
    pub tls: Option<TlsFacts>,
    /// How it authenticated (`scram-sha-256`, `scram-sha-256-plus` — channel binding —,
    /// `certificate`, `passthrough`); `None` while it logs in.
    pub auth_method: Option<String>,
    /// Its backend's host, while it holds one.
    pub backend_host: Option<String>,
    /// Its backend's process ID, while it holds one.
    pub backend_pid: Option<i32>,
    /// What it does now.
    pub state: SessionState,
    /// When it connected (RFC 3339).
    pub started_at: String,
    /// Seconds since then.
    pub age_secs: u64,
    /// Bytes from the client to the repository.
    pub bytes_to_repository: u64,
    /// Bytes from the repository to the client.
    pub bytes_to_client: u64,
}

impl SessionInfo {
    /// Whether the client bound its SCRAM exchange to the TLS channel.
    pub fn channel_binding(&self) -> bool {
        self.auth_method.as_deref() == Some("scram-sha-256-plus")
    }
}

/// Which sessions a listing or a termination is about. Unknown fields are refused: a node must never
/// read a narrower selector (one with a field it does not know) as a wider one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// In a cluster, the sessions of one node (by its name); a node reads it as "mine or none".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// One session, by its id on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The sessions of one role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The sessions on one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl Selector {
    /// Whether `entry` is one of them.
    pub fn matches(&self, entry: &Entry) -> bool {
        let f = &entry.facts;
        self.id.is_none_or(|id| id == entry.id)
            && self.user.as_deref().is_none_or(|u| u == f.user)
            && self.database.as_deref().is_none_or(|d| d == f.database)
    }

    /// Whether it names nothing (every session).
    pub fn is_everything(&self) -> bool {
        self.id.is_none() && self.user.is_none() && self.database.is_none()
    }
}

type Live = HashMap<u64, Arc<Entry>, foldhash::fast::RandomState>;

/// The sessions a node serves now.
#[derive(Debug, Default)]
pub struct Sessions {
    next: AtomicU64,
    live: Mutex<Live>,
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Arc<Sessions> {
        Arc::new(Sessions::default())
    }

    /// Registers a session with `facts`; it stops when `closing` does, or when it is terminated.
    pub fn register(self: &Arc<Sessions>, facts: Facts, closing: &CancellationToken) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            facts,
            started: SystemTime::now(),
            state: AtomicU8::new(SessionState::Login as u8),
            auth: AtomicU8::new(0),
            pid: AtomicI32::new(0),
            host: AtomicU8::new(0),
            to_repository: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            stop: closing.child_token(),
            relay_stop: Mutex::new(None),
            terminated: OnceLock::new(),
        });
        self.lock().insert(id, entry.clone());
        Registered {
            entry,
            sessions: self.clone(),
        }
    }

    /// A session of its own registry, for tests of what publishes to one.
    #[cfg(test)]
    pub(crate) fn for_test() -> Registered {
        let facts = Facts {
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            user: "test".into(),
            database: "test".into(),
            application_name: String::new(),
            tls: None,
        };
        Sessions::new().register(facts, &CancellationToken::new())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sessions `selector` names, oldest first.
    pub fn select(&self, selector: &Selector) -> Vec<Arc<Entry>> {
        let mut found: Vec<Arc<Entry>> = self
            .lock()
            .values()
            .filter(|e| selector.matches(e))
            .cloned()
            .collect();
        found.sort_by_key(|e| e.id);
        found
    }

    /// How many sessions are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Terminates the sessions `selector` names on `by`'s word; returns the ids it terminated
    /// (a session already being terminated is not counted again). A selector that names nothing
    /// terminates nothing, whoever sent it: ending every session is the server's shutdown.
    pub fn terminate(&self, selector: &Selector, by: &str) -> Vec<u64> {
        if selector.is_everything() {
            return Vec::new();
        }
        self.select(selector)
            .into_iter()
            .filter(|e| e.terminate(by))
            .map(|e| e.id)
            .collect()
    }
}

/// A session's place in the registry, given up when it is dropped.
#[derive(Debug)]
pub struct Registered {
    entry: Arc<Entry>,
    sessions: Arc<Sessions>,
}

impl std::ops::Deref for Registered {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.entry.id);
    }
}
