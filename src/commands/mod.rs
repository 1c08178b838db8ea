//! The control-plane operations behind each CLI command, one file per command family.
//!
//! Each function takes a [`Context`] and prints what a user needs to read on stdout; failures are
//! returned as [`CommandError`] and printed once, as one line, by the binary.

pub mod data_access;
pub mod internal_credentials;
pub mod pending_changes;
pub mod regenerate_tokens;
pub mod repository_ssl;
pub mod serve;

use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::control::ControlError;
use crate::live::LoadError;
use crate::server::ServerError;
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

/// Runs a future on a small runtime; CLI commands only need one thread.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, CommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    Ok(runtime.block_on(future))
}
