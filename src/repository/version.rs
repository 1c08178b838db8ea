//! Learning the repository's PostgreSQL major version, which names `config/pgsql<major>`.

use std::time::Duration;

use crate::config::Config;
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::repository::tls::RepositoryTls;

use super::session::{Login, Session, SessionError};
use crate::keystore::Secret;

/// The environment variable holding the probe role's password.
pub const PASSWORD_ENV: &str = "PGSSL_UPSTREAM_PASSWORD";

/// Where a major version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// Read from the upstream's `server_version`.
    Upstream {
        /// The full `server_version` string.
        server_version: String,
    },
    /// Read from the managed repository's cluster or binaries.
    Managed,
    /// Taken from `repository.postgres_major` because the upstream could not be asked.
    Config {
        /// Why the upstream could not be asked.
        reason: String,
    },
}

/// A major version and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MajorVersion {
    /// e.g. 15.
    pub major: u32,
    /// Where it came from.
    pub source: VersionSource,
}

/// Parses the major version from a `server_version` such as `15.18 (Debian 15.18-0+deb12u1)`.
pub fn parse_major(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|m| *m >= 10)
}

/// Asks the upstream for its `server_version` as `repository.probe_user`; falls back to
/// `repository.postgres_major` and says why.
pub async fn probe(
    config: &Config,
    upstream: &RepositoryAddr,
    tls: &RepositoryTls,
) -> MajorVersion {
    let password = std::env::var(PASSWORD_ENV).ok().map(Secret::new);
    let fallback = |reason: String| MajorVersion {
        major: config.repository.postgres_major,
        source: VersionSource::Config { reason },
    };
    let attempt = async {
        let stream = upstream
            .connect_with(config.connect_timeout(), tls)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let login = Login {
            user: &config.repository.probe_user,
            database: &config.repository.probe_database,
            application_name: "pgssl version probe",
            password: password.as_ref(),
        };
        let session = Session::start(stream, &login).await?;
        let version = session.server_version().map(str::to_owned);
        let _ = session.terminate().await;
        Ok::<_, SessionError>(version)
    };
    let limit = config.connect_timeout() + Duration::from_secs(5);
    match tokio::time::timeout(limit, attempt).await {
        Err(_) => fallback(format!("no answer from {upstream} within {limit:?}")),
        Ok(Err(e)) => fallback(format!("{upstream}: {e}")),
        Ok(Ok(None)) => fallback(format!("{upstream} did not report server_version")),
        Ok(Ok(Some(v))) => match parse_major(&v) {
            Some(major) => MajorVersion {
                major,
                source: VersionSource::Upstream { server_version: v },
            },
            None => fallback(format!(
                "cannot read a major version from server_version '{v}'"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(parse_major("15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("17beta1"), Some(17));
        assert_eq!(parse_major("9.6.24"), None);
        assert_eq!(parse_major("x"), None);
    }
}
