//! pgssl's own cluster state across a failover of a replicated repository: a primary and a streaming
//! standby (pg_basebackup), both real PostgreSQL, named together as the repository
//! (`h1:5432,h2:5432`). Every cluster session goes to the host that is not in recovery — a standby
//! listed first is passed over, never written to — and a cluster of two pgssl nodes keeps taking
//! changes after the primary is stopped and the standby promoted, without a restart.

use std::time::Duration;

use pgssl::control::cluster::ClusterError;
use pgssl::control::cluster::repo::{self, Conn, Reach};
use pgssl::keystore::Secret;

use crate::cli::ok;
use crate::cluster::{Node, state_version, wait_live};
use crate::cluster_schema::{CLUSTER_PASSWORD, make_cluster};
use crate::harness::{Postgres, free_port, wait_for, wait_until};

/// For one connection attempt, and for anything to be seen after a change or a failover.
const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);

/// A session as the cluster role on the primary of `repository`: the session and its host.
async fn connect(repository: &str) -> Result<(Conn, String), ClusterError> {
    let reach = Reach {
        repository,
        socket_port: 5432,
        pins: Vec::new(),
        database: "postgres",
    };
    repo::connect_as(&reach, &Secret::new(CLUSTER_PASSWORD.into()), TIMEOUT).await
}

fn tcp(pg: &Postgres) -> String {
    format!("127.0.0.1:{}", pg.tcp_port.expect("TCP"))
}

/// The library's cluster connection, host by host: a standby listed first is passed over for the
/// primary; a standby alone is refused as in recovery; with no primary among them, every host is
/// named with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_session_goes_to_the_primary_and_a_standby_is_passed_over() {
    let primary = Postgres::start_with_tcp();
    make_cluster(&primary).await.terminate().await.unwrap();
    let standby = primary.start_standby();
    let (p, s) = (tcp(&primary), tcp(&standby));

    let (conn, host) = connect(&format!("{s},{p}")).await.unwrap();
    assert_eq!(host, p);
    let row = conn
        .query_one("SELECT pg_is_in_recovery(), current_setting('port')", &[])
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(
        row.get::<_, String>(1),
        primary.tcp_port.unwrap().to_string()
    );
    conn.terminate().await.unwrap();

    match connect(&s).await {
        Err(ClusterError::InRecovery { repository }) => assert_eq!(repository, s),
        other => panic!("a standby alone must be refused as in recovery: {other:?}"),
    }

    let dead = format!("127.0.0.1:{}", free_port());
    let e = connect(&format!("{dead},{s}")).await.unwrap_err();
    assert!(
        matches!(&e, ClusterError::NoPrimary { tried, .. } if tried.len() == 2),
        "{e:?}"
    );
    assert!(e.is_unreachable(), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("{dead}: ")), "{text}");
    assert!(
        text.contains(&format!("{s} is in recovery (a standby)")),
        "{text}"
    );
    // No pgssl session on the standby ever ran more than the question.
    let beyond = standby.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgssl cluster' \
         AND query NOT IN ('', 'SELECT pg_is_in_recovery()')",
    );
    assert_eq!(beyond, "0");
}

/// What `list-nodes` on `n` says each node serves: `name -> version`, or why it could not be read.
async fn served_versions(n: &Node) -> Result<Vec<(String, u64)>, String> {
    let out = n.run(&["topology", "list-nodes"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    text.lines()
        .filter(|l| l.contains("serves version "))
        .map(|l| {
            let name = l.trim_start().split([':', ' ']).next().unwrap_or_default();
            let version = l
                .split("serves version ")
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| text.clone())?;
            Ok((name.to_string(), version))
        })
        .collect()
}

/// Waits until `on` lists both nodes serving `version` and each answers an SSLRequest with `ssl`.
async fn both_serve(on: &Node, nodes: [&Node; 2], version: u64, ssl: u8) {
    let what = format!("both nodes to serve version {version} (SSLRequest answered {ssl})");
    wait_for(&what, WAIT, || async move {
        let versions = served_versions(on).await?;
        let mut answers = Vec::new();
        for n in nodes {
            answers.push(crate::client::ssl_request(n.addr()).await.0);
        }
        let all = versions.len() == 2 && versions.iter().all(|(_, v)| *v == version);
        if all && answers.iter().all(|a| *a == ssl) {
            Ok(())
        } else {
            Err(format!("{versions:?}, SSLRequest answered {answers:?}"))
        }
    })
    .await
}

/// Two pgssl nodes in front of a standby and a primary (the standby listed first): the cluster is
/// made and joined on the primary, a change applied on one node is served by both; then the
/// primary is stopped at once and the standby promoted, and a change applied on the second node is
/// served by both again — their followers found the new primary without a restart — and is the
/// version the new primary holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_keep_one_state_across_a_repository_failover() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Postgres::start_with_tcp();
    let standby = primary.start_standby();
    let hosts = format!("{},{}", tcp(&standby), tcp(&primary));
    let mut n1 = Node::new("f1", "127.0.0.2", &hosts);
    let mut n2 = Node::new("f2", "127.0.0.3", &hosts);
    let file = dir.path().join("bootstrap.toml");
    n1.start().await;
    ok(&n1.bootstrap_file(&file).await);
    ok(&n2.join(&file).await);
    n2.start().await;
    wait_live(&n1, 2).await;

    ok(&n1.run(&["security", "repository-ssl", "enable"]).await);
    let text = ok(&n1.run(&["pending-changes", "apply"]).await);
    assert_eq!(text.matches("took the change").count(), 2, "{text}");
    let before = state_version(&primary);
    both_serve(&n1, [&n1, &n2], before, b'S').await;
    // The nodes' kept sessions are on the primary; on the standby no pgssl session did more than
    // ask whether it is in recovery.
    let on_primary = primary
        .sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgssl cluster'");
    assert!(on_primary.parse::<u32>().unwrap() >= 2, "{on_primary}");
    let beyond = standby.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgssl cluster' \
         AND query NOT IN ('', 'SELECT pg_is_in_recovery()')",
    );
    assert_eq!(beyond, "0");
    // The standby holds what was committed before the primary goes.
    wait_until("the standby to replay the committed version", WAIT, || {
        let replayed = standby.sql("SELECT coalesce(max(version), 0) FROM pgssl.state");
        async move { replayed == before.to_string() }
    })
    .await;

    primary.stop_immediate();
    standby.promote();
    ok(&n2.run(&["security", "repository-ssl", "disable"]).await);
    ok(&n2.run(&["pending-changes", "apply"]).await);
    let after = state_version(&standby);
    assert!(after > before, "{after} after {before}");
    both_serve(&n2, [&n1, &n2], after, b'N').await;
    both_serve(&n1, [&n1, &n2], after, b'N').await;
    for n in [&n1, &n2] {
        let log = n.serve.as_ref().unwrap().log_text();
        assert!(
            log.contains("the cluster's state now follows the repository's new primary"),
            "{}: {log}",
            n.name
        );
    }
}
