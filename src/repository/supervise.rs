//! The managed repository's supervisor: runs the cluster until pgssl stops, restarting it with
//! backoff when it dies, and stops it with a fast shutdown.
//!
//! A postmaster killed outright (`kill -9`, the OOM killer) leaves its backends running: each keeps
//! the old shared memory attached until its current work ends, and PostgreSQL refuses to start
//! while it is ("pre-existing shared memory block is still in use"). Restarting blindly would fail
//! and let the backoff grow, so the repository stayed down long after the last one had gone. The
//! supervisor names those processes instead, watches them, and restarts the moment they are gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::managed::{ManagedError, ManagedRepository, SUPERUSER, role_secret_name};
use crate::keystore::Keystore;

/// Runs the cluster until `stop` is cancelled, restarting it with backoff when it dies. The superuser
/// password is read from the keystore in `config_dir` at each restart, so a rotation is honoured.
pub async fn supervise(
    repo: ManagedRepository,
    mut child: Child,
    config_dir: PathBuf,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let status = tokio::select! {
            status = child.wait() => status,
            () = stop.cancelled() => {
                stop_child(&mut child).await;
                return;
            }
        };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        // A cluster that ran a while before dying starts over with a short backoff.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        error!(%status, retry_in = ?backoff, log = %repo.log_file.display(),
               "the repository exited unexpectedly; restarting it");
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let left = leftovers(&repo.pgdata);
            if !left.is_empty() {
                warn!(pids = ?left, pgdata = %repo.pgdata.display(),
                      "the repository cannot restart yet: processes of the one that died still run in its data directory, holding its shared memory; restarting as soon as they exit");
                tokio::select! {
                    () = wait_gone(&repo.pgdata) => {}
                    () = stop.cancelled() => return,
                }
                info!("the old repository's processes have exited; restarting it now");
                backoff = Duration::from_secs(1);
            }
            let mut next = match repo.start() {
                Ok(next) => next,
                Err(e) => {
                    error!(error = %e, retry_in = ?backoff, "cannot restart the repository");
                    continue;
                }
            };
            let ready = match Keystore::open(&config_dir) {
                Ok(ks) => match ks.get(&role_secret_name(SUPERUSER)) {
                    Ok(Some(pw)) => {
                        repo.wait_ready(&pw, &mut next, Duration::from_secs(120))
                            .await
                    }
                    Ok(None) => Err(ManagedError::NotReady(
                        "no superuser password in the keystore".into(),
                        repo.log_file.clone(),
                    )),
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e.into()),
            };
            match ready {
                Ok(()) => info!("the repository is running again"),
                // Still watched: if it dies, the outer loop restarts it again.
                Err(e) => error!(error = %e, "the restarted repository is not ready"),
            }
            child = next;
            break;
        }
    }
}

/// The longest wait between two restarts: a restart costs little, and the repository is the one
/// thing every session needs.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The processes of a PostgreSQL that still run in `pgdata` (every postgres process works there),
/// as `/proc` shows them: they hold the old shared memory and keep a new postmaster from starting.
fn leftovers(pgdata: &Path) -> Vec<u32> {
    let Ok(pgdata) = pgdata.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            std::fs::read_to_string(proc.join("comm")).is_ok_and(|c| c.trim_end() == "postgres")
                && std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == pgdata)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// How long the dead repository's processes get to finish their work before they are killed.
const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// Returns once no process of the old PostgreSQL runs in `pgdata` (polled: they are not our
/// children, so nothing signals their exit to us). Those still running after [`ORPHAN_GRACE`] are
/// killed, as PostgreSQL's documentation advises after a postmaster crash: a stopped or endless
/// one would otherwise keep the repository down for good.
async fn wait_gone(pgdata: &Path) {
    let mut deadline = Some(Instant::now() + ORPHAN_GRACE);
    loop {
        let left = leftovers(pgdata);
        if left.is_empty() {
            return;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            warn!(pids = ?left, grace = ?ORPHAN_GRACE,
                  "the dead repository's processes still run; killing them so that it can restart");
            for pid in left {
                if let Ok(pid) = i32::try_from(pid) {
                    // SAFETY: a signal to a process of our own repository (comm postgres, working
                    // in its data directory).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            deadline = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit); SIGQUIT after 60 s.
async fn stop_child(child: &mut Child) {
    let Some(pid) = child.id() else {
        return;
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(_) => info!("the repository stopped"),
        Err(_) => {
            warn!("the repository did not stop within 60 s; sending SIGQUIT");
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
            let _ = child.wait().await;
        }
    }
}
