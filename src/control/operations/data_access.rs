//! `pgssl data-access repository-access enable --repository-username U --repository-password PW|-`
//! and `disable --repository-username U`: direct-connection users of the managed repository.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Operation, Staged, Verb, secret_arg};
use super::{CommandError, Context, ErrorKind, Staging, check_secret};
use crate::control::state::StateStore;
use crate::control::state::store::{Access, pending_password_name};
use crate::keystore::{Keystore, Secret};
use crate::repository::access;
use crate::repository::managed::{ManagedError, ManagedRepository, REPOSITORY_DATABASE};

/// The direct-connection users of the managed repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectUser {
    /// `tableau`: reads and writes.
    Tableau,
    /// `readonly`: reads only.
    Readonly,
}

impl DirectUser {
    /// The role name.
    pub fn name(self) -> &'static str {
        match self {
            DirectUser::Tableau => "tableau",
            DirectUser::Readonly => "readonly",
        }
    }
}

/// `data-access repository-access enable`: stages LOGIN with a new password (tableau: read/write,
/// readonly: read only).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enable {
    /// The direct-connection user.
    #[arg(long, value_enum)]
    pub repository_username: DirectUser,
    /// The new password, or '-' to read it from standard input.
    #[arg(long, value_name = "PW|-", value_parser = secret_arg)]
    pub repository_password: Secret,
}

impl Operation for Enable {
    const ACTION: &'static str = "data-access enable";
    const PATH: &'static str = "/data-access/enable";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        let user = self.repository_username.name();
        let store = require_managed(ctx).await?;
        check_secret(&self.repository_password, "the password")?;
        let mut staging = Staging::begin(store)?;
        let mut keystore = Keystore::open(&staging.store.config_dir())?;
        keystore.set(&pending_password_name(user), &self.repository_password)?;
        staging
            .pending
            .data_access
            .insert(user.to_string(), Access::Enabled);
        staging.save()?;
        Ok(Staged::change(format!(
            "Staged: enable login for '{user}' with a new password."
        )))
    }

    fn example() -> Enable {
        Enable {
            repository_username: DirectUser::Readonly,
            repository_password: Secret::new("password".into()),
        }
    }
}

/// `data-access repository-access disable`: stages NOLOGIN; apply also ends the user's sessions.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disable {
    /// The direct-connection user.
    #[arg(long, value_enum)]
    pub repository_username: DirectUser,
}

impl Operation for Disable {
    const ACTION: &'static str = "data-access disable";
    const PATH: &'static str = "/data-access/disable";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        let user = self.repository_username.name();
        let mut staging = Staging::begin(require_managed(ctx).await?)?;
        staging
            .pending
            .data_access
            .insert(user.to_string(), Access::Disabled);
        let mut keystore = Keystore::open(&staging.store.config_dir())?;
        keystore.remove(&pending_password_name(user))?;
        staging.save()?;
        Ok(if staging.store.pending()?.data_access.contains_key(user) {
            Staged::change(format!(
                "Staged: disable login for '{user}' and end its sessions."
            ))
        } else {
            Staged::nothing(format!(
                "Direct access for '{user}' is already disabled; nothing to stage."
            ))
        })
    }

    fn example() -> Disable {
        Disable {
            repository_username: DirectUser::Tableau,
        }
    }
}

/// Why `data-access` refused.
#[derive(Debug, thiserror::Error)]
pub enum DataAccessError {
    /// The repository is external: pgssl manages none of its roles.
    #[error(
        "data-access needs the managed repository; this data directory fronts {0}, so manage roles on that PostgreSQL directly"
    )]
    ExternalRepository(String),
}

impl DataAccessError {
    /// The caller's to take elsewhere.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// The data directory's state, when its repository is the managed one.
async fn require_managed(ctx: &Context) -> Result<StateStore, CommandError> {
    let store = ctx.store_or_create()?;
    if let Some(upstream) = super::served_repository(ctx, &store).await {
        return Err(DataAccessError::ExternalRepository(upstream).into());
    }
    Ok(store)
}

/// Runs staged direct-user changes on the running managed repository. Each change is idempotent, so
/// a re-run after a failure finishes the job; a staged password moves to its final keystore name only
/// after the repository accepted it.
pub(crate) async fn apply_staged(
    repo: &ManagedRepository,
    keystore: &mut Keystore,
    changes: &BTreeMap<String, Access>,
) -> Result<(), ManagedError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut admin = repo.connect_admin(keystore, REPOSITORY_DATABASE).await?;
    for (user, change) in changes {
        if !access::DIRECT_USERS.contains(&user.as_str()) {
            continue;
        }
        match change {
            Access::Enabled => {
                let staged = pending_password_name(user);
                let password: Secret = match keystore.get(&staged)? {
                    Some(p) => p,
                    // Already moved by an earlier, interrupted apply.
                    None => keystore.get(&access::password_name(user))?.ok_or_else(|| {
                        ManagedError::NotReady(
                            format!("no staged password for {user}; stage it again with 'pgssl data-access repository-access enable'"),
                            repo.log_file.clone(),
                        )
                    })?,
                };
                access::enable(&mut admin, user, &password).await?;
                keystore.set(&access::password_name(user), &password)?;
                keystore.remove(&staged)?;
            }
            Access::Disabled => {
                access::disable(&mut admin, user).await?;
                keystore.remove(&access::password_name(user))?;
            }
        }
    }
    access::regrant(&mut admin, &repo.internal_roles).await?;
    let _ = admin.terminate().await;
    Ok(())
}
