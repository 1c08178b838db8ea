//! Who has to act on a failure. Every error type of the control plane answers its own
//! [`ErrorKind`] (`fn kind(&self) -> ErrorKind`), delegating to the errors it wraps; the admin API,
//! the logs and the `pgssl_command_failures_total` metric read it, so that one mapping decides the
//! status, the level and the label.
//!
//! The kind lives here, beside no layer, because the errors that answer it live in several
//! (configuration, keystore, certificates, state, control plane).

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

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn each_kind_has_one_status_and_one_label() {
        let all = [ErrorKind::User, ErrorKind::Server, ErrorKind::Upstream];
        let answers: Vec<(u16, &str)> = all.iter().map(|k| (k.http_status(), k.as_str())).collect();
        assert_eq!(answers, [(400, "user"), (500, "server"), (503, "upstream")]);
    }
}
