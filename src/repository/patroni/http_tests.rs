//! The client's HTTP behaviour against an in-process fake that replays answers the way Patroni's
//! Python server writes them (HTTP/1.0, no Content-Length, the body ends when the connection
//! closes), so that a failure here names the HTTP stage rather than Patroni.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

/// Answers each connection with `status` (e.g. `b"200 OK"`) and `body`, closing afterwards, and
/// sends the request it read (head and body) on the channel.
async fn fake(status: &'static [u8], body: Vec<u8>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = ["http://", &listener.local_addr().unwrap().to_string()].concat();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let request = read_request(&mut socket).await;
            let _ = tx.send(request);
            let answer = [
                &b"HTTP/1.0 "[..],
                status,
                b"\r\nServer: BaseHTTP/0.6 Python/3.11.2\r\nContent-Type: application/json\r\n\r\n",
                &body,
            ]
            .concat();
            let _ = socket.write_all(&answer).await;
            let _ = socket.shutdown().await;
        }
    });
    (url, rx)
}

/// Reads one request: the head, then as many body bytes as Content-Length says.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).to_string(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn json_body(request: &str) -> serde_json::Value {
    let (_, body) = request.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

fn client(urls: &[&str], credentials: bool) -> PatroniClient {
    PatroniClient::new(PatroniOptions {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: credentials.then(|| "patroni".to_string()),
        password: credentials.then(|| Secret::new("hunter2".into())),
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

/// A URL nothing listens on: a port bound, then released.
async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    ["http://", &addr.to_string()].concat()
}

#[tokio::test]
async fn a_close_delimited_http_1_0_answer_is_read_and_a_get_carries_no_credentials() {
    let body = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/patroni_json/patroni-3.0.2-primary.json"
    ));
    let (url, mut requests) = fake(b"200 OK", body.to_vec()).await;
    let member = client(&[&url], true).member(0).await.unwrap();
    assert_eq!(member.role, Role::Primary);
    let request = requests.recv().await.unwrap();
    assert!(
        request.starts_with("GET /patroni HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "{request}"
    );
}

#[tokio::test]
async fn a_switchover_posts_json_with_basic_auth_and_maps_each_status() {
    let (url, mut requests) =
        fake(b"200 OK", b"Successfully switched over to \"b\"".to_vec()).await;
    let outcome = client(&[&url], true).switchover("a", "b").await.unwrap();
    assert_eq!(
        outcome,
        SwitchoverOutcome::Done {
            message: "Successfully switched over to \"b\"".into()
        }
    );
    let request = requests.recv().await.unwrap();
    assert!(
        request.starts_with("POST /switchover HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains("authorization: Basic cGF0cm9uaTpodW50ZXIy\r\n"),
        "{request}"
    );
    assert!(
        request.contains("content-type: application/json\r\n"),
        "{request}"
    );
    assert_eq!(
        json_body(&request),
        serde_json::json!({"leader": "a", "candidate": "b"})
    );

    let (url, mut requests) = fake(b"202 Accepted", b"Switchover scheduled".to_vec()).await;
    let outcome = client(&[&url], false).switchover("a", "").await.unwrap();
    assert!(
        matches!(outcome, SwitchoverOutcome::Scheduled { .. }),
        "{outcome:?}"
    );
    let request = requests.recv().await.unwrap();
    assert_eq!(json_body(&request), serde_json::json!({"leader": "a"}));
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "{request}"
    );

    for (status, code) in [
        (&b"400 Bad Request"[..], 400),
        (b"401 Unauthorized", 401),
        (b"403 Forbidden", 403),
        (b"412 Precondition Failed", 412),
        (b"503 Service Unavailable", 503),
        (b"500 Internal Server Error", 500),
    ] {
        let (url, _requests) = fake(status, b"why".to_vec()).await;
        let err = client(&[&url], true)
            .switchover("a", "b")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(code), "{err:?}");
        assert!(err.to_string().contains("why"), "{err}");
    }
}

#[tokio::test]
async fn cluster_and_switchover_move_on_past_a_url_that_refuses_connections() {
    let body = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/patroni_json/cluster-3.0.2.json"
    ));
    let dead = refused_url().await;
    let (url, _requests) = fake(b"200 OK", body.to_vec()).await;
    let both = client(&[&dead, &url], false);
    assert_eq!(
        both.cluster().await.unwrap().leader().unwrap().name,
        "node0"
    );
    assert!(both.switchover("node0", "node1").await.is_ok());
    // Only the dead one: its own error, kind upstream.
    let err = client(&[&dead], false).member(0).await.unwrap_err();
    assert!(matches!(err, PatroniError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), crate::error::ErrorKind::Upstream);
    // Both dead: which URLs, and the last failure.
    let err = client(&[&dead, &dead], false).cluster().await.unwrap_err();
    assert!(
        matches!(err, PatroniError::NoneAnswered { tried: 2, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_an_oversized_body_and_silence_are_typed_errors() {
    let (url, _requests) = fake(b"200 OK", b"<html>not json</html>".to_vec()).await;
    let err = client(&[&url], false).member(0).await.unwrap_err();
    assert!(
        matches!(
            err,
            PatroniError::Malformed {
                endpoint: "/patroni",
                ..
            }
        ),
        "{err:?}"
    );

    let (url, _requests) = fake(b"200 OK", vec![b' '; BODY_LIMIT + 1]).await;
    let err = client(&[&url], false).member(0).await.unwrap_err();
    assert!(matches!(err, PatroniError::TooLarge { .. }), "{err:?}");

    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = ["http://", &listener.local_addr().unwrap().to_string()].concat();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = client(&[&url], false).member(0).await.unwrap_err();
    assert!(
        matches!(err, PatroniError::TimedOut { ms: 500, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

#[tokio::test]
async fn a_member_index_past_the_list_is_refused() {
    let err = client(&["http://127.0.0.1:8008"], false)
        .member(1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PatroniError::NoSuchUrl { index: 1, count: 1 }),
        "{err:?}"
    );
}
