//! `sessions list` and `sessions terminate`: the client sessions the running node serves — who,
//! from where, over what TLS, authenticated how, on which backend, doing what — and ending some
//! of them (PgBouncer's `SHOW CLIENTS` and `KILL`, per session or per role).

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Verb};
use super::{CommandError, Context, ErrorKind, Output};
use crate::control::cluster::questions::{self, Answer, Answers, Question};
use crate::control::reload::ControlError;
use crate::control::socket::Termination;
use crate::proxy::sessions::{Selector, SessionInfo};
use crate::telemetry::LogSafe;

/// `sessions list`: the client sessions of the running node, oldest first.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// In a cluster, only the sessions of this node.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub node: Option<String>,
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
    /// The sessions, by node, oldest first.
    pub sessions: Vec<SessionInfo>,
    /// The nodes that did not answer, and why.
    #[serde(default)]
    pub unanswered: Vec<String>,
}

impl Report for SessionsReport {
    fn render(&self, out: &Output) {
        for missing in &self.unanswered {
            out.warning(format!("warning: not listed: {missing}"));
        }
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
            let id = match &s.node {
                Some(node) => format!("{node}:{}", s.id),
                None => s.id.to_string(),
            };
            // The client's own words, escaped: a role or application name may hold control
            // characters meant for the operator's terminal.
            let safe = |text: &str| format!("{:#}", LogSafe(text));
            let application = match s.application_name.as_str() {
                "" => "-".to_string(),
                name => safe(name),
            };
            out.info(format!(
                "{:>6}  {:<14} {:<14} {:<16} {:<21} {:<8} {:<18} {:<15} {:>7}s  {}",
                id,
                safe(&s.user),
                safe(&s.database),
                application,
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
                    details.push_str(&format!(", server name {:#}", LogSafe(sni)));
                }
                if let Some(subject) = &tls.client_cert_subject {
                    details.push_str(&format!(", client certificate {:#}", LogSafe(subject)));
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
        let store = ctx.store()?;
        let selector = Selector {
            node: self.node,
            id: None,
            user: self.user,
            database: self.database,
        };
        let config_dir = store.config_dir();
        let me = own_name(&config_dir, &selector)?;
        let question = Question::Sessions(selector.clone());
        let asked = match questions::ask(&config_dir, &question).await {
            Ok(asked) => asked,
            // Listing is still useful from this node alone; it says so.
            Err(e) => {
                ctx.out.warning(format!(
                    "warning: cannot ask the other nodes ({e}); this node's sessions only"
                ));
                None
            }
        };
        let Some(answers) = asked else {
            // This node alone: sessions of another node named are not here.
            let mine = selector
                .node
                .as_deref()
                .is_none_or(|n| Some(n) == me.as_deref());
            let sessions = match mine {
                true => ctx
                    .node
                    .sessions(selector)
                    .await?
                    .ok_or(ControlError::NotRunning)?,
                false => Vec::new(),
            };
            let sessions = sessions
                .into_iter()
                .map(|s| SessionInfo {
                    node: me.clone(),
                    ..s
                })
                .collect();
            return Ok(SessionsReport {
                sessions,
                unanswered: Vec::new(),
            });
        };
        let wanted = |node: &str| selector.node.as_deref().is_none_or(|n| n == node);
        let mut report = SessionsReport {
            sessions: Vec::new(),
            unanswered: silent(&answers, &wanted),
        };
        for (node, answer) in answers.answered.into_iter().filter(|(n, _)| wanted(n)) {
            match answer {
                Answer::Sessions(sessions) => {
                    report
                        .sessions
                        .extend(sessions.into_iter().map(|s| SessionInfo {
                            node: Some(node.clone()),
                            ..s
                        }));
                }
                Answer::Failed(why) => report.unanswered.push(format!("node {node}: {why}")),
                Answer::Terminated(_) | Answer::Inventory(_) => {}
            }
        }
        Ok(report)
    }

    fn example() -> List {
        List {
            node: None,
            user: Some("tableau".into()),
            database: None,
        }
    }
}

/// `sessions terminate`: ends client sessions; each client gets FATAL 57P01 naming the
/// administrator's action, a query it runs is cancelled, and its backend closed.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terminate {
    /// In a cluster, the sessions on this node (`--id` needs it: ids are per node).
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub node: Option<String>,
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
    /// `--node` on a node of its own.
    #[error("--node names a node of a cluster; this data directory belongs to none")]
    NotAClusterNode,
    /// Nothing was ended, and some nodes did not answer.
    #[error("no client session was terminated; not reached: {0}")]
    Unanswered(String),
    /// An id without its node, in a cluster.
    #[error(
        "in a cluster, --id needs --node NAME: each node numbers its own sessions ('sessions list' shows node:id)"
    )]
    IdWithoutNode,
}

impl TerminateError {
    /// The caller's, but for nodes out of reach.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TerminateError::Unanswered(_) => ErrorKind::Upstream,
            _ => ErrorKind::User,
        }
    }
}

/// What `sessions terminate` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Terminated {
    /// The ids of the sessions ended (on a node of its own).
    pub terminated: Vec<u64>,
    /// In a cluster, the sessions ended on each node.
    #[serde(default)]
    pub on_nodes: Vec<(String, Vec<u64>)>,
    /// The nodes that did not answer, and why (their sessions may still run).
    #[serde(default)]
    pub unanswered: Vec<String>,
}

impl Report for Terminated {
    fn render(&self, out: &Output) {
        for missing in &self.unanswered {
            out.warning(format!("warning: not reached: {missing}"));
        }
        let ids: Vec<String> = self
            .terminated
            .iter()
            .map(u64::to_string)
            .chain(
                self.on_nodes
                    .iter()
                    .flat_map(|(node, ids)| ids.iter().map(move |id| format!("{node}:{id}"))),
            )
            .collect();
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
        let store = ctx.store()?;
        let selector = Selector {
            node: self.node,
            id: self.id,
            user: self.user,
            database: self.database,
        };
        if selector.is_everything() {
            return Err(TerminateError::NoSelector.into());
        }
        let config_dir = store.config_dir();
        let clustered = own_name(&config_dir, &selector)?.is_some();
        if clustered && selector.id.is_some() && selector.node.is_none() {
            return Err(TerminateError::IdWithoutNode.into());
        }
        let question = Question::Terminate(Termination {
            selector: selector.clone(),
            by: ctx.actor.clone(),
        });
        let mut report = Terminated {
            terminated: Vec::new(),
            on_nodes: Vec::new(),
            unanswered: Vec::new(),
        };
        // Never this node alone in a cluster: a session id names a session of one node only.
        match questions::ask(&config_dir, &question).await? {
            None => {
                report.terminated = ctx
                    .node
                    .terminate(selector.clone(), ctx.actor.clone())
                    .await?
                    .ok_or(ControlError::NotRunning)?;
            }
            Some(answers) => {
                let wanted = |node: &str| selector.node.as_deref().is_none_or(|n| n == node);
                report.unanswered = silent(&answers, &wanted);
                for (node, answer) in answers.answered {
                    match answer {
                        Answer::Terminated(ids) if !ids.is_empty() => {
                            report.on_nodes.push((node, ids));
                        }
                        Answer::Failed(why) if wanted(&node) => {
                            report.unanswered.push(format!("node {node}: {why}"));
                        }
                        _ => {}
                    }
                }
            }
        }
        if report.terminated.is_empty() && report.on_nodes.is_empty() {
            if !report.unanswered.is_empty() {
                return Err(TerminateError::Unanswered(report.unanswered.join("; ")).into());
            }
            return Err(TerminateError::NoMatch(describe(&selector)).into());
        }
        Ok(report)
    }

    fn example() -> Terminate {
        // Every field given, so that the API's tests can make each one wrong.
        Terminate {
            node: Some("n1".into()),
            id: Some(7),
            user: Some("tableau".into()),
            database: Some("workgroup".into()),
        }
    }
}

/// This node's name in its cluster (`None` on a node of its own, which `--node` cannot name).
fn own_name(
    config_dir: &std::path::Path,
    selector: &Selector,
) -> Result<Option<String>, CommandError> {
    let me = crate::control::cluster::Membership::read(config_dir)?.map(|m| m.node_name);
    if me.is_none() && selector.node.is_some() {
        return Err(TerminateError::NotAClusterNode.into());
    }
    Ok(me)
}

/// The nodes `wanted` names that did not answer.
fn silent(answers: &Answers, wanted: &impl Fn(&str) -> bool) -> Vec<String> {
    answers
        .silent
        .iter()
        .filter(|n| wanted(n))
        .map(|n| {
            format!(
                "node {n} did not answer within {:?}",
                questions::ANSWER_WAIT
            )
        })
        .collect()
}

/// The selector as the command's flags.
fn describe(selector: &Selector) -> String {
    let mut flags = Vec::new();
    if let Some(node) = &selector.node {
        flags.push(format!("--node {node}"));
    }
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
