//! `pgssl pending-changes list | apply [--ignore-prompt] | discard`.

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Said, Verb, no_arguments};
use super::{CommandError, Context, ErrorKind, Output, blocking, lock};
use crate::control::cluster::Membership;
use crate::control::cluster::publish::{Change, NODE_WAIT, NodeOutcome, wait_for_nodes};
use crate::control::reload::{self, ControlError};
use crate::keystore::Keystore;
use crate::repository::managed::{ManagedError, ManagedRepository};

no_arguments!(
    /// `pending-changes list`: the staged changes.
    List
);

/// The staged changes, one sentence each (empty when nothing is staged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changes {
    /// One line per staged change.
    pub changes: Vec<String>,
    /// The clients seen in the inventory's window that the staged change would refuse.
    #[serde(default)]
    pub would_refuse: Vec<super::preflight::Refused>,
    /// The nodes whose clients could not be judged.
    #[serde(default)]
    pub unjudged: Vec<String>,
}

impl Operation for List {
    const ACTION: &'static str = "pending-changes list";
    const PATH: &'static str = "/pending-changes";
    const VERB: Verb = Verb::Get;
    type Report = Changes;

    async fn run(self, ctx: &Context) -> Result<Changes, CommandError> {
        let store = ctx.store()?;
        let (applied, pending) = (store.applied()?, store.pending()?);
        let next = pending.merged_into(&applied);
        let (would_refuse, unjudged) =
            super::preflight::staged_refusals(ctx, &applied, &next).await?;
        Ok(Changes {
            changes: pending.describe(&applied),
            would_refuse,
            unjudged,
        })
    }

    fn example() -> List {
        List {}
    }
}

impl Report for Changes {
    fn render(&self, out: &Output) {
        if self.changes.is_empty() {
            say!(out, "No pending changes.");
            return;
        }
        say!(out, "Pending changes:");
        for line in &self.changes {
            say!(out, "  {line}");
        }
        warn_refusals(&self.would_refuse, out, false);
        for node in &self.unjudged {
            out.warning(format!("warning: clients not judged: {node}"));
        }
    }
}

/// Warns about the clients seen that a staged (or just applied) change refuses.
fn warn_refusals(refused: &[super::preflight::Refused], out: &Output, applied: bool) {
    if refused.is_empty() {
        return;
    }
    let days = crate::control::inventory::WINDOW_DAYS;
    out.warning(if applied {
        format!("warning: the applied change refuses clients seen in the last {days} days:")
    } else {
        format!(
            "warning: the staged change would refuse clients seen in the last {days} days (apply still proceeds; 'apply --refuse-if-breaking' stops instead):"
        )
    });
    for line in super::preflight::refusal_lines(refused) {
        out.warning(line);
    }
}

/// `pending-changes apply`: validates and promotes the staged changes, then tells a running server
/// to reload.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    /// Do not ask for confirmation (pgssl never restarts anything, so it never asks; accepted for
    /// the model's grammar).
    #[arg(long)]
    #[serde(default)]
    pub ignore_prompt: bool,
    /// Apply nothing if the staged change would refuse clients seen logging in within the
    /// inventory's window (see `security repository-ssl report`).
    #[arg(long)]
    #[serde(default)]
    pub refuse_if_breaking: bool,
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// One line per applied change.
    pub applied: Vec<String>,
    /// The clients seen that the change refuses from now on.
    #[serde(default)]
    pub would_refuse: Vec<super::preflight::Refused>,
    /// The running server's answer, when one runs on the data directory (not on a cluster node,
    /// whose server takes the change like every other node).
    pub server: Option<reload::ReloadReport>,
    /// On a cluster node: the state version committed.
    #[serde(default)]
    pub cluster_version: Option<u64>,
    /// On a cluster node: how each node took it.
    #[serde(default)]
    pub nodes: Vec<NodeOutcome>,
}

impl Operation for Apply {
    const ACTION: &'static str = "pending-changes apply";
    const PATH: &'static str = "/pending-changes/apply";
    const VERB: Verb = Verb::Post;
    type Report = Applied;

    async fn run(self, ctx: &Context) -> Result<Applied, CommandError> {
        apply(ctx, self.refuse_if_breaking).await
    }

    fn example() -> Apply {
        Apply {
            ignore_prompt: true,
            refuse_if_breaking: false,
        }
    }

    async fn after_commit(
        report: &mut Applied,
        _ctx: &Context,
        change: &mut Change,
        version: Option<u64>,
    ) -> Result<(), CommandError> {
        let version = version.unwrap_or(change.membership().version);
        report.cluster_version = Some(version);
        report.nodes = wait_for_nodes(change, version, NODE_WAIT).await?;
        Ok(())
    }
}

/// Why `pending-changes apply` did not apply, or did but could not tell the running server.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Nothing is staged.
    #[error(
        "there are no pending changes to apply (stage one with 'pgssl security repository-ssl enable' or 'disable')"
    )]
    NothingPending,
    /// The change is on disk, but the running server did not take it.
    #[error(
        "the change is applied on disk, but {0}; the server keeps serving its previous settings (fix the cause, then send it SIGHUP or restart it)"
    )]
    NotReloaded(ControlError),
    /// The managed repository did not take the staged direct-access changes.
    #[error(
        "cannot change direct access on the managed repository ({0}); is 'pgssl serve' running on this data directory? The pending changes were kept"
    )]
    DataAccess(ManagedError),
}

impl ApplyError {
    /// Nothing to apply is the caller's; a server that kept its settings is pgssl's to sort out;
    /// a repository that did not take the users' changes is out of reach.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::NothingPending => ErrorKind::User,
            ApplyError::NotReloaded(_) => ErrorKind::Server,
            ApplyError::DataAccess(_) => ErrorKind::Upstream,
        }
    }
}

async fn apply(ctx: &Context, refuse_if_breaking: bool) -> Result<Applied, CommandError> {
    let store = ctx.store()?;
    let _lock = lock(&store)?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    if pending.is_empty() {
        return Err(ApplyError::NothingPending.into());
    }
    let next = pending.merged_into(&applied);
    let (would_refuse, unjudged) = super::preflight::staged_refusals(ctx, &applied, &next).await?;
    let certain = would_refuse.iter().filter(|r| !r.maybe).count();
    if refuse_if_breaking && certain > 0 {
        return Err(super::preflight::PreflightError::WouldRefuse(certain).into());
    }
    // Asked to stop if the change breaks clients, it does not go ahead blind.
    if refuse_if_breaking && !unjudged.is_empty() {
        return Err(super::preflight::PreflightError::Unjudged(unjudged.join("; ")).into());
    }
    // The same loader a server uses: what passes here, a server can serve. It decrypts an
    // encrypted external key, which may take seconds.
    blocking(|| crate::control::settings::for_state(&store, &next, ctx.config.repository.tls))?;
    if !pending.data_access.is_empty() {
        apply_data_access(ctx, &store, &pending).await?;
    }
    let lines = pending.describe(&applied);
    store.promote(&next)?;
    super::prune(&store, &ctx.out);
    if Membership::read(&store.config_dir())?.is_some() {
        // Committed by `execute` after this returns; every node, this one too, then reloads.
        return Ok(Applied {
            applied: lines,
            would_refuse,
            server: None,
            cluster_version: None,
            nodes: Vec::new(),
        });
    }
    let server = ctx.node.reload().await.map_err(ApplyError::NotReloaded)?;
    Ok(Applied {
        applied: lines,
        would_refuse,
        server,
        cluster_version: None,
        nodes: Vec::new(),
    })
}

impl Report for Applied {
    fn render(&self, out: &Output) {
        say!(out, "Applied:");
        for line in &self.applied {
            say!(out, "  {line}");
        }
        warn_refusals(&self.would_refuse, out, true);
        if let Some(version) = self.cluster_version {
            say!(out, "Committed as cluster state version {version}:");
            for node in &self.nodes {
                say!(out, "  {} ({}): {}", node.name, node.address, node.outcome);
            }
            return;
        }
        match &self.server {
            Some(report) => say!(
                out,
                "The running pgssl server took the change: new connections use {}; open sessions were kept.",
                report.describe()
            ),
            None => say!(
                out,
                "No pgssl server is running on this data directory; 'pgssl serve' will use the change when it starts."
            ),
        }
    }
}

/// Runs staged direct-user changes on the managed repository; they must succeed before anything is
/// promoted, and re-running finishes an interrupted run.
async fn apply_data_access(
    ctx: &Context,
    store: &crate::control::state::StateStore,
    pending: &crate::control::state::PendingChanges,
) -> Result<(), CommandError> {
    // Locating runs `pg_config`: off the runtime's one worker.
    let repo = super::blocking(|| ManagedRepository::locate(&ctx.data_dir, &ctx.config))?;
    let mut keystore = Keystore::open(&store.config_dir())?;
    super::data_access::apply_staged(&repo, &mut keystore, &pending.data_access)
        .await
        .map_err(ApplyError::DataAccess)?;
    Ok(())
}

no_arguments!(
    /// `pending-changes discard`: drops the staged changes.
    Discard
);

impl Operation for Discard {
    const ACTION: &'static str = "pending-changes discard";
    const PATH: &'static str = "/pending-changes/discard";
    const VERB: Verb = Verb::Post;
    type Report = Said;

    async fn run(self, ctx: &Context) -> Result<Said, CommandError> {
        let store = ctx.store()?;
        let _lock = lock(&store)?;
        let staged_users: Vec<String> = store.pending()?.data_access.into_keys().collect();
        if !staged_users.is_empty() {
            let mut keystore = Keystore::open(&store.config_dir())?;
            for user in staged_users {
                keystore.remove(&crate::control::state::store::pending_password_name(&user))?;
            }
        }
        let discarded = store.discard_pending()?;
        super::prune(&store, &ctx.out);
        Ok(Said::one(if discarded {
            "Discarded the pending changes."
        } else {
            "No pending changes to discard."
        }))
    }

    fn example() -> Discard {
        Discard {}
    }
}
