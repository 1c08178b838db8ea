//! Reloading a running server: the [`Reloader`] that re-reads the applied state and swaps it in,
//! what a reload and a status answer report, and the errors of asking a running server.
//!
//! `pending-changes apply` promotes the staged state on disk, then asks the running node to reload
//! ([`crate::control::node::RunningNode::reload`]): in-process inside `serve`, else over the
//! control socket ([`crate::control::socket`]). The server re-reads the applied state and swaps in
//! the new settings, keeping the old ones if that fails. SIGHUP triggers the same reload.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use crate::control::settings::LoadError;
use crate::control::state::StateStore;
use crate::error::ErrorKind;
use crate::proxy::auth::terminate::VerifierSource;
use crate::proxy::policy::Mode;
use crate::proxy::repository::tls::RepositoryTlsMode;
use crate::proxy::settings::{LiveSettings, SettingsCell};

/// Re-reads the applied state and swaps it in.
#[derive(Debug, Clone)]
pub struct Reloader {
    store: StateStore,
    cell: SettingsCell,
    repository_tls: RepositoryTlsMode,
    lookups: Option<crate::control::settings::LookupBuilder>,
    /// The managed repository's verifier source, whose kept verifiers a reload drops (an applied
    /// change may have set passwords; a lookup user's source is rebuilt by `lookups`).
    verifiers: Option<Arc<dyn VerifierSource>>,
}

impl Reloader {
    /// A reloader that loads from `store` into `cell`, with `repository_tls` from the configuration and
    /// `lookups` making a lookup user's verifier source.
    pub fn new(
        store: StateStore,
        cell: SettingsCell,
        repository_tls: RepositoryTlsMode,
        lookups: Option<crate::control::settings::LookupBuilder>,
        verifiers: Option<Arc<dyn VerifierSource>>,
    ) -> Reloader {
        Reloader {
            store,
            cell,
            repository_tls,
            lookups,
            verifiers,
        }
    }

    /// Loads the applied state; on success new connections use it, on failure nothing changes.
    ///
    /// Every reload (control socket, admin server, SIGHUP, cluster follower) comes here, and loading
    /// may derive an encrypted key's cost (seconds of PBKDF2 or scrypt): it runs off the runtime's
    /// worker, which also answers the admin server, the control socket and the signals.
    pub fn reload(&self) -> Result<std::sync::Arc<LiveSettings>, LoadError> {
        let loaded = crate::control::operations::blocking(|| {
            crate::control::settings::load(&self.store, self.repository_tls, self.lookups.as_ref())
        });
        let next = match loaded {
            Ok(next) => next,
            Err(e) => {
                metrics::counter!(crate::telemetry::names::RELOADS, "outcome" => "refused")
                    .increment(1);
                return Err(e);
            }
        };
        self.cell.replace(next);
        if let Some(verifiers) = &self.verifiers {
            verifiers.forget_all();
        }
        metrics::counter!(crate::telemetry::names::RELOADS, "outcome" => "ok").increment(1);
        let current = self.cell.current();
        info!(mode = %current.mode, certificate = current.cert_fingerprint.as_deref().unwrap_or("none"),
              "applied settings reloaded; new connections use them, open sessions are kept");
        Ok(current)
    }
}

/// Errors of asking a running server.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No server listens on this data directory.
    #[error("no pgssl server is running on this data directory")]
    NotRunning,
    /// Another server already owns the socket.
    #[error(
        "another pgssl server is already running on data directory {0} (stop it first, or use another --data-dir)"
    )]
    AlreadyRunning(PathBuf),
    /// The server answered with an error.
    #[error("the running server refused the change: {0}")]
    Refused(String),
    /// The server's answer is not one this side understands.
    #[error(
        "the running server's answer is not understood ({0}); are 'pgssl serve' and this command the same version?"
    )]
    Unexpected(String),
    /// Socket trouble.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl ControlError {
    /// A second server on one data directory is the caller's mistake; a server that does not run
    /// is out of reach; a refusal, an answer not understood or a socket failure is pgssl's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControlError::AlreadyRunning(_) => ErrorKind::User,
            ControlError::NotRunning => ErrorKind::Upstream,
            ControlError::Refused(_) | ControlError::Unexpected(_) | ControlError::Io { .. } => {
                ErrorKind::Server
            }
        }
    }
}

/// What a running server reported after a reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// The mode it now serves.
    pub mode: Mode,
    /// The fingerprint of the certificate it now serves, if any.
    pub cert_fingerprint: Option<String>,
}

impl ReloadReport {
    /// `mode M with certificate SHA256 F`: what new connections get.
    pub fn describe(&self) -> String {
        match &self.cert_fingerprint {
            Some(f) => format!("mode {} with certificate SHA256 {f}", self.mode),
            None => format!("mode {}", self.mode),
        }
    }
}

/// What a running `serve` runs with, as its `status` answer reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeStatus {
    /// The address the proxy listens on (the bound one, so port 0 is resolved).
    pub listen: std::net::SocketAddr,
    /// The repository it relays to.
    pub upstream: String,
    /// Whether that repository is the managed one `serve` runs itself.
    pub managed: bool,
}
