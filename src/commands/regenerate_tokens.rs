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

use std::time::Duration;

use super::{CommandError, Context, block_on};
use crate::control::{self, ControlError};
use crate::repository::client::ClientError;
use crate::repository::managed::{
    self, ManagedError, ManagedRepository, SUPERUSER, role_secret_name,
};
use crate::state::StateStore;
use crate::state::certs;
use crate::state::keystore::Keystore;

/// Environment variable that aborts the process after a step (1–4), as `kill -9` would; used by the
/// crash-recovery tests.
pub const FAULT_ENV: &str = "PGSSL_FAULT_AFTER_STEP";

const STEPS: usize = 4;

fn rotation_name(role: &str) -> String {
    format!("rotation/{}", role_secret_name(role))
}

/// Runs the rotation, giving up after `timeout`.
pub fn regenerate(ctx: &Context, timeout: Duration) -> Result<(), CommandError> {
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let outcome = block_on(async { tokio::time::timeout(timeout, rotate(ctx, &store)).await })?;
    match outcome {
        Ok(result) => result,
        Err(_) => Err(CommandError::Refused(format!(
            "regenerate-internal-tokens did not finish within {} s; every step so far is consistent, run it again to finish",
            timeout.as_secs()
        ))),
    }
}

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

async fn rotate(ctx: &Context, store: &StateStore) -> Result<(), CommandError> {
    let out = &ctx.out;
    // 1. Certificate.
    let applied = store.applied()?;
    let next = store.pending()?.merged_into(&applied);
    match store
        .cert_paths_of(&applied)
        .or_else(|| store.cert_paths_of(&next))
    {
        Some(paths) => {
            let sans = certs::default_subject_alt_names(&ctx.config.tls.subject_alt_names);
            let info = certs::generate(&paths, &sans, ctx.config.tls.certificate_validity_days)?;
            say!(
                out,
                "[1/{STEPS}] internal TLS certificate: generated {} (SHA256 {})",
                paths.cert.display(),
                info.sha256_fingerprint
            );
        }
        None => say!(
            out,
            "[1/{STEPS}] internal TLS certificate: none yet (repository SSL was never enabled); skipped"
        ),
    }
    fault_point(1);

    // 2. Passwords of the internally managed roles.
    let mut keystore = Keystore::open(&store.config_dir())?;
    if ctx.config.server.upstream.is_some() {
        say!(
            out,
            "[2/{STEPS}] internal role passwords: skipped (server.upstream is set; pgssl does not manage its roles)"
        );
    } else {
        let repo = ManagedRepository::locate(&ctx.data_dir, &ctx.config)?;
        let changed = rotate_passwords(&repo, &mut keystore).await.map_err(|e| {
            CommandError::Refused(format!(
                "cannot change the internal passwords ({e}); is 'pgssl serve' running on this data directory? Run the command again once it is"
            ))
        })?;
        say!(
            out,
            "[2/{STEPS}] internal role passwords: changed for {}",
            changed.join(", ")
        );
    }
    fault_point(2);

    // 3. The running server.
    match control::request_reload(&store.control_socket_path(), Duration::from_secs(30)) {
        Ok(report) => say!(
            out,
            "[3/{STEPS}] running server: reloaded; new connections use mode {}{}",
            report.mode,
            report
                .cert_fingerprint
                .map(|f| format!(" with certificate SHA256 {f}"))
                .unwrap_or_default()
        ),
        Err(ControlError::NotRunning) => {
            say!(
                out,
                "[3/{STEPS}] running server: none on this data directory; 'pgssl serve' will use the new certificate when it starts"
            )
        }
        Err(e) => return Err(e.into()),
    }
    fault_point(3);

    // 4. Master key.
    let sealed = keystore.len();
    keystore.rotate_master_key()?;
    say!(
        out,
        "[4/{STEPS}] master key: rotated; {sealed} secrets re-sealed"
    );
    fault_point(4);

    say!(
        out,
        "Internal tokens regenerated. Internal services must fetch their new credentials ('pgssl internal-credentials'); open sessions were kept."
    );
    Ok(())
}

async fn rotate_passwords(
    repo: &ManagedRepository,
    keystore: &mut Keystore,
) -> Result<Vec<String>, ManagedError> {
    let mut roles: Vec<String> = repo.internal_roles.clone();
    // The superuser last: its own session stays valid after the change, and a crash before the
    // keystore update is covered by the candidate fallback below.
    roles.push(SUPERUSER.to_string());
    for role in &roles {
        keystore.get_or_generate(&rotation_name(role), managed::PASSWORD_LEN)?;
    }
    let mut admin = match repo.connect_admin(keystore, "postgres").await {
        Ok(admin) => admin,
        Err(ManagedError::Client(ClientError::Server(e))) if e.code == "28P01" => {
            let candidate = keystore.get(&rotation_name(SUPERUSER))?.ok_or_else(|| {
                ManagedError::NotReady(
                    "no superuser password candidate".into(),
                    repo.log_file.clone(),
                )
            })?;
            repo.connect(SUPERUSER, "postgres", &candidate).await?
        }
        Err(e) => return Err(e),
    };
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
