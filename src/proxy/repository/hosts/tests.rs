use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::proxy::repository::{RepositoryAddr, Target};

fn hosts(n: usize, options: HostsOptions) -> Hosts {
    let connectors = (0..n)
        .map(|i| {
            let addr = RepositoryAddr::Tcp(format!("h{i}.test:5432"));
            Arc::new(Target::new(addr)) as Arc<dyn RepositoryConnector>
        })
        .collect();
    Hosts::new(connectors, options)
}

fn primary(timeline: u32, lsn: u64) -> Result<Probed, String> {
    Ok(Probed {
        in_recovery: false,
        timeline: Some(timeline),
        system_id: Some("1".into()),
        lsn: Some(lsn),
        replay_age: None,
        // Unknown: no two of these probes are taken for one server listed twice.
        started: None,
        patroni: None,
    })
}

fn standby(lsn: u64) -> Result<Probed, String> {
    Ok(Probed {
        in_recovery: true,
        timeline: Some(1),
        system_id: Some("1".into()),
        lsn: Some(lsn),
        replay_age: Some(1.0),
        started: None,
        patroni: None,
    })
}

fn down() -> Result<Probed, String> {
    Err("connection refused".into())
}

#[tokio::test]
async fn one_host_takes_every_session_unprobed() {
    let h = hosts(1, HostsOptions::default());
    assert!(!h.probed());
    for target in [
        TargetRole::Primary,
        TargetRole::Standby,
        TargetRole::PreferStandby,
        TargetRole::Any,
    ] {
        let r = h.route(target).await.unwrap();
        assert_eq!((r.index, r.as_primary), (0, true), "{target}");
    }
}

#[tokio::test]
async fn sessions_go_where_their_target_allows() {
    let h = hosts(
        3,
        HostsOptions {
            max_standby_lag: Some(StandbyLag::Bytes(100)),
            ..HostsOptions::default()
        },
    );
    h.observe(0, primary(1, 1000));
    h.observe(1, standby(950));
    h.observe(2, standby(500));
    let route = |t| {
        let h = &h;
        async move { h.route(t).await.map(|r| (r.index, r.as_primary)) }
    };
    assert_eq!(route(TargetRole::Primary).await.unwrap(), (0, true));
    // Host 2 is 500 bytes behind: past the bound.
    assert_eq!(route(TargetRole::Standby).await.unwrap(), (1, false));
    assert_eq!(route(TargetRole::PreferStandby).await.unwrap(), (1, false));
    assert_eq!(route(TargetRole::Any).await.unwrap(), (0, true));
    // The least busy standby within the bound takes the next session.
    h.observe(2, standby(999));
    let busy = h.route(TargetRole::Standby).await.unwrap();
    let _on_it = busy.session();
    let next = h.route(TargetRole::Standby).await.unwrap();
    assert_ne!(busy.index, next.index);
    // No standby left: standby is refused at once, prefer-standby takes the primary.
    h.observe(1, down());
    h.observe(2, down());
    assert!(matches!(
        route(TargetRole::Standby).await,
        Err(NoHost::NoStandby)
    ));
    assert_eq!(route(TargetRole::PreferStandby).await.unwrap(), (0, true));
}

#[tokio::test(start_paused = true)]
async fn a_primary_bound_login_waits_for_the_failover_and_no_longer() {
    let h = Arc::new(hosts(
        2,
        HostsOptions {
            failover_wait: Duration::from_secs(30),
            ..HostsOptions::default()
        },
    ));
    h.observe(0, primary(1, 10));
    h.observe(1, standby(10));
    let old = h.route(TargetRole::Primary).await.unwrap();
    let on_standby = h.route(TargetRole::Standby).await.unwrap();
    // The primary stops answering: its sessions are left alone, new logins wait.
    h.observe(0, down());
    assert!(!old.epoch.is_cancelled());
    let waiting = tokio::spawn({
        let h = h.clone();
        async move { h.route(TargetRole::Primary).await.map(|r| r.index) }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.waiting(), 1);
    // The standby is promoted: the waiting login goes there, the old primary's sessions end, the
    // standby-bound session on the promoted host stays.
    h.observe(1, primary(2, 20));
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert_eq!(h.waiting(), 0);
    assert!(old.epoch.is_cancelled());
    assert!(!on_standby.epoch.is_cancelled());
    // The old primary comes back still thinking it is one: refused, never routed to.
    h.observe(0, primary(1, 15));
    assert_eq!(h.view().primary, Some(1));
    assert_eq!(h.view().roles[0].name(), "refused");
    // Nothing is primary for longer than failover_wait: the login is refused after it.
    h.observe(1, down());
    let started = tokio::time::Instant::now();
    let refused = h.route(TargetRole::Primary).await.unwrap_err();
    assert!(matches!(refused, NoHost::NoPrimary(_)));
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert!(refused.to_string().contains("waited 30s"), "{refused}");
}

#[tokio::test]
async fn a_demoted_primary_ends_its_primary_sessions_and_its_warm_ones() {
    let h = hosts(2, HostsOptions::default());
    h.observe(0, primary(1, 10));
    h.observe(1, standby(10));
    let session = h.route(TargetRole::Primary).await.unwrap();
    let reader = h.route(TargetRole::Standby).await.unwrap();
    let stale = h.view();
    // A switchover: the old primary turns standby first.
    h.observe(0, standby(10));
    assert!(session.epoch.is_cancelled());
    assert!(!reader.epoch.is_cancelled());
    // A session routed by the view before the change holds that view's token: it ends too.
    let late = h.routed(&stale, 0, true, TargetRole::Primary);
    assert!(late.epoch.is_cancelled());
    h.observe(1, primary(2, 30));
    let next = h.route(TargetRole::Primary).await.unwrap();
    assert_eq!(next.index, 1);
    assert!(!next.epoch.is_cancelled());
    // The closing token ends everything at shutdown's end.
    h.closing().cancel();
    assert!(next.epoch.is_cancelled() && reader.epoch.is_cancelled());
    assert!(matches!(
        h.route(TargetRole::Primary).await,
        Err(NoHost::Closing)
    ));
}

#[tokio::test]
async fn a_host_back_from_an_unreachable_spell_as_refused_or_standby_ends_its_primary_sessions() {
    let h = hosts(2, HostsOptions::default());
    h.observe(0, primary(1, 10));
    h.observe(1, standby(10));
    let session = h.route(TargetRole::Primary).await.unwrap();
    h.observe(0, down());
    assert!(
        !session.epoch.is_cancelled(),
        "an unreachable host keeps its sessions"
    );
    // Back, but restarted as a standby, with no other primary yet: its primary sessions end.
    h.observe(0, standby(10));
    assert!(session.epoch.is_cancelled());
}

#[test]
fn the_status_names_each_host_and_its_role() {
    let h = hosts(2, HostsOptions::default());
    h.observe(0, primary(3, 100));
    h.observe(1, down());
    let status = h.status(&[2, 0]);
    assert_eq!(status[0].address, "h0.test:5432");
    assert_eq!(
        (status[0].role.as_str(), status[0].timeline, status[0].warm),
        ("primary", Some(3), 2)
    );
    assert!(status[0].reachable && status[0].last_ok.is_some());
    assert_eq!(status[1].role, "unknown");
    assert_eq!(status[1].error.as_deref(), Some("connection refused"));
}
