//! `pgssl security regenerate-internal-tokens [--request-timeout SECONDS]`: a new internal certificate,
//! new passwords for every internally managed role, and a new master key, without stopping anything.
//!
//! Each step leaves a consistent state, and a re-run finishes an interrupted one:
//! 1. certificate: a new key and certificate written atomically (key first); a running server keeps
//!    serving the old pair until step 3;
//! 2. passwords: each new password is sealed under `rotation/role/<name>` *before* the repository
//!    learns it, then promoted to `role/<name>`; a re-run reuses a sealed candidate, and the admin
//!    connection falls back to the candidate when the superuser's rotation was interrupted;
//! 3. reload: the running server swaps in the new certificate for new connections;
//! 4. master key: every secret re-sealed under a new key (see the keystore's own crash rules).
//!
//! Open sessions are never touched: PostgreSQL keeps authenticated sessions across `ALTER ROLE …
//! PASSWORD`, and the proxy keeps open TLS sessions across a reload.

use crate::control::state::mutual_ssl;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Bounded, Operation, Report, Verb};
use super::{CommandError, Context, ErrorKind, Output, external_repository, lock};
use crate::control::cluster::publish::{Change, NODE_WAIT, wait_for_nodes};
use crate::control::cluster::repo as cluster_repo;
use crate::control::cluster::{ClusterError, Membership, NEXT_PASSWORD_ENTRY, PASSWORD_ENTRY};
use crate::control::reload;
use crate::control::state::{StateStore, served_ca};
use crate::keystore::Keystore;
use crate::repository::Session;
use crate::repository::managed::{
    self, ManagedError, ManagedRepository, SUPERUSER, role_secret_name,
};
use crate::tls::certs;

/// Default of `--request-timeout` (and the API's `request_timeout_secs`), in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;
/// Longest timeout accepted (a day).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Environment variable that aborts the process after a step (1–4), as `kill -9` would; used by the
/// crash-recovery tests, and read only by builds with debug assertions (never by a release build).
pub const FAULT_ENV: &str = "PGSSL_FAULT_AFTER_STEP";

const STEPS: usize = 4;

fn rotation_name(role: &str) -> String {
    format!("rotation/{}", role_secret_name(role))
}

/// `--request-timeout` in seconds: 1 to [`MAX_TIMEOUT_SECS`], default [`DEFAULT_TIMEOUT_SECS`].
pub type TimeoutSecs = Bounded<1, MAX_TIMEOUT_SECS, DEFAULT_TIMEOUT_SECS>;

/// Why a rotation stopped; every step before is consistent, and running it again finishes it.
#[derive(Debug, thiserror::Error)]
pub enum RegenerateError {
    /// `--request-timeout` passed.
    #[error(
        "regenerate-internal-tokens did not finish within {0} s; every step so far is consistent, run it again to finish"
    )]
    TimedOut(u64),
    /// The managed repository, whose roles it rotates, is not running.
    #[error(
        "the managed repository runs only while 'pgssl serve' runs on this data directory: start it, then run this command again (nothing was changed)"
    )]
    ManagedNotRunning,
    /// The managed repository refused its superuser.
    #[error("cannot connect to the managed repository as its superuser ({0}); nothing was changed")]
    SuperuserUnreachable(ManagedError),
    /// The managed repository did not take the new passwords.
    #[error(
        "cannot change the internal passwords ({0}); the new certificate is written but not yet served: run the command again to finish"
    )]
    Passwords(ManagedError),
    /// The internal CA could not be rotated.
    #[error(transparent)]
    InternalCa(mutual_ssl::MutualSslError),
}

impl RegenerateError {
    /// A repository that is not running or does not answer is out of reach; the internal CA is
    /// pgssl's own.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegenerateError::TimedOut(_)
            | RegenerateError::ManagedNotRunning
            | RegenerateError::SuperuserUnreachable(_)
            | RegenerateError::Passwords(_) => ErrorKind::Upstream,
            RegenerateError::InternalCa(_) => ErrorKind::Server,
        }
    }
}

/// `security regenerate-internal-tokens`: a new internal certificate, internal role passwords and
/// master key, with no downtime. Each step is reported as it finishes.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    /// Give up after this many seconds (every step is resumable: run again to finish).
    #[arg(long = "request-timeout", value_name = "SECONDS", default_value_t = TimeoutSecs::default())]
    #[serde(rename = "request_timeout_secs", default)]
    pub request_timeout: TimeoutSecs,
    /// Also rotate the repository CA: publish the next CA now (`get-certificate-file` hands out
    /// both); it signs the served certificate once `tls.ca_overlap_days` have passed.
    #[arg(long)]
    #[serde(default)]
    pub ca: bool,
}

/// What the rotation changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Regenerated {
    /// The new internal certificate's fingerprint (none when repository SSL was never enabled).
    pub certificate_fingerprint: Option<String>,
    /// The roles whose passwords changed (none for an external repository).
    pub roles_changed: Vec<String>,
    /// The running server's answer after its reload, when one runs.
    pub server: Option<reload::ReloadReport>,
    /// Secrets re-sealed under the new master key.
    pub secrets_resealed: usize,
}

impl Operation for Regenerate {
    const ACTION: &'static str = "regenerate-internal-tokens";
    const PATH: &'static str = "/regenerate-internal-tokens";
    const VERB: Verb = Verb::Post;
    type Report = Regenerated;

    async fn run(self, ctx: &Context) -> Result<Regenerated, CommandError> {
        regenerate(ctx, Duration::from_secs(self.request_timeout.0), self.ca).await
    }

    fn example() -> Regenerate {
        Regenerate {
            request_timeout: Bounded(30),
            ca: false,
        }
    }

    async fn after_commit(
        _report: &mut Regenerated,
        ctx: &Context,
        change: &mut Change,
        _version: Option<u64>,
    ) -> Result<(), CommandError> {
        let (version, away) = rotate_cluster_password(change).await?;
        say!(
            ctx.out,
            "cluster role: its password changed (cluster state version {version}); bootstrap files made before now no longer work"
        );
        for node in away {
            say!(
                ctx.out,
                "node {node} was unreachable and never took the new password: it must join again with a new bootstrap file ('pgssl topology join')"
            );
        }
        Ok(())
    }
}

/// Steps 3 and 4 on a cluster node: the password the cluster role rotates to is sealed first (and
/// committed with the rest by `execute`); every node, this one too, reloads the new certificate when
/// it takes the version; the master key stays, since the nodes share it and it never travels
/// through the repository.
fn cluster_rotation(
    out: &Output,
    keystore: &mut Keystore,
    certificate_fingerprint: Option<String>,
    roles_changed: Vec<String>,
) -> Result<Regenerated, CommandError> {
    keystore.get_or_generate(NEXT_PASSWORD_ENTRY, managed::PASSWORD_LEN)?;
    say!(
        out,
        "[3/{STEPS}] cluster: committed for every node; each reloads the new certificate as it takes the change"
    );
    say!(
        out,
        "[4/{STEPS}] master key: kept (the cluster's nodes share it; it never travels through the repository)"
    );
    Ok(Regenerated {
        certificate_fingerprint,
        roles_changed,
        server: None,
        secrets_resealed: 0,
    })
}

/// Gives the cluster role the sealed next password, then makes it the current one and raises the
/// generation, so that bootstrap files made before carry a refused password. Before the commit, a
/// node whose current password is refused connects with the next one.
///
/// Only a node that holds the next password can connect after the role gets it, so the role keeps
/// its password while any live node has not taken the version that carries it (a full disk, a
/// file it cannot write): that node would be locked out for good. Nodes that are not live cannot be
/// waited for; they are returned, to be told to join again.
async fn rotate_cluster_password(change: &mut Change) -> Result<(u64, Vec<String>), ClusterError> {
    let config_dir = change.config_dir().to_path_buf();
    let mut keystore = Keystore::open(&config_dir)?;
    let Some(next) = keystore.get(NEXT_PASSWORD_ENTRY)? else {
        return Err(ClusterError::NoNextPassword);
    };
    let carried = change.membership().version;
    let nodes = wait_for_nodes(change, carried, NODE_WAIT).await?;
    let behind: Vec<String> = nodes
        .iter()
        .filter(|n| !n.took && n.live)
        .map(|n| format!("{} ({})", n.name, n.outcome))
        .collect();
    if !behind.is_empty() {
        return Err(ClusterError::NodesBehind(format!(
            "the cluster role keeps its password: live nodes have not taken cluster state version {carried}, which carries the next one, and would be locked out: {}. The new certificate is committed; run 'pgssl security regenerate-internal-tokens' again once they serve it, or remove a node for good ('pgssl topology remove-node NAME')",
            behind.join("; ")
        )));
    }
    let away = nodes
        .into_iter()
        .filter(|n| !n.took)
        .map(|n| n.name)
        .collect();
    let (mut conn, repository) = change.connect().await?;
    cluster_repo::set_password(&mut conn, &repository, &next).await?;
    let generation = cluster_repo::head(&mut conn, &repository)
        .await?
        .map_or(1, |h| h.generation);
    let _ = conn.terminate().await;
    keystore.set(PASSWORD_ENTRY, &next)?;
    keystore.remove(NEXT_PASSWORD_ENTRY)?;
    let version = change
        .commit(
            "regenerate-internal-tokens: cluster role password",
            Some(generation + 1),
        )
        .await?;
    Ok((version.unwrap_or(change.membership().version), away))
}

impl Report for Regenerated {
    fn render(&self, out: &Output) {
        say!(
            out,
            "Internal tokens regenerated. Internal services must fetch their new credentials ('pgssl internal-credentials'); open sessions were kept."
        );
    }
}

/// Runs the rotation, giving up after `timeout`.
async fn regenerate(
    ctx: &Context,
    timeout: Duration,
    ca: bool,
) -> Result<Regenerated, CommandError> {
    let store = ctx.store()?;
    let _lock = lock(&store)?;
    tokio::time::timeout(timeout, rotate(ctx, &store, ca))
        .await
        .unwrap_or_else(|_| Err(RegenerateError::TimedOut(timeout.as_secs()).into()))
}

/// Aborts after `step` when [`FAULT_ENV`] says so. Only in builds with debug assertions (the tests'):
/// a release build has no way to be told to abort.
#[cfg(debug_assertions)]
fn fault_point(step: usize) {
    if std::env::var(FAULT_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(step)
    {
        std::eprintln!("fault injection: aborting after step {step}");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn fault_point(_step: usize) {}

/// The repository whose internal roles a rotation changes, decided before anything changes.
enum Repository {
    /// The managed repository, reached as its superuser (through a running `serve`).
    Managed(Box<ManagedRepository>, Session),
    /// An external repository: pgssl manages none of its roles.
    External(String),
}

/// Finds out which repository this data directory fronts — from the running server when there is
/// one, since `serve --repository` may differ from the config — and, for the managed one, connects as
/// its superuser. Any refusal happens here, before step 1, so a refused command changes nothing.
async fn repository(ctx: &Context, keystore: &Keystore) -> Result<Repository, CommandError> {
    let running = ctx.running().await?;
    if let Some(upstream) = external_repository(ctx, running.as_ref()) {
        return Ok(Repository::External(upstream));
    }
    if running.is_none() {
        return Err(RegenerateError::ManagedNotRunning.into());
    }
    // Locating runs `pg_config`: off the runtime's one worker.
    let repo = super::blocking(|| ManagedRepository::locate(&ctx.data_dir, &ctx.config))?;
    let admin = connect_superuser(&repo, keystore)
        .await
        .map_err(RegenerateError::SuperuserUnreachable)?;
    Ok(Repository::Managed(Box::new(repo), admin))
}

async fn rotate(ctx: &Context, store: &StateStore, ca: bool) -> Result<Regenerated, CommandError> {
    let out = &ctx.out;
    let mut keystore = Keystore::open(&store.config_dir())?;
    let repository = repository(ctx, &keystore).await?;
    if let Repository::External(upstream) = &repository {
        say!(
            out,
            "The repository {upstream} is external: pgssl manages none of its roles, so this rotates the internal certificate and the master key only."
        );
    }
    let certificate_fingerprint = new_certificate(ctx, store, &mut keystore, ca)?;
    if let Some(ca) =
        mutual_ssl::rotate_internal_ca(&mut keystore).map_err(RegenerateError::InternalCa)?
    {
        say!(
            out,
            "[1/{STEPS}] internal CA: a new one ({}, SHA-256 {}); the previous one is still presented to a repository that does not trust the new one yet: give the repository 'pgssl security internal-ca get-certificate-file' (both CAs) before the next rotation",
            ca.subject,
            ca.sha256_fingerprint
        );
    }
    fault_point(1);
    let roles_changed = new_passwords(out, repository, &mut keystore).await?;
    fault_point(2);
    if Membership::read(&store.config_dir())?.is_some() {
        return cluster_rotation(out, &mut keystore, certificate_fingerprint, roles_changed);
    }
    let server = reload_server(ctx).await?;
    fault_point(3);
    let sealed = keystore.len();
    keystore.rotate_master_key()?;
    say!(
        out,
        "[4/{STEPS}] master key: rotated; {sealed} secrets re-sealed"
    );
    fault_point(4);
    Ok(Regenerated {
        certificate_fingerprint,
        roles_changed,
        server,
        secrets_resealed: sealed,
    })
}

/// Step 1: a new internal certificate where repository SSL has one, issued by the repository CA
/// (made the first time; with `ca`, the next CA published; the next CA made current once its
/// overlap has passed); its fingerprint.
fn new_certificate(
    ctx: &Context,
    store: &StateStore,
    keystore: &mut Keystore,
    ca: bool,
) -> Result<Option<String>, CommandError> {
    let out = &ctx.out;
    let applied = store.applied()?;
    let next = store.pending()?.merged_into(&applied);
    let Some(paths) = store
        .cert_paths_of(&applied)
        .or_else(|| store.cert_paths_of(&next))
    else {
        say!(
            out,
            "[1/{STEPS}] internal TLS certificate: none yet (repository SSL was never enabled); skipped"
        );
        return Ok(None);
    };
    let tls = &ctx.config.tls;
    let self_signed = certs::read_chain(&paths.cert).is_ok_and(|chain| chain.len() == 1);
    if served_ca::promote_due(keystore, tls.ca_overlap_days)? {
        say!(
            out,
            "[1/{STEPS}] repository CA: the next CA now signs; the previous one left the certificate file"
        );
    }
    if ca && served_ca::publish_next(keystore)? {
        say!(
            out,
            "[1/{STEPS}] repository CA: published the next CA in the certificate file; it signs from {} days on (tls.ca_overlap_days): clients should fetch 'get-certificate-file' before then",
            tls.ca_overlap_days
        );
    }
    let info = served_ca::issue(
        keystore,
        &paths,
        &tls.subject_alt_names,
        tls.certificate_validity_days,
    )?;
    say!(
        out,
        "[1/{STEPS}] internal TLS certificate: issued {} by {} (SHA256 {})",
        paths.cert.display(),
        info.issuer,
        info.sha256_fingerprint
    );
    if self_signed {
        note!(
            out,
            "note: the certificate was self-signed before; clients that pinned it must fetch 'pgssl security repository-ssl get-certificate-file' once more — it holds the repository CA, so later renewals need no new file"
        );
    }
    Ok(Some(info.sha256_fingerprint))
}

/// Step 2: new passwords for the internally managed roles (none on an external repository).
async fn new_passwords(
    out: &Output,
    repository: Repository,
    keystore: &mut Keystore,
) -> Result<Vec<String>, CommandError> {
    let Repository::Managed(repo, admin) = repository else {
        say!(
            out,
            "[2/{STEPS}] internal role passwords: skipped (external repository)"
        );
        return Ok(Vec::new());
    };
    let changed = rotate_passwords(&repo, admin, keystore)
        .await
        .map_err(RegenerateError::Passwords)?;
    say!(
        out,
        "[2/{STEPS}] internal role passwords: changed for {}",
        changed.join(", ")
    );
    Ok(changed)
}

/// Step 3: the running server swaps in the new certificate; its report, or `None` when none runs.
async fn reload_server(ctx: &Context) -> Result<Option<reload::ReloadReport>, CommandError> {
    let reloaded = ctx.node.reload().await?;
    match &reloaded {
        Some(report) => say!(
            ctx.out,
            "[3/{STEPS}] running server: reloaded; new connections use {}",
            report.describe()
        ),
        None => say!(
            ctx.out,
            "[3/{STEPS}] running server: none on this data directory; 'pgssl serve' will use the new certificate when it starts"
        ),
    }
    Ok(reloaded)
}

/// Connects as the superuser; after an interrupted rotation its password may be the sealed candidate.
async fn connect_superuser(
    repo: &ManagedRepository,
    keystore: &Keystore,
) -> Result<Session, ManagedError> {
    match repo.connect_admin(keystore, "postgres").await {
        Ok(admin) => Ok(admin),
        Err(e) if e.sqlstate() == Some("28P01") => {
            let candidate = keystore.get(&rotation_name(SUPERUSER))?.ok_or_else(|| {
                ManagedError::NotReady(
                    "no superuser password candidate".into(),
                    repo.log_file.clone(),
                )
            })?;
            Ok(repo.connect(SUPERUSER, "postgres", &candidate).await?)
        }
        Err(e) => Err(e),
    }
}

async fn rotate_passwords(
    repo: &ManagedRepository,
    mut admin: Session,
    keystore: &mut Keystore,
) -> Result<Vec<String>, ManagedError> {
    let mut roles: Vec<String> = repo.internal_roles.clone();
    // The superuser last: its own session stays valid after the change, and a crash before the
    // keystore update is covered by the candidate fallback of `connect_superuser`.
    roles.push(SUPERUSER.to_string());
    for role in &roles {
        keystore.get_or_generate(&rotation_name(role), managed::PASSWORD_LEN)?;
    }
    for role in &roles {
        let candidate = keystore.get(&rotation_name(role))?.ok_or_else(|| {
            ManagedError::NotReady(
                format!("no password candidate for {role}"),
                repo.log_file.clone(),
            )
        })?;
        managed::set_password(&mut admin, role, &candidate).await?;
        keystore.set(&role_secret_name(role), &candidate)?;
        keystore.remove(&rotation_name(role))?;
    }
    let _ = admin.terminate().await;
    Ok(roles)
}
