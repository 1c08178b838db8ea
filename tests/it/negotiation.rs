//! Raw-socket and Rust-client tests of the first-packet rules: GSSENC, cancel, limits, garbage,
//! pipelined bytes after SSLRequest, direct TLS, timeouts, the connection cap and a dead upstream.

use std::time::Duration;

use bytes::BytesMut;
use pgssl::proxy::policy::Mode;
use pgssl::proxy::repository::RepositoryAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{
    self, Session, connect_plain, connect_tls, direct_tls, params, raw_packet, read_error,
    sqlstate, startup_packet,
};
use crate::harness::{INTERNAL_USER, PASSWORD, Postgres, Proxy, wait_for, wait_until};

fn startup_bytes(user: &str, minor: u16) -> Vec<u8> {
    startup_packet(&[("user", user), ("database", "postgres")], minor)
}

/// Reads to EOF, bounded, and returns what arrived.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .ok();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_rejects_plaintext_internal_user_with_28000_before_reaching_the_repository() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    let err = connect_plain(proxy.addr, INTERNAL_USER).await.unwrap_err();
    let Some(e) = err.server() else {
        panic!("{err:?}")
    };
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "28000"));
    assert!(
        e.message
            .starts_with("SSL required for user \"internal_svc\""),
        "{}",
        e.message
    );
    // The repository never saw a login attempt from that user.
    let attempts = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'internal_svc'");
    assert_eq!(attempts, "0");

    let tls = connect_tls(proxy.addr, INTERNAL_USER, &proxy.cert_path())
        .await
        .unwrap();
    let info = tls.tls.as_ref().unwrap();
    assert_eq!(
        info.protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // The server's order decides: the client (aws-lc-rs's defaults, as OpenSSL's) offers AES-256
    // first, pgssl's default prefers AES-128 with SHA-256.
    assert_eq!(
        info.cipher_suite,
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_over_tls_runs_queries_and_tls12_works_too() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    let mut s = connect_tls(proxy.addr, "tableau", &proxy.cert_path())
        .await
        .unwrap();
    let rows = s.simple_query("SELECT current_user, 40 + 2").await.unwrap();
    assert_eq!(rows, vec![vec![Some("tableau".into()), Some("42".into())]]);
    s.terminate().await.unwrap();

    // A TLS 1.2-only client is served too.
    let (answer, tcp) = client::ssl_request(proxy.addr).await;
    assert_eq!(answer, b'S');
    let tls = client::connector_for_versions(&proxy.cert_path(), &[], &[&rustls::version::TLS12])
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut s = Session::start(tls, &params("tableau"), Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(
        s.simple_query("SELECT 1").await.unwrap(),
        vec![vec![Some("1".into())]]
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_answered_n_and_the_startup_continues() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Optional).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&raw_packet(80_877_104, &[])).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'N');
    // A second GSSENCRequest is a protocol violation.
    let mut again = TcpStream::connect(proxy.addr).await.unwrap();
    again.write_all(&raw_packet(80_877_104, &[])).await.unwrap();
    assert_eq!(again.read_u8().await.unwrap(), b'N');
    again.write_all(&raw_packet(80_877_104, &[])).await.unwrap();
    assert_eq!(read_error(&mut again).await.code, "08P01");

    // Then SSLRequest on the same connection, as libpq does after a refused GSSENC.
    tcp.write_all(&raw_packet(80_877_103, &[])).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let tls = client::connector(&proxy.cert_path(), &[])
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut s = Session::start(tls, &params(INTERNAL_USER), Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(
        s.simple_query("SELECT current_user").await.unwrap()[0][0].as_deref(),
        Some(INTERNAL_USER)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_over_plaintext_cancels_a_running_query_in_a_tls_session() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    let mut s = connect_tls(proxy.addr, INTERNAL_USER, &proxy.cert_path())
        .await
        .unwrap();
    let (pid, key) = s.backend_key.expect("BackendKeyData relayed");
    let query = tokio::spawn(async move { s.simple_query("SELECT pg_sleep(60)").await });
    // Wait until the backend is really running the sleep.
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND query LIKE '%pg_sleep%' AND state = 'active'"
    );
    wait_until("the query to start", Duration::from_secs(30), || async {
        pg.sql(&running) == "1"
    })
    .await;
    let mut cancel = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, key, &mut cancel);
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&cancel).await.unwrap();
    // The proxy answers nothing and closes.
    assert_eq!(read_to_close(&mut tcp).await, Vec::<u8>::new());
    let result = tokio::time::timeout(Duration::from_secs(20), query)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sqlstate(result), "57014");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_garbage_and_unknown_packets_get_fatal_errors() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Optional).await;
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "oversize",
            10_001u32
                .to_be_bytes()
                .iter()
                .copied()
                .chain([0, 3, 0, 0])
                .collect(),
            "08P01",
            "over the limit",
        ),
        ("too short", vec![0, 0, 0, 4], "08P01", "invalid length"),
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "08P01",
            "over the limit",
        ),
        (
            "protocol 2",
            raw_packet(2 << 16, b"user\0u\0\0"),
            "08P01",
            "unsupported frontend protocol 2.0",
        ),
        (
            "unknown request",
            raw_packet(1234 << 16 | 5555, b""),
            "08P01",
            "unknown request code",
        ),
        (
            "bad layout",
            raw_packet(3 << 16, b"user\0tableau"),
            "08P01",
            "invalid startup packet layout",
        ),
        (
            "no user",
            raw_packet(3 << 16, b"database\0postgres\0\0"),
            "28000",
            "no PostgreSQL user name",
        ),
        (
            "bad ssl request length",
            {
                let mut p = raw_packet(80_877_103, &[0, 0, 0, 0]);
                p[3] = 12;
                p
            },
            "08P01",
            "invalid length",
        ),
    ];
    for (name, bytes, code, message) in cases {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let err = read_error(&mut tcp).await;
        assert_eq!(err.code, code, "{name}: {err:?}");
        assert_eq!(err.severity, "FATAL", "{name}");
        assert!(err.message.contains(message), "{name}: {}", err.message);
    }
    // The proxy is still serving afterwards.
    connect_tls(proxy.addr, "tableau", &proxy.cert_path())
        .await
        .unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_after_ssl_request_close_the_connection_unprocessed() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Optional).await;
    let mut bytes = raw_packet(80_877_103, &[]);
    bytes.extend(startup_bytes("tableau", 0));
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    // 'S' may or may not be read before the proxy notices; nothing but 'S' may follow.
    let reply = read_to_close(&mut tcp).await;
    assert!(reply.is_empty() || reply == b"S", "{reply:?}");
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tableau'"),
        "0"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssl_request_inside_tls_is_refused() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    let (_, tcp) = client::ssl_request(proxy.addr).await;
    let mut tls = client::connector(&proxy.cert_path(), &[])
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(&raw_packet(80_877_103, &[])).await.unwrap();
    let err = read_error(&mut tls).await;
    assert_eq!(err.code, "08P01");
    assert!(err.message.contains("inside an encrypted connection"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    let cert = proxy.cert_path();

    let tls = direct_tls(proxy.addr, &cert, &[b"postgresql"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut s = Session::start(tls, &params(INTERNAL_USER), Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(
        s.simple_query("SELECT 7").await.unwrap(),
        vec![vec![Some("7".into())]]
    );

    // Without ALPN: a FATAL inside TLS, then close.
    let mut tls = direct_tls(proxy.addr, &cert, &[]).await.unwrap();
    let err = read_error(&mut tls).await;
    assert_eq!(err.code, "08P01");
    assert!(err.message.contains("ALPN"), "{}", err.message);

    // Another protocol: the handshake itself fails (no_application_protocol alert).
    assert!(direct_tls(proxy.addr, &cert, &[b"http/1.1"]).await.is_err());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_is_refused_and_ssl_request_answered_n_when_off() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Off).await;
    let (answer, _) = client::ssl_request(proxy.addr).await;
    assert_eq!(answer, b'N');
    // There is no certificate in off mode; any root will do, the handshake must not succeed.
    let other = tempfile::tempdir().unwrap();
    let paths = pgssl::control::state::CertPaths::in_dir(other.path());
    pgssl::tls::certs::generate(&paths, &["localhost".into()], 1).unwrap();
    assert!(
        direct_tls(proxy.addr, &paths.cert, &[b"postgresql"])
            .await
            .is_err()
    );
    // Plaintext still works for everyone.
    let mut s = connect_plain(proxy.addr, INTERNAL_USER).await.unwrap();
    assert_eq!(s.simple_query("SELECT 1").await.unwrap().len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_gets_57014_after_the_handshake_timeout() {
    let pg = Postgres::start();
    let proxy = Proxy::start_with(pg.upstream(), Mode::Required, |c| {
        c.server.handshake_timeout = Duration::from_secs(1)
    })
    .await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&[0, 0]).await.unwrap(); // half a length, then nothing
    let err = read_error(&mut tcp).await;
    assert_eq!(err.code, "57014");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_max_connections_get_53300_after_start_up() {
    let pg = Postgres::start();
    let proxy = Proxy::start_with(pg.upstream(), Mode::Required, |c| {
        c.server.max_connections = 1
    })
    .await;
    let mut held = connect_tls(proxy.addr, "tableau", &proxy.cert_path())
        .await
        .unwrap();
    // As PostgreSQL does: the start-up is read (inside TLS), then refused.
    let refused = connect_tls(proxy.addr, "tableau", &proxy.cert_path()).await;
    let Some(err) = refused.as_ref().err().and_then(|e| e.server()) else {
        panic!("expected 53300, got {refused:?}")
    };
    assert_eq!(err.code, "53300");
    assert!(err.message.contains("too many clients"));
    // The held session is unaffected, and the slot frees when it ends.
    assert_eq!(held.simple_query("SELECT 1").await.unwrap().len(), 1);
    held.terminate().await.unwrap();
    let cert = proxy.cert_path();
    wait_for("the slot to be freed", Duration::from_secs(30), || async {
        connect_tls(proxy.addr, "tableau", &cert)
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    })
    .await;
    proxy.stop().await;
}

/// Over `server.max_startups`, a new connection takes the place of the one negotiating longest, which
/// is answered 53300 (libpq reports it even in reply to SSLRequest) and closed: sockets that never
/// finish their start-up cannot keep clients out for the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_max_startups_takes_the_place_of_the_oldest_negotiating_one() {
    let pg = Postgres::start();
    let proxy = Proxy::start_with(pg.upstream(), Mode::Required, |c| {
        c.server.max_startups = 1;
        c.server.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    // A socket that never says anything holds the only place...
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    // Not a wait for a condition: it lets the accept loops (one per worker thread) admit the silent
    // socket before the next one, which nothing outside pgssl can see.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...until the next connection comes: it is served, and the silent one told 53300 at once, long
    // before its handshake timeout.
    let started = std::time::Instant::now();
    let (answer, tcp) = client::ssl_request(proxy.addr).await;
    assert_eq!(answer, b'S');
    let err = read_error(&mut silent).await;
    assert_eq!(err.code, "53300");
    assert!(err.message.contains("too many clients"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(5));
    let tls = client::connector(&proxy.cert_path(), &[])
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut s = Session::start(tls, &params("tableau"), Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(s.simple_query("SELECT 1").await.unwrap().len(), 1);
    // A half-sent start-up packet is the oldest next: a new client evicts it the same way.
    let mut half = TcpStream::connect(proxy.addr).await.unwrap();
    half.write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u'])
        .await
        .unwrap();
    // As above: admitted before the next one (not observable from outside).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (answer, tcp) = client::ssl_request(proxy.addr).await;
    assert_eq!(answer, b'S');
    assert_eq!(read_error(&mut half).await.code, "53300");
    drop(tcp);
    s.terminate().await.unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_gets_08006_without_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = RepositoryAddr::Unix {
        dir: dir.path().to_path_buf(),
        port: 5432,
    };
    let proxy = Proxy::start_with(upstream.clone(), Mode::Off, |_| {}).await;
    let err = connect_plain(proxy.addr, "tableau").await.unwrap_err();
    let Some(e) = err.server() else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, "08006");
    assert_eq!(
        e.message,
        "could not connect to the repository: the repository refused the connection"
    );
    assert!(!e.message.contains(&upstream.to_string()), "{}", e.message);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_upstream_and_protocol_3_2_startup_pass_through() {
    let pg = Postgres::start_with_tcp();
    let port = pg.tcp_port.unwrap();
    let upstream = RepositoryAddr::parse(&format!("127.0.0.1:{port}"), 5432).unwrap();
    let proxy = Proxy::start_with(upstream, Mode::Off, |_| {}).await;
    let mut s = connect_plain(proxy.addr, "readonly").await.unwrap();
    assert_eq!(
        s.simple_query("SELECT current_user").await.unwrap()[0][0].as_deref(),
        Some("readonly")
    );

    // PostgreSQL 15 answers a 3.2 start-up with NegotiateProtocolVersion ('v'): proof the packet reached
    // it unchanged rather than being refused by the proxy.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&startup_bytes("tableau", 2)).await.unwrap();
    let tag = tcp.read_u8().await.unwrap();
    assert!(
        tag == b'v' || tag == b'R',
        "unexpected first message {:?}",
        tag as char
    );
    proxy.stop().await;
}
