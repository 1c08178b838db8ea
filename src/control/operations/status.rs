//! `status`: what an operator looks at first, in one report — this node and, in a cluster, every
//! node (live, state version served, last heartbeat); the repository's hosts and their roles; the
//! client sessions by user and TLS; the warm backends; the certificates and their expiry; the
//! changes waiting for apply. Each part is read the way its own command reads it (`topology list`,
//! `topology list-repository-hosts`, `sessions list`, `pool list`, `pending-changes list`), and a
//! part that cannot be read is said as such instead of failing the whole report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Verb, no_arguments};
use super::{CommandError, Context, Output, sessions};
use crate::control::cluster::Membership;
use crate::control::cluster::repo::{self, NodeRow};
use crate::control::node::PoolSnapshot;
use crate::keystore::Keystore;
use crate::proxy::repository::hosts::HostStatus;

no_arguments!(
    /// `status`: nodes, repository hosts, sessions, warm backends, certificates, pending changes.
    Status
);

/// This node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThisNode {
    /// pgssl's version.
    pub version: String,
    /// Whether `serve` runs on this data directory.
    pub running: bool,
    /// Where it listens (when it runs).
    pub listen: Option<String>,
    /// The repository it serves (when it runs).
    pub repository: Option<String>,
    /// The applied repository SSL mode.
    pub mode: String,
    /// Its name in a cluster.
    pub cluster_name: Option<String>,
}

/// Sessions of one user over one kind of transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCount {
    /// The role.
    pub user: String,
    /// `TLSv1_3`, `TLSv1_2` or `none`.
    pub tls: String,
    /// How many.
    pub sessions: usize,
    /// How many of them hold a backend now.
    pub with_backend: usize,
}

/// A certificate pgssl serves or trusts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// What pgssl does with it: `served`, `custom_ca`, `client_ca`, `extsvc`.
    pub certificate: String,
    /// Its subject.
    pub subject: String,
    /// Whole days until it expires (negative: expired).
    pub days_left: i64,
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node.
    pub node: ThisNode,
    /// Every node of the cluster (empty on a node of its own).
    pub nodes: Vec<NodeRow>,
    /// The repository's hosts, as the running server probes them.
    pub repository_hosts: Vec<HostStatus>,
    /// Client sessions per user and TLS version (every node's, in a cluster).
    pub sessions: Vec<SessionCount>,
    /// The warm backends of the running server.
    pub pool: Option<PoolSnapshot>,
    /// The certificates and their expiry.
    pub certificates: Vec<CertificateStatus>,
    /// The changes waiting for `pending-changes apply`.
    pub pending: Vec<String>,
    /// What could not be read, one line each.
    pub problems: Vec<String>,
}

impl Operation for Status {
    const ACTION: &'static str = "status";
    const PATH: &'static str = "/status";
    const VERB: Verb = Verb::Get;
    type Report = StatusReport;

    async fn run(self, ctx: &Context) -> Result<StatusReport, CommandError> {
        let store = ctx.store()?;
        let applied = store.applied()?;
        let config_dir = store.config_dir();
        let mut problems = Vec::new();
        let running = ctx.node.status().await.unwrap_or_else(|e| {
            problems.push(format!("the running server: {e}"));
            None
        });
        let membership = Membership::read(&config_dir).ok().flatten();
        let node = ThisNode {
            version: env!("CARGO_PKG_VERSION").to_string(),
            running: running.is_some(),
            listen: running.as_ref().map(|s| s.listen.to_string()),
            repository: running.as_ref().map(|s| s.upstream.clone()),
            mode: applied.repository_ssl.mode.to_string(),
            cluster_name: membership.as_ref().map(|m| m.node_name.clone()),
        };
        let nodes = match &membership {
            Some(m) => cluster_nodes(m, &config_dir).await.unwrap_or_else(|e| {
                problems.push(format!("the cluster's nodes: {e}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let repository_hosts = match ctx.node.repository_hosts().await {
            Ok(hosts) => hosts.unwrap_or_default(),
            Err(e) => {
                problems.push(format!("the repository hosts: {e}"));
                Vec::new()
            }
        };
        let sessions = if running.is_some() || membership.is_some() {
            let listed = sessions::List::default().run(ctx).await;
            match listed {
                Ok(report) => {
                    problems.extend(report.unanswered.iter().cloned());
                    count_sessions(&report.sessions)
                }
                Err(e) => {
                    problems.push(format!("the sessions: {e}"));
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let pool = ctx.node.pool().await.unwrap_or_else(|e| {
            problems.push(format!("the warm backends: {e}"));
            None
        });
        let certificates = crate::control::expiry::certificates(&store)
            .into_iter()
            .map(|e| CertificateStatus {
                certificate: e.certificate.to_string(),
                subject: e.subject,
                days_left: e.seconds_left.div_euclid(86_400),
            })
            .collect();
        // The staged changes' sentences, as `pending-changes list` words them, without its judgement
        // of who they would refuse (a question to every node the report does not show).
        let pending = store.pending()?.describe(&applied);
        Ok(StatusReport {
            node,
            nodes,
            repository_hosts,
            sessions,
            pool,
            certificates,
            pending,
            problems,
        })
    }

    fn example() -> Status {
        Status {}
    }
}

/// The cluster's nodes, read as `topology list` reads them.
async fn cluster_nodes(
    m: &Membership,
    config_dir: &std::path::Path,
) -> Result<Vec<NodeRow>, CommandError> {
    let keystore = Keystore::open(config_dir)?;
    let timeout = crate::control::cluster::publish::TIMEOUT;
    let (mut conn, host) = repo::connect(m, config_dir, &keystore, timeout).await?;
    let nodes = repo::nodes(&mut conn, &host).await;
    let _ = conn.terminate().await;
    Ok(nodes?)
}

/// Sessions per (user, TLS version), by user.
fn count_sessions(listed: &[crate::proxy::sessions::SessionInfo]) -> Vec<SessionCount> {
    let mut counts: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for s in listed {
        let tls = s.tls.as_ref().map_or("none", |t| &*t.version).to_string();
        let count = counts.entry((s.user.clone(), tls)).or_default();
        count.0 += 1;
        count.1 += usize::from(s.backend_pid.is_some());
    }
    counts
        .into_iter()
        .map(|((user, tls), (sessions, with_backend))| SessionCount {
            user,
            tls,
            sessions,
            with_backend,
        })
        .collect()
}

impl Report for StatusReport {
    fn render(&self, out: &Output) {
        let n = &self.node;
        match (&n.listen, &n.repository) {
            (Some(listen), Some(repository)) => say!(
                out,
                "pgssl {} serving on {listen} in front of {repository}; repository SSL {}.",
                n.version,
                n.mode
            ),
            _ => say!(
                out,
                "pgssl {}: no server runs on this data directory; repository SSL {}.",
                n.version,
                n.mode
            ),
        }
        if !self.nodes.is_empty() {
            say!(out, "");
            say!(
                out,
                "Cluster nodes (this one: {}):",
                n.cluster_name.as_deref().unwrap_or("?")
            );
            say!(
                out,
                "  {:<16} {:<6} {:>8} {:<22} {}",
                "node",
                "live",
                "version",
                "last heartbeat",
                "address"
            );
            for node in &self.nodes {
                say!(
                    out,
                    "  {:<16} {:<6} {:>8} {:<22} {}",
                    node.name,
                    if node.is_live() {
                        "yes"
                    } else if node.removed {
                        "removed"
                    } else {
                        "no"
                    },
                    node.version,
                    node.heartbeat,
                    node.address
                );
            }
        }
        if !self.repository_hosts.is_empty() {
            say!(out, "");
            say!(out, "Repository hosts:");
            for h in &self.repository_hosts {
                say!(
                    out,
                    "  {:<28} {:<10} reachable {:<4} sessions {:>4}  warm {:>4}",
                    h.address,
                    h.role,
                    if h.reachable { "yes" } else { "no" },
                    h.sessions,
                    h.warm
                );
            }
        }
        say!(out, "");
        if self.sessions.is_empty() {
            say!(out, "Client sessions: none.");
        } else {
            let total: usize = self.sessions.iter().map(|c| c.sessions).sum();
            say!(out, "Client sessions ({total}):");
            for c in &self.sessions {
                say!(
                    out,
                    "  {:<20} {:<8} {:>6} sessions, {} holding a backend",
                    c.user,
                    c.tls,
                    c.sessions,
                    c.with_backend
                );
            }
        }
        if let Some(pool) = self.pool.as_ref().filter(|p| p.enabled) {
            let (busy, idle) = pool
                .keys
                .iter()
                .fold((0, 0), |(b, i), k| (b + k.busy, i + k.idle));
            say!(
                out,
                "Warm backends: {busy} busy, {idle} idle, {} clients waiting ({} mode).",
                pool.waiting,
                pool.mode
            );
        }
        say!(out, "");
        say!(out, "Certificates:");
        if self.certificates.is_empty() {
            say!(
                out,
                "  none (repository SSL is off and nothing else is configured)"
            );
        }
        for c in &self.certificates {
            let left = if c.days_left < 0 {
                format!("EXPIRED {} days ago", -c.days_left)
            } else {
                format!("expires in {} days", c.days_left)
            };
            say!(out, "  {:<10} {:<40} {left}", c.certificate, c.subject);
        }
        say!(out, "");
        if self.pending.is_empty() {
            say!(out, "No pending changes.");
        } else {
            say!(out, "Pending changes (run 'pgssl pending-changes apply'):");
            for line in &self.pending {
                say!(out, "  {line}");
            }
        }
        for problem in &self.problems {
            out.warning(format!("warning: could not read {problem}"));
        }
    }
}
