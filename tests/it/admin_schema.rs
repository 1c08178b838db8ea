//! schemathesis (PyPI; `scripts/test` installs it into the project's venv) against the OpenAPI document the admin server serves,
//! signed in as an administrator: generated requests for every operation, valid and not, must never
//! get a 5xx, an undocumented status, or an answer that breaks the document's schema.

use crate::admin::{ADMIN, ADMIN_PASSWORD, Api, admin_env};
use crate::harness::Postgres;

/// Examples per operation; `PGSSL_SCHEMATHESIS_EXAMPLES` raises it by hand.
const EXAMPLES: &str = "15";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let pg = Postgres::start();
    let (_env, server, addr) = admin_env(&pg).await;
    let mut api = Api::new(addr);
    assert_eq!(
        api.sign_in(ADMIN, ADMIN_PASSWORD).await.0,
        hyper::StatusCode::OK,
        "signed in"
    );
    let examples =
        std::env::var("PGSSL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_string());
    let report = tempfile::tempdir().unwrap();
    // Through the interpreter, so that no console-script shim needs to be on PATH.
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-m", "schemathesis.cli", "run"])
        .arg(format!("https://{addr}/api/v1/openapi.yaml"))
        .args(["--url", &format!("https://{addr}/api/v1")])
        .args(["--tls-verify", "false"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", &examples])
        .args(["--seed", "1606"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "60"])
        // The session's own operations are left out (signing out would end the session every
        // other request uses; sign-in is tested in admin_abuse).
        .args(["--exclude-path", "/session", "--exclude-method", "DELETE"])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(report.path())
        .args(["--generation-database", ":memory:"])
        .arg("--no-color");
    for h in api.session_headers() {
        cmd.args(["--header", &h]);
    }
    let out = cmd.output().await.expect(
        "schemathesis runs (scripts/test installs the version it pins into target/test-tools/venv)",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested the operations, not nothing: the summary counts them.
    let tested: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(tested >= 25, "{tested} operations tested:\n{text}");
    eprintln!("{}", &text[text.len().saturating_sub(1500)..]);
    server.stop().await;
}
