//! How a call to the admin server fails, and who has to act on it.

use crate::error::ErrorKind;

/// Why a call to the admin server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `-s` does not name an admin server.
    #[error("-s {server}: {problem}")]
    BadServer {
        /// `-s` as given.
        server: String,
        /// What is wrong with it.
        problem: BadServerUrl,
    },
    /// Only one of `-u` and `-p`.
    #[error("give both -u NAME and -p PASSWORD (or -p - to type it)")]
    HalfCredentials,
    /// No cached session and no credentials.
    #[error("not signed in to {0}: give -u NAME -p - once (the session is then cached)")]
    NotSignedIn(String),
    /// The cached session was refused.
    #[error("the session with {0} has ended: sign in again with -u NAME -p -")]
    SessionEnded(String),
    /// Signing in needs credentials.
    #[error("sign in with -u NAME -p -")]
    NoCredentials,
    /// The admin server refused the credentials.
    #[error("sign-in to {url} failed: {message}")]
    SignInRefused {
        /// The admin server.
        url: String,
        /// Its answer.
        message: String,
    },
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
    /// A `GET`'s request could not be encoded as a query string.
    #[error("cannot encode the request as a query: {0}")]
    EncodeQuery(serde_urlencoded::ser::Error),
    /// The sign-in answer is not JSON.
    #[error("the admin server's answer is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The sign-in answer set no session.
    #[error("the admin server set no session cookie")]
    NoSessionCookie,
    /// The admin server cannot be reached.
    #[error("cannot reach the admin server at {url}: {reason}")]
    Unreachable {
        /// The admin server.
        url: String,
        /// Why.
        reason: String,
    },
    /// The admin server's certificate is not trusted here.
    #[error(
        "the admin server at {url} presented a certificate this machine does not trust ({source}); if it is pgssl's self-signed admin certificate, compare its fingerprint with the one 'pgssl serve' logged and pass --trust-admin-controller-cert"
    )]
    Untrusted {
        /// The admin server.
        url: String,
        /// The handshake's error.
        source: std::io::Error,
    },
    /// The operation failed on the admin server: its message, and the status that classifies it.
    #[error("{message}")]
    Refused {
        /// The API's status.
        status: u16,
        /// The API's error.
        message: String,
    },
    /// The answer is not the operation's report.
    #[error(
        "the admin server's answer to {action} is not the report this CLI expects ({source}); are both the same pgssl version?"
    )]
    UnexpectedReport {
        /// The operation.
        action: &'static str,
        /// Why it does not decode.
        source: serde_json::Error,
    },
}

impl RemoteError {
    /// The API's own classification for a refused operation (by its status, as the server
    /// decided it); the caller's for a wrong `-s`, credentials or certificate; pgssl's for an
    /// exchange it cannot make sense of; upstream for a server out of reach.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RemoteError::BadServer { .. }
            | RemoteError::HalfCredentials
            | RemoteError::NotSignedIn(_)
            | RemoteError::SessionEnded(_)
            | RemoteError::NoCredentials
            | RemoteError::SignInRefused { .. }
            | RemoteError::Untrusted { .. } => ErrorKind::User,
            RemoteError::Encode(_)
            | RemoteError::EncodeQuery(_)
            | RemoteError::NotJson(_)
            | RemoteError::NoSessionCookie
            | RemoteError::UnexpectedReport { .. } => ErrorKind::Server,
            RemoteError::Unreachable { .. } => ErrorKind::Upstream,
            RemoteError::Refused { status, .. } => match status {
                503 => ErrorKind::Upstream,
                500..=599 => ErrorKind::Server,
                _ => ErrorKind::User,
            },
        }
    }
}

/// What is wrong with `-s`.
#[derive(Debug, thiserror::Error)]
pub enum BadServerUrl {
    /// Not a URL or authority.
    #[error("expected https://host:port")]
    NotAUrl,
    /// Another scheme than https.
    #[error("the admin server speaks only https, not {0}")]
    NotHttps(String),
    /// Port 0.
    #[error("'0' is not a port")]
    PortZero,
    /// A port that is not a number.
    #[error("'{0}' is not a port")]
    BadPort(String),
}
