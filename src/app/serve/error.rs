//! How `serve` fails: what an operation reports too (the configuration, the state, the
//! repository, the listener), or one of its own start-up failures.

use std::path::PathBuf;

use crate::admin::AdminError;
use crate::app::node::ServerError;
use crate::control::operations::CommandError;
use crate::error::ErrorKind;

/// Why `serve` could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration, the state, the repository, the listener: what an operation reports too.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// SIGTERM, SIGINT or SIGHUP cannot be handled.
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    /// The admin server cannot start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The managed repository's superuser has no password to log in with.
    #[error(
        "the keystore in {} holds no repository superuser password; restore the keystore from a backup",
        .0.display()
    )]
    NoSuperuserPassword(PathBuf),
}

impl ServeError {
    /// What failed decides; `serve`'s own start-up failures are pgssl's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServeError::Command(e) => e.kind(),
            ServeError::Signals(_) | ServeError::Admin(_) | ServeError::NoSuperuserPassword(_) => {
                ErrorKind::Server
            }
        }
    }
}

/// The errors `serve` reports as an operation would: through [`CommandError`].
macro_rules! via_command_error {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for ServeError {
            fn from(e: $error) -> ServeError {
                ServeError::Command(e.into())
            }
        }
    )*};
}
via_command_error!(
    crate::config::ConfigError,
    crate::control::state::StateError,
    crate::control::cluster::ClusterError,
    crate::keystore::KeystoreError,
    crate::repository::managed::ManagedError,
    crate::proxy::server::RunError,
    ServerError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_own_failures_are_pgssls_and_the_rest_keep_their_kind() {
        let signals = ServeError::Signals(std::io::Error::other("no signalfd"));
        assert_eq!(signals.kind(), ErrorKind::Server);
        assert_eq!(
            ServeError::NoSuperuserPassword("/d/config".into()).kind(),
            ErrorKind::Server
        );
        let missing = ServeError::from(crate::control::state::StateError::Missing("/d".into()));
        assert_eq!(missing.kind(), ErrorKind::User);
        let config = ServeError::from(crate::config::ConfigError::Invalid {
            key: "server.listen",
            message: "not an address".into(),
        });
        assert_eq!(
            (config.kind(), config.to_string()),
            (
                ErrorKind::User,
                "config value server.listen is invalid: not an address".to_string()
            )
        );
    }
}
