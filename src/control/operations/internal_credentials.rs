//! `pgssl internal-credentials [--user NAME]`: the connection string an internal service uses.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::Report;
use super::{CommandError, Context, ErrorKind, Output, external_repository};
use crate::keystore::Keystore;
use crate::repository::managed::{REPOSITORY_DATABASE, role_secret_name};
use crate::tls::certs;

/// A libpq connection string, and notes on where its parts came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// `host=… port=… dbname=… user=… password=… sslmode=…`.
    pub conninfo: String,
    /// Notes (stderr).
    pub notes: Vec<String>,
}

impl Report for Credentials {
    fn render(&self, out: &Output) {
        for n in &self.notes {
            out.warning(n.clone());
        }
        out.info(self.conninfo.clone());
    }
}

/// Why `internal-credentials` has no connection string to give.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The repository is external: pgssl manages none of its roles.
    #[error(
        "internal credentials exist only for a managed repository (this data directory's repository is {0}, whose roles pgssl does not manage)"
    )]
    ExternalRepository(String),
    /// The role is not one of `repository.internal_roles`.
    #[error(
        "'{user}' is not an internal role (internal roles: {roles}; add it to repository.internal_roles)"
    )]
    NotInternal {
        /// The role asked for.
        user: String,
        /// The internal roles, comma-separated.
        roles: String,
    },
    /// The role has no password yet.
    #[error("no password for '{0}' yet: start 'pgssl serve' once so that it creates the role")]
    NoPassword(String),
}

impl CredentialsError {
    /// Each is the caller's to fix, as the message says.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// A libpq connection string with the role's password and, when repository SSL is on,
/// `sslmode=verify-full` with the certificate as `sslrootcert`.
pub async fn internal_credentials(
    ctx: &Context,
    user: Option<&str>,
) -> Result<Credentials, CommandError> {
    let mut notes = Vec::new();
    let store = ctx.store()?;
    let running = ctx.running().await.unwrap_or_else(|e| {
        notes.push(format!(
            "note: cannot ask the running server for its address: {e}"
        ));
        None
    });
    if let Some(upstream) = external_repository(ctx, running.as_ref()) {
        return Err(CredentialsError::ExternalRepository(upstream).into());
    }
    let roles = &ctx.config.repository.internal_roles;
    let user = user.unwrap_or(&roles[0]);
    if !roles.iter().any(|r| r == user) {
        return Err(CredentialsError::NotInternal {
            user: user.to_string(),
            roles: roles.join(", "),
        }
        .into());
    }
    let keystore = Keystore::open(&store.config_dir())?;
    let password = keystore
        .get(&role_secret_name(user))?
        .ok_or_else(|| CredentialsError::NoPassword(user.to_string()))?;
    let (host, port) = listen_address(ctx, running.as_ref(), &mut notes)?;
    let mut parts = vec![
        ("host", host),
        ("port", port.to_string()),
        ("dbname", REPOSITORY_DATABASE.to_string()),
        ("user", user.to_string()),
        ("password", password.expose().to_string()),
    ];
    let applied = store.applied()?;
    match store.cert_paths_of(&applied) {
        Some(paths) if applied.repository_ssl.mode.offers_tls() => {
            let cert = std::fs::canonicalize(&paths.cert).unwrap_or(paths.cert);
            parts.push(("sslmode", "verify-full".into()));
            parts.push(("sslrootcert", cert.display().to_string()));
        }
        _ => {
            notes.push(
                "note: repository SSL is off, so this connection string uses no TLS; run 'pgssl security repository-ssl enable' and 'pgssl pending-changes apply'".into(),
            );
            parts.push(("sslmode", "disable".into()));
        }
    }
    let line: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    Ok(Credentials {
        conninfo: line.join(" "),
        notes,
    })
}

/// Where clients reach the proxy: the running server's own address (`serve --listen` may differ from
/// the config file), else the configured one; the host as a client names it.
fn listen_address(
    ctx: &Context,
    running: Option<&crate::control::reload::ServeStatus>,
    notes: &mut Vec<String>,
) -> Result<(String, u16), CommandError> {
    let listen = match running {
        Some(status) => {
            notes.push(format!(
                "note: host and port are where the running 'pgssl serve' listens ({})",
                status.listen
            ));
            status.listen
        }
        None => {
            let listen = ctx.config.server.listen;
            notes.push(format!(
                "note: no 'pgssl serve' is running on this data directory; host and port are the configured server.listen ({listen})"
            ));
            listen
        }
    };
    let host = match listen.ip() {
        ip if ip.is_loopback() => "localhost".to_string(),
        ip if ip.is_unspecified() => certs::hostname().unwrap_or_else(|| "localhost".into()),
        IpAddr::V6(ip) => ip.to_string(),
        IpAddr::V4(ip) => ip.to_string(),
    };
    Ok((host, listen.port()))
}

/// libpq conninfo quoting: single quotes around values with spaces, quotes or backslashes.
fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_like_libpq() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(quote(""), "''");
    }
}
