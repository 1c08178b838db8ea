//! The control-plane operations behind each CLI command, one file per command family.
//!
//! Each function takes a [`Context`] and prints what a user needs to read on stdout; failures are
//! returned as [`CommandError`] and printed once, as one line, by the binary.

pub mod custom_cert;
pub mod data_access;
pub mod external_ssl;
pub mod internal_credentials;
pub mod pending_changes;
pub mod regenerate_tokens;
pub mod repository_ssl;
pub mod serve;
pub mod vizql_extsvc;

use std::io::BufRead;
use std::path::PathBuf;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, ConfigError};
use crate::control::ControlError;
use crate::live::LoadError;
use crate::server::ServerError;
use crate::state::keystore::{Keystore, Secret};
use crate::state::{CertError, StateError, StateStore};

/// What every command runs with.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The loaded `--config`.
    pub config: Config,
}

impl Context {
    /// Opens the data directory's state.
    pub fn store(&self) -> Result<StateStore, CommandError> {
        Ok(StateStore::open(&self.data_dir)?)
    }
}

/// A command that failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state files are unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// A certificate or key is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The staged settings cannot be served.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The managed repository failed.
    #[error(transparent)]
    Managed(#[from] crate::repository::managed::ManagedError),
    /// The keystore is unusable.
    #[error(transparent)]
    Keystore(#[from] crate::state::keystore::KeystoreError),
    /// Talking to a running server failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A refusal explained in words.
    #[error("{0}")]
    Refused(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Reads a secret given as a flag value, or from the first line of standard input when the value is
/// `-`; refuses an empty one.
pub(crate) fn read_secret(value: &str, flag: &str) -> Result<Secret, CommandError> {
    let secret = if value == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            CommandError::Refused(format!("cannot read {flag} from standard input: {e}"))
        })?;
        Secret::new(line.trim_end_matches(['\n', '\r']).to_string())
    } else {
        eprintln!(
            "note: a secret given on the command line is visible in the process list and shell history; prefer '{flag} -' and standard input"
        );
        Secret::new(value.to_string())
    };
    if secret.expose().is_empty() || secret.expose().contains('\0') {
        return Err(CommandError::Refused(format!(
            "{flag} must not be empty or contain NUL bytes"
        )));
    }
    Ok(secret)
}

/// An expiry date with the days left, or how long ago it passed.
pub(crate) fn describe_expiry(not_after: OffsetDateTime) -> String {
    let when = not_after
        .format(&Rfc3339)
        .unwrap_or_else(|_| not_after.to_string());
    let days = (not_after - OffsetDateTime::now_utc()).whole_days();
    if days < 0 {
        format!("{when} (EXPIRED {} days ago)", -days)
    } else {
        format!("{when} (in {days} days)")
    }
}

/// Removes copies and secrets nothing refers to any more. A failure leaves only stale files behind,
/// so it is reported and the command still succeeds.
pub(crate) fn prune(store: &StateStore) {
    let pruned = Keystore::open(&store.config_dir())
        .map_err(crate::state::store::PruneError::from)
        .and_then(|mut keystore| store.prune(&mut keystore));
    if let Err(e) = pruned {
        eprintln!("warning: could not remove files no longer used: {e}");
    }
}

/// Runs a future on a small runtime; CLI commands only need one thread.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, CommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    Ok(runtime.block_on(future))
}
