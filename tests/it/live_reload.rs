//! Live changes: `pending-changes apply` against a running server, SIGHUP, and the real `pgssl serve`
//! binary from start to SIGTERM.

use std::time::Duration;

use pgssl::proxy::policy::Mode;

use crate::cli::{CliEnv, ServeProcess, ok, pgssl_command};
use crate::client::{connect_plain, connect_tls, sqlstate};
use crate::harness::{INTERNAL_USER, Postgres, Proxy, psql};

/// Runs the CLI against the proxy's data dir without blocking the runtime the proxy runs on.
async fn cli(proxy: &Proxy, env: &CliEnv, args: &[&str]) -> std::process::Output {
    let cmd = pgssl_command(proxy.data_dir.path(), &env.config(), args);
    tokio::process::Command::from(cmd).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_switches_a_running_server_live_and_keeps_open_sessions() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Off).await;
    let env = CliEnv::new(&pg.repository_text());

    let mut plain_session = connect_plain(proxy.addr, INTERNAL_USER).await.unwrap();
    ok(&cli(&proxy, &env, &["security", "repository-ssl", "enable"]).await);
    // Staged only: the server still serves off.
    connect_plain(proxy.addr, INTERNAL_USER).await.unwrap();

    let applied = ok(&cli(
        &proxy,
        &env,
        &["pending-changes", "apply", "--ignore-prompt"],
    )
    .await);
    let cert = proxy.cert_path();
    let fingerprint = pgssl::tls::certs::read_info(&cert)
        .unwrap()
        .sha256_fingerprint;
    assert!(
        applied.contains(&format!(
            "The running pgssl server took the change: new connections use mode required with certificate SHA256 {fingerprint}"
        )),
        "{applied}"
    );

    // The session opened under off keeps working; new plaintext internal users are refused.
    let rows = plain_session
        .simple_query("SELECT current_user")
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some(INTERNAL_USER));
    assert_eq!(
        sqlstate(connect_plain(proxy.addr, INTERNAL_USER).await),
        "28000"
    );
    assert_eq!(
        sqlstate(connect_plain(proxy.addr, "tableau").await),
        "28000"
    );
    let mut tls_session = connect_tls(proxy.addr, INTERNAL_USER, &cert).await.unwrap();

    // verify-full with the exported certificate, through real libpq.
    let exported = env.dir.path().join("server.crt");
    ok(&cli(
        &proxy,
        &env,
        &[
            "security",
            "repository-ssl",
            "get-certificate-file",
            "-f",
            exported.to_str().unwrap(),
        ],
    )
    .await);
    let run = psql(&format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname=postgres user=tableau sslmode=verify-full sslrootcert={}",
        proxy.addr.port(),
        exported.display()
    ))
    .await;
    assert!(
        run.ok && run.stdout.contains("SSL connection (protocol: TLSv1.3"),
        "{run:?}"
    );

    // Back to optional: client users may use plaintext again, internal users still may not.
    ok(&cli(
        &proxy,
        &env,
        &["security", "repository-ssl", "enable", "--internal-only"],
    )
    .await);
    let applied = ok(&cli(&proxy, &env, &["pending-changes", "apply"]).await);
    assert!(
        applied.contains("new connections use mode optional"),
        "{applied}"
    );
    connect_plain(proxy.addr, "tableau").await.unwrap();
    assert_eq!(
        sqlstate(connect_plain(proxy.addr, INTERNAL_USER).await),
        "28000"
    );

    ok(&cli(&proxy, &env, &["security", "repository-ssl", "disable"]).await);
    let applied = ok(&cli(&proxy, &env, &["pending-changes", "apply"]).await);
    assert!(
        applied.contains("new connections use mode off;"),
        "{applied}"
    );
    connect_plain(proxy.addr, INTERNAL_USER).await.unwrap();
    // The TLS session opened under required survives the switch to off.
    assert_eq!(
        tls_session.simple_query("SELECT 2").await.unwrap()[0][0].as_deref(),
        Some("2")
    );
    assert_eq!(
        plain_session.simple_query("SELECT 3").await.unwrap()[0][0].as_deref(),
        Some("3")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_binary_serves_reloads_and_shuts_down_gracefully() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    let mut serve = ServeProcess::start(&env, &["--repository", &pg.repository_text()]).await;

    // A second server on the same data dir is refused.
    let second = pgssl_command(
        &env.data_dir(),
        &env.config(),
        &["serve", "--no-admin", "--listen", "127.0.0.1:0"],
    )
    .output()
    .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another pgssl server is already running")
    );

    let mut open = connect_plain(serve.addr, INTERNAL_USER).await.unwrap();
    ok(
        &tokio::process::Command::from(env.command(&["security", "repository-ssl", "enable"]))
            .output()
            .await
            .unwrap(),
    );
    let applied = ok(
        &tokio::process::Command::from(env.command(&["pending-changes", "apply"]))
            .output()
            .await
            .unwrap(),
    );
    assert!(
        applied.contains("The running pgssl server took the change"),
        "{applied}"
    );
    let cert = env.data_dir().join("config/pgsql15/security/server.crt");
    assert_eq!(
        sqlstate(connect_plain(serve.addr, INTERNAL_USER).await),
        "28000"
    );
    connect_tls(serve.addr, INTERNAL_USER, &cert).await.unwrap();

    // SIGHUP reloads the same applied state; nothing changes for clients.
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("applied settings reloaded", 2).await;
    connect_tls(serve.addr, "tableau", &cert).await.unwrap();

    // SIGTERM: stop accepting, let the open session finish, exit 0.
    assert_eq!(open.simple_query("SELECT 1").await.unwrap().len(), 1);
    serve.signal(libc::SIGTERM);
    // Draining: no longer accepting, waiting for the open session.
    serve
        .wait_for_log("stopped accepting; waiting for open sessions to finish", 1)
        .await;
    assert_eq!(
        open.simple_query("SELECT 'still here'").await.unwrap()[0][0].as_deref(),
        Some("still here")
    );
    open.terminate().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), serve.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = serve.log_text();
    assert!(log.contains("outcome=\"rejected\""), "{log}");
    assert!(log.contains("session ended"), "{log}");
    assert!(log.contains("pgssl stopped"), "{log}");
    assert!(
        !log.contains(crate::harness::PASSWORD),
        "a password reached the log"
    );
    assert!(!env.data_dir().join("run/control.sock").exists());
}
