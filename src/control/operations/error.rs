//! How a command fails: [`CommandError`] wraps the error of whatever failed, each of which answers
//! its own [`ErrorKind`]; the command families' own refusals are typed per family (beside their
//! operations) and answer theirs.

use crate::config::ConfigError;
use crate::control::reload::ControlError;
use crate::control::settings::LoadError;
use crate::control::state::{CertError, StateError};
pub use crate::error::ErrorKind;

use super::authentication::LookupUserError;
use super::custom_cert::CustomCertError;
use super::data_access::DataAccessError;
use super::external_ssl::ExternalSslError;
use super::internal_credentials::CredentialsError;
use super::mutual_ssl::MutualSslCommandError;
use super::pending_changes::ApplyError;
use super::regenerate_tokens::RegenerateError;
use super::repository_ssl::RepositorySslError;
use super::topology::TopologyError;
use super::vizql_extsvc::ExtsvcError;

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
    /// The listener could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::proxy::server::BindError),
    /// The listener could not be served.
    #[error(transparent)]
    Run(#[from] crate::proxy::server::RunError),
    /// The managed repository failed.
    #[error(transparent)]
    Managed(#[from] crate::repository::managed::ManagedError),
    /// The administrators file is unusable, or a name is wrong.
    #[error(transparent)]
    AdminUser(#[from] crate::control::state::admin_users::AdminUserError),
    /// The keystore is unusable.
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    /// Talking to a running server failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Cluster coordination failed.
    #[error(transparent)]
    Cluster(#[from] crate::control::cluster::ClusterError),
    /// A secret that PostgreSQL and libpq cannot carry.
    #[error("{what} must not be empty or contain NUL bytes")]
    BadSecret {
        /// Which secret, as the caller named it (`--lookup-password`).
        what: &'static str,
    },
    /// `repository-ssl …` refused.
    #[error(transparent)]
    RepositorySsl(#[from] RepositorySslError),
    /// `custom-cert …` refused.
    #[error(transparent)]
    CustomCert(#[from] CustomCertError),
    /// `external-ssl enable` refused the files or protocols.
    #[error(transparent)]
    ExternalSsl(#[from] ExternalSslError),
    /// `vizql-extsvc-ssl …` refused.
    #[error(transparent)]
    Extsvc(#[from] ExtsvcError),
    /// `mutual-ssl …` or the internal CA failed.
    #[error(transparent)]
    MutualSsl(#[from] MutualSslCommandError),
    /// `lookup-user set` refused.
    #[error(transparent)]
    LookupUser(#[from] LookupUserError),
    /// `data-access …` refused.
    #[error(transparent)]
    DataAccess(#[from] DataAccessError),
    /// `internal-credentials` refused.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// `pending-changes apply` failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// `topology …` refused.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// `regenerate-internal-tokens` failed.
    #[error(transparent)]
    Regenerate(#[from] RegenerateError),
    /// `topology failover-repository` refused or failed.
    #[error(transparent)]
    Failover(#[from] super::failover::FailoverError),
    /// The staged change would refuse clients seen (`apply --refuse-if-breaking`).
    #[error(transparent)]
    Preflight(#[from] super::preflight::PreflightError),
    /// The repository CA could not be read or made.
    #[error(transparent)]
    ServedCa(#[from] crate::control::state::served_ca::ServedCaError),
    /// `sessions terminate` named no session, or none matched.
    #[error(transparent)]
    Terminate(#[from] super::sessions::TerminateError),
    /// The task that ran the operation ended without an answer (it panicked).
    #[error("the operation failed: {0}")]
    Aborted(#[from] tokio::task::JoinError),
}

impl CommandError {
    /// The failure's kind: the kind of the error it wraps; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            CommandError::Config(e) => e.kind(),
            CommandError::State(e) => e.kind(),
            CommandError::Cert(e) => e.kind(),
            CommandError::Load(e) => e.kind(),
            CommandError::Managed(e) => e.kind(),
            CommandError::AdminUser(e) => e.kind(),
            CommandError::Keystore(e) => e.kind(),
            CommandError::Control(e) => e.kind(),
            CommandError::Cluster(e) => e.kind(),
            CommandError::RepositorySsl(e) => e.kind(),
            CommandError::CustomCert(e) => e.kind(),
            CommandError::ExternalSsl(e) => e.kind(),
            CommandError::Extsvc(e) => e.kind(),
            CommandError::MutualSsl(e) => e.kind(),
            CommandError::LookupUser(e) => e.kind(),
            CommandError::DataAccess(e) => e.kind(),
            CommandError::Credentials(e) => e.kind(),
            CommandError::Apply(e) => e.kind(),
            CommandError::Topology(e) => e.kind(),
            CommandError::Regenerate(e) => e.kind(),
            CommandError::Failover(e) => e.kind(),
            CommandError::Terminate(e) => e.kind(),
            CommandError::ServedCa(e) => e.kind(),
            CommandError::Preflight(e) => e.kind(),
            CommandError::BadSecret { .. } => ErrorKind::User,
            // The listener is `serve`'s own, and a task that panicked is pgssl's bug.
            CommandError::Bind(_) | CommandError::Run(_) | CommandError::Aborted(_) => {
                ErrorKind::Server
            }
        }
    }

    /// Logs the failure at its kind's level and counts it: a user error is the caller's (INFO), a
    /// server fault or an unreachable upstream is the operator's (WARN).
    pub fn record(&self, operation: &str) {
        let kind = self.kind();
        metrics::counter!(crate::telemetry::names::COMMAND_FAILURES, "kind" => kind.as_str())
            .increment(1);
        match kind {
            ErrorKind::User => {
                tracing::info!(operation, kind = kind.as_str(), error = %self, "operation refused")
            }
            _ => tracing::warn!(operation, kind = kind.as_str(), error = %self, "operation failed"),
        }
    }
}

#[cfg(test)]
mod tests;
