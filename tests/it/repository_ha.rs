//! Repository high availability (`repository.address` listing the hosts of one replicated cluster):
//! a primary and a streaming standby cloned with pg_basebackup, both real PostgreSQL. Sessions go
//! where their user's target sends them (`pg_is_in_recovery()` and the server's port say where they
//! landed); a promotion moves primary-bound sessions to the new primary, ends those on the old one
//! with 57P01, and never sends one to a host in recovery; a standby past `max_standby_lag` is
//! skipped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgssl::config::{Config, StandbyLag, TargetRole};
use pgssl::proxy::policy::Mode;

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{ClientError, Session, connect_plain, connect_tls_unverified};
use crate::harness::{
    INTERNAL_USER, PASSWORD, Postgres, Proxy, prepare_data_dir, psql_commands, wait_for, wait_until,
};

/// How long a failover may take to be seen, and a test to wait for anything.
const WAIT: Duration = Duration::from_secs(40);

/// Where a session landed: whether in recovery, and the server's port.
async fn landed(session: &mut Session) -> Result<(bool, u16), ClientError> {
    let rows = session
        .simple_query("SELECT pg_is_in_recovery()::text, current_setting('port')")
        .await?;
    let row = &rows[0];
    let recovery = row[0].as_deref() == Some("true");
    let port = row[1].as_deref().and_then(|p| p.parse().ok()).unwrap_or(0);
    Ok((recovery, port))
}

/// Logs in as `user` through `proxy` and says where the session landed.
async fn login(proxy: &Proxy, user: &str) -> Result<(bool, u16), ClientError> {
    let mut session = connect_plain(proxy.addr, user).await?;
    let at = landed(&mut session).await;
    let _ = session.terminate().await;
    at
}

/// The config of the in-process tests: readonly prefers a standby, the internal user needs one.
fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.server.shutdown_grace = Duration::from_secs(2);
    config.repository.targets = BTreeMap::from([
        ("readonly".to_string(), TargetRole::PreferStandby),
        (INTERNAL_USER.to_string(), TargetRole::Standby),
    ]);
    config.repository.probe_interval = Duration::from_millis(250);
    tweak(&mut config);
    config
}

/// pgssl (in this process, passthrough) in front of `hosts`.
async fn proxy(hosts: &[&Postgres], config: Config) -> Proxy {
    let data_dir = tempfile::Builder::new()
        .prefix("pgssl-data")
        .tempdir()
        .unwrap();
    prepare_data_dir(data_dir.path(), Mode::Off);
    let addrs = hosts.iter().map(|h| h.tcp_upstream()).collect();
    Proxy::start_on_hosts(data_dir, addrs, config)
        .await
        .expect("the proxy starts")
}

/// Waits until `user`'s logins land where `want` says (recovery, port).
async fn lands(proxy: &Proxy, user: &str, want: (bool, u16)) {
    wait_for(&format!("{user} to land on {want:?}"), WAIT, || async {
        match login(proxy, user).await {
            Ok(at) if at == want => Ok(()),
            Ok(at) => Err(format!("landed on {at:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_reads_on_the_standby_and_a_split_brain_goes_to_the_later_timeline() {
    let primary = Postgres::start_with_tcp();
    let standby = primary.start_standby();
    let (p, s) = (primary.tcp_port.unwrap(), standby.tcp_port.unwrap());
    let proxy = proxy(&[&primary, &standby], config(|_| {})).await;

    lands(&proxy, "readonly", (true, s)).await;
    lands(&proxy, INTERNAL_USER, (true, s)).await;
    // Once the roles are known every session goes where its target says, the first time.
    for _ in 0..5 {
        assert_eq!(login(&proxy, "tableau").await.unwrap(), (false, p));
        assert_eq!(login(&proxy, "readonly").await.unwrap(), (true, s));
    }
    let mut writer = connect_plain(proxy.addr, "tableau").await.unwrap();
    assert_eq!(landed(&mut writer).await.unwrap(), (false, p));
    let mut reader = connect_plain(proxy.addr, "readonly").await.unwrap();

    // The standby is promoted while the old primary still runs: two hosts claim to be primary.
    standby.promote();
    lands(&proxy, "tableau", (false, s)).await;
    // The session on the old primary was ended by pgssl, naming the failover.
    // The FATAL arrives while the session is idle: its connection ends with it, and the next
    // query finds it closed.
    let deadline = Instant::now() + WAIT;
    while writer.simple_query("SELECT 1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the old primary's session stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = writer.terminate().await.unwrap_err();
    let fatal = ended.server().expect("an error from the server");
    assert_eq!(fatal.code, "57P01", "{fatal:?}");
    assert!(fatal.message.contains("failed over"), "{fatal:?}");
    // Its backend on the old primary is gone; the standby-bound session on the promoted host stays.
    wait_until("no tableau session on the old primary", WAIT, || async {
        primary.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tableau'") == "0"
    })
    .await;
    assert_eq!(landed(&mut reader).await.unwrap(), (false, s));
    // No host is a standby now: readonly takes the primary, a standby-only user is refused at once.
    assert_eq!(login(&proxy, "readonly").await.unwrap(), (false, s));
    let refused = login(&proxy, INTERNAL_USER).await.unwrap_err();
    let refused = refused.server().expect("a refusal");
    assert_eq!(refused.code, "08006", "{refused:?}");
    assert!(refused.message.contains("no standby"), "{refused:?}");
    // The old primary, on the earlier timeline, is never used again while it runs.
    for _ in 0..5 {
        assert_eq!(login(&proxy, "tableau").await.unwrap(), (false, s));
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_past_max_standby_lag_is_skipped_until_it_catches_up() {
    let primary = Postgres::start_with_tcp();
    let standby = primary.start_standby();
    let (p, s) = (primary.tcp_port.unwrap(), standby.tcp_port.unwrap());
    let lag = config(|c| c.repository.max_standby_lag = Some(StandbyLag::Bytes(64 << 10)));
    let proxy = proxy(&[&primary, &standby], lag).await;
    lands(&proxy, "readonly", (true, s)).await;

    standby.sql("SELECT pg_wal_replay_pause()");
    primary
        .sql("CREATE TABLE filler AS SELECT repeat('x', 1000) AS x FROM generate_series(1, 2000)");
    // readonly falls back to the primary; a standby-only user has no standby within the bound.
    lands(&proxy, "readonly", (false, p)).await;
    let refused = login(&proxy, INTERNAL_USER).await.unwrap_err();
    assert_eq!(refused.server().map(|e| e.code).as_deref(), Some("08006"));

    standby.sql("SELECT pg_wal_replay_resume()");
    lands(&proxy, "readonly", (true, s)).await;
    assert_eq!(login(&proxy, INTERNAL_USER).await.unwrap(), (true, s));
    proxy.stop().await;
}

/// How many times the server's log says it refused a new session because it is shutting down.
fn refused_as_shutting_down(server: &Postgres) -> usize {
    std::fs::read_to_string(server.log_path())
        .unwrap_or_default()
        .matches("the database system is shutting down")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_by_a_primary_shutting_down_goes_to_the_promoted_standby() {
    let primary = Postgres::start_with_tcp();
    let standby = primary.start_standby();
    let (p, s) = (primary.tcp_port.unwrap(), standby.tcp_port.unwrap());
    let proxy = proxy(&[&primary, &standby], config(|_| {})).await;
    lands(&proxy, "tableau", (false, p)).await;

    // A switchover's first step: the primary shuts down and refuses new sessions (57P03) while
    // its open ones go on — a client's, held here, and the probes', which still see a primary.
    let direct: std::net::SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    let mut held = connect_plain(direct, "tableau").await.unwrap();
    primary.stop_smart_no_wait();
    let refusal = wait_for("the primary to refuse new sessions", WAIT, || async {
        match connect_plain(direct, "tableau").await {
            Err(e) => match e.server() {
                Some(s) if s.code == "57P03" => Ok(s),
                _ => Err(e.to_string()),
            },
            Ok(_) => Err("a new session was accepted".to_string()),
        }
    })
    .await;
    assert!(refusal.message.contains("shutting down"), "{refusal:?}");
    let before = refused_as_shutting_down(&primary);

    // A tableau login through pgssl reaches it, is refused, and waits for another host instead of
    // passing the refusal on; the promotion ends the wait.
    let addr = proxy.addr;
    let waiting = tokio::spawn(async move {
        let mut session = connect_plain(addr, "tableau").await?;
        landed(&mut session).await
    });
    wait_until(
        "pgssl's login to be refused by the old primary",
        WAIT,
        || async { refused_as_shutting_down(&primary) > before },
    )
    .await;
    standby.promote();
    let at = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiting login finished")
        .unwrap();
    assert_eq!(at.map_err(|e| e.to_string()), Ok((false, s)));
    assert_eq!(landed(&mut held).await.unwrap(), (false, p));
    drop(held);
    proxy.stop().await;
}

/// One tableau login through `serve` (TLS, proxy mode): where it landed, or its error.
async fn psql_login(addr: std::net::SocketAddr, user: &str) -> Result<(bool, u16), String> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=require connect_timeout=45",
        addr.port()
    );
    let run = psql_commands(
        &conninfo,
        &["SELECT pg_is_in_recovery()::text || ' ' || current_setting('port')"],
    )
    .await;
    if !run.ok {
        return Err(run.stderr);
    }
    let out = run.stdout.trim().to_string();
    let (recovery, port) = out.split_once(' ').ok_or(out.clone())?;
    Ok((recovery == "true", port.parse().map_err(|_| out.clone())?))
}

/// A primary, a streaming standby, and `pgssl serve` in proxy mode (TLS required, a lookup user,
/// warm backends) in front of both, once its probes know which is which.
async fn serve_in_front() -> (Postgres, Postgres, CliEnv, ServeProcess) {
    let primary = Postgres::start_with_tcp();
    primary.sql("CREATE ROLE pgssl_lookup SUPERUSER LOGIN PASSWORD 'lookup-pw'");
    let standby = primary.start_standby();
    let (p, s) = (primary.tcp_port.unwrap(), standby.tcp_port.unwrap());
    let hosts = format!("127.0.0.1:{p},127.0.0.1:{s}");
    let env = CliEnv::new(&hosts);
    env.add_config(
        "repository",
        "targets = { readonly = \"prefer-standby\" }\nprobe_interval = \"250ms\"",
    );
    env.add_config("auth", "mode = \"proxy\"");
    prepare_data_dir(&env.data_dir(), Mode::Required);
    let serve = ServeProcess::start(&env, &["--repository", &hosts]).await;
    ok(&env.stage_lookup_user("pgssl_lookup", "lookup-pw").await);
    ok(&env.run(&["pending-changes", "apply"]));
    wait_until("the hosts to be known", WAIT, || async {
        let listed = ok(&env.run(&["topology", "list-repository-hosts"]));
        listed.contains(&format!("127.0.0.1:{p}"))
            && listed.contains("primary")
            && listed.contains("standby")
    })
    .await;
    (primary, standby, env, serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tableau_logins_wait_out_a_failover_and_none_reaches_a_host_in_recovery() {
    let (primary, standby, env, serve) = serve_in_front().await;
    let (p, s) = (primary.tcp_port.unwrap(), standby.tcp_port.unwrap());
    assert_eq!(psql_login(serve.addr, "tableau").await, Ok((false, p)));
    assert_eq!(psql_login(serve.addr, "readonly").await, Ok((true, s)));

    // Logins go on, one after another, while the primary crashes and the standby is promoted;
    // each is recorded with the time it finished.
    let addr = serve.addr;
    let base = Instant::now();
    let logins = tokio::spawn(async move {
        let mut seen = Vec::new();
        while base.elapsed() < Duration::from_secs(25) {
            let result = psql_login(addr, "tableau").await;
            let on_new = result == Ok((false, s));
            seen.push((base.elapsed(), result));
            if on_new && seen.iter().filter(|(_, r)| *r == Ok((false, s))).count() > 3 {
                break;
            }
        }
        seen
    });
    primary.stop_immediate();
    let crashed = base.elapsed();
    standby.promote();
    let promoted = base.elapsed();
    let seen = logins.await.unwrap();
    let refused: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
    let in_recovery: Vec<_> = seen
        .iter()
        .filter(|(_, r)| matches!(r, Ok((true, _))))
        .collect();
    assert!(
        in_recovery.is_empty(),
        "a tableau session reached a host in recovery: {in_recovery:?}"
    );
    // A crash of the primary can cut a login already under way on it; every later one waits for
    // the new primary instead of being refused.
    assert!(
        refused.len() <= 1,
        "logins were refused during the failover: {refused:?}"
    );
    let first_new = seen
        .iter()
        .find(|(_, r)| *r == Ok((false, s)))
        .expect("a login reached the new primary");
    println!(
        "primary crashed at {crashed:?}, standby promoted at {promoted:?}; first login on the new primary done at {:?} ({} logins, {} refused)",
        first_new.0,
        seen.len(),
        refused.len()
    );
    let listed = ok(&env.run(&["topology", "list-repository-hosts"]));
    let line = |port: u16| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("127.0.0.1:{port}")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line(s).contains("primary"), "{listed}");
    assert!(
        listed.contains("Sessions go: readonly → prefer-standby, everyone else → primary."),
        "{listed}"
    );
    assert!(!line(p).contains("primary"), "{listed}");
    // readonly falls back to the only host left, the new primary.
    assert_eq!(psql_login(serve.addr, "readonly").await, Ok((false, s)));
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_proxy_mode_a_promotion_ends_the_old_primary_s_sessions_and_closes_its_warm_backends() {
    let (primary, standby, _env, serve) = serve_in_front().await;
    let s = standby.tcp_port.unwrap();
    let tableau_on_primary =
        || primary.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tableau'");
    let mut held = connect_tls_unverified(serve.addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let p = primary.tcp_port.unwrap();
    assert_eq!(landed(&mut held).await.unwrap(), (false, p));
    // A second session comes and goes: its backend stays warm on the primary.
    assert!(psql_login(serve.addr, "tableau").await.is_ok());
    wait_until(
        "a busy and a warm tableau backend on the primary",
        WAIT,
        || async { tableau_on_primary() == "2" },
    )
    .await;

    standby.promote();
    let deadline = Instant::now() + WAIT;
    while held.simple_query("SELECT 1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the old primary's session stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fatal = held.terminate().await.unwrap_err();
    let fatal = fatal.server().expect("an error from the server");
    assert_eq!(fatal.code, "57P01", "{fatal:?}");
    assert!(fatal.message.contains("failed over"), "{fatal:?}");
    // Neither the ended session's backend nor the warm one is left on the old primary.
    wait_until(
        "no tableau backend left on the old primary",
        WAIT,
        || async { tableau_on_primary() == "0" },
    )
    .await;
    assert_eq!(psql_login(serve.addr, "tableau").await, Ok((false, s)));
    serve.stop().await;
}
