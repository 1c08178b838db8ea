//! Verifier lookups for `auth.mode = "proxy"` on the managed repository: a role's `rolpassword` and
//! whether it has expired, read from `pg_authid` by pgssl's superuser over one persistent connection
//! (opened on first use, re-opened once when it has died — after a repository restart, or with the
//! password a rotation has changed meanwhile, which is read from the keystore again).

use std::path::PathBuf;

use tokio::sync::Mutex;

use crate::keystore::Keystore;
use crate::proxy::auth::terminate::{LookupError, LookupFuture, RoleSecret, VerifierSource};
use crate::proxy::upstream::UpstreamStream;
use crate::repository::Session;
use crate::repository::managed::ManagedRepository;
use crate::repository::sql;

/// Looks verifiers up in the managed repository.
#[derive(Debug)]
pub struct ManagedLookup {
    repo: ManagedRepository,
    config_dir: PathBuf,
    session: Mutex<Option<Session<UpstreamStream>>>,
}

impl ManagedLookup {
    /// A lookup through `repo`'s superuser, whose password is in the keystore in `config_dir`.
    pub fn new(repo: ManagedRepository, config_dir: PathBuf) -> ManagedLookup {
        ManagedLookup {
            repo,
            config_dir,
            session: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Session<UpstreamStream>, LookupError> {
        let keystore = Keystore::open(&self.config_dir).map_err(|e| LookupError(e.to_string()))?;
        self.repo
            .connect_admin(&keystore, "postgres")
            .await
            .map_err(|e| LookupError(e.to_string()))
    }

    async fn query(&self, role: &str) -> Result<Option<RoleSecret>, LookupError> {
        let sql = format!(
            "SELECT rolpassword, coalesce(rolvaliduntil < now(), false)::text FROM pg_catalog.pg_authid WHERE rolname = {}",
            sql::literal(role)
        );
        let mut guard = self.session.lock().await;
        // One retry on a fresh connection: the kept one may have died since its last use.
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.connect().await?);
            }
            let Some(session) = guard.as_mut() else {
                continue;
            };
            match session.simple_query(&sql).await {
                Ok(rows) => {
                    return Ok(rows.into_iter().next().map(|row| RoleSecret {
                        password: row.first().cloned().flatten(),
                        expired: row.get(1).cloned().flatten().as_deref() == Some("true"),
                    }));
                }
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "the verifier lookup connection failed; reconnecting");
                    *guard = None;
                }
                Err(e) => return Err(LookupError(e.to_string())),
            }
        }
        Err(LookupError(
            "the repository did not answer the lookup".into(),
        ))
    }
}

impl VerifierSource for ManagedLookup {
    fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        Box::pin(self.query(role))
    }
}
