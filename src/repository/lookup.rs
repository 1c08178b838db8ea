//! Verifier lookups for `auth.mode = "proxy"`: a role's `rolpassword` and whether it has expired, read
//! over two persistent connections (each opened on first use, re-opened once when it has died — after a
//! repository restart, or with a password a rotation has changed meanwhile):
//! - [`ManagedLookup`]: the managed repository's `pg_authid`, as pgssl's superuser (its password read
//!   from the keystore at each connect);
//! - [`ExternalLookup`]: an external repository, as the lookup user, with `auth.lookup_query`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_postgres::types::{FromSql, Type};

use crate::keystore::{Keystore, Secret};
use crate::proxy::auth::terminate::{LookupError, LookupFuture, RoleSecret, VerifierSource};
use crate::proxy::repository::hosts::{Hosts, TargetRole};
use crate::proxy::repository::tls::RepositoryTls;
use crate::repository::managed::ManagedRepository;
use crate::repository::session::{Login, Session, describe};

/// The default `auth.lookup_query`: `$1` is the role name, a bound parameter.
/// Its third column, `rolcanlogin`, may be missing from an administrator's own query (a NOLOGIN role
/// then still gets the repository's refusal when it needs a new backend, but its warm sessions are not
/// closed early).
pub const DEFAULT_LOOKUP_QUERY: &str = "SELECT rolpassword, coalesce(rolvaliduntil < now(), false)::text, rolcanlogin::text FROM pg_catalog.pg_authid WHERE rolname = $1";

use crate::config::LOOKUP_CONNECTIONS;

/// A lookup connection. The query runs as an unnamed statement in one round trip (parse, bind and
/// execute sent together), so nothing is kept on the server: a named statement kept for the
/// connection's life failed every lookup with `0A000 cached plan must not change result type` once
/// the DBA re-ran `lookup-user sql` (which recreates `pgssl.lookup` with other columns), and a
/// transaction-mode pooler in front of the repository keeps no named statement anyway.
#[derive(Debug)]
struct Connection {
    session: Session,
}

/// Why a lookup failed on a connection.
#[derive(Debug, thiserror::Error)]
enum AskError {
    /// The repository refused the query, or the connection failed.
    #[error("{}", describe(.0))]
    Repository(#[from] tokio_postgres::Error),
    /// A yes/no column has a type that says neither.
    #[error(
        "the lookup query's column {index} ({name}) is of type {ty}; it must be boolean or text"
    )]
    NotYesNo {
        /// 1-based, as the query lists it.
        index: usize,
        /// Its name in the query's answer.
        name: String,
        /// Its type.
        ty: Type,
    },
}

/// The persistent lookup connections and how to (re)open them. A lookup waits for the first
/// connection to come free, in arrival order: tying each lookup to one connection in turn let a slow
/// answer on one hold up the lookups queued behind it while the other sat idle (at 256 clients that
/// doubled pgssl's p99 connect latency).
#[derive(Debug)]
struct Kept {
    /// The connections not in use (`None`: not opened yet, or closed after a failure).
    free: std::sync::Mutex<Vec<Option<Connection>>>,
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

/// A lookup connection taken from [`Kept`], put back when dropped unless it has closed. A lookup's
/// future dropped midway leaves the connection usable: tokio-postgres discards the answer nobody
/// waits for.
struct Taken<'a> {
    kept: &'a Kept,
    connection: Option<Connection>,
    _turn: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let connection = self.connection.take().filter(|c| !c.session.is_closed());
        let mut free = self.kept.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push(connection);
    }
}

/// A yes/no column of a lookup query: a `bool`, or text (the default query casts to text, as an
/// administrator's query may) in any spelling PostgreSQL's `bool` input takes (`t`, `true`, `yes`,
/// `on`, `1`, `f`, `false`, …, any case, spaces around). Text that is none of them says nothing.
struct Truth(Option<bool>);

impl<'a> FromSql<'a> for Truth {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Truth, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::BOOL {
            return bool::from_sql(ty, raw).map(|b| Truth(Some(b)));
        }
        let text = <&str>::from_sql(ty, raw)?.trim().to_ascii_lowercase();
        Ok(Truth(match text.as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
            "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
            _ => None,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        <bool as FromSql>::accepts(ty) || <&str as FromSql>::accepts(ty)
    }
}

/// A row of the lookup query: the verifier, then whether it expired (no: not said), then whether
/// the role may log in (yes: not said).
fn role_secret(row: &tokio_postgres::Row) -> Result<RoleSecret, AskError> {
    let truth = |i: usize| -> Result<Option<bool>, AskError> {
        let Some(column) = row.columns().get(i) else {
            return Ok(None);
        };
        if !<Truth as FromSql>::accepts(column.type_()) {
            return Err(AskError::NotYesNo {
                index: i + 1,
                name: column.name().to_string(),
                ty: column.type_().clone(),
            });
        }
        Ok(row.try_get::<_, Option<Truth>>(i)?.and_then(|t| t.0))
    };
    Ok(RoleSecret {
        password: row.try_get(0)?,
        expired: truth(1)? == Some(true),
        can_login: truth(2)? != Some(false),
    })
}

impl Connection {
    /// Runs `query` with `role` bound as `$1`, of type `text` (an administrator's query may not
    /// use it: a declared parameter nothing refers to is allowed).
    async fn ask(&mut self, query: &str, role: &str) -> Result<Option<RoleSecret>, AskError> {
        let rows = self
            .session
            .query_typed(query, &[(&role, Type::TEXT)])
            .await?;
        rows.first().map(role_secret).transpose()
    }
}

impl Kept {
    /// Runs `query` (with `$1` bound to `role`), connecting with `connect` when no connection is
    /// kept and once more when the kept one has died.
    async fn lookup<F, Fut>(
        &self,
        query: &str,
        role: &str,
        connect: F,
    ) -> Result<Option<RoleSecret>, LookupError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Session, LookupError>>,
    {
        let turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| LookupError("the verifier lookup is shutting down".into()))?;
        let connection = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // Prefer an open connection.
            let at = free.iter().rposition(Option::is_some).unwrap_or(0);
            free.swap_remove(at)
        };
        let mut guard = Taken {
            kept: self,
            connection,
            _turn: turn,
        };
        for attempt in 0..2 {
            let connection = match guard.connection.as_mut() {
                Some(c) => c,
                None => guard.connection.insert(Connection {
                    session: connect().await?,
                }),
            };
            let answer = connection.ask(query, role).await;
            // A connection that has died (a repository restart, a password a rotation changed
            // meanwhile) is opened again once; any other error leaves it ready for the next lookup.
            let died = connection.session.is_closed();
            match answer {
                Ok(secret) => return Ok(secret),
                Err(e) if died && attempt == 0 => {
                    tracing::debug!(error = %e, "the verifier lookup connection failed; reconnecting");
                    guard.connection = None;
                }
                Err(e) => {
                    if died {
                        guard.connection = None;
                    }
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

    async fn connect(&self) -> Result<Session, LookupError> {
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
    /// The repository's hosts: lookups go to the primary.
    pub hosts: Arc<Hosts>,
    /// TLS to it, as every other connection there.
    pub tls: RepositoryTls,
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
    kept: Kept,
}

impl ExternalLookup {
    /// A lookup with `options`; it connects on first use.
    pub fn new(options: ExternalLookupOptions) -> ExternalLookup {
        ExternalLookup {
            options,
            kept: Kept::default(),
        }
    }

    async fn connect(&self) -> Result<Session, LookupError> {
        let o = &self.options;
        let failed = |e: String| LookupError(format!("as lookup user {}: {e}", o.user));
        // The primary holds the verifiers as they are now (a standby may not have replayed a
        // password change yet); during a failover the lookup waits for it as logins do.
        let mut routed = o
            .hosts
            .route(TargetRole::Primary)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let waiting_until = tokio::time::Instant::now() + o.hosts.options().failover_wait;
        let stream = loop {
            match routed.connector.connect(o.timeout, &o.tls).await {
                Ok(stream) => break stream,
                // A primary that stopped answering: the next one, once there is one.
                Err(e) if e.unreachable() => {
                    match o.hosts.reroute(&routed, e.to_string(), waiting_until).await {
                        Some(next) => routed = next,
                        None => return Err(failed(e.to_string())),
                    }
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        };
        let login = Login {
            user: &o.user,
            database: &o.database,
            application_name: "pgssl lookup",
            password: Some(&o.password),
        };
        Session::start(stream, &login)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(ty: &Type, raw: &[u8]) -> Option<bool> {
        Truth::from_sql(ty, raw).unwrap().0
    }

    #[test]
    fn a_yes_no_column_reads_as_bool_or_as_bool_text() {
        assert_eq!(truth(&Type::BOOL, &[1]), Some(true));
        assert_eq!(truth(&Type::BOOL, &[0]), Some(false));
        // The default query's `::text`, and an administrator's text columns.
        assert_eq!(truth(&Type::TEXT, b"true"), Some(true));
        assert_eq!(truth(&Type::VARCHAR, b"false"), Some(false));
        // PostgreSQL's other spellings of a bool, as the text protocol sends a bool column.
        assert_eq!(truth(&Type::TEXT, b"t"), Some(true));
        assert_eq!(truth(&Type::TEXT, b"f"), Some(false));
        assert_eq!(truth(&Type::BPCHAR, b" Yes "), Some(true));
        assert_eq!(truth(&Type::TEXT, b"OFF"), Some(false));
        // Anything else says nothing: not expired, may log in.
        assert_eq!(truth(&Type::TEXT, b"maybe"), None);
        assert_eq!(truth(&Type::TEXT, b""), None);
        assert!(<Truth as FromSql>::accepts(&Type::NAME));
        assert!(!<Truth as FromSql>::accepts(&Type::INT4));
    }
}
