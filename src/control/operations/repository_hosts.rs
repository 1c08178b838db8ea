//! `topology list-repository-hosts`: the running server's repository hosts — which is the primary,
//! which are standbys and how far behind, the sessions and warm backends on each — as it probes them.

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Verb, no_arguments};
use super::{CommandError, Context, Output};
use crate::control::reload::ControlError;
use crate::proxy::repository::hosts::HostStatus;

/// What a single, unprobed host means (the CLI's and the admin page's words).
pub const UNPROBED: &str = "One repository host, not probed: every session goes to it (list several in repository.address to follow a failover).";

no_arguments!(
    /// `topology list-repository-hosts`: each repository host, its role, timeline, lag, sessions
    /// and warm backends, and when it last changed.
    ListRepositoryHosts
);

/// The running server's repository hosts, and where each user's sessions go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryHosts {
    /// In the configured order.
    pub hosts: Vec<HostStatus>,
    /// `repository.targets`: by role name or user class; everyone else `primary`.
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, crate::config::TargetRole>,
}

impl Operation for ListRepositoryHosts {
    const ACTION: &'static str = "topology list-repository-hosts";
    const PATH: &'static str = "/topology/repository-hosts";
    const VERB: Verb = Verb::Get;
    type Report = RepositoryHosts;

    async fn run(self, ctx: &Context) -> Result<RepositoryHosts, CommandError> {
        ctx.store()?;
        let hosts = ctx
            .node
            .repository_hosts()
            .await?
            .ok_or(ControlError::NotRunning)?;
        Ok(RepositoryHosts {
            hosts,
            targets: ctx.config.repository.targets.clone(),
        })
    }

    fn example() -> ListRepositoryHosts {
        ListRepositoryHosts {}
    }
}

impl Report for RepositoryHosts {
    fn render(&self, out: &Output) {
        if self.hosts.iter().all(|h| !h.probed) {
            out.info(UNPROBED.into());
        }
        out.info(format!(
            "{:<40} {:<8} {:>9} {:>8} {:>12} {:>9} {:>5}  last change",
            "host", "role", "reachable", "timeline", "lag", "sessions", "warm"
        ));
        for h in &self.hosts {
            let lag = match (h.lag_bytes, h.lag_seconds) {
                (Some(b), Some(s)) => format!("{b} B/{s:.1}s"),
                (Some(b), None) => format!("{b} B"),
                _ => "-".into(),
            };
            out.info(format!(
                "{:<40} {:<8} {:>9} {:>8} {:>12} {:>9} {:>5}  {}",
                h.address,
                h.role,
                if h.reachable { "yes" } else { "no" },
                h.timeline.map_or("-".into(), |t| t.to_string()),
                lag,
                h.sessions,
                h.warm,
                h.last_change
            ));
            if let Some(reason) = &h.reason {
                out.info(format!("    refused: {reason}"));
            }
            if let Some(error) = &h.error {
                out.info(format!("    last probe failed: {error}"));
            }
            if let Some(says) = &h.patroni {
                out.info(format!("    Patroni: {says}"));
            }
        }
        let routed: Vec<String> = self
            .targets
            .iter()
            .map(|(who, target)| format!("{who} → {target}"))
            .chain(std::iter::once("everyone else → primary".to_string()))
            .collect();
        out.info(format!("Sessions go: {}.", routed.join(", ")));
    }
}
