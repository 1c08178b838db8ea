//! The client's identity for the repository (`pgssl.*`, issue #31): a real PostgreSQL behind
//! pgssl, real clients in front (the Rust client from chosen loopback addresses, psql, psycopg,
//! pgjdbc). The tests read the values in the repository session with `current_setting`, check that
//! a warm or transaction-pooled backend handed to another client carries that client's values (the
//! backend's pid proves it is the same session), and that no way of writing them gets through: a
//! start-up parameter, `options`, SET, set_config, dynamic SQL in a DO block.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use pgssl::proxy::policy::Mode;
use tokio::io::AsyncWriteExt;

use crate::client::{Session, connect_tls_unverified_from, read_error, sqlstate, startup_packet};
use crate::harness::{PASSWORD, Postgres, Proxy, psql_run};
use crate::pool::Pooled;

/// The values, then the backend's pid; a value not set reads as empty.
const READ: &str = "SELECT current_setting('pgssl.client_addr', true), \
    current_setting('pgssl.tls_version', true), current_setting('pgssl.tls_cipher', true), \
    current_setting('pgssl.channel_binding', true), current_setting('pgssl.auth_method', true), \
    current_setting('pgssl.node', true), pg_backend_pid()::text";

async fn values(s: &mut Session) -> Vec<String> {
    let rows = s.simple_query(READ).await.unwrap();
    rows[0]
        .iter()
        .map(|c| c.clone().unwrap_or_default())
        .collect()
}

async fn from(ip: &str, addr: SocketAddr) -> Session {
    let ip: IpAddr = ip.parse().unwrap();
    connect_tls_unverified_from(Some(ip), addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap()
}

/// Every way a client could write `pgssl.*` in one statement.
const WRITES: [&str; 4] = [
    "SET pgssl.client_addr = '10.9.9.9'",
    "SELECT set_config('pgssl.client_addr', '10.9.9.9', false)",
    "DO $$BEGIN EXECUTE 'SET pgssl.client_addr = ''10.9.9.9'''; END$$",
    "ALTER ROLE tableau SET pgssl.client_addr = '10.9.9.9'",
];

/// A start-up naming `pgssl.*` is refused with 42501 before anything else: as a parameter (the
/// Rust client's raw packet), and in `options` (psql, through PGOPTIONS-style conninfo).
async fn startups_naming_pgssl_are_refused(addr: SocketAddr, conninfo: &str) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let packet = startup_packet(
        &[
            ("user", "tableau"),
            ("database", "postgres"),
            ("pgssl.client_addr", "10.9.9.9"),
        ],
        0,
    );
    tcp.write_all(&packet).await.unwrap();
    let err = read_error(&mut tcp).await;
    assert_eq!(err.code, "42501", "{err:?}");
    let run = psql_run(
        &format!("{conninfo} options='-c pgssl.client_addr=10.9.9.9'"),
        &["-c", "SELECT 1"],
        Some(PASSWORD),
    )
    .await;
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("pgssl.* settings are set by pgssl for the repository"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_gives_each_client_its_own_values_on_a_warm_session_and_ends_a_writer() {
    let p = Pooled::start("").await;
    let mut a = from("127.0.0.2", p.addr()).await;
    let va = values(&mut a).await;
    assert_eq!(
        va[..5],
        [
            "127.0.0.2",
            "TLSv1.3",
            "TLS13_AES_128_GCM_SHA256",
            "none",
            "scram-sha-256"
        ],
        "{va:?}"
    );
    assert!(!va[5].is_empty(), "the node's name: {va:?}");
    a.terminate().await.unwrap();
    p.wait_warm("tableau", 1).await;

    // The warm session goes to b, from another address: b's values, never a's.
    let mut b = from("127.0.0.3", p.addr()).await;
    let vb = values(&mut b).await;
    assert_eq!(vb[6], va[6], "the same repository session");
    assert_eq!(vb[0], "127.0.0.3");
    // b's RESET ALL brings back the session's start-up values, which are none: not a's.
    b.simple_query("RESET ALL").await.unwrap();
    assert_eq!(values(&mut b).await[0], "");

    // Every write ends the session (the relay does not read statements it could answer).
    for write in WRITES {
        let mut c = from("127.0.0.4", p.addr()).await;
        assert_eq!(sqlstate(c.simple_query(write).await), "42501", "{write}");
    }
    assert!(
        p.serve.log_text().contains("sets_pgssl"),
        "{}",
        p.serve.log_text()
    );
    // psql: SCRAM with channel binding, as libpq does over TLS.
    let seen = p.psql("", &[READ]).await;
    let cols: Vec<&str> = seen[0].split('|').collect();
    assert_eq!(
        cols[..5],
        [
            "127.0.0.1",
            "TLSv1.3",
            "TLS13_AES_128_GCM_SHA256",
            "tls-server-end-point",
            "scram-sha-256-plus"
        ],
        "{seen:?}"
    );
    startups_naming_pgssl_are_refused(p.addr(), &p.conninfo("")).await;
    // Nothing a client sent reached the role's settings.
    assert_eq!(
        p.pg.sql("SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%pgssl%'"),
        "0"
    );
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_sets_the_values_of_whichever_client_holds_the_one_backend() {
    let p = Pooled::start("mode = \"transaction\"\nmax_backends = 1").await;
    let mut a = from("127.0.0.2", p.addr()).await;
    let mut b = from("127.0.0.3", p.addr()).await;
    let va = values(&mut a).await;
    let vb = values(&mut b).await;
    assert_eq!((va[0].as_str(), vb[0].as_str()), ("127.0.0.2", "127.0.0.3"));
    assert_eq!(va[6], vb[6], "one backend for both");
    assert_eq!(values(&mut a).await[0], "127.0.0.2");

    // Each write is refused with an ERROR; the session goes on, its values intact.
    for write in WRITES {
        assert_eq!(sqlstate(a.simple_query(write).await), "42501", "{write}");
        assert_eq!(values(&mut a).await[0], "127.0.0.2", "{write}");
    }
    // RESET ALL and DISCARD ALL clear them; the client's next statement has them again.
    for reset in ["RESET ALL", "DISCARD ALL"] {
        a.simple_query(reset).await.unwrap();
        assert_eq!(values(&mut a).await[0], "127.0.0.2", "{reset}");
    }
    assert_eq!(values(&mut b).await[0], "127.0.0.3");

    // psycopg: the values, and SET refused as InsufficientPrivilege with the session alive.
    let script = "import sys, psycopg\n\
        c = psycopg.connect(sys.argv[1], autocommit=True)\n\
        try:\n    c.execute(\"SET pgssl.node = 'x'\")\n    print('not refused')\n\
        except psycopg.errors.InsufficientPrivilege:\n    print('refused')\n\
        print(c.execute(\"SELECT current_setting('pgssl.client_addr') || ' ' || current_setting('pgssl.auth_method')\").fetchone()[0])\n";
    let out = tokio::process::Command::new(crate::transaction_pool::python_with_psycopg())
        .args(["-c", script, &p.conninfo("")])
        .env("PGPASSWORD", PASSWORD)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["refused", "127.0.0.1 scram-sha-256-plus"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // pgjdbc over TLS.
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/postgres?user=tableau&password={PASSWORD}&sslmode=require\
         &sslfactory=org.postgresql.ssl.NonValidatingFactory",
        p.addr().port()
    );
    let jdbc = crate::mutual_ssl::jdbc(
        &url,
        "SELECT current_setting('pgssl.client_addr') || ' ' || current_setting('pgssl.tls_version')",
    )
    .await;
    assert_eq!(jdbc, "127.0.0.1 TLSv1.3");
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_session_has_its_values_from_its_start_up_and_ends_a_writer() {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    let mut a = from("127.0.0.5", proxy.addr).await;
    let va = values(&mut a).await;
    assert_eq!(
        [va[0].as_str(), va[1].as_str(), va[4].as_str()],
        ["127.0.0.5", "TLSv1.3", "passthrough"],
        "{va:?}"
    );
    // Its session is its own: RESET ALL brings back its own start-up values.
    a.simple_query("RESET ALL").await.unwrap();
    assert_eq!(values(&mut a).await[..5], va[..5]);
    for write in WRITES {
        let mut c = from("127.0.0.5", proxy.addr).await;
        assert_eq!(sqlstate(c.simple_query(write).await), "42501", "{write}");
    }
    proxy.stop().await;
}
