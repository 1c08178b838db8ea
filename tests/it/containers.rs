//! The container deployment (docker/README.md): docker/test/run.sh builds the images offline, brings
//! up docker/compose.yaml (a PostgreSQL repository and two pgssl nodes in a cluster), connects with
//! psql `sslmode=verify-full` through each node, stops one, and tears it all down. Needs a Docker
//! engine, docker-compose and debootstrap (the CI installs them).

#[test]
fn two_nodes_in_compose_serve_verify_full_and_survive_one_stopping() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/test/run.sh");
    let out = std::process::Command::new(script)
        .env("PGSSL_BIN", env!("CARGO_BIN_EXE_pgssl"))
        .output()
        .expect("docker/test/run.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for check in [
        "certificate exported to the shared volume",
        "psql sslmode=verify-full through pgssl-1",
        "plaintext refused by pgssl-1",
        "psql sslmode=verify-full through pgssl-2",
        "plaintext refused by pgssl-2",
        "both nodes live in one cluster",
        "pgssl-2 still serves with pgssl-1 stopped",
        "down -v removed every volume",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("CHECK {check}")) && l.ends_with(": ok")),
            "missing check '{check}':\n{stdout}\n{stderr}"
        );
    }
}
