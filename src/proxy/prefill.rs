//! `pool.min_warm`: repository sessions opened ahead of clients, for harnesses that ramp from zero.
//!
//! A session logs in by SCRAM pass-through, which needs a ClientKey that only a client's proof
//! reveals: pgssl cannot open a session of a role before one of its clients has logged in. So the
//! first login of a listed (role, database) is remembered — its start-up packet and its proof, in
//! memory only, never written or logged — and once a second the sessions of that key are topped up
//! to the configured number (busy and warm together), within the pool's bounds and never by closing
//! another key's session. A newer login of the role replaces what was remembered (a changed password
//! is learned from the first client who proves it); a NOLOGIN role, or a refusal by the repository,
//! forgets it until a client logs in again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::proxy::auth::terminate::{Proven, RepositoryAuthError};
use crate::proxy::backend::{Backend, MinWarm, PoolKey};
use crate::proxy::connection::{ConnectionContext, forward_start};
use crate::proxy::protocol::first_packet::StartupMessage;
use crate::proxy::repository::RepositoryConnectError;
use crate::proxy::session;
use crate::proxy::settings::{LiveSettings, SettingsCell};
use crate::telemetry::LogSafe;

/// What a session opened ahead of a client logs in with: the last login of its (role, database).
#[derive(Clone)]
struct Learned {
    key: Arc<PoolKey>,
    startup: Bytes,
    minor: u16,
    proven: Arc<Proven>,
    /// The host's epoch the login was routed under: once cancelled (the host is no longer what the
    /// login was routed to), nothing more is opened there.
    epoch: CancellationToken,
}

/// The listed (role, database) pairs and what their clients' logins taught.
pub struct Prefill {
    wanted: Vec<MinWarm>,
    learned: Mutex<HashMap<(String, String), Learned>>,
}

/// Why a session could not be opened ahead of a client.
#[derive(Debug, thiserror::Error)]
enum PrefillError {
    #[error("could not connect to the repository: {0}")]
    Connect(#[from] RepositoryConnectError),
    #[error(transparent)]
    Login(#[from] RepositoryAuthError),
    #[error("the repository did not answer the login in time")]
    TimedOut,
    #[error("the repository host is no longer configured")]
    NoHost,
}

impl std::fmt::Debug for Prefill {
    // What was learned holds ClientKeys: only the listed pairs are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefill")
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

impl Prefill {
    /// Pairs to keep open (`pool.min_warm`).
    pub fn new(wanted: Vec<MinWarm>) -> Prefill {
        Prefill {
            wanted,
            learned: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Learned>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a client's login when its (role, database) is listed (a cheap no-op otherwise).
    pub fn learn(
        &self,
        key: &Arc<PoolKey>,
        startup: &StartupMessage,
        proven: &Proven,
        epoch: &CancellationToken,
    ) {
        if !self
            .wanted
            .iter()
            .any(|w| w.role == key.role && w.database == key.database)
        {
            return;
        }
        let pair = (key.role.clone(), key.database.clone());
        if !proven.can_login {
            self.lock().remove(&pair);
            return;
        }
        let mut learned = self.lock();
        if learned.get(&pair).is_some_and(|l| {
            l.key == *key && l.proven.verifier() == proven.verifier() && !l.epoch.is_cancelled()
        }) {
            return;
        }
        learned.insert(
            pair,
            Learned {
                key: key.clone(),
                startup: startup.raw.clone(),
                minor: startup.minor,
                proven: Arc::new(proven.clone()),
                epoch: epoch.clone(),
            },
        );
    }

    fn forget(&self, learned: &Learned) {
        let mut all = self.lock();
        let pair = (learned.key.role.clone(), learned.key.database.clone());
        if all
            .get(&pair)
            .is_some_and(|l| Arc::ptr_eq(&l.proven, &learned.proven))
        {
            all.remove(&pair);
        }
    }

    /// What to top up now, with the number of sessions each key should have.
    fn plan(&self) -> Vec<(Learned, usize)> {
        let mut learned = self.lock();
        // A host that stopped being what the login was routed to gets no more sessions; the next
        // login of the pair teaches where they go now.
        learned.retain(|_, l| !l.epoch.is_cancelled());
        self.wanted
            .iter()
            .filter_map(|w| {
                let l = learned.get(&(w.role.clone(), w.database.clone()))?;
                Some((l.clone(), w.sessions))
            })
            .collect()
    }
}

/// Tops up the listed keys once a second until `stop` (returns at once when none is listed).
pub async fn run(ctx: Arc<ConnectionContext>, cell: SettingsCell, stop: CancellationToken) {
    if ctx.prefill.wanted.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let settings = cell.current();
        ctx.pool.saw_generation(settings.generation);
        for (learned, sessions) in ctx.prefill.plan() {
            let mut opened = 0;
            while let Some(slot) = ctx.pool.reserve(&learned.key, sessions) {
                match open(&ctx, &settings, &learned, slot).await {
                    Ok(backend) => {
                        ctx.pool.checkin(backend);
                        opened += 1;
                    }
                    Err(e) => {
                        if matches!(e, PrefillError::Login(_)) {
                            ctx.prefill.forget(&learned);
                        }
                        warn!(user = %LogSafe(&learned.key.role), database = %LogSafe(&learned.key.database),
                              error = %e, "could not open a session ahead of clients");
                        break;
                    }
                }
            }
            if opened > 0 {
                ctx.metrics.pool.prefilled.increment(opened);
                info!(user = %LogSafe(&learned.key.role), database = %LogSafe(&learned.key.database),
                      opened, "opened sessions ahead of clients");
            }
        }
        ctx.metrics.pool.sessions(ctx.pool.totals());
    }
}

/// Opens one session the way a client's login does, without the client.
async fn open(
    ctx: &ConnectionContext,
    settings: &LiveSettings,
    learned: &Learned,
    slot: crate::proxy::backend::Slot,
) -> Result<Backend, PrefillError> {
    let connector = ctx
        .repository
        .connector(learned.key.host)
        .ok_or(PrefillError::NoHost)?;
    let login = async {
        let mut upstream = connector
            .connect(ctx.connect_timeout, &settings.repository_tls)
            .await?;
        forward_start(&mut upstream, &learned.startup, &[])
            .await
            .map_err(RepositoryAuthError::Io)?;
        let login = session::pass_through(
            upstream,
            &learned.proven,
            learned.minor,
            slot,
            settings.generation,
        );
        let mut backend = login.await?;
        backend.on_epoch(learned.epoch.clone());
        Ok::<_, PrefillError>(backend)
    };
    match tokio::time::timeout(ctx.connect_timeout + Duration::from_secs(10), login).await {
        Ok(result) => result,
        Err(_) => Err(PrefillError::TimedOut),
    }
}
