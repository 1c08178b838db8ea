use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::control::node::{NodeFuture, PoolSnapshot, RunningNode};
use crate::control::reload::{ReloadReport, ServeStatus};
use crate::proxy::policy::Mode;

/// A node that answers fixed reports, or refuses every reload.
#[derive(Debug)]
struct FakeNode {
    refuse_reload: bool,
}

fn status() -> ServeStatus {
    ServeStatus {
        listen: "127.0.0.1:6432".parse().unwrap(),
        upstream: "127.0.0.1:5432".into(),
        managed: false,
    }
}

impl RunningNode for FakeNode {
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>> {
        Box::pin(async { Ok(Some(status())) })
    }

    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>> {
        Box::pin(async {
            if self.refuse_reload {
                return Err(ControlError::Refused("the certificate is gone".into()));
            }
            Ok(Some(ReloadReport {
                mode: Mode::Required,
                cert_fingerprint: Some("AB:CD".into()),
            }))
        })
    }

    fn pool(&self) -> NodeFuture<'_, Option<PoolSnapshot>> {
        Box::pin(async {
            Ok(Some(PoolSnapshot {
                enabled: true,
                keys: Vec::new(),
                mode: Default::default(),
                rules: Vec::new(),
                waiting: 0,
            }))
        })
    }

    fn repository_hosts(
        &self,
    ) -> NodeFuture<'_, Option<Vec<crate::proxy::repository::hosts::HostStatus>>> {
        Box::pin(async { Ok(Some(Vec::new())) })
    }

    fn sessions(
        &self,
        selector: crate::proxy::sessions::Selector,
    ) -> NodeFuture<'_, Option<Vec<crate::proxy::sessions::SessionInfo>>> {
        // One session of the role asked for, so that the test sees the selector arrived.
        Box::pin(async move {
            let registered = crate::proxy::sessions::Sessions::for_test();
            let mut info = registered.info(|_| None);
            info.user = selector.user.unwrap_or_default();
            Ok(Some(vec![info]))
        })
    }

    fn terminate(
        &self,
        selector: crate::proxy::sessions::Selector,
        by: String,
    ) -> NodeFuture<'_, Option<Vec<u64>>> {
        // The id it was asked to end, when the administrator's name arrived.
        Box::pin(async move {
            Ok(Some(
                selector.id.filter(|_| by == "admin").into_iter().collect(),
            ))
        })
    }

    fn inventory(&self) -> NodeFuture<'_, Option<Vec<crate::proxy::inventory::Seen>>> {
        Box::pin(async { Ok(Some(Vec::new())) })
    }
}

/// What the server answers to `sent`, as the bytes of its answer line.
async fn answer_to(sent: &[u8]) -> String {
    let (mut peer, ours) = tokio::io::duplex(64 * 1024);
    let node = FakeNode {
        refuse_reload: false,
    };
    let serving = server::answer(ours, &node);
    let asking = async {
        peer.write_all(sent).await.unwrap();
        let mut line = String::new();
        BufReader::new(&mut peer)
            .read_line(&mut line)
            .await
            .unwrap();
        line
    };
    let ((), line) = tokio::join!(serving, asking);
    line
}

#[test]
fn requests_are_tagged_json_lines_and_nothing_else() {
    assert_eq!(ControlRequest::Reload.encode(), r#"{"request":"reload"}"#);
    let selector = crate::proxy::sessions::Selector {
        user: Some("tableau".into()),
        ..Default::default()
    };
    for request in [
        ControlRequest::Reload,
        ControlRequest::Status,
        ControlRequest::Pool,
        ControlRequest::Sessions(selector.clone()),
        ControlRequest::Terminate(Termination {
            selector,
            by: "admin".into(),
        }),
    ] {
        assert_eq!(
            ControlRequest::decode(&request.clone().encode()).unwrap(),
            request
        );
    }
    assert_eq!(
        ControlRequest::decode(r#" { "request" : "status" } "#).unwrap(),
        ControlRequest::Status
    );
    for garbage in [
        "",
        "reload",
        "{}",
        r#"{"request":"RELOAD"}"#,
        r#"{"request":"shutdown"}"#,
        r#"{"request":"reload","now":true}"#,
        r#"{"request":"reload"} {"request":"status"}"#,
        "{\"request\":\"re\u{0}load\"}",
        r#"["reload"]"#,
        r#"{"request":{"terminate":{"selector":{}}}}"#,
        r#"{"request":{"terminate":{"selector":{},"by":"a","now":1}}}"#,
    ] {
        assert!(ControlRequest::decode(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn replies_are_ok_or_error_and_anything_else_is_not_understood() {
    let report = ReloadReport {
        mode: Mode::Required,
        cert_fingerprint: None,
    };
    let line = ControlReply::of(Ok(report.clone())).encode();
    assert_eq!(
        line,
        r#"{"ok":{"mode":"required","cert_fingerprint":null}}"#
    );
    assert_eq!(decode_reply::<ReloadReport>(&line).unwrap(), report);
    let line = ControlReply::<ReloadReport>::of(Err(ControlError::Refused("bad\nkey".into())));
    assert!(matches!(
        decode_reply::<ReloadReport>(&line.encode()),
        Err(ControlError::Refused(m)) if m == "bad\nkey"
    ));
    let status_line = ControlReply::of(Ok(status())).encode();
    assert_eq!(decode_reply::<ServeStatus>(&status_line).unwrap(), status());
    for garbage in [
        "",
        "ok",
        "ok required AB:CD",
        "{",
        "{}",
        r#"{"ok":1}"#,
        r#"{"ok":{"mode":"sometimes"}}"#,
        r#"{"ok":null,"error":"x"}"#,
        r#"{"error":1}"#,
        "\u{0}",
    ] {
        assert!(
            matches!(
                decode_reply::<ReloadReport>(garbage),
                Err(ControlError::Unexpected(_))
            ),
            "{garbage:?}"
        );
    }
}

#[tokio::test]
async fn the_server_answers_each_request_with_its_report() {
    assert_eq!(
        answer_to(b"{\"request\":\"reload\"}\n").await,
        "{\"ok\":{\"mode\":\"required\",\"cert_fingerprint\":\"AB:CD\"}}\n"
    );
    assert_eq!(
        answer_to(b"{\"request\":\"pool\"}\r\n").await,
        "{\"ok\":{\"enabled\":true,\"keys\":[],\"mode\":\"session\",\"rules\":[],\"waiting\":0}}\n"
    );
    let line = answer_to(b"{\"request\":\"status\"}\n").await;
    assert_eq!(decode_reply::<ServeStatus>(&line).unwrap(), status());
    let line = answer_to(b"{\"request\":{\"sessions\":{\"user\":\"readonly\"}}}\n").await;
    let listed: Vec<crate::proxy::sessions::SessionInfo> = decode_reply(&line).unwrap();
    assert_eq!(listed[0].user, "readonly");
    assert_eq!(
        answer_to(b"{\"request\":{\"terminate\":{\"selector\":{\"id\":7},\"by\":\"admin\"}}}\n")
            .await,
        "{\"ok\":[7]}\n"
    );
}

#[tokio::test]
async fn the_server_refuses_garbage_unknown_and_over_long_requests() {
    let unknown = "{\"error\":\"unknown request (expected {\\\"request\\\": \\\"reload\\\"}, \\\"status\\\", \\\"pool\\\", \\\"hosts\\\", {\\\"sessions\\\": …}, {\\\"terminate\\\": …} or \\\"inventory\\\")\"}\n";
    assert_eq!(answer_to(b"reload\n").await, unknown);
    assert_eq!(answer_to(b"{\"request\":\"shutdown\"}\n").await, unknown);
    let not_utf8 = answer_to(b"\xff\xfe\n").await;
    assert!(
        not_utf8.starts_with("{\"error\":\"the request cannot be read: "),
        "{not_utf8}"
    );
    let mut long = vec![b' '; MAX_REQUEST_LINE + 1];
    long.extend_from_slice(b"{\"request\":\"status\"}\n");
    assert_eq!(
        answer_to(&long).await,
        format!("{{\"error\":\"the request is longer than {MAX_REQUEST_LINE} bytes\"}}\n")
    );
}

#[tokio::test]
async fn the_socket_node_asks_a_serving_node_and_finds_none_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("control.sock");
    let asking = SocketNode::new(path.clone());
    assert_eq!(asking.status().await.unwrap(), None);
    assert_eq!(asking.reload().await.unwrap(), None);

    for refuse_reload in [false, true] {
        let listener = bind(&path).unwrap();
        let stop = CancellationToken::new();
        let node: Arc<dyn RunningNode> = Arc::new(FakeNode { refuse_reload });
        let served = tokio::spawn(serve(listener, path.clone(), node, stop.clone()));
        assert!(matches!(bind(&path), Err(ControlError::AlreadyRunning(_))));
        assert_eq!(asking.status().await.unwrap(), Some(status()));
        assert_eq!(asking.pool().await.unwrap().map(|p| p.enabled), Some(true));
        let reloaded = asking.reload().await;
        if refuse_reload {
            let refused = reloaded.unwrap_err();
            assert_eq!(
                refused.to_string(),
                "the running server refused the change: the certificate is gone"
            );
        } else {
            assert_eq!(reloaded.unwrap().map(|r| r.mode), Some(Mode::Required));
        }
        stop.cancel();
        served.await.unwrap();
        assert!(!path.exists());
    }
}
