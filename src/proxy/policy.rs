//! The SSL policy: which users must arrive over TLS, decided from the mode and the user's class.
//!
//! A pure function of `(Mode, UserClass, Transport)`, so every cell of the matrix is a unit test.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::proxy::protocol::{ErrorResponse, SqlState};

/// The repository SSL mode, as staged by `security repository-ssl enable|disable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No TLS at all: SSLRequest is answered `N`. The default.
    #[default]
    Off,
    /// TLS offered; internal users must use it, client users may choose (`--internal-only`).
    Optional,
    /// TLS offered and required of every user.
    Required,
}

impl Mode {
    /// Whether the proxy offers TLS in this mode.
    pub fn offers_tls(self) -> bool {
        self != Mode::Off
    }

    /// The wording the model system uses for this mode.
    pub fn description(self) -> &'static str {
        match self {
            Mode::Off => "Off for all connections",
            Mode::Optional => "Optional for user connections (required for internal users)",
            Mode::Required => "Required for all connections",
        }
    }
}

impl Mode {
    /// The mode's name, as configured and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Optional => "optional",
            Mode::Required => "required",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Mode::Off),
            "optional" => Ok(Mode::Optional),
            "required" => Ok(Mode::Required),
            other => Err(format!(
                "unknown repository SSL mode '{other}' (expected off, optional or required)"
            )),
        }
    }
}

/// Who a user is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserClass {
    /// A direct-connection user (`tableau`, `readonly` by default) who may choose in `optional` mode.
    Client,
    /// Every other user: internal services, which must use TLS whenever it is offered.
    Internal,
}

impl UserClass {
    /// The class's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UserClass::Client => "client",
            UserClass::Internal => "internal",
        }
    }
}

impl fmt::Display for UserClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client's start-up arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Unencrypted TCP.
    Plaintext,
    /// Inside a TLS session terminated by pgssl.
    Tls,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the start-up to the repository.
    Allow,
    /// Refuse with this FATAL error before any byte reaches the repository.
    Reject(ErrorResponse),
}

/// Classifies users by name against the configured list of client users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClassifier {
    client_users: Vec<String>,
}

impl UserClassifier {
    /// A classifier for which `client_users` are [`UserClass::Client`]; names match exactly, as
    /// PostgreSQL role names do.
    pub fn new(client_users: Vec<String>) -> Self {
        UserClassifier { client_users }
    }

    /// The class of `user`.
    pub fn classify(&self, user: &str) -> UserClass {
        if self.client_users.iter().any(|c| c == user) {
            UserClass::Client
        } else {
            UserClass::Internal
        }
    }
}

/// Decides whether `user` of `class` may start a session over `transport` in `mode`.
pub fn decide(mode: Mode, class: UserClass, transport: Transport, user: &str) -> Verdict {
    let tls_needed = match mode {
        Mode::Off => false,
        Mode::Required => true,
        Mode::Optional => class == UserClass::Internal,
    };
    if !tls_needed || transport == Transport::Tls {
        return Verdict::Allow;
    }
    let why = match mode {
        Mode::Required => "repository SSL is required for all connections".to_string(),
        _ => format!("repository SSL is required for {class} users"),
    };
    Verdict::Reject(
        ErrorResponse::fatal(
            SqlState::InvalidAuthorizationSpecification,
            format!("SSL required for user \"{user}\": {why}"),
        )
        .with_hint("Connect with sslmode=require, verify-ca or verify-full."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_matrix() {
        use Mode::*;
        use Transport::*;
        use UserClass::*;
        let cases = [
            (Off, Client, Plaintext, true),
            (Off, Internal, Plaintext, true),
            (Optional, Client, Plaintext, true),
            (Optional, Client, Tls, true),
            (Optional, Internal, Plaintext, false),
            (Optional, Internal, Tls, true),
            (Required, Client, Plaintext, false),
            (Required, Client, Tls, true),
            (Required, Internal, Plaintext, false),
            (Required, Internal, Tls, true),
        ];
        for (mode, class, transport, allowed) in cases {
            let verdict = decide(mode, class, transport, "u");
            assert_eq!(
                verdict == Verdict::Allow,
                allowed,
                "{mode} {class} {transport:?}"
            );
            if let Verdict::Reject(err) = verdict {
                assert_eq!(err.code.code(), "28000");
                assert!(err.message.starts_with("SSL required for user \"u\""));
            }
        }
    }

    #[test]
    fn classifies_by_exact_name() {
        let c = UserClassifier::new(vec!["tableau".into(), "readonly".into()]);
        assert_eq!(c.classify("tableau"), UserClass::Client);
        assert_eq!(c.classify("Tableau"), UserClass::Internal);
        assert_eq!(c.classify("tableau\u{fffd}"), UserClass::Internal);
        assert_eq!(c.classify("internal_svc"), UserClass::Internal);
    }

    #[test]
    fn modes_round_trip_through_text() {
        for m in [Mode::Off, Mode::Optional, Mode::Required] {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert!("on".parse::<Mode>().is_err());
    }
}
