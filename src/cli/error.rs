//! How a command line fails: the operation's error, `serve`'s, the admin server's answer, or a
//! command line that does not fit together.

use super::generate::GenerateError;
use super::remote::RemoteError;
use crate::app::serve::ServeError;
use crate::control::operations::CommandError;
use crate::error::ErrorKind;

/// Why a command line failed; printed once, as one `error:` line, by the binary.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The operation failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `serve` could not start or stopped with an error.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The admin server (`-s`) could not run the operation.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// `generate-docs` could not write.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// `-s` with a command that runs only on a local data directory.
    #[error("'{0}' runs only locally, on the data directory (leave out -s)")]
    LocalOnly(&'static str),
    /// `-u`/`-p` without `-s`, for a command that signs in to nothing.
    #[error("-u and -p sign in to a remote admin server; give -s URL too")]
    CredentialsWithoutServer,
    /// `admin-user` without `--username`.
    #[error("give the administrator's name with --username NAME")]
    NoAdminName,
    /// `admin-user add` without `--password`.
    #[error("give the new password with --password - (read from standard input) or --password PW")]
    NoAdminPassword,
}

impl CliError {
    /// The kind of what failed; a command line that does not fit together is the caller's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CliError::Command(e) => e.kind(),
            CliError::Serve(e) => e.kind(),
            CliError::Remote(e) => e.kind(),
            // A folder the caller cannot write to is the caller's to fix, like any other bad
            // path argument.
            CliError::Generate(_)
            | CliError::LocalOnly(_)
            | CliError::CredentialsWithoutServer
            | CliError::NoAdminName
            | CliError::NoAdminPassword => ErrorKind::User,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::remote::BadServerUrl;

    #[test]
    fn command_line_errors_are_the_callers_and_others_keep_their_kind() {
        assert_eq!(CliError::LocalOnly("serve").kind(), ErrorKind::User);
        assert_eq!(
            CliError::LocalOnly("serve").to_string(),
            "'serve' runs only locally, on the data directory (leave out -s)"
        );
        let unreachable = RemoteError::Unreachable {
            url: "https://h:8850".into(),
            reason: "refused".into(),
        };
        assert_eq!(CliError::from(unreachable).kind(), ErrorKind::Upstream);
        for (status, kind) in [
            (400, ErrorKind::User),
            (404, ErrorKind::User),
            (500, ErrorKind::Server),
            (503, ErrorKind::Upstream),
        ] {
            let refused = RemoteError::Refused {
                status,
                message: "no".into(),
            };
            assert_eq!(refused.kind(), kind, "{status}");
        }
        let bad = RemoteError::BadServer {
            server: "http://h".into(),
            problem: BadServerUrl::NotHttps("http".into()),
        };
        assert_eq!(
            (bad.kind(), bad.to_string()),
            (
                ErrorKind::User,
                "-s http://h: the admin server speaks only https, not http".to_string()
            )
        );
        assert_eq!(RemoteError::NoSessionCookie.kind(), ErrorKind::Server);
    }
}
