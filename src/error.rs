//! Who has to act on a failure, shared by every layer's error types: each error type answers its
//! own [`ErrorKind`] (delegating to the errors it wraps), and the control plane turns it into the
//! admin API's status, the log level and the metric label once.
//!
//! It lives outside `control` so that the repository layer, which must not name the control plane,
//! can classify its own errors too; `control::operations` re-exports it.

/// Who has to act on a failure: decided once per error, it sets the admin API's HTTP status, the
/// log level and the `kind` label of `pgssl_command_failures_total`. The CLI exits 1 for every kind
/// (2 is clap's usage error) and prints the message after `error:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller asked for something that cannot be done as asked.
    User,
    /// pgssl failed.
    Server,
    /// A system pgssl depends on is out of reach.
    Upstream,
}

impl ErrorKind {
    /// The admin API's status.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::User => 400,
            ErrorKind::Server => 500,
            ErrorKind::Upstream => 503,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::User => "user",
            ErrorKind::Server => "server",
            ErrorKind::Upstream => "upstream",
        }
    }
}
