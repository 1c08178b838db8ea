//! `topology failover-repository [--preferred | --target-host H]`: a planned switchover of the
//! repository's primary, asked of Patroni (Tableau's `tsm topology failover-repository`). pgssl
//! never promotes a host itself: without `repository.patroni` the command explains that it needs
//! it. After Patroni answers, the running server is watched until its probes see the new primary.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Operation, Said, Verb};
use super::{CommandError, Context, ErrorKind};
use crate::config::RepositoryEndpoint;
use crate::repository::patroni::{
    ClusterMember, PatroniClient, PatroniError, PatroniOptions, SwitchoverOutcome,
};

/// How long the command watches the running server for the new primary after Patroni answered.
const FOLLOW_WAIT: Duration = Duration::from_secs(60);

/// `topology failover-repository`: makes another repository host the primary, through Patroni.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRepository {
    /// Make `repository.preferred_host` the primary.
    #[arg(long, conflicts_with = "target_host")]
    #[serde(default)]
    pub preferred: bool,
    /// Make this host of `repository.address` the primary (`host:port`); without it or
    /// `--preferred`, Patroni picks the healthiest standby.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(default)]
    pub target_host: Option<String>,
}

/// Why a switchover was not asked for, or did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// No Patroni to ask.
    #[error(
        "topology failover-repository needs repository.patroni (the REST API of each host's Patroni): pgssl never promotes a repository host itself"
    )]
    NoPatroni,
    /// `--preferred` without `repository.preferred_host`.
    #[error("--preferred needs repository.preferred_host (one of repository.address)")]
    NoPreferredHost,
    /// The host's Patroni (its URL in `repository.patroni`) is not a member Patroni lists.
    #[error(
        "the Patroni of '{0}' (its URL in repository.patroni) is not a member of the Patroni cluster (its members: {1})"
    )]
    NotAMember(String, String),
    /// The host named is not a repository address.
    #[error("'{0}' is not one of repository.address")]
    NotAHost(String),
    /// Patroni names no leader to switch over from.
    #[error(
        "Patroni names no leader: the cluster has no primary to switch over from (a failover may be under way)"
    )]
    NoLeader,
    /// Patroni refused or failed.
    #[error(transparent)]
    Patroni(#[from] PatroniError),
}

impl FailoverError {
    /// The failure's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FailoverError::NoPatroni
            | FailoverError::NoPreferredHost
            | FailoverError::NotAMember(..)
            | FailoverError::NotAHost(_) => ErrorKind::User,
            FailoverError::NoLeader => ErrorKind::Upstream,
            FailoverError::Patroni(e) => e.kind(),
        }
    }
}

impl Operation for FailoverRepository {
    const ACTION: &'static str = "topology failover-repository";
    const PATH: &'static str = "/topology/failover-repository";
    const VERB: Verb = Verb::Post;
    // It changes the repository, not pgssl's state: nothing to commit for the other nodes.
    const SHARED: bool = false;
    type Report = Said;

    async fn run(self, ctx: &Context) -> Result<Said, CommandError> {
        let r = &ctx.config.repository;
        if r.patroni.is_empty() {
            return Err(FailoverError::NoPatroni.into());
        }
        let target = match (self.preferred, &self.target_host) {
            (true, _) => Some(
                r.preferred_host
                    .clone()
                    .ok_or(FailoverError::NoPreferredHost)?,
            ),
            (false, named) => named.clone(),
        };
        let target = target
            .map(|t| {
                t.parse::<RepositoryEndpoint>()
                    .map_err(|_| FailoverError::NotAHost(t.clone()))
            })
            .transpose()?;
        let hosts = ctx
            .config
            .repository
            .address
            .as_ref()
            .map(|a| a.endpoints().to_vec())
            .unwrap_or_default();
        // repository.patroni[i] is the Patroni of repository.address[i].
        let target_index = match &target {
            None => None,
            Some(t) => Some(
                hosts
                    .iter()
                    .position(|h| h == t)
                    .ok_or_else(|| FailoverError::NotAHost(t.to_string()))?,
            ),
        };
        let client = PatroniClient::new(PatroniOptions::from_config(&ctx.config))
            .map_err(FailoverError::from)?;
        let view = client.cluster().await.map_err(FailoverError::from)?;
        let leader = view.leader().ok_or(FailoverError::NoLeader)?;
        let index_of = |m: &ClusterMember| {
            (0..client.url_count()).find(|&i| {
                let url = client.url(i).unwrap_or_default().trim_end_matches('/');
                m.api_url
                    .as_deref()
                    .is_some_and(|api| api.trim_end_matches('/').starts_with(url))
            })
        };
        let candidate = match target_index {
            None => None,
            Some(i) => Some(
                view.members
                    .iter()
                    .find(|m| index_of(m) == Some(i))
                    .ok_or_else(|| {
                        let names = view
                            .members
                            .iter()
                            .map(|m| m.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ");
                        FailoverError::NotAMember(hosts[i].to_string(), names)
                    })?,
            ),
        };
        if let Some(c) = candidate
            && c.name == leader.name
        {
            return Ok(Said::one(format!(
                "{} ({}) is the primary already: nothing to do.",
                c.name,
                target.map(|t| t.to_string()).unwrap_or_default()
            )));
        }
        let name = candidate.map_or("", |c| c.name.as_str());
        let outcome = client
            .switchover(&leader.name, name)
            .await
            .map_err(FailoverError::from)?;
        let mut said = vec![match &outcome {
            SwitchoverOutcome::Done { message } => format!("Patroni: {message}"),
            SwitchoverOutcome::Scheduled { message } => format!("Patroni scheduled it: {message}"),
        }];
        if matches!(outcome, SwitchoverOutcome::Done { .. }) {
            let before = index_of(leader)
                .and_then(|i| hosts.get(i))
                .map(|h| h.to_string());
            said.push(follow(ctx, target.as_ref(), before.as_deref()).await);
        }
        Ok(Said { said })
    }

    fn example() -> FailoverRepository {
        FailoverRepository {
            preferred: false,
            target_host: Some("db2:5432".into()),
        }
    }
}

/// Waits until the running server's probes name `target` (or, with none, any host but `before`)
/// the primary, and says what it saw.
async fn follow(
    ctx: &Context,
    target: Option<&RepositoryEndpoint>,
    before: Option<&str>,
) -> String {
    let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
    loop {
        let hosts = match ctx.node.repository_hosts().await {
            Ok(Some(hosts)) => hosts,
            _ => return "No pgssl server runs on this data directory: nothing to watch.".into(),
        };
        let primary = hosts.iter().find(|h| h.role == "primary");
        let wanted = |address: &str| match target {
            Some(t) => address == t.to_string(),
            None => Some(address) != before,
        };
        if let Some(p) = primary
            && wanted(&p.address)
        {
            return format!("pgssl routes primary-bound sessions to {} now.", p.address);
        }
        if tokio::time::Instant::now() >= deadline {
            return format!(
                "pgssl did not see the new primary within {}s; see 'pgssl topology list-repository-hosts'.",
                FOLLOW_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
