//! The repository's hosts: which one is the primary, which are standbys, and where each session
//! goes.
//!
//! With one host (the managed repository, or one external address) nothing is probed and every
//! session goes there, as it always did. With several, the repository layer's probe
//! ([`crate::repository::probe`]) reports what each host says of itself, [`decide`] turns the
//! reports into roles, and [`Hosts::route`] sends each session where its user's [`TargetRole`]
//! allows. pgssl follows what PostgreSQL (or Patroni) decided; it never promotes anything.
//!
//! Every session is tied to its host's *epoch* for the role it was routed by: a token cancelled
//! when that host stops being what the session needs. A primary-bound session ends (57P01) when its
//! host turns standby, is refused, or another host becomes primary; an unreachable host's sessions
//! are left to their sockets. Warm backends carry the same token and are never handed out after it.

pub mod decide;
mod observe;
pub mod status;
pub mod target;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use decide::{PatroniSays, Probed, Role};
pub use status::HostStatus;
pub use target::{StandbyLag, TargetRole, Targets};

use super::RepositoryConnector;
use crate::telemetry::names;

/// How the hosts are routed to.
#[derive(Debug, Clone)]
pub struct HostsOptions {
    /// How long a login waits for a primary (a failover) before it is refused.
    pub failover_wait: Duration,
    /// How far behind a standby may be and still take sessions (`None`: any lag).
    pub max_standby_lag: Option<StandbyLag>,
    /// Where each user's sessions go.
    pub targets: Targets,
}

impl Default for HostsOptions {
    fn default() -> Self {
        HostsOptions {
            failover_wait: Duration::from_secs(30),
            max_standby_lag: None,
            targets: Targets::default(),
        }
    }
}

/// The repository's hosts and what is known of each.
#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
    options: HostsOptions,
    /// Parent of every epoch: cancelled at the end of the shutdown grace period.
    closing: CancellationToken,
    view: watch::Sender<Arc<View>>,
    observed: Mutex<Observed>,
    /// Wakes the probes at once (a new backend found its primary in recovery).
    probe_now: watch::Sender<u64>,
    waiting: AtomicUsize,
}

#[derive(Debug)]
struct Host {
    connector: Arc<dyn RepositoryConnector>,
    label: String,
    /// Client sessions on it now.
    sessions: Arc<AtomicUsize>,
}

/// The tokens sessions on a host hold, one per role they were routed by.
#[derive(Debug, Clone)]
pub struct Epochs {
    /// Held by sessions routed to the host as the primary.
    primary: CancellationToken,
    /// Held by sessions routed to it as a standby (or as any host).
    standby: CancellationToken,
}

/// What the probes last reported, and what the decision remembers.
#[derive(Debug)]
struct Observed {
    probes: Vec<Option<Probed>>,
    errors: Vec<Option<String>>,
    last_ok: Vec<Option<SystemTime>>,
    last_change: Vec<SystemTime>,
    memory: decide::Memory,
    /// Whether each host has been probed at least once.
    seen: Vec<bool>,
    /// The last host seen as primary (a failover is a change of it).
    last_primary: Option<usize>,
}

/// The roles as routing reads them; replaced as a whole on every change.
#[derive(Debug, Clone)]
pub struct View {
    /// One per host.
    pub roles: Vec<Role>,
    /// Whether the last probe of each host answered.
    pub reachable: Vec<bool>,
    /// The primary, if there is exactly one.
    pub primary: Option<usize>,
    /// Each standby's lag in bytes, while a primary is known.
    pub lag_bytes: Vec<Option<u64>>,
    /// Each standby's lag in seconds.
    pub lag_seconds: Vec<Option<f64>>,
    /// Whether every host has been probed at least once.
    pub all_probed: bool,
    /// Each host's epochs: replaced with the view, so that a session routed by a view holds that
    /// view's tokens, which are cancelled when a later view ends them.
    pub epochs: Vec<Epochs>,
}

/// Where a session goes: a host and the token that ends the session when the host stops being
/// what it was routed for.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The host's index in the configured order.
    pub index: usize,
    /// Its connector.
    pub connector: Arc<dyn RepositoryConnector>,
    /// Cancelled when the host stops being what this session was routed to (or at shutdown's end).
    pub epoch: CancellationToken,
    /// Whether the session was routed to the host as the primary.
    pub as_primary: bool,
    /// What the session's user may run on.
    pub target: TargetRole,
    sessions: Arc<AtomicUsize>,
}

impl Routed {
    /// Counts a session on the host while the returned guard lives.
    pub fn session(&self) -> SessionOnHost {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionOnHost(self.sessions.clone())
    }
}

/// One session counted on a host.
#[derive(Debug)]
pub struct SessionOnHost(Arc<AtomicUsize>);

impl Drop for SessionOnHost {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No host can take the session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoHost {
    /// No primary appeared within `repository.failover_wait`.
    #[error(
        "no primary repository host is available (waited {} for a failover)",
        humantime::format_duration(*.0)
    )]
    NoPrimary(Duration),
    /// No standby within `repository.max_standby_lag`.
    #[error("no standby repository host is available within repository.max_standby_lag")]
    NoStandby,
    /// The server is closing.
    #[error("the proxy is shutting down")]
    Closing,
}

impl Hosts {
    /// The hosts, in the configured order. One host is never probed: it takes every session. Several
    /// are unknown until the first probe round.
    pub fn new(connectors: Vec<Arc<dyn RepositoryConnector>>, options: HostsOptions) -> Hosts {
        let n = connectors.len();
        let closing = CancellationToken::new();
        let hosts: Vec<Host> = connectors
            .into_iter()
            .map(|connector| Host {
                label: connector.addr().to_string(),
                connector,
                sessions: Arc::new(AtomicUsize::new(0)),
            })
            .collect();
        let single = n == 1;
        let view = View {
            roles: vec![if single { Role::Primary } else { Role::Unknown }; n],
            reachable: vec![single; n],
            primary: single.then_some(0),
            lag_bytes: vec![None; n],
            lag_seconds: vec![None; n],
            all_probed: single,
            epochs: (0..n)
                .map(|_| Epochs {
                    primary: closing.child_token(),
                    standby: closing.child_token(),
                })
                .collect(),
        };
        let now = SystemTime::now();
        Hosts {
            hosts,
            options,
            closing,
            view: watch::Sender::new(Arc::new(view)),
            observed: Mutex::new(Observed {
                probes: vec![None; n],
                errors: vec![None; n],
                last_ok: vec![None; n],
                last_change: vec![now; n],
                seen: vec![false; n],
                memory: decide::Memory::default(),
                last_primary: single.then_some(0),
            }),
            probe_now: watch::Sender::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// One host, never probed (the managed repository, a single address, a unit test's fake).
    pub fn single(connector: Arc<dyn RepositoryConnector>) -> Hosts {
        Hosts::new(vec![connector], HostsOptions::default())
    }

    /// The hosts as configured, libpq-style: `h1:5432,h2:5432`.
    pub fn addresses(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.label.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the hosts are probed (more than one is configured).
    pub fn probed(&self) -> bool {
        self.hosts.len() > 1
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Never true: there is at least one host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `index`'s connector.
    pub fn connector(&self, index: usize) -> Option<&Arc<dyn RepositoryConnector>> {
        self.hosts.get(index).map(|h| &h.connector)
    }

    /// The first host (the only one, when there is one).
    pub fn first(&self) -> &Arc<dyn RepositoryConnector> {
        &self.hosts[0].connector
    }

    /// Cancelled when the shutdown grace period ends; every epoch is its child.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// The roles now.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Waits until the roles change (for the probes' pace and the tests).
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    /// Logins waiting for a primary now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The probe's options.
    pub fn options(&self) -> &HostsOptions {
        &self.options
    }

    /// Where `user`'s sessions go.
    pub fn target_of(&self, user: &str, class: crate::proxy::policy::UserClass) -> TargetRole {
        self.options.targets.of(user, class)
    }

    /// Finds the host for a session of `target`, waiting up to `failover_wait` for a primary when
    /// the target needs one and there is none.
    pub async fn route(&self, target: TargetRole) -> Result<Routed, NoHost> {
        let mut watch = self.view.subscribe();
        let deadline = Instant::now() + self.options.failover_wait;
        let mut counted = None;
        loop {
            if self.closing.is_cancelled() {
                return Err(NoHost::Closing);
            }
            let view = watch.borrow_and_update().clone();
            if let Some((index, as_primary)) = self.pick(&view, target) {
                return Ok(self.routed(&view, index, as_primary, target));
            }
            // A standby-only login is refused at once when the hosts are known (libpq's
            // semantics); only until every host has been probed once does it wait.
            if target == TargetRole::Standby && view.all_probed {
                return Err(NoHost::NoStandby);
            }
            if counted.is_none() {
                counted = Some(Waiting::new(&self.waiting));
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, watch.changed()) => match changed {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(NoHost::Closing),
                    Err(_) if target == TargetRole::Standby => return Err(NoHost::NoStandby),
                    Err(_) => return Err(NoHost::NoPrimary(self.options.failover_wait)),
                },
                () = self.closing.cancelled() => return Err(NoHost::Closing),
            }
        }
    }

    /// The host `view` gives a session of `target`, and whether as the primary.
    fn pick(&self, view: &View, target: TargetRole) -> Option<(usize, bool)> {
        // One host is not probed: whatever it is, it is all there is.
        if !self.probed() {
            return Some((0, true));
        }
        let primary = view.primary.filter(|p| view.reachable[*p]);
        match target {
            TargetRole::Primary => primary.map(|p| (p, true)),
            TargetRole::Standby => self.standby(view).map(|s| (s, false)),
            TargetRole::PreferStandby => self
                .standby(view)
                .map(|s| (s, false))
                .or(primary.map(|p| (p, true))),
            TargetRole::Any => (0..self.hosts.len()).find_map(|i| {
                if !view.reachable[i] {
                    return None;
                }
                match view.roles[i] {
                    Role::Primary => Some((i, true)),
                    Role::Standby => Some((i, false)),
                    _ => None,
                }
            }),
        }
    }

    /// The least busy standby within the lag bound.
    fn standby(&self, view: &View) -> Option<usize> {
        (0..self.hosts.len())
            .filter(|&i| view.reachable[i] && view.roles[i] == Role::Standby)
            .filter(|&i| {
                self.options
                    .max_standby_lag
                    .is_none_or(|max| max.allows(view.lag_bytes[i], view.lag_seconds[i]))
            })
            .min_by_key(|&i| self.hosts[i].sessions.load(Ordering::Relaxed))
    }

    fn routed(&self, view: &View, index: usize, as_primary: bool, target: TargetRole) -> Routed {
        let host = &self.hosts[index];
        let epochs = &view.epochs[index];
        Routed {
            index,
            connector: host.connector.clone(),
            epoch: if as_primary {
                epochs.primary.clone()
            } else {
                epochs.standby.clone()
            },
            as_primary,
            target,
            sessions: host.sessions.clone(),
        }
    }

    /// After a connection to `failed`'s host could not be made: with several hosts, records the
    /// host as unreachable (the probe would find the same a moment later) and routes the session
    /// again, waiting for a failover as [`Hosts::route`] does, but no later than `deadline`. `None`
    /// with a single host, or when nothing else is found in time.
    pub async fn reroute(
        &self,
        failed: &Routed,
        error: String,
        deadline: Instant,
    ) -> Option<Routed> {
        if !self.probed() {
            return None;
        }
        self.observe(failed.index, Err(error));
        // The probes look again at once: a host that failed one session but is up is back within
        // a round trip, not a probe interval.
        self.probe_again();
        tokio::time::timeout_at(deadline, self.route(failed.target))
            .await
            .ok()?
            .ok()
    }

    /// Asks the probes to look again now: a session routed to `index` as the primary found it in
    /// recovery.
    pub fn suspect(&self, index: usize) {
        if let Some(h) = self.hosts.get(index) {
            warn!(host = %h.label, "a new repository session found the host in recovery; probing the hosts again now");
        }
        self.probe_again();
    }

    /// Asks every probe to look again now.
    fn probe_again(&self) {
        self.probe_now.send_modify(|asked| *asked += 1);
    }

    /// Requests for a probe now ([`Hosts::suspect`], a host that did not answer a session): a
    /// receiver remembers one made while its probe was busy, so none is lost.
    pub fn probe_requests(&self) -> watch::Receiver<u64> {
        self.probe_now.subscribe()
    }
}

/// Counts a login waiting for a primary.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(names::REPOSITORY_LOGINS_WAITING).increment(1.0);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(names::REPOSITORY_LOGINS_WAITING).decrement(1.0);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
