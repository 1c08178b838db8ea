//! pgssl's Patroni REST client against a real Patroni + etcd cluster ([`cluster::PatroniCluster`]):
//! roles as each member and the DCS report them, a switchover asked through the client, a failover
//! after the primary's postmaster is killed, and a REST API that wants credentials and a client
//! certificate over https.
//!
//! Each cluster start costs seconds, so each test runs its phases in sequence on one cluster.

pub mod cluster;
mod partition;
mod through_pgssl;

use std::time::{Duration, Instant};

use pgssl::error::ErrorKind;
use pgssl::keystore::Secret;
use pgssl::repository::patroni::{
    ClusterRole, Lag, MemberStatus, PatroniClient, PatroniError, Role, SwitchoverOutcome,
};

use crate::client::connect_plain;
use crate::harness::wait_for;
use crate::pki::TestPki;
use cluster::{PatroniCluster, RestSecurity};

/// How long Patroni may take to hand over or fail over (docs/design/repository-ha.md §6).
const FAILOVER_BOUND: Duration = Duration::from_secs(60);

/// `pg_is_in_recovery()` on member `i`, asked over TCP as the superuser.
async fn in_recovery(cluster: &PatroniCluster, i: usize) -> Result<bool, String> {
    let rows = cluster.query(i, "SELECT pg_is_in_recovery()").await?;
    Ok(rows.first().and_then(|r| r.first()).map(String::as_str) == Some("t"))
}

/// Where a tableau login through pgssl at `addr` lands: in recovery or not, and the server's port.
async fn tableau(addr: std::net::SocketAddr) -> Result<(bool, u16), String> {
    let mut session = connect_plain(addr, "tableau")
        .await
        .map_err(|e| e.to_string())?;
    let rows = session
        .simple_query("SELECT pg_is_in_recovery()::text, current_setting('port')")
        .await
        .map_err(|e| e.to_string())?;
    let _ = session.terminate().await;
    let row = rows.first().ok_or("no row")?;
    Ok((
        row[0].as_deref() == Some("true"),
        row[1].as_deref().and_then(|p| p.parse().ok()).unwrap_or(0),
    ))
}

/// Waits until member `i` says it runs as primary and PostgreSQL there is out of recovery; returns
/// what it said.
async fn wait_until_primary(
    client: &PatroniClient,
    cluster: &PatroniCluster,
    i: usize,
) -> MemberStatus {
    let what = format!("{} to run as primary, out of recovery", cluster.name(i));
    wait_for(&what, FAILOVER_BOUND, || async {
        let member = client.member(i).await.map_err(|e| e.to_string())?;
        if member.role != Role::Primary || !member.is_running() {
            return Err(format!("{member:?}"));
        }
        match in_recovery(cluster, i).await? {
            false => Ok(member),
            true => Err("Patroni says primary, pg_is_in_recovery() is still true".into()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_roles_and_follows_a_switchover_and_a_postmaster_kill() {
    let cluster = PatroniCluster::start(2).await;
    let client = PatroniClient::new(cluster.client_options()).unwrap();

    // Roles: exactly one primary, the other a replica on the same timeline; the DCS agrees.
    let members = [
        client.member(0).await.unwrap(),
        client.member(1).await.unwrap(),
    ];
    let primaries: Vec<usize> = (0..2)
        .filter(|i| members[*i].role == Role::Primary)
        .collect();
    assert_eq!(primaries.len(), 1, "{members:?}");
    let leader = primaries[0];
    let other = 1 - leader;
    assert_eq!(members[other].role, Role::Replica, "{members:?}");
    assert!(members[leader].timeline.is_some());
    assert_eq!(members[leader].timeline, members[other].timeline);
    assert!(members[leader].xlog.location.is_some());
    assert!(members[other].xlog.replayed_location.is_some());
    assert_eq!(members[leader].scope, members[other].scope);
    // The replica's row in the DCS says "starting", without a lag, until its next HA loop.
    let view = wait_for(
        "the DCS to show the replica streaming",
        FAILOVER_BOUND,
        || async {
            let view = client.cluster().await.map_err(|e| e.to_string())?;
            match view.member(cluster.name(other)) {
                Some(m) if matches!(m.lag, Some(Lag::Bytes(_))) => Ok(view),
                m => Err(format!("{m:?}")),
            }
        },
    )
    .await;
    assert_eq!(view.members.len(), 2, "{view:?}");
    let named = view.leader().expect("the DCS names a leader");
    assert_eq!(named.name, cluster.name(leader));
    assert_eq!(named.port, Some(cluster.pg_addr(leader).port()));
    let replica = view.member(cluster.name(other)).unwrap();
    assert_eq!(replica.role, ClusterRole::Replica);
    assert!(matches!(replica.lag, Some(Lag::Bytes(_))), "{replica:?}");
    assert!(!in_recovery(&cluster, leader).await.unwrap());
    assert!(in_recovery(&cluster, other).await.unwrap());

    // A switchover from a member that is not the leader: Patroni's 412, typed.
    let refused = client
        .switchover(cluster.name(other), cluster.name(leader))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, PatroniError::NotPossible { body, .. } if body.contains("leader name does not match")),
        "{refused:?}"
    );
    assert_eq!(
        (refused.status(), refused.kind()),
        (Some(412), ErrorKind::User)
    );

    // The switchover: Patroni answers 200 once the other member leads, and it is writable.
    let started = Instant::now();
    let outcome = client
        .switchover(cluster.name(leader), cluster.name(other))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, SwitchoverOutcome::Done { message } if message.contains(cluster.name(other))),
        "{outcome:?}"
    );
    let promoted = wait_until_primary(&client, &cluster, other).await;
    println!(
        "Patroni switchover: {} primary and writable {:.1} s after POST /switchover",
        cluster.name(other),
        started.elapsed().as_secs_f64()
    );
    assert!(promoted.timeline > members[leader].timeline, "{promoted:?}");
    assert_eq!(
        client
            .cluster()
            .await
            .unwrap()
            .leader()
            .map(|m| m.name.clone()),
        Some(cluster.name(other).to_string())
    );

    // The old leader rejoins as a replica, so that it can take over again.
    wait_for(
        "the old leader to rejoin as a replica",
        FAILOVER_BOUND,
        || async {
            match cluster.roles_settled().await {
                Some(l) if l == other => Ok(()),
                _ => Err(format!("{:?}", cluster.roles().await)),
            }
        },
    )
    .await;

    // kill -9 of the primary's postmaster: Patroni fails over to the other member.
    let pid = cluster.kill_postmaster(other);
    let started = Instant::now();
    let failed_over = wait_until_primary(&client, &cluster, leader).await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "Patroni failover: {} primary and writable {seconds:.1} s after kill -9 of {}'s postmaster (pid {pid})",
        cluster.name(leader),
        cluster.name(other)
    );
    assert!(failed_over.timeline > promoted.timeline, "{failed_over:?}");
    let killed = client.member(other).await;
    assert!(
        !matches!(&killed, Ok(m) if m.role == Role::Primary),
        "two primaries: {killed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_rest_api_wants_credentials_and_a_client_certificate_for_a_switchover() {
    let cluster = PatroniCluster::start_with(
        2,
        RestSecurity {
            basic_auth: true,
            tls: true,
        },
    )
    .await;
    let leader = cluster.leader_index().await.expect("one primary");
    let other = 1 - leader;
    let (_, password) = cluster.rest_credentials().unwrap();

    // GETs need no credentials, over https verified against the cluster's CA.
    let mut options = cluster.client_options();
    options.username = None;
    options.password = None;
    let anonymous = PatroniClient::new(options).unwrap();
    assert_eq!(anonymous.member(leader).await.unwrap().role, Role::Primary);
    assert!(anonymous.url(0).unwrap().starts_with("https://"));

    // No credentials: the typed 401, naming where the credentials are configured.
    let err = anonymous
        .switchover(cluster.name(leader), cluster.name(other))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PatroniError::Unauthorized {
                sent_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!((err.status(), err.kind()), (Some(401), ErrorKind::User));
    let message = err.to_string();
    assert!(
        message
            .contains("refused the credentials (repository.patroni_user / PGSSL_PATRONI_PASSWORD)"),
        "{message}"
    );

    // A wrong password: 401 again, and no password in the message.
    let mut options = cluster.client_options();
    options.password = Some(Secret::new(format!("{password}-wrong")));
    let wrong = PatroniClient::new(options).unwrap();
    let err = wrong
        .switchover(cluster.name(leader), cluster.name(other))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PatroniError::Unauthorized {
                sent_credentials: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains(password), "{err}");

    // Credentials without the client certificate `verify_client: optional` asks for on a POST.
    let mut options = cluster.client_options();
    options.cert_file = None;
    options.key_file = None;
    let no_cert = PatroniClient::new(options).unwrap();
    let err = no_cert
        .switchover(cluster.name(leader), cluster.name(other))
        .await
        .unwrap_err();
    assert!(matches!(err, PatroniError::Forbidden { .. }), "{err:?}");
    assert_eq!(err.status(), Some(403));

    // A CA that did not sign Patroni's certificate: the handshake fails.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut options = cluster.client_options();
    options.ca_file = Some(TestPki::new(elsewhere.path(), "other").root);
    let untrusting = PatroniClient::new(options).unwrap();
    let err = untrusting.member(leader).await.unwrap_err();
    assert!(matches!(err, PatroniError::Handshake { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Upstream);

    // None of the refused calls moved the leader; with everything, the switchover is done.
    assert_eq!(cluster.leader_index().await, Some(leader));
    let client = PatroniClient::new(cluster.client_options()).unwrap();
    let outcome = client
        .switchover(cluster.name(leader), cluster.name(other))
        .await
        .unwrap();
    assert!(
        matches!(outcome, SwitchoverOutcome::Done { .. }),
        "{outcome:?}"
    );
    wait_until_primary(&client, &cluster, other).await;
}
