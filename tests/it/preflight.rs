//! The pre-flight report (issue #31): pgssl counts who logs in, and says before a change who it
//! would refuse. A real PostgreSQL, pgssl in `optional` mode in front of it, a plaintext psql and a
//! TLS Rust client; then the report, the warnings of `pending-changes`, `apply
//! --refuse-if-breaking`, and the same report after a restart (the inventory is kept on disk).

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::client::connect_tls_unverified;
use crate::harness::{PASSWORD, Postgres, prepare_data_dir, psql};
use pgssl::proxy::policy::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_the_plaintext_client_a_required_mode_would_refuse_and_apply_can_stop() {
    let pg = Postgres::start_with_tcp();
    let upstream = format!("127.0.0.1:{}", pg.port());
    let env = CliEnv::new(&upstream);
    prepare_data_dir(&env.data_dir(), Mode::Optional);
    let serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
    let port = serve.addr.port();
    let plaintext = format!(
        "host=127.0.0.1 port={port} user=readonly dbname=postgres sslmode=disable application_name=nightly-export"
    );
    let run = psql(&plaintext).await;
    assert!(run.ok, "{}", run.stderr);
    let mut tls = connect_tls_unverified(serve.addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    tls.simple_query("SELECT 1").await.unwrap();

    let report = ok(&env.run(&["security", "repository-ssl", "report", "--mode", "required"]));
    assert!(
        report.contains("2 distinct clients seen") && report.contains("1 would be refused"),
        "{report}"
    );
    assert!(
        report.contains(
            "refused: user readonly database postgres application 'nightly-export' from 127.0.0.1 over plaintext: 1 logins"
        ),
        "{report}"
    );
    assert!(!report.contains("user tableau"), "{report}");
    // Under optional mode neither client is refused (readonly is a client user); --since narrows.
    let since = ok(&env.run(&[
        "security",
        "repository-ssl",
        "report",
        "--mode",
        "optional",
        "--since",
        "1h",
    ]));
    assert!(since.contains("0 would be refused"), "{since}");

    // Staged, the change is warned about; --refuse-if-breaking stops; apply proceeds and says so.
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    let listed = env.run(&["pending-changes", "list"]);
    let warned = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "{warned}");
    assert!(
        warned.contains("would refuse") && warned.contains("user readonly"),
        "{warned}"
    );
    let stopped = failed(&env.run(&["pending-changes", "apply", "--refuse-if-breaking"]));
    assert!(
        stopped.contains("would refuse 1 kind(s) of client"),
        "{stopped}"
    );
    let still = psql(&plaintext).await;
    assert!(still.ok, "nothing was applied: {}", still.stderr);
    let applied = env.run(&["pending-changes", "apply"]);
    let said = String::from_utf8_lossy(&applied.stderr);
    assert!(applied.status.success(), "{said}");
    assert!(
        said.contains("the applied change refuses") && said.contains("user readonly"),
        "{said}"
    );
    // The report was right: the plaintext client is refused now, the TLS one is not.
    let refused = psql(&plaintext).await;
    assert!(!refused.ok, "{}", refused.stdout);
    tls.simple_query("SELECT 1").await.unwrap();

    // The inventory outlives the server: after a restart the report still knows the client.
    drop(tls);
    serve.stop().await;
    let _serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
    let report = ok(&env.run(&["security", "repository-ssl", "report"]));
    assert!(
        report.contains("Repository SSL required (applied)"),
        "{report}"
    );
    assert!(report.contains("user readonly"), "{report}");
}
