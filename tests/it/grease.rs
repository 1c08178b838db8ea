//! Protocol version negotiation in proxy mode, where pgssl answers the start-up itself: as
//! PostgreSQL does, a start-up asking for a newer minor version than pgssl speaks (libpq 19's
//! "grease" check asks for 3.9999 with `_pq_.test_protocol_negotiation`) or naming unknown `_pq_.`
//! options gets NegotiateProtocolVersion first — the newest minor pgssl speaks (3.2) and the options
//! it does not know — then the authentication request; 3.0 and 3.2 get none. A grease login goes
//! all the way through with exactly one NegotiateProtocolVersion and a 3.2 cancel key.

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{ssl_request, startup_packet};
use crate::harness::PASSWORD;

/// One backend message: its type byte and body.
async fn next_message(tls: &mut TlsStream<TcpStream>, buf: &mut BytesMut) -> (u8, BytesMut) {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() > len {
                let kind = buf[0];
                let mut frame = buf.split_to(1 + len);
                frame.advance(5);
                return (kind, frame);
            }
        }
        assert!(tls.read_buf(buf).await.unwrap() > 0, "closed mid-message");
    }
}

/// A TLS connection to `addr` that has sent a start-up for protocol 3.`minor` with `extra` options.
async fn start_up(
    addr: std::net::SocketAddr,
    minor: u16,
    extra: &[(&str, &str)],
) -> TlsStream<TcpStream> {
    let (answer, tcp) = ssl_request(addr).await;
    assert_eq!(answer, b'S');
    let connector = pgssl::tls::client::require_mode_connector().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut params = vec![("user", "tableau"), ("database", "repository")];
    params.extend_from_slice(extra);
    tls.write_all(&startup_packet(&params, minor))
        .await
        .unwrap();
    tls
}

/// NegotiateProtocolVersion's body: the newest minor version and the options not recognized.
fn negotiated(body: &[u8]) -> (u32, Vec<String>) {
    let mut b = body;
    let newest = b.get_u32();
    let count = b.get_u32();
    let names = b
        .split(|c| *c == 0)
        .take(count as usize)
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect();
    (newest, names)
}

/// A start-up's minor version and options, and the negotiation it should get.
type Case<'a> = (u16, &'a [(&'a str, &'a str)], Option<(u32, Vec<&'a str>)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_versions_and_unknown_options_are_negotiated_before_authentication() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.stage_direct_user("tableau", PASSWORD).await);
    ok(&env.run(&["pending-changes", "apply"]));
    let grease = ("_pq_.test_protocol_negotiation", "");
    let unknown = ("_pq_.unknown_option", "x");
    // (minor asked for, options, the NegotiateProtocolVersion expected: newest minor, options named)
    let cases: [Case; 5] = [
        (0, &[], None),
        (2, &[], None),
        (9999, &[grease], Some((2, vec![grease.0]))),
        (9999, &[], Some((2, vec![]))),
        (0, &[unknown, grease], Some((0, vec![unknown.0, grease.0]))),
    ];
    for (minor, extra, expected) in cases {
        let mut tls = start_up(serve.addr, minor, extra).await;
        let mut buf = BytesMut::new();
        let (kind, body) = next_message(&mut tls, &mut buf).await;
        let first = match &expected {
            Some((newest, names)) => {
                assert_eq!(kind, b'v', "3.{minor} {extra:?}");
                let (got_newest, got_names) = negotiated(&body);
                assert_eq!(
                    (got_newest, got_names),
                    (*newest, names.iter().map(|n| n.to_string()).collect())
                );
                next_message(&mut tls, &mut buf).await.0
            }
            None => kind,
        };
        // Then the authentication request (SASL).
        assert_eq!(first, b'R', "3.{minor} {extra:?}");
    }

    // A grease login all the way: one NegotiateProtocolVersion, a 3.2 cancel key, a query.
    let mut tls = start_up(serve.addr, 9999, &[grease]).await;
    let mut buf = BytesMut::new();
    let mut scram = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    let mut seen_v = 0;
    let mut key_len = None;
    loop {
        let (kind, body) = next_message(&mut tls, &mut buf).await;
        let mut out = BytesMut::new();
        match kind {
            b'v' => seen_v += 1,
            b'R' => match u32::from_be_bytes([body[0], body[1], body[2], body[3]]) {
                10 => {
                    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)
                        .unwrap();
                }
                11 => {
                    scram.update(&body[4..]).unwrap();
                    frontend::sasl_response(scram.message(), &mut out).unwrap();
                }
                12 => scram.finish(&body[4..]).unwrap(),
                0 => {}
                other => panic!("unexpected authentication request {other}"),
            },
            b'K' => key_len = Some(body.len()),
            b'S' => {}
            b'Z' => break,
            b'E' => panic!("login refused: {:?}", String::from_utf8_lossy(&body)),
            other => panic!("unexpected message {:?}", other as char),
        }
        if !out.is_empty() {
            tls.write_all(&out).await.unwrap();
        }
    }
    assert_eq!(seen_v, 1, "exactly one NegotiateProtocolVersion");
    assert_eq!(key_len, Some(4 + 32), "a protocol 3.2 cancel key");
    let mut out = BytesMut::new();
    frontend::query("SELECT current_user", &mut out).unwrap();
    tls.write_all(&out).await.unwrap();
    let mut rows = Vec::new();
    loop {
        let (kind, body) = next_message(&mut tls, &mut buf).await;
        match kind {
            // One column, its length then its bytes.
            b'D' => rows.push(String::from_utf8_lossy(&body[6..]).to_string()),
            b'Z' => break,
            b'E' => panic!("query failed: {:?}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    assert_eq!(rows, ["tableau"]);
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    tls.write_all(&out).await.unwrap();
    drop(tls);
    serve.stop().await;
}
