//! The parsers against answers captured from Patroni 3.0.2 (the fuzz corpus) and 4.x-shaped ones;
//! URL and option checks; error messages.

use std::time::Duration;

use super::*;

macro_rules! corpus {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/patroni_json/",
            $name
        ))
    };
}

#[test]
fn a_3x_primary_reads_as_primary_with_its_wal_location() {
    let m = MemberStatus::parse(corpus!("patroni-3.0.2-primary.json")).unwrap();
    assert_eq!(m.role, Role::Primary);
    assert!(m.is_running());
    assert_eq!(m.timeline, Some(1));
    assert_eq!(m.server_version, Some(150018));
    assert_eq!(m.xlog.location, Some(50331648));
    assert_eq!(m.xlog.replayed_location, None);
    assert_eq!(m.scope.as_deref(), Some("pgssl-test"));
    assert_eq!(m.patroni_version.as_deref(), Some("3.0.2"));
    assert!(!m.cluster_unlocked && !m.pause && !m.pending_restart);
}

#[test]
fn a_3x_replica_reads_its_received_and_replayed_locations() {
    let m = MemberStatus::parse(corpus!("patroni-3.0.2-replica.json")).unwrap();
    assert_eq!(m.role, Role::Replica);
    assert_eq!(m.xlog.location, None);
    assert_eq!(m.xlog.received_location, Some(50331648));
    assert_eq!(m.xlog.replayed_location, Some(50331648));
    assert_eq!(m.xlog.paused, Some(false));
}

#[test]
fn a_demoted_member_without_postgres_reads_with_the_optional_fields_absent() {
    let m = MemberStatus::parse(corpus!("patroni-3.0.2-demoted.json")).unwrap();
    assert_eq!(m.role, Role::Demoted);
    assert_eq!(m.state, "stopped");
    assert!(!m.is_running());
    assert!(m.cluster_unlocked);
    assert_eq!((m.timeline, m.server_version), (None, None));
    assert_eq!(m.xlog, WalPosition::default());
}

#[test]
fn a_4x_primary_reads_as_primary_like_a_3x_master() {
    let m = MemberStatus::parse(corpus!("patroni-4.x-primary.json")).unwrap();
    assert_eq!(m.role, Role::Primary);
    assert_eq!((m.timeline, m.xlog.location), (Some(4), Some(83886432)));
    let m = MemberStatus::parse(corpus!("patroni-4.x-replica.json")).unwrap();
    assert_eq!(m.role, Role::Replica);
    assert_eq!(m.xlog.replayed_location, Some(83886100));
    assert_eq!(m.xlog.paused, Some(true));
    assert!(m.pause && m.pending_restart);
}

#[test]
fn every_role_name_maps_and_an_unknown_one_is_kept() {
    for (name, role) in [
        ("master", Role::Primary),
        ("primary", Role::Primary),
        ("replica", Role::Replica),
        ("standby_leader", Role::StandbyLeader),
        ("demoted", Role::Demoted),
        ("uninitialized", Role::Other("uninitialized".into())),
    ] {
        let body = format!(r#"{{"state": "running", "role": "{name}"}}"#);
        assert_eq!(MemberStatus::parse(body.as_bytes()).unwrap().role, role);
    }
}

#[test]
fn nulls_read_as_absent() {
    let body = br#"{"state": "starting", "role": "replica", "timeline": null, "xlog": {"received_location": null, "replayed_location": 7}, "patroni": null}"#;
    let m = MemberStatus::parse(body).unwrap();
    assert_eq!(m.timeline, None);
    assert_eq!(m.xlog.received_location, None);
    assert_eq!(m.xlog.replayed_location, Some(7));
    assert_eq!(m.scope, None);
}

#[test]
fn garbage_and_incomplete_member_answers_are_errors() {
    for body in [
        &b""[..],
        b"<html>Error</html>",
        b"[]",
        b"{}",
        br#"{"state": "running"}"#,
        br#"{"role": "master"}"#,
        br#"{"state": "running", "role": 1}"#,
        br#"{"state": "running", "role": "master", "timeline": -1}"#,
        br#"{"state": "running", "role": "master", "timeline": 4294967296}"#,
        br#"{"state": "running", "role": "master", "xlog": {"location": "0/3000000"}}"#,
        corpus!("truncated.json"),
    ] {
        assert!(
            MemberStatus::parse(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_3x_cluster_names_its_leader_and_the_replicas_lag() {
    let view = ClusterView::parse(corpus!("cluster-3.0.2.json")).unwrap();
    assert_eq!(view.members.len(), 2);
    let leader = view.leader().unwrap();
    assert_eq!(leader.name, "node0");
    assert_eq!(leader.lag, None);
    assert_eq!(
        leader.api_url.as_deref(),
        Some("http://127.0.0.1:59733/patroni")
    );
    let replica = view.member("node1").unwrap();
    assert_eq!(replica.role, ClusterRole::Replica);
    assert_eq!(replica.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(replica.port, Some(51189));
    assert_eq!(replica.timeline, Some(1));
    assert_eq!(replica.lag, Some(Lag::Bytes(0)));
    assert!(!view.pause);
}

#[test]
fn a_stopped_member_has_unknown_lag_and_no_timeline() {
    let view = ClusterView::parse(corpus!("cluster-3.0.2-after-switchover.json")).unwrap();
    assert_eq!(view.leader().unwrap().name, "node1");
    let old = view.member("node0").unwrap();
    assert_eq!(old.state, "stopped");
    assert_eq!((old.timeline, old.lag), (None, Some(Lag::Unknown)));
}

#[test]
fn a_4x_cluster_reads_its_new_roles_and_ignores_its_new_fields() {
    let view = ClusterView::parse(corpus!("cluster-4.x.json")).unwrap();
    assert_eq!(view.leader().unwrap().name, "pg-a");
    let roles: Vec<_> = view.members.iter().map(|m| m.role.clone()).collect();
    assert_eq!(
        roles,
        [
            ClusterRole::Leader,
            ClusterRole::QuorumStandby,
            ClusterRole::SyncStandby
        ]
    );
    assert_eq!(view.member("pg-b").unwrap().lag, Some(Lag::Bytes(332)));
    assert_eq!(view.member("pg-b").unwrap().state, "streaming");
    assert_eq!(view.member("pg-c").unwrap().lag, Some(Lag::Unknown));
    assert!(view.pause);
}

#[test]
fn a_cluster_without_a_leader_has_none_and_a_negative_lag_is_none_behind() {
    let body = br#"{"members": [{"name": "a", "role": "replica", "lag": -16}, {"name": "b", "role": "standby_leader"}]}"#;
    let view = ClusterView::parse(body).unwrap();
    assert!(view.leader().is_none());
    assert_eq!(view.members[0].lag, Some(Lag::Bytes(0)));
    assert_eq!(view.members[1].role, ClusterRole::StandbyLeader);
    assert_eq!(view.members[1].state, "");
}

#[test]
fn garbage_and_incomplete_cluster_answers_are_errors() {
    for body in [
        &b"null"[..],
        b"{}",
        br#"{"members": {}}"#,
        br#"{"members": [{"role": "leader"}]}"#,
        br#"{"members": [{"name": "a"}]}"#,
        br#"{"members": [{"name": "a", "role": "leader", "lag": [1]}]}"#,
        corpus!("cluster-bad-port.json"),
        corpus!("patroni-3.0.2-primary.json"),
    ] {
        assert!(
            ClusterView::parse(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

fn options(urls: &[&str]) -> PatroniOptions {
    PatroniOptions {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: None,
        password: None,
        timeout: Duration::from_secs(2),
    }
}

#[test]
fn good_urls_are_accepted_with_their_ports() {
    let client = PatroniClient::new(options(&[
        "http://127.0.0.1:8008",
        "http://db-1.example.com:8008/",
        "http://[::1]:8009",
        "http://pg",
    ]))
    .unwrap();
    assert_eq!(client.url_count(), 4);
    assert_eq!(client.url(1), Some("http://db-1.example.com:8008"));
    assert_eq!(client.url(4), None);
    let ports: Vec<(String, u16)> = client
        .endpoints
        .iter()
        .map(|e| (e.host.clone(), e.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("127.0.0.1".to_string(), 8008),
            ("db-1.example.com".to_string(), 8008),
            ("::1".to_string(), 8009),
            ("pg".to_string(), 80)
        ]
    );
}

#[test]
fn each_bad_url_is_refused_naming_the_url_and_the_problem() {
    for (url, problem) in [
        ("not a url", BadUrl::NotAUrl),
        ("127.0.0.1:8008", BadUrl::NoScheme),
        ("ftp://127.0.0.1:8008", BadUrl::Scheme("ftp".into())),
        ("http://127.0.0.1:0", BadUrl::Port("0".into())),
        ("http://127.0.0.1:", BadUrl::Port("".into())),
        (
            "http://127.0.0.1:8008/patroni",
            BadUrl::Path("/patroni".into()),
        ),
        ("http://127.0.0.1:8008?x=1", BadUrl::Path("?x=1".into())),
        ("http://127.0.0.1:8008#top", BadUrl::Path("#top".into())),
    ] {
        match PatroniClient::new(options(&["http://127.0.0.1:8008", url])) {
            Err(PatroniError::BadUrl {
                url: shown,
                problem: seen,
            }) => {
                assert_eq!((shown.as_str(), &seen), (url, &problem));
                let message = PatroniError::BadUrl {
                    url: shown,
                    problem: seen,
                }
                .to_string();
                assert!(message.contains(url), "{message}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn credentials_in_a_url_are_refused_without_showing_them() {
    let err = PatroniClient::new(options(&["http://admin:hunter2@127.0.0.1:8008"])).unwrap_err();
    assert!(matches!(
        err,
        PatroniError::BadUrl {
            problem: BadUrl::Credentials,
            ..
        }
    ));
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("PGSSL_PATRONI_PASSWORD"), "{message}");
    assert_eq!(err.kind(), crate::error::ErrorKind::User);
}

#[test]
fn options_need_urls_both_credentials_and_both_identity_files() {
    assert!(matches!(
        PatroniClient::new(options(&[])),
        Err(PatroniError::NoUrls)
    ));
    let mut half = options(&["http://127.0.0.1:8008"]);
    half.username = Some("patroni".into());
    assert!(matches!(
        PatroniClient::new(half),
        Err(PatroniError::HalfCredentials { given: "user name" })
    ));
    let mut half = options(&["https://127.0.0.1:8008"]);
    half.key_file = Some("/nonexistent/key.pem".into());
    assert!(matches!(
        PatroniClient::new(half),
        Err(PatroniError::HalfIdentity { given: "key" })
    ));
    let mut missing = options(&["https://127.0.0.1:8008"]);
    missing.ca_file = Some("/nonexistent/ca.pem".into());
    let err = PatroniClient::new(missing).unwrap_err();
    assert!(err.to_string().contains("CA file"), "{err}");
}

#[test]
fn the_password_never_shows_in_debug_output() {
    let mut opts = options(&["http://127.0.0.1:8008"]);
    opts.username = Some("patroni".into());
    opts.password = Some(Secret::new("hunter2".into()));
    assert!(!format!("{opts:?}").contains("hunter2"));
    let client = PatroniClient::new(opts).unwrap();
    let shown = format!("{client:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("aHVudGVy"),
        "{shown}"
    );
    let header = client.authorization.as_ref().unwrap();
    assert!(header.is_sensitive());
    // base64("patroni:hunter2")
    assert_eq!(header.to_str().unwrap(), "Basic cGF0cm9uaTpodW50ZXIy");
}

#[test]
fn a_401_reads_as_a_credentials_problem_and_an_html_body_is_cut_and_escaped() {
    let err = PatroniError::Unauthorized {
        url: "http://127.0.0.1:8008".into(),
        sent_credentials: true,
        body: "not authenticated".into(),
    };
    assert_eq!(
        err.to_string(),
        "Patroni at http://127.0.0.1:8008 refused the credentials \
         (repository.patroni_user / PGSSL_PATRONI_PASSWORD) (401): \"not authenticated\""
    );
    assert_eq!(
        (err.kind(), err.status()),
        (crate::error::ErrorKind::User, Some(401))
    );
    let page = format!("<html>\n{}\n</html>", "x".repeat(5000));
    let err = PatroniError::BadRequest {
        url: "http://h:1".into(),
        body: body_text(page.as_bytes()),
    };
    let message = err.to_string();
    assert!(!message.contains('\n') && message.len() < 400, "{message}");
    assert_eq!(body_text(page.as_bytes()).len(), KEPT_BODY);
    // A cut never splits a character.
    assert_eq!(body_text("é".repeat(KEPT_BODY).as_bytes()).len(), KEPT_BODY);
}

#[test]
fn the_client_and_its_calls_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let client = PatroniClient::new(options(&["http://127.0.0.1:8008"])).unwrap();
    send_and_sync(&client);
    // Probes run on spawned tasks: the futures themselves must be Send.
    send(client.member(0));
    send(client.cluster());
    send(client.switchover("a", "b"));
}
