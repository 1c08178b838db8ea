//! Passthrough over upstream TLS refuses libpq's default `channel_binding=prefer` (pgssl cannot
//! pass channel binding through, and a repository reached over TLS takes the missing PLUS for a
//! downgrade). That trap is no longer silent: `serve` warns at start-up, `repository-ssl list`
//! warns, both naming `authentication lookup-user set`, and the client's FATAL carries the cure as
//! its hint. Without upstream TLS, none of it.

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::harness::{Postgres, prepare_data_dir, psql};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_over_upstream_tls_warns_and_the_refusal_names_the_cure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::TestPki::new(dir.path(), "Trap");
    let leaf = pki.server_from_root("pg", &["localhost"], 30);
    let pg = Postgres::start_with_tls(&leaf.cert_pem, &leaf.key_pem);
    let upstream = format!("localhost:{}", pg.port());
    let env = CliEnv::new(&upstream);
    env.add_config("repository", "tls = \"require\"");
    prepare_data_dir(&env.data_dir(), pgssl::proxy::policy::Mode::Required);
    let serve = ServeProcess::start(&env, &[]).await;
    let log = serve.log_text();
    let cure = "pgssl authentication lookup-user set";
    assert!(
        log.contains("WARN")
            && log.contains("relayed to the repository in passthrough")
            && log.contains(cure),
        "{log}"
    );
    let listed = env.run(&["security", "repository-ssl", "list"]);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(listed.status.success() && shown.contains(cure), "{shown}");
    // libpq's default, through pgssl: refused, with the cure as the hint.
    let run = psql(&format!(
        "host=127.0.0.1 port={} user=tableau dbname=postgres sslmode=require",
        serve.addr.port()
    ))
    .await;
    assert!(
        !run.ok
            && run.stderr.contains("channel binding")
            && run.stderr.contains("HINT")
            && run.stderr.contains(cure),
        "{}\n{}",
        run.stderr,
        serve.log_text()
    );
    serve.stop().await;

    // Plaintext to the repository: nothing to warn about.
    let plain = CliEnv::new(&upstream);
    prepare_data_dir(&plain.data_dir(), pgssl::proxy::policy::Mode::Required);
    let listed = ok(&plain.run(&["security", "repository-ssl", "list"]));
    assert!(!listed.contains("passthrough"), "{listed}");
}
