//! `security regenerate-internal-tokens`: everything internal rotates while the proxy keeps serving,
//! and an interrupted run is finished by running it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{connect_tls_unverified, peer_fingerprint, sqlstate};
use crate::harness::PASSWORD;

async fn run(env: &CliEnv, args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(env.command(args))
        .output()
        .await
        .unwrap()
}

fn field<'a>(conninfo: &'a str, key: &str) -> &'a str {
    conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap()
}

async fn internal_password(env: &CliEnv) -> String {
    let line = ok(&run(env, &["internal-credentials"]).await);
    field(line.trim(), "password").to_string()
}

fn master_key_files(env: &CliEnv) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.data_dir().join("config"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("master-"))
        .collect();
    names.sort();
    names
}

/// A managed repository with repository SSL required and `tableau` enabled with the test password.
async fn prepared() -> (CliEnv, ServeProcess) {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    ok(&run(&env, &["security", "repository-ssl", "enable"]).await);
    ok(&env.stage_direct_user("tableau", PASSWORD).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    (env, serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_internal_tokens_rotates_everything_under_load_without_failures() {
    let (env, serve) = prepared().await;
    let addr = serve.addr;
    let old_password = internal_password(&env).await;
    let mut held = connect_tls_unverified(addr, "pgssl_internal", "repository", &old_password)
        .await
        .unwrap();
    let old_fingerprint = peer_fingerprint(&held);
    let old_keys = master_key_files(&env);

    // Live load: direct users connecting over TLS the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, done, failed, errors) =
            (stop.clone(), done.clone(), failed.clone(), errors.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let attempt = async {
                    let mut s =
                        connect_tls_unverified(addr, "tableau", "repository", PASSWORD).await?;
                    s.simple_query("SELECT 1").await?;
                    s.terminate().await
                };
                match attempt.await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.lock().unwrap().push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    while done.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let out = ok(&run(
        &env,
        &[
            "security",
            "regenerate-internal-tokens",
            "--request-timeout",
            "120",
        ],
    )
    .await);
    for step in [
        "[1/4] internal TLS certificate: issued",
        "[2/4] internal role passwords: changed for pgssl_internal, postgres",
        "[3/4] running server: reloaded",
        "[4/4] master key: rotated",
    ] {
        assert!(out.contains(step), "missing {step:?} in {out}");
    }
    let during = done.load(Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed connections: {:?}",
        errors.lock().unwrap()
    );
    assert!(
        done.load(Ordering::Relaxed) > during,
        "the load kept running after the rotation"
    );

    // The open session survives; new connections see the new certificate.
    assert_eq!(
        held.simple_query("SELECT 'alive'").await.unwrap()[0][0].as_deref(),
        Some("alive")
    );
    let new_password = internal_password(&env).await;
    assert_ne!(new_password, old_password);
    let fresh = connect_tls_unverified(addr, "pgssl_internal", "repository", &new_password)
        .await
        .unwrap();
    assert_ne!(peer_fingerprint(&fresh), old_fingerprint);
    let on_disk =
        pgssl::tls::certs::read_info(&env.data_dir().join("config/pgsql15/security/server.crt"))
            .unwrap();
    assert_eq!(peer_fingerprint(&fresh), on_disk.sha256_fingerprint);
    // The old password is refused with PostgreSQL's own 28P01.
    assert_eq!(
        sqlstate(connect_tls_unverified(addr, "pgssl_internal", "repository", &old_password).await),
        "28P01"
    );
    let new_keys = master_key_files(&env);
    assert_eq!(new_keys.len(), 1);
    assert_ne!(new_keys, old_keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_is_consistent_and_a_rerun_finishes_it() {
    let (env, serve) = prepared().await;
    for step in 1..=4 {
        let out =
            tokio::process::Command::from(env.command(&["security", "regenerate-internal-tokens"]))
                .env(
                    pgssl::control::operations::regenerate_tokens::FAULT_ENV,
                    step.to_string(),
                )
                .output()
                .await
                .unwrap();
        assert!(!out.status.success(), "step {step} should have aborted");
        // Whatever was interrupted, the state reads consistently: credentials log in.
        let password = internal_password(&env).await;
        connect_tls_unverified(serve.addr, "pgssl_internal", "repository", &password)
            .await
            .unwrap_or_else(|e| panic!("after a crash at step {step}: {e}"));
        assert_eq!(master_key_files(&env).len(), 1, "step {step}");

        let out = ok(&run(&env, &["security", "regenerate-internal-tokens"]).await);
        assert!(out.contains("Internal tokens regenerated"), "{out}");
        let password = internal_password(&env).await;
        let s = connect_tls_unverified(serve.addr, "pgssl_internal", "repository", &password)
            .await
            .unwrap();
        let on_disk = pgssl::tls::certs::read_info(
            &env.data_dir().join("config/pgsql15/security/server.crt"),
        )
        .unwrap();
        assert_eq!(
            peer_fingerprint(&s),
            on_disk.sha256_fingerprint,
            "step {step}"
        );
    }
}
