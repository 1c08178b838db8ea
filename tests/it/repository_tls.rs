//! `repository.tls` against a real PostgreSQL with `ssl = on` and a certificate from a test CA:
//! each libpq mode, proven from the server's side with `pg_stat_ssl`, and each failure reaching the
//! client as a clear FATAL that names the kind of failure but not the repository's address (the
//! detail is in the operator's log: `hardening::a_dead_or_refusing_repository_is_named_in_the_log_only`).

use std::path::Path;
use std::time::Duration;

use pgssl::config::Config;
use pgssl::control::state::StateStore;
use pgssl::control::state::custom_ca;
use pgssl::control::state::security::CustomCa;
use pgssl::proxy::policy::Mode;
use pgssl::proxy::repository::RepositoryAddr;
use pgssl::proxy::repository::tls::RepositoryTlsMode;
use time::OffsetDateTime;

use crate::client::{connect_plain, connect_tls_unverified};
use crate::harness::{PASSWORD, Postgres, Proxy, prepare_data_dir, psql, psql_commands};
use crate::pki::TestPki;

/// pgssl (SSL off towards clients) in front of `host:port`, with `mode` and optionally a custom CA.
async fn proxy(
    pg: &Postgres,
    host: &str,
    mode: RepositoryTlsMode,
    custom: Option<&Path>,
) -> Result<Proxy, pgssl::app::node::ServerError> {
    let data_dir = tempfile::Builder::new()
        .prefix("pgssl-data")
        .tempdir()
        .unwrap();
    prepare_data_dir(data_dir.path(), Mode::Off);
    if let Some(file) = custom {
        let store = StateStore::open(data_dir.path()).unwrap();
        let ca = custom_ca::read(file, OffsetDateTime::now_utc()).unwrap();
        custom_ca::store(&ca, &store.custom_ca_path("test")).unwrap();
        let mut state = store.applied().unwrap();
        state.custom_ca = Some(CustomCa {
            id: "test".into(),
            cert_file_name: "ca.pem".into(),
        });
        store.promote(&state).unwrap();
    }
    let mut config = Config::default();
    config.server.shutdown_grace = Duration::from_secs(2);
    config.server.connect_timeout = Duration::from_secs(5);
    config.repository.tls = mode;
    let upstream = RepositoryAddr::Tcp(format!("{host}:{}", pg.port()));
    Proxy::start_in(data_dir, upstream, config).await
}

/// PostgreSQL with `ssl = on` (a certificate from a test CA named `name`) and pgssl in front of it,
/// TLS required of clients and `repository_tls = "require"` towards it.
async fn both_legs_on_tls(name: &str) -> (tempfile::TempDir, Postgres, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), name);
    let leaf = pki.server_from_root("pg", &["localhost"], 30);
    let pg = Postgres::start_with_tls(&leaf.cert_pem, &leaf.key_pem);
    let data_dir = tempfile::tempdir().unwrap();
    prepare_data_dir(data_dir.path(), Mode::Required);
    let mut config = Config::default();
    config.server.shutdown_grace = Duration::from_secs(2);
    config.repository.tls = RepositoryTlsMode::Require;
    let upstream = RepositoryAddr::Tcp(format!("localhost:{}", pg.port()));
    let p = Proxy::start_in(data_dir, upstream, config).await.unwrap();
    (dir, pg, p)
}

/// `pg_stat_ssl` of the session pgssl opened: (ssl, version).
async fn upstream_ssl(proxy: &Proxy) -> Result<(String, String), String> {
    let mut session = connect_plain(proxy.addr, "tableau")
        .await
        .map_err(|e| e.to_string())?;
    let rows = session
        .simple_query(
            "SELECT ssl::text, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        rows[0][0].clone().unwrap_or_default(),
        rows[0][1].clone().unwrap_or_default(),
    ))
}

/// One session through a fresh pgssl with these settings: the repository's view of its TLS, or the
/// error the client got.
async fn through(
    pg: &Postgres,
    host: &str,
    mode: RepositoryTlsMode,
    custom: Option<&Path>,
) -> Result<(String, String), String> {
    let p = proxy(pg, host, mode, custom).await.unwrap();
    let seen = upstream_ssl(&p).await;
    p.stop().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_behaves_as_libpq_against_a_real_ssl_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "Repo");
    // The repository's certificate names only "localhost", and PostgreSQL serves the chain.
    let leaf = pki.server("pg", &["localhost"], 30);
    let intermediate = std::fs::read_to_string(&pki.intermediate).unwrap();
    let pg = Postgres::start_with_tls(&(leaf.cert_pem.clone() + &intermediate), &leaf.key_pem);
    let other = TestPki::new(dir.path(), "Elsewhere");
    let (root, stranger) = (Some(pki.root.as_path()), Some(other.root.as_path()));
    use RepositoryTlsMode::{Disable, Require, VerifyCa, VerifyFull};

    // disable: plaintext on the second leg; require: encrypted, any certificate.
    assert_eq!(
        through(&pg, "127.0.0.1", Disable, None).await.unwrap().0,
        "false"
    );
    let (ssl, version) = through(&pg, "127.0.0.1", Require, None).await.unwrap();
    assert_eq!((ssl.as_str(), version.as_str()), ("true", "TLSv1.3"));

    // verify-ca: the chain is checked against the custom CA, not the name (127.0.0.1 is not in it).
    assert_eq!(
        through(&pg, "127.0.0.1", VerifyCa, root).await.unwrap().0,
        "true"
    );
    let err = through(&pg, "127.0.0.1", VerifyCa, stranger)
        .await
        .unwrap_err();
    assert!(
        err.contains("08006")
            && err
                .contains("TLS handshake with the repository failed (repository.tls = verify-ca)"),
        "{err}"
    );
    assert!(!err.contains("127.0.0.1"), "{err}");
    // libpq's rule: require with a root certificate verifies the chain.
    assert!(through(&pg, "127.0.0.1", Require, stranger).await.is_err());

    // verify-full: the chain and the host name.
    assert_eq!(
        through(&pg, "localhost", VerifyFull, root).await.unwrap().0,
        "true"
    );
    let err = through(&pg, "127.0.0.1", VerifyFull, root)
        .await
        .unwrap_err();
    assert!(err.contains("FATAL") && err.contains("08006"), "{err}");
    assert!(
        err.contains("TLS handshake with the repository failed (repository.tls = verify-full)"),
        "{err}"
    );
    assert!(!err.contains("127.0.0.1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_ssl_a_unix_socket_and_tls_on_both_legs() {
    // PostgreSQL with ssl = off answers 'N': every mode but disable refuses, with the fix in words.
    let plain = Postgres::start_with_tcp();
    let p = proxy(&plain, "127.0.0.1", RepositoryTlsMode::Require, None)
        .await
        .unwrap();
    let err = upstream_ssl(&p).await.unwrap_err();
    assert!(
        err.contains("does not support SSL") && err.contains("ssl = on"),
        "{err}"
    );
    p.stop().await;

    // TLS to a Unix socket is a configuration error at start-up.
    let data_dir = tempfile::tempdir().unwrap();
    prepare_data_dir(data_dir.path(), Mode::Off);
    let mut config = Config::default();
    config.repository.tls = RepositoryTlsMode::Require;
    let err = Proxy::start_in(data_dir, plain.upstream(), config)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("needs a TCP repository address"),
        "{err}"
    );

    // Both legs encrypted: the client's TLS ends at pgssl, pgssl's own TLS reaches the repository.
    let (_dir, _pg, p) = both_legs_on_tls("Both").await;
    let mut session = connect_tls_unverified(p.addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let rows = session
        .simple_query("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("true"));
    // A big result crosses both TLS legs intact.
    let rows = session
        .simple_query("SELECT string_agg(md5(i::text), '') FROM generate_series(1, 20000) i")
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_ref().map(String::len), Some(32 * 20000));
    session.terminate().await.unwrap();
    p.stop().await;
}

/// Both legs on TLS: the repository offers SCRAM-SHA-256-PLUS, whose binding to the repository's
/// certificate no client behind pgssl can satisfy. pgssl takes PLUS out of the offer, so
/// `channel_binding=require` gets libpq's own clear refusal instead of a failed binding check, and a
/// client that does not ask for binding logs in over both legs. (libpq's default, `prefer`, still
/// fails here: seeing no PLUS over TLS it sends the `y` flag, which the repository refuses as a
/// downgrade. Only pgssl terminating SCRAM itself, with its own binding on each leg, can serve it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_two_tls_legs_the_plus_offer_is_withheld_and_channel_binding_require_is_refused_by_libpq()
 {
    let (_dir, _pg, p) = both_legs_on_tls("Bind").await;
    let conninfo = |extra: &str| {
        format!(
            "host=127.0.0.1 port={} user=tableau dbname=postgres sslmode=require {extra}",
            p.addr.port()
        )
    };
    let run = psql_commands(
        &conninfo("channel_binding=disable"),
        &[
            "SELECT current_user",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "tableau\nt\n");
    let run = psql(&conninfo("channel_binding=require")).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("channel binding is required")
            && !run.stderr.contains("channel binding check failed"),
        "{}",
        run.stderr
    );
    p.stop().await;
}
