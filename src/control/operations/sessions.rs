//! `sessions list` and `sessions terminate`: the client sessions the running node serves — who,
//! from where, over what TLS, authenticated how, on which backend, doing what — and ending some
//! of them (PgBouncer's `SHOW CLIENTS` and `KILL`, per session or per role).

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Verb};
use super::{CommandError, Context, ErrorKind, Output};
use crate::control::reload::ControlError;
use crate::proxy::sessions::{Selector, SessionInfo};

/// `sessions list`: the client sessions of the running node, oldest first.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Only the sessions of this role.
    #[arg(long, value_name = "ROLE")]
    #[serde(default)]
    pub user: Option<String>,
    /// Only the sessions on this database.
    #[arg(long, value_name = "DATABASE")]
    #[serde(default)]
    pub database: Option<String>,
}

/// What `sessions list` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsReport {
    /// The sessions, oldest first.
    pub sessions: Vec<SessionInfo>,
}

impl Report for SessionsReport {
    fn render(&self, out: &Output) {
        if self.sessions.is_empty() {
            out.info("No client sessions.".into());
            return;
        }
        out.info(format!(
            "{:>6}  {:<14} {:<14} {:<16} {:<21} {:<8} {:<18} {:<15} {:>8}  {}",
            "id",
            "user",
            "database",
            "application",
            "client",
            "tls",
            "auth",
            "state",
            "age",
            "backend"
        ));
        for s in &self.sessions {
            out.info(format!(
                "{:>6}  {:<14} {:<14} {:<16} {:<21} {:<8} {:<18} {:<15} {:>7}s  {}",
                s.id,
                s.user,
                s.database,
                if s.application_name.is_empty() {
                    "-"
                } else {
                    &s.application_name
                },
                s.client_addr,
                s.tls.as_ref().map_or("none", |t| &*t.version),
                s.auth_method.as_deref().unwrap_or("-"),
                s.state.label(),
                s.age_secs,
                s.backend_pid.map_or_else(
                    || "-".to_string(),
                    |pid| format!("{} pid {pid}", s.backend_host.as_deref().unwrap_or("?"))
                ),
            ));
            if let Some(tls) = &s.tls {
                let mut details = format!(
                    "{:>6}  {} {}",
                    "",
                    tls.cipher,
                    tls.group.as_deref().unwrap_or("")
                );
                if let Some(sni) = &tls.sni {
                    details.push_str(&format!(", server name {sni}"));
                }
                if let Some(subject) = &tls.client_cert_subject {
                    details.push_str(&format!(", client certificate {subject}"));
                }
                details.push_str(&format!(
                    ", {} bytes in, {} out",
                    s.bytes_to_repository, s.bytes_to_client
                ));
                out.info(details);
            }
        }
        out.info(format!("{} client sessions.", self.sessions.len()));
    }
}

impl Operation for List {
    const ACTION: &'static str = "sessions list";
    const PATH: &'static str = "/sessions";
    const VERB: Verb = Verb::Get;
    type Report = SessionsReport;

    async fn run(self, ctx: &Context) -> Result<SessionsReport, CommandError> {
        ctx.store()?;
        let selector = Selector {
            id: None,
            user: self.user,
            database: self.database,
        };
        let sessions = ctx
            .node
            .sessions(selector)
            .await?
            .ok_or(ControlError::NotRunning)?;
        Ok(SessionsReport { sessions })
    }

    fn example() -> List {
        List {
            user: Some("tableau".into()),
            database: None,
        }
    }
}

/// `sessions terminate`: ends client sessions; each client gets FATAL 57P01 naming the
/// administrator's action, and its backend is reset for the next client or closed.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terminate {
    /// The session with this id (as `sessions list` shows it).
    #[arg(long, value_name = "ID")]
    #[serde(default)]
    pub id: Option<u64>,
    /// Every session of this role.
    #[arg(long, value_name = "ROLE")]
    #[serde(default)]
    pub user: Option<String>,
    /// Every session on this database (with `--user`: that role's sessions on it).
    #[arg(long, value_name = "DATABASE")]
    #[serde(default)]
    pub database: Option<String>,
}

/// Why sessions were not terminated.
#[derive(Debug, thiserror::Error)]
pub enum TerminateError {
    /// Nothing says which sessions.
    #[error("say which sessions to terminate: --id ID, --user ROLE or --database DATABASE")]
    NoSelector,
    /// Nothing matched.
    #[error("no client session matches {0}")]
    NoMatch(String),
}

impl TerminateError {
    /// Both are the caller's.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// What `sessions terminate` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Terminated {
    /// The ids of the sessions ended.
    pub terminated: Vec<u64>,
}

impl Report for Terminated {
    fn render(&self, out: &Output) {
        let ids: Vec<String> = self.terminated.iter().map(u64::to_string).collect();
        out.info(format!(
            "Terminated {} client session(s): {}. Each client was told (FATAL 57P01).",
            ids.len(),
            ids.join(", ")
        ));
    }
}

impl Operation for Terminate {
    const ACTION: &'static str = "sessions terminate";
    const PATH: &'static str = "/sessions/terminate";
    const VERB: Verb = Verb::Post;
    // It changes no state: the running node acts at once.
    const SHARED: bool = false;
    type Report = Terminated;

    async fn run(self, ctx: &Context) -> Result<Terminated, CommandError> {
        ctx.store()?;
        let selector = Selector {
            id: self.id,
            user: self.user,
            database: self.database,
        };
        if selector.is_everything() {
            return Err(TerminateError::NoSelector.into());
        }
        let terminated = ctx
            .node
            .terminate(selector.clone(), ctx.actor.clone())
            .await?
            .ok_or(ControlError::NotRunning)?;
        if terminated.is_empty() {
            return Err(TerminateError::NoMatch(describe(&selector)).into());
        }
        Ok(Terminated { terminated })
    }

    fn example() -> Terminate {
        Terminate {
            id: Some(7),
            user: None,
            database: None,
        }
    }
}

/// The selector as the command's flags.
fn describe(selector: &Selector) -> String {
    let mut flags = Vec::new();
    if let Some(id) = selector.id {
        flags.push(format!("--id {id}"));
    }
    if let Some(user) = &selector.user {
        flags.push(format!("--user {user}"));
    }
    if let Some(database) = &selector.database {
        flags.push(format!("--database {database}"));
    }
    flags.join(" ")
}
