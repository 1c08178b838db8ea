//! Authentication in the proxy (`auth.mode = "proxy"`, the default with the managed repository):
//! pgssl runs SCRAM with the client itself — SCRAM-SHA-256-PLUS bound to the certificate it served —
//! and logs into the repository by SCRAM pass-through. Real psql against a real managed repository,
//! and a man in the middle that re-encrypts with its own certificate.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::harness::{PASSWORD, psql, psql_commands, wait_for};

/// A managed repository with repository SSL required and `tableau` enabled with [`PASSWORD`]; the
/// exported certificate's path.
async fn managed_with_tls(env: &CliEnv) -> (ServeProcess, String) {
    let serve = ServeProcess::start(env, &[]).await;
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.stage_direct_user("tableau", PASSWORD).await);
    ok(&env.run(&["pending-changes", "apply"]));
    let cert = env.dir.path().join("server.crt");
    ok(&env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        cert.to_str().unwrap(),
    ]));
    (serve, cert.display().to_string())
}

fn conninfo(port: u16, cert: &str, user: &str, extra: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={port} dbname=repository user={user} sslmode=verify-full sslrootcert={cert} {extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_logs_in_through_pgssl_and_failures_look_like_postgresql() {
    let env = CliEnv::managed();
    let (serve, cert) = managed_with_tls(&env).await;
    assert!(
        serve.log_text().contains("auth=proxy"),
        "{}",
        serve.log_text()
    );
    let port = serve.addr.port();

    // Every channel_binding setting logs in; require proves the binding to pgssl's certificate.
    for setting in [
        "channel_binding=require",
        "channel_binding=prefer",
        "channel_binding=disable",
    ] {
        let run = psql_commands(
            &conninfo(port, &cert, "tableau", setting),
            &["SELECT current_user", "SHOW password_encryption"],
        )
        .await;
        assert!(run.ok, "{setting}: {}", run.stderr);
        assert_eq!(run.stdout, "tableau\nscram-sha-256\n", "{setting}");
    }

    // A wrong password and an unknown user get the same words, as from PostgreSQL.
    let wrong = psql(&conninfo(port, &cert, "tableau", "password=not-it")).await;
    assert!(!wrong.ok);
    assert!(
        wrong
            .stderr
            .contains("FATAL:  password authentication failed for user \"tableau\""),
        "{}",
        wrong.stderr
    );
    let unknown = psql(&conninfo(port, &cert, "nobody", "")).await;
    assert!(
        unknown
            .stderr
            .contains("FATAL:  password authentication failed for user \"nobody\""),
        "{}",
        unknown.stderr
    );

    // A password change is picked up at the next login; the old one stops working.
    ok(&env.stage_direct_user("tableau", "the-new-one").await);
    ok(&env.run(&["pending-changes", "apply"]));
    let old = psql(&conninfo(port, &cert, "tableau", "")).await;
    assert!(
        !old.ok && old.stderr.contains("password authentication failed"),
        "{}",
        old.stderr
    );
    let new = psql(&conninfo(
        port,
        &cert,
        "tableau",
        "password=the-new-one channel_binding=require",
    ))
    .await;
    assert!(new.ok, "{}", new.stderr);

    // The repository still has its say after pgssl's: a missing database, a disabled role.
    let missing = psql(
        &conninfo(port, &cert, "tableau", "password=the-new-one")
            .replace("dbname=repository", "dbname=no_such_db"),
    )
    .await;
    assert!(
        missing
            .stderr
            .contains("database \"no_such_db\" does not exist"),
        "{}",
        missing.stderr
    );
    ok(&env.run(&[
        "data-access",
        "repository-access",
        "disable",
        "--repository-username",
        "tableau",
    ]));
    ok(&env.run(&["pending-changes", "apply"]));
    let disabled = psql(&conninfo(port, &cert, "tableau", "password=the-new-one")).await;
    assert!(
        disabled
            .stderr
            .contains("role \"tableau\" is not permitted to log in"),
        "{}",
        disabled.stderr
    );
    serve.stop().await;
}

/// A relay that terminates the client's TLS with a certificate of its own and re-encrypts to pgssl:
/// what a man in the middle with a certificate the client accepts (sslmode=require) does.
async fn man_in_the_middle(pgssl: std::net::SocketAddr) -> std::net::SocketAddr {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                client.read_exact(&mut request).await?;
                client.write_all(b"S").await?;
                let mut client = acceptor.accept(client).await?;
                let mut server = TcpStream::connect(pgssl).await?;
                server.write_all(&request).await?;
                let mut answer = [0u8; 1];
                server.read_exact(&mut answer).await?;
                let connector =
                    pgssl::tls::client::require_mode_connector().map_err(std::io::Error::other)?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut server = connector.connect(name, server).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_is_caught_by_channel_binding_and_invisible_without_it() {
    let env = CliEnv::managed();
    let (serve, _cert) = managed_with_tls(&env).await;
    let relay = man_in_the_middle(serve.addr).await;
    let through = |extra: &str| {
        format!(
            "host=127.0.0.1 port={} dbname=repository user=tableau sslmode=require {extra}",
            relay.port()
        )
    };
    // Without binding the client cannot tell: it logs in through the relay.
    let fooled = psql(&through("channel_binding=disable")).await;
    assert!(fooled.ok, "{}", fooled.stderr);
    // With binding it signs the relay's certificate, which pgssl did not serve: refused.
    let caught = psql(&through("channel_binding=require")).await;
    assert!(!caught.ok);
    assert!(
        caught.stderr.contains("channel binding"),
        "{}",
        caught.stderr
    );
    assert!(
        serve
            .log_text()
            .contains("channel-binding data does not match"),
        "{}",
        serve.log_text()
    );
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_that_user_out_from_that_address_for_a_while() {
    let env = CliEnv::managed();
    env.add_config("auth", "max_failures = 3\nlockout = \"2s\"");
    let (serve, cert) = managed_with_tls(&env).await;
    let port = serve.addr.port();
    let mut third_began = std::time::Instant::now();
    for _ in 0..3 {
        third_began = std::time::Instant::now();
        let run = psql(&conninfo(port, &cert, "tableau", "password=guess")).await;
        assert!(
            run.stderr.contains("password authentication failed"),
            "{}",
            run.stderr
        );
    }
    // Locked: even the right password is not tried, and the answer says why.
    let locked = psql(&conninfo(port, &cert, "tableau", "")).await;
    assert!(
        !locked.ok
            && locked
                .stderr
                .contains("too many failed logins for user \"tableau\" from this address"),
        "{}",
        locked.stderr
    );
    // Another user is not affected.
    let other = psql(&conninfo(port, &cert, "nobody", "")).await;
    assert!(
        other.stderr.contains("password authentication failed"),
        "{}",
        other.stderr
    );
    // The right password works again once the lockout (2 s from the third failure) is over, not
    // before: until then every attempt gets the lockout's answer.
    let right = conninfo(port, &cert, "tableau", "");
    let back = wait_for(
        "the right password to log in after the lockout",
        std::time::Duration::from_secs(30),
        || async {
            let run = psql(&right).await;
            if run.ok {
                return Ok(std::time::Instant::now());
            }
            assert!(
                run.stderr.contains("too many failed logins"),
                "refused for another reason than the lockout: {}",
                run.stderr
            );
            Err(run.stderr)
        },
    )
    .await;
    let after = back - third_began;
    assert!(
        after >= std::time::Duration::from_secs(2),
        "logged in {after:?} after the third failure began, before its 2 s lockout was over"
    );
    serve.stop().await;
}

/// The bug that made authentication part of pgssl: an external repository with `ssl = on`, reached
/// with `repository.tls`, and libpq's default `channel_binding=prefer`. In passthrough the
/// repository refuses it (its binding cannot cross pgssl's TLS); with a lookup user applied, pgssl
/// authenticates the client and binds each leg to its own certificate, so default psql and
/// `channel_binding=require` both log in, and the repository sees TLS on its leg (`verify-full`, so
/// both legs are bound to certificates that were verified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lookup_user_default_psql_and_channel_binding_require_log_in_over_upstream_tls() {
    use crate::harness::{Postgres, prepare_data_dir};
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::TestPki::new(dir.path(), "Lookup");
    let leaf = pki.server_from_root("pg", &["localhost"], 30);
    let pg = Postgres::start_with_tls(&leaf.cert_pem, &leaf.key_pem);
    pg.sql("CREATE ROLE pgssl_lookup LOGIN PASSWORD 'lookup-pw'");
    let upstream = format!("localhost:{}", pg.port());
    let env = CliEnv::new(&upstream);
    env.add_config("repository", "tls = \"verify-full\"");
    env.add_config("auth", "lookup_query = \"SELECT * FROM pgssl.lookup($1)\"");

    // The DBA installs the function the `sql` command prints: the lookup user is no superuser.
    let sql = ok(&env.run(&[
        "authentication",
        "lookup-user",
        "sql",
        "--lookup-user",
        "pgssl_lookup",
    ]));
    pg.sql(&sql);
    prepare_data_dir(&env.data_dir(), pgssl::proxy::policy::Mode::Required);
    // pgssl verifies the repository's chain and name against the custom CA.
    ok(&env.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        pki.root.to_str().unwrap(),
    ]));
    ok(&env.run(&["pending-changes", "apply"]));
    // Verifiers read at every login: this test expires the password and logs in at once (the kept
    // verifier's bounds are tested in pool.rs).
    env.add_config("auth", "verifier_cache_ttl = \"0s\"");
    let serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
    assert!(
        serve
            .log_text()
            .contains("auth=passthrough (until a lookup user is applied)"),
        "{}",
        serve.log_text()
    );
    let conninfo = |extra: &str| {
        format!(
            "host=127.0.0.1 port={} user=tableau dbname=postgres sslmode=require {extra}",
            serve.addr.port()
        )
    };
    // Passthrough: the repository refuses libpq's default over two TLS legs.
    let before = psql(&conninfo("")).await;
    assert!(
        !before.ok && before.stderr.contains("channel binding"),
        "{}",
        before.stderr
    );

    let staged = env.stage_lookup_user("pgssl_lookup", "lookup-pw").await;
    assert!(ok(&staged).contains("lookup user 'pgssl_lookup'"));
    let listed = ok(&env.run(&["authentication", "lookup-user", "list"]));
    assert!(
        listed.contains("pending: set pgssl_lookup") && !listed.contains("lookup-pw"),
        "{listed}"
    );
    ok(&env.run(&["pending-changes", "apply"]));

    for setting in ["", "channel_binding=require"] {
        let run = psql_commands(
            &conninfo(setting),
            &[
                "SELECT current_user",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ],
        )
        .await;
        assert!(run.ok, "{setting}: {}", run.stderr);
        assert_eq!(run.stdout, "tableau\nt\n", "{setting}");
    }
    let wrong = psql(&conninfo("password=nope")).await;
    assert_password_refused(&wrong.stderr);
    // An expired password fails as PostgreSQL fails it; a full role gets the repository's 53300.
    pg.sql("ALTER ROLE tableau VALID UNTIL '2000-01-01'");
    let expired = psql(&conninfo("")).await;
    assert_password_refused(&expired.stderr);
    pg.sql("ALTER ROLE tableau VALID UNTIL 'infinity' CONNECTION LIMIT 0");
    // A warm session of the role still counts as its connection, as it does in the repository; once
    // an administrator ends it, the next client needs a new backend, which the repository refuses.
    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tableau'");
    let full = psql(&conninfo("")).await;
    assert!(
        full.stderr
            .contains("too many connections for role \"tableau\""),
        "{}",
        full.stderr
    );
    // A repository that asks for a method pgssl cannot answer without the password: named, with the fix.
    pg.sql(&format!(
        "CREATE ROLE cleartext LOGIN PASSWORD '{PASSWORD}'"
    ));
    let hba = pg.sql("SHOW hba_file");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all cleartext 127.0.0.1/32 password\nhostssl all cleartext ::1/128 password\n{rules}"),
    )
    .unwrap();
    pg.sql("SELECT pg_reload_conf()");
    let method = psql(&conninfo("").replace("user=tableau", "user=cleartext")).await;
    assert!(
        method
            .stderr
            .contains("the repository asks for password (cleartext) authentication")
            && method.stderr.contains("pg_hba.conf"),
        "{}",
        method.stderr
    );
    // The lookup user's password is sealed, never in a file in the clear.
    let keystore = std::fs::read(env.data_dir().join("config/keystore")).unwrap();
    assert!(!keystore.windows(9).any(|w| w == b"lookup-pw"));
    serve.stop().await;
}

/// pgssl in passthrough in front of `pg`, repository SSL off, locking a pair out after two failures.
async fn passthrough_locking_after_two_failures(
    pg: &crate::harness::Postgres,
) -> (CliEnv, ServeProcess) {
    let env = CliEnv::new(&pg.repository_text());
    let mut config = std::fs::read_to_string(env.config()).unwrap();
    config.push_str("[auth]\nmax_failures = 2\n");
    std::fs::write(env.config(), config).unwrap();
    crate::harness::prepare_data_dir(&env.data_dir(), pgssl::proxy::policy::Mode::Off);
    let serve = ServeProcess::start(&env, &["--repository", &pg.repository_text()]).await;
    (env, serve)
}

/// In passthrough the repository's own wrong-password answers count towards the same limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_passthrough_the_repositorys_password_failures_count_towards_the_lockout() {
    let pg = crate::harness::Postgres::start();
    let (_env, serve) = passthrough_locking_after_two_failures(&pg).await;
    assert!(
        serve.log_text().contains("auth=passthrough"),
        "{}",
        serve.log_text()
    );
    let conninfo = |extra: &str| {
        format!(
            "host=127.0.0.1 port={} user=tableau dbname=postgres sslmode=disable {extra}",
            serve.addr.port()
        )
    };
    assert!(psql(&conninfo("")).await.ok);
    for _ in 0..2 {
        let run = psql(&conninfo("password=nope")).await;
        assert!(
            run.stderr.contains("password authentication failed"),
            "{}",
            run.stderr
        );
    }
    let locked = psql(&conninfo("")).await;
    assert!(
        locked
            .stderr
            .contains("too many failed logins for user \"tableau\""),
        "{}",
        locked.stderr
    );
    serve.stop().await;
}

/// The lockout judges each verdict when it comes: of 40 wrong guesses sent at once from one address,
/// exactly `max_failures` (5) are told their password was wrong (28P01); the others, and the right
/// password sent after them, get the lockout's 28000, which says nothing of the guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_guesses_get_no_more_password_checks_than_the_limit() {
    use crate::client::{connect_tls_unverified, sqlstate};
    let env = CliEnv::managed();
    let (serve, _cert) = managed_with_tls(&env).await;
    let addr = serve.addr;
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..40 {
        guesses.spawn(async move {
            let guess = format!("guess {i}");
            sqlstate(connect_tls_unverified(addr, "tableau", "repository", &guess).await)
        });
    }
    let answers = guesses.join_all().await;
    let checked = answers.iter().filter(|c| *c == "28P01").count();
    let refused = answers.iter().filter(|c| *c == "28000").count();
    assert_eq!(checked + refused, 40, "{answers:?}");
    // Each verdict is judged as it comes: exactly max_failures (5) learn their guess was wrong.
    assert_eq!(checked, 5, "{answers:?}");
    let right = connect_tls_unverified(addr, "tableau", "repository", PASSWORD).await;
    assert_eq!(sqlstate(right), "28000");
    serve.stop().await;
}

/// PostgreSQL names a role by the first 63 bytes of the start-up's user: a longer spelling of a
/// locked role is the same (address, role) pair, not a fresh counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_spelling_of_a_locked_63_byte_role_is_locked_too() {
    let pg = crate::harness::Postgres::start();
    let role = "r".repeat(63);
    pg.sql(&format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"));
    let (_env, serve) = passthrough_locking_after_two_failures(&pg).await;
    let conninfo = |user: &str, extra: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=disable {extra}",
            serve.addr.port()
        )
    };
    // PostgreSQL itself takes the longer spelling as the role.
    let longer = format!("{role}suffix");
    let run = psql_commands(&conninfo(&longer, ""), &["SELECT current_user"]).await;
    assert!(run.ok && run.stdout.contains(&role), "{}", run.stderr);
    for _ in 0..2 {
        let run = psql(&conninfo(&role, "password=nope")).await;
        assert!(
            run.stderr.contains("password authentication failed"),
            "{}",
            run.stderr
        );
    }
    for user in [role.as_str(), longer.as_str()] {
        let locked = psql(&conninfo(user, "")).await;
        assert!(
            !locked.ok && locked.stderr.contains("too many failed logins"),
            "{user}: {}",
            locked.stderr
        );
    }
    serve.stop().await;
}

/// The salt pgssl's SCRAM exchange offers `user` (over TLS; the exchange is abandoned there).
async fn scram_salt(addr: std::net::SocketAddr, user: &str) -> String {
    use bytes::BytesMut;
    use postgres_protocol::message::backend::Message;
    use postgres_protocol::message::frontend;
    let connector = pgssl::tls::client::require_mode_connector().unwrap();
    let (answer, tcp) = crate::client::ssl_request(addr).await;
    assert_eq!(answer, b'S');
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let startup = crate::client::startup_packet(&[("user", user), ("database", "repository")], 0);
    tls.write_all(&startup).await.unwrap();
    let mut out = BytesMut::new();
    frontend::sasl_initial_response(
        "SCRAM-SHA-256",
        b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL",
        &mut out,
    )
    .unwrap();
    let mut buf = BytesMut::new();
    loop {
        while let Some(message) = Message::parse(&mut buf).unwrap() {
            match message {
                Message::AuthenticationSasl(_) => tls.write_all(&out).await.unwrap(),
                Message::AuthenticationSaslContinue(body) => {
                    let text = String::from_utf8(body.data().to_vec()).unwrap();
                    let salt = text.split(',').find_map(|f| f.strip_prefix("s="));
                    return salt.expect("a salt in server-first-message").to_string();
                }
                _ => panic!("unexpected message before server-first-message"),
            }
        }
        assert!(
            tls.read_buf(&mut buf).await.unwrap() > 0,
            "closed before server-first"
        );
    }
}

/// An unknown user's mock salt is derived from the master key, so it stays the same across a
/// restart as a real role's salt does: a restart does not tell the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_users_salt_survives_a_restart_like_a_real_roles() {
    let env = CliEnv::managed();
    let (serve, _cert) = managed_with_tls(&env).await;
    let before = (
        scram_salt(serve.addr, "nobody").await,
        scram_salt(serve.addr, "tableau").await,
    );
    // Stable within one run, and different for the two names.
    assert_eq!(scram_salt(serve.addr, "nobody").await, before.0);
    assert_ne!(before.0, before.1);
    serve.stop().await;
    let serve = ServeProcess::start(&env, &[]).await;
    let after = (
        scram_salt(serve.addr, "nobody").await,
        scram_salt(serve.addr, "tableau").await,
    );
    assert_eq!(after, before);
    serve.stop().await;
}

/// The lookup query runs as an unnamed statement, so nothing the repository caches outlives a lookup:
/// the DBA re-running `lookup-user sql` after an upgrade (it drops and recreates `pgssl.lookup` with
/// another result type) changes nothing for a running pgssl — with a named statement kept on the
/// lookup connections, every later login failed with `0A000 cached plan must not change result
/// type` until pgssl restarted. Real `bool` columns are read too, and a column of another type is
/// refused with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_function_recreated_with_other_columns_keeps_logins_working_without_a_restart() {
    use crate::harness::Postgres;
    use crate::pool::Pooled;
    const WAIT_LOG: std::time::Duration = std::time::Duration::from_secs(10);
    let pg = Postgres::start_with_tcp();
    // The function as an older `lookup-user sql` printed it: two text columns.
    pg.sql(
        "CREATE SCHEMA pgssl;
         CREATE FUNCTION pgssl.lookup(role_name text, OUT rolpassword text, OUT expired text)
           RETURNS SETOF record LANGUAGE sql STABLE AS $$
             SELECT rolpassword::text, coalesce(rolvaliduntil < now(), false)::text
               FROM pg_catalog.pg_authid WHERE rolname = role_name $$",
    );
    // Verifiers read at every login: the lookup function changes under it (a kept verifier's
    // bounds are tested in pool.rs).
    let p = Pooled::start_on(
        pg,
        "",
        "lookup_query = \"SELECT * FROM pgssl.lookup($1)\"\nverifier_cache_ttl = \"0s\"",
        "",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(p.psql("", &["SELECT current_user"]).await, ["tableau"]);
    }

    // The DBA runs what `lookup-user sql` prints now: three columns.
    let sql = ok(&p.env.run(&[
        "authentication",
        "lookup-user",
        "sql",
        "--lookup-user",
        "pgssl_lookup",
    ]));
    p.pg.sql(&sql);
    for _ in 0..3 {
        assert_eq!(p.psql("", &["SELECT current_user"]).await, ["tableau"]);
    }

    // Real bool columns are read: a password said to have expired fails as PostgreSQL fails it.
    let recreate = |columns: &str, select: &str| {
        format!(
            "DROP FUNCTION pgssl.lookup(text);
             CREATE FUNCTION pgssl.lookup(role_name text, OUT rolpassword text, {columns})
               RETURNS SETOF record LANGUAGE sql STABLE AS $$
                 SELECT rolpassword::text, {select}
                   FROM pg_catalog.pg_authid WHERE rolname = role_name $$"
        )
    };
    p.pg.sql(&recreate(
        "OUT expired boolean, OUT canlogin boolean",
        "false, rolcanlogin",
    ));
    assert_eq!(p.psql("", &["SELECT current_user"]).await, ["tableau"]);
    p.pg.sql(&recreate(
        "OUT expired boolean, OUT canlogin boolean",
        "true, rolcanlogin",
    ));
    let expired = psql_commands(&p.conninfo(""), &["SELECT 1"]).await;
    assert_password_refused(&expired.stderr);

    // A yes/no column of another type is refused, the log naming the column and its type.
    p.pg.sql(&recreate("OUT expired int", "0"));
    let refused = psql_commands(&p.conninfo(""), &["SELECT 1"]).await;
    assert!(
        refused.stderr.contains("the credentials lookup failed"),
        "{}",
        refused.stderr
    );
    let logged = "the lookup query's column 2 (expired) is of type int4";
    wait_for("the lookup's refusal in serve's log", WAIT_LOG, || async {
        let log = p.serve.log_text();
        if log.contains(logged) {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    p.serve.stop().await;
}

/// The client was refused as PostgreSQL refuses a wrong or expired password (28P01's message).
fn assert_password_refused(stderr: &str) {
    assert!(
        stderr.contains("password authentication failed for user \"tableau\""),
        "{stderr}"
    );
}
