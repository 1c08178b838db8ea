//! pgssl's own cluster state across a failover of a replicated repository: a primary and a streaming
//! standby (pg_basebackup), both real PostgreSQL over TLS, each with its own certificate, named
//! together as the repository (`h1:5432,h2:5432`). Every cluster session goes to the host that is
//! not in recovery — a standby listed first is passed over, never written to — over TLS pinned to
//! every host's certificate, and a cluster of two pgssl nodes keeps taking changes after the primary
//! is stopped and the standby promoted, without a restart.

use std::time::Duration;

use pgssl::control::cluster::repo::{self, Conn, Reach};
use pgssl::control::cluster::{ClusterError, hosts};
use pgssl::keystore::Secret;
use pgssl::proxy::repository::tls::RepositoryTls;

use crate::cli::ok;
use crate::cluster::{Node, state_version, wait_live};
use crate::cluster_schema::{CLUSTER_PASSWORD, make_cluster};
use crate::harness::{Postgres, free_port, wait_for, wait_until};

/// For one connection attempt, and for anything to be seen after a change or a failover.
const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);

/// What of pgssl's cluster sessions ran on a host beyond the question whether it is in recovery
/// (on a standby, nothing may).
const BEYOND_THE_QUESTION: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE application_name = 'pgssl cluster' AND query <> '' \
     AND query NOT LIKE 'SELECT CASE WHEN pg_is_in_recovery()%'";

/// A session as the cluster role on the primary of `repository`, TLS pinned to `pins` (none:
/// plaintext): the session and its host.
async fn connect(repository: &str, pins: Vec<String>) -> Result<(Conn, String), ClusterError> {
    let reach = Reach {
        repository,
        socket_port: 5432,
        pins,
        database: "postgres",
    };
    repo::connect_as(&reach, &Secret::new(CLUSTER_PASSWORD.into()), TIMEOUT).await
}

fn tcp(pg: &Postgres) -> String {
    format!("127.0.0.1:{}", pg.tcp_port.expect("TCP"))
}

/// The cluster's sessions on `pg` over TLS.
fn cluster_sessions_over_tls(pg: &Postgres) -> u32 {
    pg.sql(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'pgssl cluster' AND s.ssl",
    )
    .parse()
    .unwrap()
}

/// Writes `name` into `pg`'s data directory as the server's own file.
fn server_file(pg: &Postgres, name: &str, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = pg.data_path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some((uid, gid)) = crate::harness::postgres_ids() {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    }
}

/// A primary over TLS and its streaming standby, each serving its own certificate (the standby's
/// copy of the primary's replaced, then restarted), with their fingerprints.
fn primary_and_standby(dir: &std::path::Path) -> (Postgres, Postgres, String, String) {
    let pki = crate::pki::TestPki::new(dir, "ClusterHA");
    let names = ["localhost", "127.0.0.1"];
    let p_leaf = pki.server_from_root("primary", &names, 30);
    let s_leaf = pki.server_from_root("standby", &names, 30);
    let primary = Postgres::start_with_tls(&p_leaf.cert_pem, &p_leaf.key_pem);
    let standby = primary.start_standby();
    server_file(&standby, "server.crt", &s_leaf.cert_pem, 0o644);
    server_file(&standby, "server.key", &s_leaf.key_pem, 0o600);
    standby.restart();
    let fingerprint = |leaf: &crate::pki::ServerCert| {
        pgssl::tls::certs::read_info(&leaf.cert)
            .unwrap()
            .sha256_fingerprint
    };
    let (p_pin, s_pin) = (fingerprint(&p_leaf), fingerprint(&s_leaf));
    assert_ne!(p_pin, s_pin);
    (primary, standby, p_pin, s_pin)
}

/// The library's cluster connection, host by host: every host's certificate is pinned; a standby
/// listed first is passed over for the primary, reached over TLS; a pin missing for the primary, a
/// standby alone, or no host answering as a primary is refused, naming every host with why; hosts
/// that disagree about TLS are refused when the pins are gathered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_session_goes_to_the_primary_and_a_standby_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, standby, p_pin, s_pin) = primary_and_standby(dir.path());
    make_cluster(&primary).await.terminate().await.unwrap();
    let (p, s) = (tcp(&primary), tcp(&standby));
    let both = format!("{s},{p}");
    let hosts = hosts::parse(&both, 5432).unwrap();
    let pins = hosts::fingerprints(&hosts, &RepositoryTls::disabled(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(pins, [s_pin.clone(), p_pin]);

    let (conn, host) = connect(&both, pins.clone()).await.unwrap();
    assert_eq!(host, p);
    let row = conn
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('port'), \
             (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(
        row.get::<_, String>(1),
        primary.tcp_port.unwrap().to_string()
    );
    assert!(row.get::<_, bool>(2), "the cluster's session is over TLS");
    conn.terminate().await.unwrap();

    // Pinned to the standby's certificate alone, the primary is out of reach: no primary.
    let e = connect(&both, vec![s_pin]).await.unwrap_err();
    assert!(matches!(&e, ClusterError::NoPrimary { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{s} is in recovery (a standby)")),
        "{text}"
    );
    assert!(text.contains(&format!("repository {p}: ")), "{text}");

    match connect(&s, Vec::new()).await {
        Err(ClusterError::InRecovery { repository }) => assert_eq!(repository, s),
        other => panic!("a standby alone must be refused as in recovery: {other:?}"),
    }

    let dead = format!("127.0.0.1:{}", free_port());
    let e = connect(&format!("{dead},{s}"), Vec::new())
        .await
        .unwrap_err();
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
    assert_eq!(standby.sql(BEYOND_THE_QUESTION), "0");

    // A split brain: the standby is promoted while the old primary still runs. The cluster's
    // state goes to the later timeline, as primary-bound sessions do, though the old primary is
    // listed first.
    standby.promote();
    let (conn, host) = connect(&format!("{p},{s}"), pins).await.unwrap();
    assert_eq!(host, s);
    conn.terminate().await.unwrap();

    // A standby that offers no TLS while the primary does: the cluster could not pin it.
    let auto = standby.data_path().join("postgresql.auto.conf");
    let conf = std::fs::read_to_string(&auto).unwrap();
    std::fs::write(&auto, format!("{conf}\nssl = off\n")).unwrap();
    standby.restart();
    match hosts::fingerprints(&hosts, &RepositoryTls::disabled(), TIMEOUT).await {
        Err(e @ ClusterError::MixedTls { .. }) => {
            assert!(e.is_user_error(), "{e}");
            let said = format!("{p} offer it, {s} do not");
            assert!(e.to_string().contains(&said), "{e}");
        }
        other => panic!("hosts that disagree about TLS must be refused: {other:?}"),
    }
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

/// Two pgssl nodes in front of a standby and a primary (the standby listed first), each with its own
/// certificate, both pinned when the cluster is made: the cluster is made and joined on the primary, a change applied on one node is served by both; then the
/// primary is stopped at once and the standby promoted, and a change applied on the second node is
/// served by both again — their followers found the new primary without a restart — and is the
/// version the new primary holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_keep_one_state_across_a_repository_failover() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, standby, _, _) = primary_and_standby(dir.path());
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
    assert!(cluster_sessions_over_tls(&primary) >= 2);
    assert_eq!(standby.sql(BEYOND_THE_QUESTION), "0");
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
    // Both followers are on the new primary, over TLS pinned to its own certificate.
    assert!(cluster_sessions_over_tls(&standby) >= 2);
    for n in [&n1, &n2] {
        let log = n.serve.as_ref().unwrap().log_text();
        assert!(
            log.contains("the cluster's state now follows the repository's new primary"),
            "{}: {log}",
            n.name
        );
    }
}
