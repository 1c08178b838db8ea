use super::*;

fn facts(user: &str, database: &str) -> Facts {
    Facts {
        peer: "192.0.2.7:50123".parse().unwrap(),
        user: user.into(),
        database: database.into(),
        application_name: "app".into(),
        tls: None,
    }
}

#[test]
fn a_session_is_listed_while_it_lives_and_gone_when_its_handle_drops() {
    let sessions = Sessions::new();
    let closing = CancellationToken::new();
    let a = sessions.register(facts("tableau", "workgroup"), &closing);
    let b = sessions.register(facts("readonly", "workgroup"), &closing);
    assert_ne!(a.id(), b.id());
    let all = sessions.select(&Selector::default());
    assert_eq!(
        all.iter().map(|e| e.id()).collect::<Vec<_>>(),
        [a.id(), b.id()]
    );
    let readonly = Selector {
        user: Some("readonly".into()),
        ..Selector::default()
    };
    assert_eq!(sessions.select(&readonly).len(), 1);
    drop(b);
    assert!(sessions.select(&readonly).is_empty());
    assert_eq!(sessions.len(), 1);
    drop(a);
    assert!(sessions.is_empty());
}

#[test]
fn what_the_session_publishes_is_what_it_reports() {
    let sessions = Sessions::new();
    let s = sessions.register(facts("tableau", "workgroup"), &CancellationToken::new());
    let info = s.info(|_| None);
    assert_eq!(info.state, SessionState::Login);
    assert_eq!((info.auth_method, info.backend_pid), (None, None));
    s.logged_in(AuthMechanism::ScramPlus);
    s.on_backend(Some((4242, 1)));
    s.publish(
        Transferred {
            to_upstream: 10,
            to_client: 20,
        },
        SessionState::of(false, b'T'),
    );
    let info = s.info(|i| Some(format!("host{i}")));
    assert_eq!(info.auth_method.as_deref(), Some("scram-sha-256-plus"));
    assert!(info.channel_binding());
    assert_eq!(info.backend_pid, Some(4242));
    assert_eq!(info.backend_host.as_deref(), Some("host1"));
    assert_eq!(info.state, SessionState::InTransaction);
    assert_eq!((info.bytes_to_repository, info.bytes_to_client), (10, 20));
    assert_eq!(info.client_addr, "192.0.2.7:50123");
    s.on_backend(None);
    let info = s.info(|i| Some(format!("host{i}")));
    assert_eq!((info.backend_pid, info.backend_host), (None, None));
    assert_eq!(SessionState::of(true, b'I'), SessionState::Active);
    assert_eq!(SessionState::of(false, b'I'), SessionState::Idle);
}

#[test]
fn terminate_stops_exactly_the_selected_sessions_once() {
    let sessions = Sessions::new();
    let closing = CancellationToken::new();
    let a = sessions.register(facts("tableau", "workgroup"), &closing);
    let b = sessions.register(facts("readonly", "workgroup"), &closing);
    let epoch = CancellationToken::new();
    let relay = b.relay_stop(&epoch);
    let by_user = Selector {
        user: Some("readonly".into()),
        ..Selector::default()
    };
    assert_eq!(sessions.terminate(&by_user, "admin"), [b.id()]);
    assert!(relay.is_cancelled() && b.stop().is_cancelled());
    assert_eq!(b.terminated(), Some("admin"));
    assert!(!a.stop().is_cancelled() && a.terminated().is_none());
    assert!(!epoch.is_cancelled(), "the host's other sessions go on");
    // Again: nothing new is terminated.
    assert!(sessions.terminate(&by_user, "someone else").is_empty());
    assert_eq!(b.terminated(), Some("admin"));
    // A relay token asked for after the termination is cancelled at once.
    assert!(b.relay_stop(&epoch).is_cancelled());
    // Naming nothing ends nothing.
    assert!(sessions.terminate(&Selector::default(), "admin").is_empty());
    assert!(!a.stop().is_cancelled());
    // By id.
    let by_id = Selector {
        id: Some(a.id()),
        ..Selector::default()
    };
    assert_eq!(sessions.terminate(&by_id, "admin"), [a.id()]);
}

#[test]
fn the_servers_closing_stops_every_session_without_calling_it_a_termination() {
    let sessions = Sessions::new();
    let closing = CancellationToken::new();
    let a = sessions.register(facts("tableau", "workgroup"), &closing);
    closing.cancel();
    assert!(a.stop().is_cancelled());
    assert_eq!(a.terminated(), None);
}

#[test]
fn a_session_info_travels_as_json_and_back() {
    let sessions = Sessions::new();
    let mut f = facts("tableau", "workgroup");
    f.tls = Some(TlsFacts {
        version: "TLSv1_3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        group: Some("X25519".into()),
        sni: Some("repo.example".into()),
        client_cert_subject: None,
    });
    let s = sessions.register(f, &CancellationToken::new());
    let info = s.info(|_| None);
    let json = serde_json::to_string(&info).unwrap();
    assert!(json.contains("\"state\":\"login\""), "{json}");
    let back: SessionInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back, info);
}
