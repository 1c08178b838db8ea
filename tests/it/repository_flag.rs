//! One answer to "which repository?" for `serve` and every command: `serve --repository H:P` on a
//! data directory whose config names no repository address serves an external repository, and the commands
//! run against that data directory learn it from the running server instead of believing, from the
//! config, that the repository is the managed one.

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::harness::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_follow_the_repository_serve_was_given_on_its_command_line() {
    let pg = Postgres::start_with_tcp();
    let upstream = format!("127.0.0.1:{}", pg.tcp_port.unwrap());
    // A config with no repository.address: alone, it means the managed repository.
    let env = CliEnv::managed();
    let refused = failed(&env.stage_lookup_user("pgssl_lookup", "lookup-pw").await);
    assert!(
        refused.contains("managed repository needs no lookup user"),
        "{refused}"
    );

    let serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
    let staged = ok(&env.stage_lookup_user("pgssl_lookup", "lookup-pw").await);
    assert!(staged.contains("lookup user 'pgssl_lookup'"), "{staged}");
    // The managed repository's own commands know it is not there.
    let args = [
        "data-access",
        "repository-access",
        "enable",
        "--repository-username",
        "tableau",
        "--repository-password",
        "-",
    ];
    let why = failed(&env.run_with_stdin(&args, "pw\n").await);
    assert!(why.contains(&upstream), "{why}");
    // repository-ssl enable reads the version from that repository, not the managed one.
    let enabled = ok(&env.run(&["security", "repository-ssl", "enable"]));
    assert!(
        enabled.contains("from the upstream's server_version"),
        "{enabled}"
    );
    serve.stop().await;
}
