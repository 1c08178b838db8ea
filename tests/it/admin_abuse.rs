//! The admin server under abuse (issue #10): parallel and concurrent sign-ins, slow requests and
//! wrongly typed JSON. Each test failed before its fix.

use std::net::{IpAddr, Ipv4Addr};

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::admin::{ADMIN, ADMIN_PASSWORD, Api, admin_env, admin_env_with};
use crate::harness::Postgres;

/// Peak and current resident memory of a process, in KiB (`VmHWM`, `VmRSS`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_from_one_address_are_counted_before_they_are_checked() {
    let pg = Postgres::start();
    // Room for all 60 connections from one address: this is about the sign-in limiter, not the cap.
    let (_env, _server, addr) = admin_env_with(&pg, "max_connections_per_address = 100").await;
    // 20 at once, the right password among them: no more than five may even be checked.
    let answers = futures_join(20, |i| {
        let password = if i == 13 { ADMIN_PASSWORD } else { "guess" };
        async move {
            let mut api = Api::new(addr);
            api.sign_in(ADMIN, password).await.0
        }
    })
    .await;
    let checked = answers
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(checked <= 5, "{checked} sign-ins were checked: {answers:?}");
    assert!(
        answers.iter().all(|s| matches!(
            *s,
            StatusCode::OK | StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
        )),
        "{answers:?}"
    );
    // 60 wrong guesses at once from another address: five checked, 55 refused with 429.
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
    let answers = futures_join(60, |_| async move {
        let mut api = Api::from_source(addr, source);
        let (status, headers, _) = api.sign_in(ADMIN, "guess").await;
        (status, headers.contains_key("retry-after"))
    })
    .await;
    let refused = answers
        .iter()
        .filter(|(s, retry)| *s == StatusCode::TOO_MANY_REQUESTS && *retry)
        .count();
    assert_eq!(refused, 55, "{answers:?}");
}

/// Past `max_connections_per_address` (16 by default) a burst from one address is told so in HTTP —
/// 429 with Retry-After — instead of seeing bare resets: 40 wrong guesses at once all get an answer,
/// and still no more than five are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_burst_over_the_connection_cap_is_answered_429_not_reset() {
    let pg = Postgres::start();
    let (_env, _server, addr) = admin_env(&pg).await;
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 78));
    let answers = futures_join(40, |_| async move {
        let mut api = Api::from_source(addr, source);
        let (status, headers, _) = api.sign_in(ADMIN, "guess").await;
        (status, headers.contains_key("retry-after"))
    })
    .await;
    let wrong = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(wrong <= 5, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, retry)| *s == StatusCode::UNAUTHORIZED
                || (*retry
                    && matches!(
                        *s,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    ))),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_concurrent_sign_ins_from_sixty_addresses_keep_memory_bounded() {
    let pg = Postgres::start();
    let (_env, server, addr) = admin_env(&pg).await;
    let pid = server.child.id().unwrap();
    let (_, before) = memory_kib(pid);
    // Two rounds of 60 sign-ins, each from its own address, unknown names and wrong passwords mixed:
    // before the fix each held ~19 MiB of Argon2 memory at once (1.1 GiB per round).
    for round in 0..2u8 {
        let answers = futures_join(60, |i| async move {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1 + round, 2 + i as u8));
            let mut api = Api::from_source(addr, source);
            let user = if i % 2 == 0 { ADMIN } else { "nobody" };
            let (status, headers, _) = api.sign_in(user, "wrong").await;
            (status, headers.contains_key("retry-after"))
        })
        .await;
        assert!(
            answers
                .iter()
                .all(|(s, retry)| *s == StatusCode::UNAUTHORIZED
                    || (*s == StatusCode::SERVICE_UNAVAILABLE && *retry)),
            "{answers:?}"
        );
    }
    let (peak, after) = memory_kib(pid);
    eprintln!("admin sign-in flood: RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    // One hash per core runs at a time: the peak stays far below one hash per request.
    assert!(
        peak < before + 200 * 1024,
        "peak {peak} KiB from {before} KiB"
    );
    // And the server still signs in an administrator afterwards.
    let mut api = Api::new(addr);
    assert_eq!(api.sign_in(ADMIN, ADMIN_PASSWORD).await.0, StatusCode::OK);
    let (status, _) = api.json(Method::GET, "/api/v1/session", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Runs `n` futures made by `make(i)` at once and returns their outputs in order.
async fn futures_join<F, Fut, T>(n: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_typed_unknown_or_missing_fields_are_a_400_naming_the_field_and_stage_nothing() {
    let pg = Postgres::start();
    let (_env, _server, addr) = admin_env(&pg).await;
    let mut api = Api::new(addr);
    assert_eq!(api.sign_in(ADMIN, ADMIN_PASSWORD).await.0, StatusCode::OK);
    let cases = [
        (
            "/api/v1/repository-ssl/enable",
            Some(json!({"internal_only": "true"})),
            "internal_only",
        ),
        (
            "/api/v1/repository-ssl/enable",
            Some(json!({"internal_only": 1})),
            "internal_only",
        ),
        (
            "/api/v1/repository-ssl/enable",
            Some(json!({"internal_only": null})),
            "internal_only",
        ),
        (
            "/api/v1/repository-ssl/enable",
            Some(json!({"internalOnly": true})),
            "internalOnly",
        ),
        ("/api/v1/repository-ssl/enable", None, "internal_only"),
        // serde would read a struct from an array of its fields: only an object is a request.
        (
            "/api/v1/repository-ssl/enable",
            Some(json!([true])),
            "expected a JSON object",
        ),
        (
            "/api/v1/regenerate-internal-tokens",
            Some(json!([1800])),
            "expected a JSON object",
        ),
        (
            "/api/v1/repository-ssl/disable",
            Some(json!({"force": true})),
            "force",
        ),
        (
            "/api/v1/vizql-extsvc-ssl/enable",
            Some(
                json!({"connection_type": "tabpy", "extsvc_host": "localhost", "extsvc_port": "1234", "skip_check": true}),
            ),
            "extsvc_port",
        ),
        (
            "/api/v1/vizql-extsvc-ssl/enable",
            Some(
                json!({"connection_type": "tabpy", "extsvc_host": "localhost", "connect_timeout_ms": 0}),
            ),
            "connect_timeout_ms",
        ),
        (
            "/api/v1/regenerate-internal-tokens",
            Some(json!({"request_timeout_secs": "1"})),
            "request_timeout_secs",
        ),
        (
            "/api/v1/regenerate-internal-tokens",
            Some(json!({"request_timeout_secs": -1})),
            "request_timeout_secs",
        ),
        (
            "/api/v1/regenerate-internal-tokens",
            Some(json!({"request_timeout_secs": 0})),
            "request_timeout_secs",
        ),
        (
            "/api/v1/data-access/enable",
            Some(json!({"repository_username": "tableau"})),
            "repository_password",
        ),
        (
            "/api/v1/data-access/enable",
            Some(json!({"repository_username": "postgres", "repository_password": "x"})),
            "repository_username",
        ),
        (
            "/api/v1/custom-cert/add",
            Some(json!({"cert_path": "/etc/passwd"})),
            "cert_path",
        ),
        (
            "/api/v1/external-ssl/enable",
            Some(json!({"cert_file": {"pem": "x"}})),
            "key_file",
        ),
    ];
    for (path, body, field) in cases {
        let message = api
            .refused(Method::POST, path, body.clone(), StatusCode::BAD_REQUEST)
            .await;
        assert!(message.contains(field), "{path} {body:?}: {message}");
        let (status, pending) = api.json(Method::GET, "/api/v1/pending-changes", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            pending["changes"],
            json!([]),
            "{path} {body:?} staged something"
        );
    }
    // The well-formed request still works.
    let (status, _) = api
        .json(
            Method::POST,
            "/api/v1/repository-ssl/enable",
            Some(json!({"internal_only": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, pending) = api.json(Method::GET, "/api/v1/pending-changes", None).await;
    assert!(
        pending["changes"].to_string().contains("optional"),
        "{pending}"
    );
}

/// Bodies derived from each operation's own request type: for every field of its example, the field
/// wrongly typed, and the field left out where the type requires it; and an unknown field. Each is a
/// 400 naming the field, and nothing is staged.
fn generated_bad_bodies() -> Vec<(&'static str, serde_json::Value, String)> {
    use pgssl::control::operations::model::{Operation, Verb, Visit, each_remote};
    struct Bodies(Vec<(&'static str, serde_json::Value, String)>);
    impl Visit for Bodies {
        fn operation<T: Operation>(&mut self) {
            if T::VERB != Verb::Post {
                return;
            }
            let example = serde_json::to_value(T::example()).unwrap();
            let fields = example.as_object().cloned().unwrap_or_default();
            let mut unknown = fields.clone();
            unknown.insert("no_such_field".into(), json!(true));
            self.0
                .push((T::PATH, unknown.into(), "no_such_field".into()));
            for (name, value) in &fields {
                let wrong = match value {
                    serde_json::Value::Bool(b) => json!(b.to_string()),
                    serde_json::Value::Number(n) => json!(n.to_string()),
                    serde_json::Value::String(_) => json!(12),
                    _ => json!("not an object"),
                };
                let mut body = fields.clone();
                body.insert(name.clone(), wrong);
                self.0.push((T::PATH, body.into(), name.clone()));
                let mut without = fields.clone();
                without.remove(name);
                let without = serde_json::Value::from(without);
                if serde_json::from_value::<T>(without.clone()).is_err() {
                    self.0.push((T::PATH, without, name.clone()));
                }
            }
        }
    }
    let mut bodies = Bodies(Vec::new());
    each_remote(&mut bodies);
    bodies.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operations_fields_are_checked_by_type_generated_from_the_request_types() {
    let pg = Postgres::start();
    let (_env, _server, addr) = admin_env(&pg).await;
    let mut api = Api::new(addr);
    assert_eq!(api.sign_in(ADMIN, ADMIN_PASSWORD).await.0, StatusCode::OK);
    let bodies = generated_bad_bodies();
    // Every change operation contributes; a body per field at least.
    assert!(bodies.len() > 40, "{}", bodies.len());
    for (path, body, field) in bodies {
        let message = api
            .refused(
                Method::POST,
                &format!("/api/v1{path}"),
                Some(body.clone()),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(
            message.contains(&format!("'{field}")) || message.contains(&format!("`{field}`")),
            "{path} {body}: {message}"
        );
    }
    let (_, pending) = api.json(Method::GET, "/api/v1/pending-changes", None).await;
    assert_eq!(pending["changes"], json!([]), "something was staged");
}

/// A TLS connection to the admin server from `source` that sends headers announcing a body, then
/// one byte of it every 200 ms; returns what the server answered (or nothing) once it closed.
async fn trickle(addr: std::net::SocketAddr, source: IpAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    let Ok(tcp) = socket.connect(addr).await else {
        return "refused".into();
    };
    let connector = pgssl::tls::client::connector_with_alpn(
        pgssl::tls::client::Verification::None,
        &[b"http/1.1"],
    )
    .unwrap();
    let Ok(mut tls) = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
    else {
        return "closed during the handshake".into();
    };
    let head = "POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    if tls.write_all(head.as_bytes()).await.is_err() {
        return "closed".into();
    }
    let mut answer = Vec::new();
    for _ in 0..1000 {
        if tls.write_all(b" ").await.is_err() || tls.flush().await.is_err() {
            break;
        }
        tokio::select! {
            read = tls.read_to_end(&mut answer) => { let _ = read; break; }
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_cut_off_and_others_are_served_meanwhile() {
    let pg = Postgres::start();
    let (_env, server, addr) = admin_env_with(&pg, "request_timeout = \"2s\"").await;
    // 130 connections trickling a body from one address: more than all 128 slots.
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let attack: Vec<_> = (0..130)
        .map(|_| tokio::spawn(trickle(addr, attacker)))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Meanwhile an administrator from another address signs in and reads a page.
    let started = std::time::Instant::now();
    let mut api = Api::new(addr);
    let signed_in = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        api.sign_in(ADMIN, ADMIN_PASSWORD),
    )
    .await
    .expect("an administrator is served during the attack");
    assert_eq!(signed_in.0, StatusCode::OK);
    let (status, _) = api.json(Method::GET, "/api/v1/repository-ssl", None).await;
    assert_eq!(status, StatusCode::OK);
    eprintln!(
        "sign-in during the slow-body attack took {:?}",
        started.elapsed()
    );
    assert!(
        attack.iter().filter(|t| !t.is_finished()).count() > 0,
        "the attack was still going on"
    );
    // Every trickling connection was closed by the server: 408 for those that got a slot, a close at
    // accept for the rest. None is left holding a slot.
    let mut timed_out = 0;
    for t in attack {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), t)
            .await
            .expect("the server closes slow connections")
            .unwrap();
        if answer.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert!((1..=16).contains(&timed_out), "{timed_out} got 408");
    drop(server);
}
