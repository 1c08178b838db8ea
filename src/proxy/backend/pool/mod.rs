//! The warm pool: repository sessions kept logged in between clients, keyed by [`PoolKey`], within
//! bounds.
//!
//! - Every live backend — busy, idle or being opened — holds a [`Slot`]; there are at most
//!   `max_backends` (the repository's `max_connections` less its superuser reserve), and at most
//!   `max_per_role_database` per key when that is set. A client that needs a new backend while the
//!   bound is reached first closes another key's idle session to make room; failing that it waits, up
//!   to `checkout_timeout`, for a session of its own key or a free slot, then is refused with
//!   PostgreSQL's 53300 ("sorry, too many clients already"), never left hanging.
//! - At most `max_idle` sessions are kept idle; past that a session is closed when its client leaves.
//! - A warm session is handed out only to a client that proved the verifier it was logged in with,
//!   under settings at least as new as the newest the pool has seen, younger than `max_lifetime`, and
//!   quiet ([`Backend::is_quiet`]: a kernel check, no round trip). It is taken last-in first-out, so
//!   a few sessions stay hot and the rest age out after `idle_timeout` ([`super::maintain`]).
//!
//! The lock is a plain mutex held for list operations only: nothing is awaited under it, and a
//! backend being closed is moved out first (its slot's release takes the lock again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Backend, PoolKey};
use crate::proxy::auth::scram::Verifier;

/// The pool's configuration (`[pool]`).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Whether sessions are kept at all (off: every backend is closed when its client leaves).
    pub enabled: bool,
    /// Sent before a session is kept (`DISCARD ALL`).
    pub reset_query: String,
    /// An idle session older than this (since its last client) is closed.
    pub idle_timeout: Duration,
    /// A session older than this (since its login) is closed when its client leaves.
    pub max_lifetime: Duration,
    /// Idle sessions kept at most.
    pub max_idle: usize,
    /// Live backends at most (busy and idle).
    pub max_backends: usize,
    /// Live backends per (role, database, options) at most; 0: only `max_backends` bounds them.
    pub max_per_role_database: usize,
    /// How long a client waits for a backend when the bounds are reached.
    pub checkout_timeout: Duration,
    /// How often the verifiers of roles with idle sessions are read again.
    pub recheck_interval: Duration,
    /// Sessions opened ahead of clients (`pool.min_warm`).
    pub min_warm: Vec<MinWarm>,
    /// How long a client holds its backend (`pool.mode`).
    pub mode: PoolMode,
    /// Per (role, database) modes and bounds (`pool.rules`), the first match applying.
    pub rules: Vec<PoolRule>,
    /// How transaction-pooled clients are tracked.
    pub track: Arc<crate::proxy::pooling::TrackOptions>,
}

/// Keep `sessions` sessions of `role` on `database` open (busy or warm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinWarm {
    /// The role.
    pub role: String,
    /// The database.
    pub database: String,
    /// Sessions at least.
    pub sessions: usize,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            enabled: false,
            reset_query: "DISCARD ALL".into(),
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(3600),
            max_idle: 100,
            max_backends: 97,
            max_per_role_database: 0,
            checkout_timeout: Duration::from_secs(10),
            recheck_interval: Duration::from_secs(10),
            min_warm: Vec::new(),
            mode: PoolMode::Session,
            rules: Vec::new(),
            track: Arc::default(),
        }
    }
}

/// What [`Pool::checkout`] gives a client.
#[derive(Debug)]
pub enum Checkout {
    /// A warm session, ready for the next client.
    Warm(Box<Backend>),
    /// Room for a new backend, to be opened by the caller.
    Fork(Slot),
}

/// No backend became available within `checkout_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// `max_backends` are live.
    #[error("sorry, too many clients already")]
    Total,
    /// `max_per_role_database` are live for this key (the role is named).
    #[error("too many connections for role \"{0}\"")]
    PerKey(String),
}

/// A backend's place within the pool's bounds; released when dropped.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<Pool>,
    key: Arc<PoolKey>,
}

impl Slot {
    /// The key the slot was taken for.
    pub fn key(&self) -> &Arc<PoolKey> {
        &self.key
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        inner.live = inner.live.saturating_sub(1);
        if let Some(entry) = inner.keys.get_mut(&self.key) {
            entry.live = entry.live.saturating_sub(1);
        }
        let undelivered = self.pool.hand_slots(&mut inner);
        self.pool.count_waiting(&inner);
        drop(inner);
        // Their receivers left meanwhile: dropping them here hands their slots on in turn.
        drop(undelivered);
    }
}

/// What a client asks of [`Pool::checkout`].
struct Wanted<'a> {
    verifier: &'a Verifier,
    can_login: bool,
    reuse: bool,
}

/// One key's sessions.
#[derive(Debug, Default)]
struct Entry {
    /// Idle sessions, the most recently used last, with when they went idle.
    idle: Vec<(Backend, Instant)>,
    /// Live backends of this key (busy, idle, opening).
    live: usize,
    /// Warm hand-outs so far.
    handouts: u64,
    /// Backends opened so far.
    opened: u64,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<Arc<PoolKey>, Entry, foldhash::fast::RandomState>,
    live: usize,
    idle: usize,
    /// Hand-outs and openings of keys no longer live, per (role, database), for the statistics.
    past: HashMap<(String, String), (u64, u64)>,
    /// Clients waiting for a backend, in arrival order.
    waiters: std::collections::VecDeque<queue::Waiter>,
    next_waiter: u64,
}

/// The pool shared by every connection of a server.
#[derive(Debug)]
pub struct Pool {
    options: PoolOptions,
    inner: Mutex<Inner>,
    /// The newest settings generation seen: sessions logged in under an older one are retired.
    generation: AtomicU64,
    /// The start-up parameters sessions of each key last reported.
    welcomes: Mutex<HashMap<Arc<PoolKey>, Welcome, foldhash::fast::RandomState>>,
    /// `pgssl_pool_clients_waiting`.
    waiting: metrics::Gauge,
}

impl Pool {
    /// An empty pool.
    pub fn new(options: PoolOptions) -> Arc<Pool> {
        Arc::new(Pool {
            options,
            inner: Mutex::default(),
            generation: AtomicU64::new(0),
            welcomes: Mutex::default(),
            waiting: metrics::gauge!(crate::telemetry::names::POOL_WAITING),
        })
    }

    /// The configuration.
    pub fn options(&self) -> &PoolOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the waiting clients' gauge (under the lock that changed the queue).
    fn count_waiting(&self, inner: &Inner) {
        self.waiting.set(inner.waiters.len() as f64);
    }

    /// Clients waiting for a backend now.
    pub fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Notes the settings generation a connection was accepted with.
    pub fn saw_generation(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::Relaxed);
    }

    fn current(&self, backend: &Backend) -> bool {
        backend.generation >= self.generation.load(Ordering::Relaxed)
            && backend.born.elapsed() < self.options.max_lifetime
            && !backend.epoch.is_cancelled()
    }

    /// A backend for a client who proved `verifier` for `key`: a warm session (when `reuse`), or a
    /// slot to open one in. `can_login` false (a NOLOGIN role) never gets a warm session, and its
    /// idle ones are closed: the repository must see the login and refuse it. Waits until `deadline`
    /// when the bounds are reached. A warm session registered with another worker's runtime is moved
    /// to this one's ([`Backend::adopt`]).
    pub async fn checkout(
        self: &Arc<Self>,
        key: &Arc<PoolKey>,
        verifier: &Verifier,
        can_login: bool,
        reuse: bool,
        deadline: Instant,
    ) -> Result<Checkout, Exhausted> {
        let wanted = Wanted {
            verifier,
            can_login,
            reuse,
        };
        let mut retire = Vec::new();
        let queued = {
            let mut inner = self.lock();
            match self.try_checkout(&mut inner, key, &wanted, &mut retire) {
                Some(found) => Ok(found),
                None => {
                    let queued = queue::enqueue(&mut inner, key, &wanted);
                    self.count_waiting(&inner);
                    Err(queued)
                }
            }
        };
        close_all(retire);
        let (id, mut handed) = match queued {
            Ok(found) => return Ok(adopted(found)),
            Err(queued) => queued,
        };
        if let Ok(Ok(found)) = tokio::time::timeout_at(deadline, &mut handed).await {
            return Ok(adopted(found));
        }
        self.leave(id, handed);
        let inner = self.lock();
        let full_key = !self.key_has_room(key, inner.keys.get(key).map_or(0, |e| e.live));
        Err(if full_key {
            Exhausted::PerKey(key.role.clone())
        } else {
            Exhausted::Total
        })
    }

    /// One attempt under the lock; sessions to close are moved to `retire`.
    fn try_checkout(
        self: &Arc<Self>,
        inner: &mut Inner,
        key: &Arc<PoolKey>,
        wanted: &Wanted<'_>,
        retire: &mut Vec<Backend>,
    ) -> Option<Checkout> {
        let Wanted {
            verifier,
            can_login,
            reuse,
        } = *wanted;
        let mut stale_verifier = !can_login;
        if let Some(entry) = inner.keys.get_mut(key) {
            while reuse
                && can_login
                && let Some((backend, _)) = take_local(&mut entry.idle)
            {
                inner.idle -= 1;
                if backend.verifier != *verifier {
                    stale_verifier = true;
                    retire.push(backend);
                } else if !self.current(&backend) || !backend.is_quiet() {
                    retire.push(backend);
                } else {
                    entry.handouts += 1;
                    return Some(Checkout::Warm(Box::new(backend)));
                }
            }
        }
        if stale_verifier {
            // The role's password changed (or it may no longer log in): none of its sessions may be
            // handed out again, whatever their key.
            for (k, entry) in inner.keys.iter_mut() {
                if k.role == key.role {
                    let before = entry.idle.len();
                    let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut entry.idle)
                        .into_iter()
                        .partition(|(b, _)| can_login && b.verifier == *verifier);
                    entry.idle = keep;
                    inner.idle -= before - entry.idle.len();
                    retire.extend(gone.into_iter().map(|(b, _)| b));
                }
            }
        }
        let entry = inner.keys.entry(key.clone()).or_default();
        if !self.key_has_room(key, entry.live) {
            return None;
        }
        if inner.live < self.options.max_backends {
            inner.live += 1;
            entry.live += 1;
            entry.opened += 1;
            return Some(Checkout::Fork(Slot {
                pool: self.clone(),
                key: key.clone(),
            }));
        }
        // Full: make room by closing the longest-idle session of another key, if there is one (its
        // slot is released when it is dropped, and the next attempt takes it).
        let victim = inner
            .keys
            .iter_mut()
            .filter(|(k, e)| *k != key && !e.idle.is_empty())
            .min_by_key(|(_, e)| e.idle[0].1)
            .map(|(_, e)| e.idle.remove(0).0);
        if let Some(victim) = victim {
            inner.idle -= 1;
            retire.push(victim);
        }
        None
    }

    /// Whether `key` with `live` backends may have another (`max_per_role_database`, or its rule's
    /// `max_backends`).
    fn key_has_room(&self, key: &PoolKey, live: usize) -> bool {
        let per_key = self.options.per_key_bound(&key.role, &key.database);
        per_key == 0 || live < per_key
    }

    /// A slot for a session opened ahead of clients, while fewer than `up_to` are live for `key`
    /// and one is free without waiting or closing another key's session (a client's need comes
    /// first).
    pub fn reserve(self: &Arc<Self>, key: &Arc<PoolKey>, up_to: usize) -> Option<Slot> {
        let mut inner = self.lock();
        let full = inner.live >= self.options.max_backends
            || inner.idle >= self.options.max_idle
            || !inner.waiters.is_empty();
        let entry = inner.keys.entry(key.clone()).or_default();
        if full || entry.live >= up_to || !self.key_has_room(key, entry.live) {
            return None;
        }
        entry.live += 1;
        entry.opened += 1;
        inner.live += 1;
        Some(Slot {
            pool: self.clone(),
            key: key.clone(),
        })
    }

    /// Gives a session whose client left and which was reset to the first client waiting for its
    /// key, else keeps it; closes it instead when it is past its lifetime, its settings are
    /// outdated, the pool is off, `max_idle` are idle already, or the pool is full and clients of
    /// other keys wait (its slot then goes to the first of them).
    pub fn checkin(&self, backend: Backend) {
        let keep = self.options.enabled && self.current(&backend);
        let mut inner = self.lock();
        let backend = match keep {
            true => {
                let kept = queue::hand_warm(&mut inner, backend);
                self.count_waiting(&inner);
                match kept {
                    Some(b) => b,
                    None => return,
                }
            }
            false => backend,
        };
        let slot_wanted = !inner.waiters.is_empty() && inner.live >= self.options.max_backends;
        if !keep || slot_wanted || inner.idle >= self.options.max_idle {
            drop(inner);
            close_all(vec![backend]);
            return;
        }
        let key = backend.key_of_pool().clone();
        inner.idle += 1;
        inner
            .keys
            .entry(key)
            .or_default()
            .idle
            .push((backend, Instant::now()));
    }

    /// Takes out the idle sessions `retire` picks (given the backend and how long it has been idle):
    /// the maintenance's sweep.
    pub fn take_idle(&self, mut retire: impl FnMut(&Backend, Duration) -> bool) -> Vec<Backend> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut out = Vec::new();
        for entry in inner.keys.values_mut() {
            let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut entry.idle)
                .into_iter()
                .partition(|(b, since)| retire(b, since.elapsed()));
            entry.idle = keep;
            out.extend(gone.into_iter().map(|(b, _)| b));
        }
        inner.idle -= out.len();
        // A key with nothing live is forgotten (start-up options can make many), its counts kept.
        let past = &mut inner.past;
        inner.keys.retain(|k, e| {
            if e.live > 0 {
                return true;
            }
            let p = past
                .entry((k.role.clone(), k.database.clone()))
                .or_default();
            p.0 += e.handouts;
            p.1 += e.opened;
            false
        });
        out
    }

    /// Whether a backend is past its time: outdated settings, lifetime, idle timeout, or not quiet.
    pub fn expired(&self, backend: &Backend, idle_for: Duration) -> bool {
        !self.current(backend) || idle_for >= self.options.idle_timeout || !backend.is_quiet()
    }

    /// The roles that have idle sessions, each with the verifier one of them logged in with.
    pub fn idle_roles(&self) -> Vec<(String, Verifier)> {
        let inner = self.lock();
        let mut roles: Vec<(String, Verifier)> = Vec::new();
        for (k, e) in &inner.keys {
            if let Some((b, _)) = e.idle.last()
                && !roles.iter().any(|(r, _)| *r == k.role)
            {
                roles.push((k.role.clone(), b.verifier.clone()));
            }
        }
        roles
    }

    /// Live and idle backends in all.
    pub fn totals(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.live, inner.idle)
    }
}

/// Closes sessions in the background (each sends Terminate, bounded by a second).
pub fn close_all(backends: Vec<Backend>) {
    if backends.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for b in backends {
            b.close().await;
        }
    });
}

mod affinity;
mod queue;
mod rules;
mod stats;
#[cfg(test)]
mod tests;
mod welcome;

pub use affinity::set_worker;
pub(super) use affinity::this_worker;
use affinity::{adopted, take_local};
pub use rules::{PoolMode, PoolRule};
pub use stats::KeyStats;
pub use welcome::Welcome;
