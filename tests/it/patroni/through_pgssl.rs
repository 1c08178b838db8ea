//! pgssl in front of a Patroni cluster (`repository.address` lists both members, `repository.patroni`
//! their REST APIs): it follows the failover Patroni decides after the primary's postmaster is
//! killed, and `topology failover-repository --target-host` asks Patroni to switch back.

use std::time::{Duration, Instant};

use pgssl::proxy::policy::Mode;

use super::cluster::PatroniCluster;
use super::tableau;
use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::harness::{PASSWORD, prepare_data_dir, wait_for};

/// How long a failover may take to show through pgssl: Patroni on a loaded two-core machine (CI
/// runs two suites at once) is slower than its own ttl and loop_wait suggest.
const WAIT: Duration = Duration::from_secs(120);

/// Waits until tableau's logins land on member `i`, out of recovery; returns how long it took.
/// What pgssl and Patroni saw is in the message if they never do.
async fn lands_on(
    cluster: &PatroniCluster,
    env: &CliEnv,
    addr: std::net::SocketAddr,
    i: usize,
) -> Duration {
    let started = Instant::now();
    let port = cluster.pg_addr(i).port();
    wait_for(
        &format!("tableau to land on {}", cluster.name(i)),
        WAIT,
        || async {
            match tableau(addr).await {
                Ok(at) if at == (false, port) => Ok(()),
                // Never, however the failover goes: a primary-bound session on a host in recovery.
                Ok((true, at)) => panic!("a tableau session reached port {at}, in recovery"),
                other => Err(format!(
                    "{other:?}\n{}\nPatroni: {:?}",
                    String::from_utf8_lossy(
                        &env.run(&["topology", "list-repository-hosts"]).stdout
                    ),
                    cluster.roles().await
                )),
            }
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgssl_follows_patroni_s_failover_and_asks_it_to_switch_back() {
    let cluster = PatroniCluster::start(2).await;
    let leader = cluster.roles_settled().await.expect("a leader");
    // The probe role and a client role, made on the leader and replicated.
    cluster
        .query(
            leader,
            &format!(
                "CREATE ROLE pgssl_probe LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor;\
             CREATE ROLE tableau LOGIN PASSWORD '{PASSWORD}';"
            ),
        )
        .await
        .unwrap();
    let env = cluster.pgssl_env("");
    prepare_data_dir(&env.data_dir(), Mode::Off);
    let serve = ServeProcess::start(&env, &[]).await;
    // Whichever member leads once pgssl is up (on a loaded machine Patroni may have handed over
    // since it settled); what pgssl and Patroni saw is in the message if none does.
    let ports: Vec<u16> = (0..2).map(|i| cluster.pg_addr(i).port()).collect();
    let leader = wait_for("tableau to land on a primary", WAIT, || async {
        match tableau(serve.addr).await {
            Ok((false, at)) if ports.contains(&at) => {
                Ok(ports.iter().position(|p| *p == at).unwrap())
            }
            Ok((true, at)) => panic!("a tableau session reached port {at}, in recovery"),
            other => Err(format!(
                "{other:?}\n{}\nPatroni: {:?}",
                String::from_utf8_lossy(&env.run(&["topology", "list-repository-hosts"]).stdout),
                cluster.roles().await
            )),
        }
    })
    .await;
    let other = 1 - leader;
    // Replication is asynchronous: the roles must have reached the member that takes over, or a
    // kill right after their creation loses them (both members then refuse pgssl_probe, 28P01).
    wait_for("the roles on the other member", WAIT, || async {
        let sql = "SELECT count(*) FROM pg_roles WHERE rolname IN ('pgssl_probe', 'tableau')";
        match cluster.query(other, sql).await {
            Ok(rows) if rows == vec![vec!["2".to_string()]] => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;

    // Patroni fails over after the primary's postmaster dies; pgssl follows.
    cluster.kill_postmaster(leader);
    let followed = lands_on(&cluster, &env, serve.addr, other).await;
    println!("pgssl followed Patroni's failover within {followed:?} of the postmaster's kill");

    // Switch back, through pgssl's command, once the old leader runs as a replica again.
    let back = cluster.pg_addr(leader).to_string();
    wait_for("the old leader to run as a standby", WAIT, || async {
        let listed = ok(&env.run(&["topology", "list-repository-hosts"]));
        let row = listed
            .lines()
            .find(|l| l.starts_with(&back))
            .unwrap_or_default()
            .to_string();
        match row.contains("standby") {
            true => Ok(()),
            false => Err(listed),
        }
    })
    .await;
    let said = ok(&env.run(&["topology", "failover-repository", "--target-host", &back]));
    assert!(said.contains("Patroni:"), "{said}");
    assert!(
        said.contains(&format!("pgssl routes primary-bound sessions to {back}")),
        "{said}"
    );
    lands_on(&cluster, &env, serve.addr, leader).await;
    // Asking again for the host that is the primary changes nothing.
    let again = ok(&env.run(&["topology", "failover-repository", "--target-host", &back]));
    assert!(again.contains("is the primary already"), "{again}");
    serve.stop().await;
}

#[test]
fn without_patroni_failover_repository_says_what_it_needs() {
    let env = CliEnv::new("127.0.0.1:1,127.0.0.1:2");
    let why = failed(&env.run(&["topology", "failover-repository"]));
    assert!(why.contains("needs repository.patroni"), "{why}");
    assert!(why.contains("never promotes"), "{why}");
    env.add_config(
        "repository",
        "patroni = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]",
    );
    let why = failed(&env.run(&["topology", "failover-repository", "--preferred"]));
    assert!(why.contains("repository.preferred_host"), "{why}");
}
