//! PROXY protocol v2 (`server.proxy_protocol_from`): behind a load balancer pgssl logs the client's
//! own address from the header; the header is required from the trusted network and worth nothing
//! from anywhere else.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::cli::{CliEnv, ServeProcess};
use crate::harness::{Postgres, prepare_data_dir, wait_until};

/// A v2 PROXY header for a TCP/IPv4 client at `source`.
fn header(source: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = source else {
        panic!("an IPv4 source")
    };
    let mut h = pgssl::proxy::protocol::proxy_header::SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&v4.ip().octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&v4.port().to_be_bytes());
    h.extend_from_slice(&8060u16.to_be_bytes());
    h
}

fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// Connects from `from` to pgssl, sends `bytes`, and returns the first byte of the answer (None:
/// closed without one).
async fn exchange(from: &str, to: SocketAddr, bytes: &[u8]) -> Option<u8> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut tcp: TcpStream = socket.connect(to).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut first)).await {
        Ok(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_comes_from_the_header_only_from_the_trusted_network() {
    let pg = Postgres::start_with_tcp();
    let upstream = format!("127.0.0.1:{}", pg.port());
    let env = CliEnv::new(&upstream);
    let mut config = std::fs::read_to_string(env.config()).unwrap();
    config = config.replace(
        "[server]\n",
        "[server]\nproxy_protocol_from = [\"127.0.0.1/32\"]\n",
    );
    std::fs::write(env.config(), config).unwrap();
    prepare_data_dir(&env.data_dir(), pgssl::proxy::policy::Mode::Off);
    let serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
    let addr = serve.addr;

    // From the balancer (127.0.0.1): the header names the client; the repository's password request
    // shows the start-up went through.
    let mut bytes = header("203.0.113.7:4242".parse().unwrap());
    bytes.extend_from_slice(&startup("tableau"));
    assert_eq!(exchange("127.0.0.1", addr, &bytes).await, Some(b'R'));
    serve.wait_for_log("peer=203.0.113.7:4242", 1).await;

    // From the balancer without a header: refused, nothing reaches the repository.
    assert_eq!(exchange("127.0.0.1", addr, &startup("tableau")).await, None);
    serve
        .wait_for_log("outcome=\"proxy_header_invalid\"", 1)
        .await;

    // From elsewhere (127.0.0.2) a header is just bytes: the start-up parser refuses them, and the
    // forged address appears nowhere.
    let forged_before = serve.log_text().matches("203.0.113.7").count();
    let answer = exchange("127.0.0.2", addr, &bytes).await;
    assert_ne!(answer, Some(b'R'), "a forged header is not honoured");
    // Once pgssl has logged that connection's outcome it is done with it.
    wait_until(
        "the outcome of the connection from 127.0.0.2 in the log",
        Duration::from_secs(30),
        || async {
            serve
                .log_text()
                .lines()
                .any(|l| l.contains("peer=127.0.0.2:") && l.contains("outcome="))
        },
    )
    .await;
    assert_eq!(
        serve.log_text().matches("203.0.113.7").count(),
        forged_before
    );
    serve.stop().await;
}
