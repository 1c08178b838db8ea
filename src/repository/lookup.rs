//! Verifier lookups for `auth.mode = "proxy"`: a role's `rolpassword` and whether it has expired, read
//! over two persistent connections (each opened on first use, re-opened once when it has died — after a
//! repository restart, or with a password a rotation has changed meanwhile):
//! - [`ManagedLookup`]: the managed repository's `pg_authid`, as pgssl's superuser (its password read
//!   from the keystore at each connect);
//! - [`ExternalLookup`]: an external repository, as the lookup user, with `auth.lookup_query`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::keystore::{Keystore, Secret};
use crate::proxy::auth::terminate::{LookupError, LookupFuture, RoleSecret, VerifierSource};
use crate::proxy::upstream::UpstreamStream;
use crate::proxy::upstream::tls::UpstreamTls;
use crate::proxy::upstream::{Target, UpstreamAddr};
use crate::repository::Session;
use crate::repository::managed::ManagedRepository;
use crate::repository::sql;

/// The default `auth.lookup_query`: `$1` is the role name (quoted as a literal before it is sent).
/// Its third column, `rolcanlogin`, may be missing from an administrator's own query (a NOLOGIN role
/// then still gets the repository's refusal when it needs a new backend, but its warm sessions are not
/// closed early).
pub const DEFAULT_LOOKUP_QUERY: &str = "SELECT rolpassword, coalesce(rolvaliduntil < now(), false)::text, rolcanlogin::text FROM pg_catalog.pg_authid WHERE rolname = $1";

use crate::config::LOOKUP_CONNECTIONS;

/// The persistent lookup connections and how to (re)open them. A lookup waits for the first
/// connection to come free, in arrival order: tying each lookup to one connection in turn let a slow
/// answer on one hold up the lookups queued behind it while the other sat idle (at 256 clients that
/// doubled pgssl's p99 connect latency).
#[derive(Debug)]
struct Kept {
    /// The connections not in use (`None`: not opened yet, or closed after a failure).
    free: std::sync::Mutex<Vec<Option<Session<UpstreamStream>>>>,
    /// One permit per connection; tokio's semaphore queues waiters fairly.
    turns: Semaphore,
}

impl Default for Kept {
    fn default() -> Kept {
        Kept {
            free: std::sync::Mutex::new((0..LOOKUP_CONNECTIONS).map(|_| None).collect()),
            turns: Semaphore::new(LOOKUP_CONNECTIONS),
        }
    }
}

/// A lookup connection taken from [`Kept`], put back when dropped (even when the lookup's future is
/// dropped midway: the connection is then closed, as its answer would be read by the next lookup).
struct Taken<'a> {
    kept: &'a Kept,
    session: Option<Session<UpstreamStream>>,
    clean: bool,
    _turn: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let session = if self.clean {
            self.session.take()
        } else {
            None
        };
        let mut free = self.kept.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push(session);
    }
}

impl Kept {
    /// Runs `query` (with `$1` as `role`), connecting with `connect` when no connection is kept and
    /// once more when the kept one has died.
    async fn lookup<F, Fut>(
        &self,
        query: &str,
        role: &str,
        connect: F,
    ) -> Result<Option<RoleSecret>, LookupError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Session<UpstreamStream>, LookupError>>,
    {
        let turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| LookupError("the verifier lookup is shutting down".into()))?;
        let session = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // Prefer an open connection.
            let at = free.iter().rposition(Option::is_some).unwrap_or(0);
            free.swap_remove(at)
        };
        let mut guard = Taken {
            kept: self,
            session,
            clean: false,
            _turn: turn,
        };
        let sql = query.replace("$1", &sql::literal(role));
        for attempt in 0..2 {
            let session = match guard.session.as_mut() {
                Some(s) => s,
                None => guard.session.insert(connect().await?),
            };
            match session.simple_query(&sql).await {
                Ok(rows) => {
                    guard.clean = true;
                    return Ok(rows.into_iter().next().map(|row| RoleSecret {
                        password: row.first().cloned().flatten(),
                        expired: row.get(1).cloned().flatten().as_deref() == Some("true"),
                        can_login: row.get(2).cloned().flatten().as_deref() != Some("false"),
                    }));
                }
                Err(e) if attempt == 0 && e.sqlstate().is_none() => {
                    tracing::debug!(error = %e, "the verifier lookup connection failed; reconnecting");
                    guard.session = None;
                }
                Err(e) => {
                    // An error the repository answered leaves the connection ready for the next.
                    guard.clean = e.sqlstate().is_some();
                    return Err(LookupError(e.to_string()));
                }
            }
        }
        Err(LookupError(
            "the repository did not answer the lookup".into(),
        ))
    }
}

/// Looks verifiers up in the managed repository.
#[derive(Debug)]
pub struct ManagedLookup {
    repo: ManagedRepository,
    config_dir: PathBuf,
    kept: Kept,
}

impl ManagedLookup {
    /// A lookup through `repo`'s superuser, whose password is in the keystore in `config_dir`.
    pub fn new(repo: ManagedRepository, config_dir: PathBuf) -> ManagedLookup {
        ManagedLookup {
            repo,
            config_dir,
            kept: Kept::default(),
        }
    }

    async fn connect(&self) -> Result<Session<UpstreamStream>, LookupError> {
        let keystore = Keystore::open(&self.config_dir).map_err(|e| LookupError(e.to_string()))?;
        self.repo
            .connect_admin(&keystore, "postgres")
            .await
            .map_err(|e| LookupError(e.to_string()))
    }
}

impl VerifierSource for ManagedLookup {
    fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        Box::pin(
            self.kept
                .lookup(DEFAULT_LOOKUP_QUERY, role, || self.connect()),
        )
    }
}

/// Where and how the lookup user reads verifiers on an external repository.
#[derive(Debug, Clone)]
pub struct ExternalLookupOptions {
    /// The repository.
    pub upstream: UpstreamAddr,
    /// TLS to it, as every other connection there.
    pub tls: UpstreamTls,
    /// The lookup user.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// The database it connects to (`auth.lookup_database`).
    pub database: String,
    /// `auth.lookup_query`, `$1` standing for the role name.
    pub query: String,
    /// Connect timeout.
    pub timeout: Duration,
}

/// Looks verifiers up in an external repository as the lookup user.
#[derive(Debug)]
pub struct ExternalLookup {
    options: ExternalLookupOptions,
    target: Target,
    kept: Kept,
}

impl ExternalLookup {
    /// A lookup with `options`; it connects on first use.
    pub fn new(options: ExternalLookupOptions) -> ExternalLookup {
        ExternalLookup {
            target: Target::new(options.upstream.clone()),
            options,
            kept: Kept::default(),
        }
    }

    async fn connect(&self) -> Result<Session<UpstreamStream>, LookupError> {
        let o = &self.options;
        let failed = |e: String| LookupError(format!("as lookup user {}: {e}", o.user));
        let stream = self
            .target
            .connect(o.timeout, &o.tls)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Session::start(
            stream,
            &[
                ("user", o.user.as_str()),
                ("database", o.database.as_str()),
                ("application_name", "pgssl lookup"),
            ],
            Some(o.password.expose()),
        )
        .await
        .map_err(|e| failed(e.to_string()))
    }
}

impl VerifierSource for ExternalLookup {
    fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        Box::pin(
            self.kept
                .lookup(&self.options.query, role, || self.connect()),
        )
    }
}
