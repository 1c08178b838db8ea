//! The client's identity for the repository: read-only values a repository session can read with
//! `current_setting('pgssl.client_addr')` and kin, so that `pg_stat_activity` joins, row-level
//! security and audit triggers can tell pgssl's clients apart although every session comes from
//! pgssl.
//!
//! PostgreSQL has no read-only custom setting without an extension in the repository, so pgssl
//! makes them read-only itself:
//! - it sets them on every repository session it hands a client: in the start-up of a session
//!   opened for one client alone (a relayed login), and by `SET` at each hand-out of a warm or
//!   transaction-pooled session (only when the values differ from what the session has);
//! - a client's start-up that names `pgssl.*` is refused (42501), and so is every statement that
//!   would write one ([`guard`]): `SET`/`RESET pgssl.…`, `set_config` with a name it cannot read as
//!   a plain literal, an `UPDATE` of `pg_settings`, a fast-path call of `set_config`.
//!
//! A client's own `RESET ALL` or `DISCARD ALL` cannot bring back another client's values: a pooled
//! session's values are SET, never in its start-up, so they reset to empty (unknown). A policy
//! treats empty as "not known", which fails closed.

use std::net::IpAddr;

use crate::proxy::metrics::AuthMechanism;
use crate::proxy::protocol::StartupMessage;
use crate::proxy::sessions::TlsFacts;

pub mod guard;

/// The settings, in the order [`Identity`] keeps their values.
pub const NAMES: [&str; 7] = [
    "pgssl.client_addr",
    "pgssl.tls_version",
    "pgssl.tls_cipher",
    "pgssl.channel_binding",
    "pgssl.client_cert_subject",
    "pgssl.auth_method",
    "pgssl.node",
];

/// The prefix no client may set.
pub const PREFIX: &str = "pgssl.";

/// What a client that tried to set one is told (42501), whichever way it tried.
pub const REFUSED: &str =
    "pgssl.* settings are set by pgssl for the repository; a client cannot set them";

/// What a node sets, when identity is on (`None` in the connection context when it is off, or when
/// the repository is another node of the cluster, which sets them itself).
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// This node's name (`pgssl.node`).
    pub node: String,
}

/// One client's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    values: [String; 7],
}

impl Identity {
    /// The values of a client at `addr` (its own address, PROXY-protocol and relay aware), over `tls`
    /// (`None` in plaintext), logged in by `mechanism`, on `node`.
    pub fn new(
        addr: IpAddr,
        tls: Option<&TlsFacts>,
        mechanism: AuthMechanism,
        node: &str,
    ) -> Identity {
        let (version, cipher, subject) = match tls {
            Some(t) => (
                // `TLSv1.3`, as pg_stat_ssl and libpq's \conninfo name it.
                t.version.replace('_', "."),
                t.cipher.to_string(),
                t.client_cert_subject.clone().unwrap_or_default(),
            ),
            None => ("none".to_string(), "none".to_string(), String::new()),
        };
        let binding = match mechanism {
            AuthMechanism::ScramPlus => "tls-server-end-point",
            _ => "none",
        };
        // A NUL (a certificate may carry one) would end a start-up value or a query early.
        let clean = |s: String| match s.contains('\0') {
            true => s.replace('\0', ""),
            false => s,
        };
        Identity {
            values: [
                addr.to_string(),
                version,
                cipher,
                binding.to_string(),
                clean(subject),
                auth_method(mechanism).to_string(),
                clean(node.to_string()),
            ],
        }
    }

    /// `startup` with these values as start-up parameters: for a session opened for this client
    /// alone, whose values a RESET ALL must bring back (nothing is SET on it).
    pub fn in_startup(&self, startup: &StartupMessage) -> StartupMessage {
        let mut out = startup.clone();
        for (name, value) in self.pairs() {
            out = crate::proxy::relayed_client::with_param(&out, name, value);
        }
        out
    }

    /// Each setting's name and value.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        NAMES
            .iter()
            .copied()
            .zip(self.values.iter().map(String::as_str))
    }

    /// The statements that set them on a session, as one simple query's text (each ends with `;`,
    /// as transaction pooling's injected SETs do).
    pub fn set_sql(&self) -> String {
        let mut sql = String::with_capacity(256);
        for (name, value) in self.pairs() {
            sql.push_str("SET ");
            sql.push_str(name);
            sql.push_str(" TO ");
            sql.push_str(&crate::proxy::backend::reset::quoted(value));
            sql.push_str("\n;");
        }
        sql
    }
}

/// `pgssl.auth_method`'s value.
pub fn auth_method(mechanism: AuthMechanism) -> &'static str {
    match mechanism {
        AuthMechanism::Scram => "scram-sha-256",
        AuthMechanism::ScramPlus => "scram-sha-256-plus",
        AuthMechanism::Passthrough => "passthrough",
        AuthMechanism::Certificate => "certificate",
    }
}

/// Whether a start-up parameter's name or value sets a `pgssl.*` setting: a parameter of that name,
/// or an `options` value that names one (`-c pgssl.x=…`, `--pgssl.x=…`, in any case). The
/// cluster's own `pgssl.relayed_client` is taken out before this is asked.
pub fn startup_sets_pgssl(name: &str, value: &str) -> bool {
    let named = |s: &str| {
        s.as_bytes()
            .windows(PREFIX.len())
            .any(|w| w.eq_ignore_ascii_case(PREFIX.as_bytes()))
    };
    if name.eq_ignore_ascii_case("options") {
        return named(value);
    }
    name.len() >= PREFIX.len()
        && name.as_bytes()[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn values_name_the_tls_facts_as_postgresql_does_and_plaintext_as_none() {
        let tls = TlsFacts {
            version: Cow::Borrowed("TLSv1_3"),
            cipher: Cow::Borrowed("TLS13_AES_128_GCM_SHA256"),
            group: None,
            sni: None,
            client_cert_subject: Some("CN=alice".into()),
        };
        let id = Identity::new(
            "10.1.2.3".parse().unwrap(),
            Some(&tls),
            AuthMechanism::ScramPlus,
            "n1",
        );
        let got: Vec<_> = id.pairs().collect();
        assert_eq!(
            got,
            [
                ("pgssl.client_addr", "10.1.2.3"),
                ("pgssl.tls_version", "TLSv1.3"),
                ("pgssl.tls_cipher", "TLS13_AES_128_GCM_SHA256"),
                ("pgssl.channel_binding", "tls-server-end-point"),
                ("pgssl.client_cert_subject", "CN=alice"),
                ("pgssl.auth_method", "scram-sha-256-plus"),
                ("pgssl.node", "n1"),
            ]
        );
        let plain = Identity::new("::1".parse().unwrap(), None, AuthMechanism::Scram, "n'1\0");
        let sql = plain.set_sql();
        assert!(
            sql.starts_with("SET pgssl.client_addr TO '::1'\n;"),
            "{sql}"
        );
        assert!(sql.contains("SET pgssl.tls_version TO 'none'\n;"));
        assert!(sql.contains("SET pgssl.channel_binding TO 'none'\n;"));
        // The node's name is quoted as a literal, whatever it holds.
        assert!(sql.ends_with("SET pgssl.node TO 'n''1'\n;"), "{sql}");
    }

    #[test]
    fn a_startup_naming_pgssl_in_any_case_or_in_options_sets_it() {
        assert!(startup_sets_pgssl("pgssl.client_addr", "1.2.3.4"));
        assert!(startup_sets_pgssl("PGSSL.Node", "x"));
        assert!(startup_sets_pgssl("options", "-c PgSsl.node=x"));
        assert!(startup_sets_pgssl(
            "options",
            "--pgssl.auth_method=certificate"
        ));
        assert!(!startup_sets_pgssl("options", "-c search_path=pgssl"));
        assert!(!startup_sets_pgssl("application_name", "pgssl.report"));
        assert!(!startup_sets_pgssl("pgssl", "x"));
    }
}
