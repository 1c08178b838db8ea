//! Regression tests for the defects an outside probe found (issue #10): each failed before its fix.
//! Data-plane items here; the admin server's are in `admin_abuse`.

use std::time::Duration;

use pgssl::proxy::policy::Mode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{ClientError, Rows, ServerError, Session, ssl_request};
use crate::harness::{INTERNAL_USER, PASSWORD, Postgres, Proxy, wait_for};

/// Start-up as `params` over plaintext, or over TLS when `tls`.
async fn start_up(proxy: &Proxy, params: &[(&str, &str)], tls: bool) -> Result<Rows, ClientError> {
    let sql = "SELECT current_user, current_setting('application_name'), \
               (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())::text";
    if tls {
        let (answer, tcp) = ssl_request(proxy.addr).await;
        assert_eq!(answer, b'S');
        let tls = pgssl::tls::client::require_mode_connector()
            .unwrap()
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await?;
        let mut s = Session::start(tls, params, Some(PASSWORD)).await?;
        s.simple_query(sql).await
    } else {
        let tcp = TcpStream::connect(proxy.addr).await?;
        let mut s = Session::start(tcp, params, Some(PASSWORD)).await?;
        s.simple_query(sql).await
    }
}

fn server_error(result: Result<Rows, ClientError>) -> (String, String) {
    match result.as_ref().map_err(ClientError::server) {
        Err(Some(e)) => (e.code, e.message),
        _ => panic!("expected a FATAL from the proxy, got {result:?}"),
    }
}

/// A start-up with `params` sent as they are, repeats included (which no real client sends: raw
/// bytes), over plaintext or TLS; the error the proxy answers.
async fn refused_start_up(proxy: &Proxy, params: &[(&str, &str)], tls: bool) -> ServerError {
    let packet = crate::client::startup_packet(params, 0);
    if tls {
        let (answer, tcp) = ssl_request(proxy.addr).await;
        assert_eq!(answer, b'S');
        let mut tls = pgssl::tls::client::require_mode_connector()
            .unwrap()
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        tls.write_all(&packet).await.unwrap();
        crate::client::read_error(&mut tls).await
    } else {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&packet).await.unwrap();
        crate::client::read_error(&mut tcp).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_startup_parameter_is_refused_with_08p01_in_every_mode() {
    let pg = Postgres::start();
    for mode in [Mode::Off, Mode::Optional, Mode::Required] {
        let proxy = Proxy::start(&pg, mode).await;
        let cases: [&[(&str, &str)]; 3] = [
            // The probe's bypass: classified by the first, logged in as the last.
            &[
                ("user", "tableau"),
                ("user", "postgres"),
                ("database", "postgres"),
            ],
            &[
                ("user", INTERNAL_USER),
                ("user", "tableau"),
                ("database", "postgres"),
            ],
            &[
                ("user", "tableau"),
                ("database", "postgres"),
                ("database", "template1"),
            ],
        ];
        for params in cases {
            for tls in [false, true] {
                if tls && !mode.offers_tls() {
                    continue;
                }
                let ServerError { code, message, .. } = refused_start_up(&proxy, params, tls).await;
                assert_eq!(code, "08P01", "{mode} tls={tls} {params:?}: {message}");
                assert!(message.contains("repeats parameter"), "{message}");
            }
        }
        proxy.stop().await;
    }
    // None of those start-ups reached the repository as the superuser or anyone else.
    let seen = pg.sql(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    );
    assert_eq!(seen, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_reach_the_repository_as_sent_and_the_policy_judges_the_one_user() {
    let pg = Postgres::start();
    let options = "-c application_name=probe -c search_path=public";
    let with_options = |user: &'static str| {
        [
            ("user", user),
            ("database", "postgres"),
            ("options", options),
        ]
    };
    // pgssl's leg to this repository is a Unix socket: pg_stat_ssl says false whatever the client used.
    let expect = |user: &str| {
        vec![vec![
            Some(user.to_string()),
            Some("probe".into()),
            Some("false".into()),
        ]]
    };
    for mode in [Mode::Off, Mode::Optional, Mode::Required] {
        let proxy = Proxy::start(&pg, mode).await;
        // Plaintext: client users in off and optional, internal users only in off — whatever the
        // options say. Refusals are the policy's 28000.
        for user in ["tableau", INTERNAL_USER] {
            let allowed = mode == Mode::Off || (mode == Mode::Optional && user == "tableau");
            let got = start_up(&proxy, &with_options(user), false).await;
            if allowed {
                assert_eq!(got.unwrap(), expect(user), "{mode} {user}");
            } else {
                assert_eq!(server_error(got).0, "28000", "{mode} {user}");
            }
            if mode.offers_tls() {
                let got = start_up(&proxy, &with_options(user), true).await.unwrap();
                assert_eq!(got, expect(user), "{mode} {user} over TLS");
            }
        }
        // Options cannot make a client user someone else: the repository itself refuses the switch.
        let switch = [
            ("user", "tableau"),
            ("database", "postgres"),
            ("options", "-c session_authorization=postgres"),
        ];
        let (code, _) = server_error(start_up(&proxy, &switch, mode.offers_tls()).await);
        assert_eq!(code, "42501", "{mode}");
        proxy.stop().await;
    }
}

/// Sends a start-up for `user` and waits for the proxy to answer anything.
async fn raw_startup(addr: std::net::SocketAddr, user: &str) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", user), ("database", "postgres")],
        &mut buf,
    )
    .unwrap();
    tcp.write_all(&buf).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_names_cannot_forge_log_lines_or_reach_the_terminal_raw() {
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::new(&format!("127.0.0.1:{}", pg.tcp_port.unwrap()));
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let serve = ServeProcess::start(&env, &[]).await;
    let forged = "evil\n2026-12-01T00:00:00Z  INFO session ended user=postgres outcome=\"closed\"";
    raw_startup(serve.addr, forged).await;
    raw_startup(serve.addr, "esc\u{1b}[2J\u{1b}]0;pwned\u{7}").await;
    let long = "x".repeat(5000);
    raw_startup(serve.addr, &long).await;
    serve.wait_for_log("SSL policy refused", 3).await;
    let log = serve.log_text();
    // Nothing but the server's own lines start with a timestamp: the forged one stays inside its field.
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")),
        "{log}"
    );
    assert!(
        log.contains(r#"user="evil\n2026-12-01T00:00:00Z  INFO"#),
        "{log}"
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log}");
    assert!(
        log.contains(r"user=esc\u{1b}[2J\u{1b}]0;pwned\u{7}"),
        "{log}"
    );
    assert!(
        !log.contains(&long) && log.contains("…(+4872 bytes)"),
        "{log}"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_tls_renegotiation_is_logged_at_info_not_warn() {
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::new(&format!("127.0.0.1:{}", pg.tcp_port.unwrap()));
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let serve = ServeProcess::start(&env, &[]).await;
    // OpenSSL's client speaks PostgreSQL's SSLRequest itself; `R` on its input asks to renegotiate,
    // which TLS 1.2 allows a client to try and rustls refuses with a warning alert.
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-tls1_2", "-connect"])
        .arg(serve.addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl command (Debian package openssl)");
    let mut stdin = child.stdin.take().unwrap();
    // It reads its input once the handshake is done, which it reports on its output.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = printed.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut stdout, &mut buf).await {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_for(
        "openssl s_client to finish its handshake",
        Duration::from_secs(30),
        || async {
            let text = printed.lock().unwrap().clone();
            if text.contains("SSL handshake has read") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    stdin.write_all(b"R\n").await.unwrap();
    serve.wait_for_log("NoRenegotiation", 1).await;
    drop(stdin);
    let _ = child.kill().await;
    let log = serve.log_text();
    let line = log.lines().find(|l| l.contains("NoRenegotiation")).unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        !log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("rustls")),
        "{log}"
    );
    drop(serve);
}

async fn run(env: &CliEnv, args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(env.command(args))
        .output()
        .await
        .unwrap()
}

/// The certificate and keystore files of a data directory, byte for byte.
fn security_files(env: &CliEnv) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![env.data_dir().join("config")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_credentials_name_the_running_port_and_a_refused_rotation_changes_nothing() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    ok(&run(&env, &["security", "repository-ssl", "enable"]).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    // `serve --listen 127.0.0.1:0` listens elsewhere than the configured 8060: the string says so.
    let out = run(&env, &["internal-credentials"]).await;
    let line = ok(&out);
    assert!(
        line.contains(&format!("port={} ", serve.addr.port())),
        "{line}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("where the running 'pgssl serve' listens"),
        "{out:?}"
    );
    let run_psql = crate::harness::psql_commands(line.trim(), &["SELECT current_user"]).await;
    assert_eq!(run_psql.stdout.trim(), "pgssl_internal", "{run_psql:?}");
    drop(serve);

    // Without a running server: the configured address, said to be that.
    let out = run(&env, &["internal-credentials"]).await;
    assert!(ok(&out).contains("port=8060 "));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no 'pgssl serve' is running"),
        "{out:?}"
    );
    // A rotation that cannot reach the managed repository is refused before it touches anything.
    let before = security_files(&env);
    let err = crate::cli::failed(&run(&env, &["security", "regenerate-internal-tokens"]).await);
    assert!(
        err.contains("start it, then run this command again")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        security_files(&env),
        before,
        "a refused rotation changed files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_front_of_an_external_repository_rotates_what_pgssl_owns_and_serves_it() {
    // The probe's set-up: no repository address in the config, `serve --upstream` on the command line.
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::managed();
    let upstream = format!("127.0.0.1:{}", pg.tcp_port.unwrap());
    let serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
    ok(&run(&env, &["security", "repository-ssl", "enable"]).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    let before = connect_tls_unverified_fingerprint(serve.addr).await;

    let out = ok(&run(&env, &["security", "regenerate-internal-tokens"]).await);
    assert!(
        out.contains(&format!("The repository {upstream} is external")),
        "{out}"
    );
    assert!(
        out.contains("[2/4] internal role passwords: skipped (external repository)"),
        "{out}"
    );
    // What is served, what `list` shows and what `get-certificate-file` writes are one certificate,
    // and a new one.
    let served = connect_tls_unverified_fingerprint(serve.addr).await;
    assert_ne!(served, before);
    let listed = ok(&run(&env, &["security", "repository-ssl", "list"]).await);
    assert!(listed.contains(&served), "{listed} vs {served}");
    let file = env.dir.path().join("exported.crt");
    ok(&run(
        &env,
        &[
            "security",
            "repository-ssl",
            "get-certificate-file",
            "-f",
            file.to_str().unwrap(),
        ],
    )
    .await);
    let exported = pgssl::tls::certs::read_chain(&file).unwrap();
    assert_eq!(pgssl::tls::certs::sha256_fingerprint(&exported[0]), served);
    // The repository's roles were not touched: tableau still logs in with its password.
    let mut s = crate::client::connect_tls_unverified(serve.addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    assert_eq!(s.simple_query("SELECT 1").await.unwrap().len(), 1);
    drop(serve);
}

async fn connect_tls_unverified_fingerprint(addr: std::net::SocketAddr) -> String {
    let s = crate::client::connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    crate::client::peer_fingerprint(&s)
}

/// Connects, sends a plaintext start-up for tableau, and returns the SQLSTATE of the error answered,
/// or what went wrong instead.
async fn start_up_expecting_error(addr: std::net::SocketAddr) -> String {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return "connect failed".into();
    };
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "tableau"), ("database", "postgres")],
        &mut buf,
    )
    .unwrap();
    // The refusal may already be on its way: a failed write is not the end of the story.
    let _ = tcp.write_all(&buf).await;
    let mut got = bytes::BytesMut::new();
    loop {
        match postgres_protocol::message::backend::Message::parse(&mut got) {
            Ok(Some(postgres_protocol::message::backend::Message::ErrorResponse(body))) => {
                return crate::client::ServerError::from_response(&body)
                    .unwrap()
                    .code;
            }
            Ok(Some(_)) => return "not an error".into(),
            Ok(None) => {}
            Err(e) => return format!("{e}"),
        }
        match tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read_buf(&mut tcp, &mut got),
        )
        .await
        {
            Ok(Ok(0)) => return "closed without an answer".into(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("{e}"),
            Err(_) => return "no answer".into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_burst_over_the_limits_gets_53300() {
    let _ = pgssl::app::node::raise_open_file_limit(&pgssl::config::Config::default());
    let pg = Postgres::start();
    let proxy = Proxy::start_with(pg.upstream(), Mode::Off, |c| {
        c.server.max_connections = 2;
        c.server.max_startups = 20;
    })
    .await;
    let held = [
        crate::client::connect_plain(proxy.addr, "tableau")
            .await
            .unwrap(),
        crate::client::connect_plain(proxy.addr, "readonly")
            .await
            .unwrap(),
    ];
    // 500 at once: some are closed to make room for newer ones (over max_startups), the rest after their start-up
    // (over max_connections). Before the fix 436 of them were closed without a word.
    let burst: Vec<_> = (0..500)
        .map(|_| tokio::spawn(start_up_expecting_error(proxy.addr)))
        .collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for t in burst {
        *answers.entry(t.await.unwrap()).or_default() += 1;
    }
    assert_eq!(answers.get("53300"), Some(&500), "{answers:?}");
    drop(held);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_while_2000_sockets_never_finish_start_up() {
    let (limit, _) =
        pgssl::app::node::raise_open_file_limit(&pgssl::config::Config::default()).unwrap();
    assert!(
        limit >= 5000,
        "this test needs 5000 open files, the limit is {limit}"
    );
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, Mode::Required).await;
    // 2000 sockets that connect and then stall: half say nothing, half send half a start-up packet.
    let mut stalled = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        if i % 2 == 1 {
            tcp.write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u'])
                .await
                .unwrap();
        }
        stalled.push(tcp);
    }
    // Legitimate TLS clients still connect and run queries, each in well under the handshake timeout.
    let mut took = Vec::new();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let mut s = crate::client::connect_tls(proxy.addr, "tableau", &proxy.cert_path())
            .await
            .expect("a legitimate client connects while 2000 sockets stall");
        assert_eq!(s.simple_query("SELECT 1").await.unwrap().len(), 1);
        took.push(started.elapsed());
        s.terminate().await.unwrap();
    }
    took.sort();
    eprintln!(
        "connect + query with 2000 stalled sockets open: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    drop(stalled);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_refusing_repository_is_named_in_the_log_only() {
    // A repository that refuses TLS (ssl = off) under repository.tls = require, then one that is gone.
    let pg = Postgres::start_with_tcp();
    let upstream = format!("127.0.0.1:{}", pg.tcp_port.unwrap());
    let env = CliEnv::new(&upstream);
    env.add_config("repository", "tls = \"require\"");
    let serve = ServeProcess::start(&env, &[]).await;
    let err = crate::client::connect_plain(serve.addr, "tableau")
        .await
        .unwrap_err();
    let Some(e) = err.server() else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, "08006");
    assert!(e.message.contains("does not support SSL"), "{}", e.message);
    assert!(!e.message.contains(&upstream), "{}", e.message);
    drop(pg);
    let err = crate::client::connect_plain(serve.addr, "tableau")
        .await
        .unwrap_err();
    let Some(e) = err.server() else {
        panic!("{err:?}")
    };
    assert_eq!(
        e.message,
        "could not connect to the repository: the repository refused the connection"
    );
    serve
        .wait_for_log("outcome=\"upstream_unreachable\"", 2)
        .await;
    let log = serve.log_text();
    assert!(log.contains(&format!("upstream={upstream}")), "{log}");
    assert!(log.contains("Connection refused"), "{log}");
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_repository_refuses_is_logged_with_its_sqlstate() {
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::new(&format!("127.0.0.1:{}", pg.tcp_port.unwrap()));
    let serve = ServeProcess::start(&env, &[]).await;
    let tcp = TcpStream::connect(serve.addr).await.unwrap();
    let wrong = Session::start(tcp, &crate::client::params("tableau"), Some("wrong")).await;
    assert!(
        wrong
            .as_ref()
            .err()
            .and_then(ClientError::server)
            .is_some_and(|e| e.code == "28P01"),
        "{wrong:?}"
    );
    let tcp = TcpStream::connect(serve.addr).await.unwrap();
    let missing = Session::start(
        tcp,
        &[("user", "tableau"), ("database", "no_such_db")],
        Some(PASSWORD),
    )
    .await;
    assert!(
        missing
            .as_ref()
            .err()
            .and_then(ClientError::server)
            .is_some_and(|e| e.code == "3D000"),
        "{missing:?}"
    );
    let mut fine = crate::client::connect_plain(serve.addr, "tableau")
        .await
        .unwrap();
    fine.simple_query("SELECT 1").await.unwrap();
    fine.terminate().await.unwrap();
    serve.wait_for_log("refused the login", 2).await;
    serve.wait_for_log("session ended", 1).await;
    let log = serve.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the login"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(
        refusals.iter().any(
            |l| l.contains("outcome=\"refused_by_repository\"") && l.contains("sqlstate=28P01")
        ),
        "{log}"
    );
    assert!(
        refusals.iter().any(|l| l.contains("sqlstate=3D000")),
        "{log}"
    );
    let closed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session ended"))
        .collect();
    assert_eq!(closed.len(), 1, "{log}");
    assert!(closed[0].contains("outcome=\"closed\""), "{log}");
    drop(serve);
}

/// tableau creates `table` with one row (`value`); readonly must be able to read it.
async fn readonly_reads_what_tableau_creates(serve: &ServeProcess, table: &str, value: i32) {
    let created = crate::harness::psql_commands(
        &crate::managed::direct(serve, "tableau"),
        &[
            &format!("CREATE TABLE {table} (id int)"),
            &format!("INSERT INTO {table} VALUES ({value})"),
        ],
    )
    .await;
    assert!(created.ok, "{created:?}");
    let read = crate::harness::psql_commands(
        &crate::managed::direct(serve, "readonly"),
        &[&format!("SELECT id FROM {table}")],
    )
    .await;
    assert_eq!(read.stdout.trim(), value.to_string(), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_reads_tables_tableau_creates_later_whatever_the_order_they_were_enabled() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    // Both in one apply (readonly's grants used to run first, before tableau existed).
    ok(&env.stage_direct_user("tableau", PASSWORD).await);
    ok(&env.stage_direct_user("readonly", PASSWORD).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    readonly_reads_what_tableau_creates(&serve, "later", 7).await;
    let write = crate::harness::psql_commands(
        &crate::managed::direct(&serve, "readonly"),
        &["INSERT INTO later VALUES (8)"],
    )
    .await;
    assert!(
        !write.ok && write.stderr.contains("permission denied"),
        "{write:?}"
    );

    // tableau disabled and enabled again after readonly: still the same.
    let disable = [
        "data-access",
        "repository-access",
        "disable",
        "--repository-username",
        "tableau",
    ];
    ok(&run(&env, &disable).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    ok(&env.stage_direct_user("tableau", PASSWORD).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    readonly_reads_what_tableau_creates(&serve, "later2", 9).await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_enabled_before_tableau_exists_reads_what_tableau_creates() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    for user in ["readonly", "tableau"] {
        ok(&env.stage_direct_user(user, PASSWORD).await);
        ok(&run(&env, &["pending-changes", "apply"]).await);
    }
    readonly_reads_what_tableau_creates(&serve, "t", 5).await;
    drop(serve);
}
