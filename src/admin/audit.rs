//! The audit log: one JSON line per admin change or sign-in (who, from where, what, when, outcome),
//! appended to `<data-dir>/log/admin-audit.log` (0600) and emitted as a tracing event. Request bodies
//! are never recorded, so no password, passphrase or key reaches it.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use crate::telemetry::LogSafe;

/// Where audit records go.
#[derive(Debug, Clone)]
pub(crate) struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log of `data_dir`.
    pub(crate) fn new(data_dir: &Path) -> AuditLog {
        AuditLog {
            path: data_dir.join("log").join("admin-audit.log"),
        }
    }

    /// Records one event. The user name, the action (which can carry a request path) and the outcome
    /// (which can quote input) may come from an unauthenticated client, so each is escaped and capped
    /// in the file as in the log.
    /// The file is appended on a blocking thread, off the async runtime; the call returns once the
    /// record is written (or the failure logged).
    pub(crate) async fn record(&self, user: &str, peer: IpAddr, action: &str, outcome: &str) {
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let (user, action, outcome) = (LogSafe(user), LogSafe(action), LogSafe(outcome));
        info!(target: "pgssl::audit", %user, %peer, %action, %outcome, "admin audit");
        let line = serde_json::json!({
            "time": now, "user": format!("{user:#}"), "peer": peer.to_string(),
            "action": format!("{action:#}"), "outcome": format!("{outcome:#}"),
        });
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(file, "{line}")
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            warn!(path = %self.path.display(), error = %e, "cannot write the admin audit log");
        }
    }
}
