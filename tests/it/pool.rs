//! Warm backends (`[pool]`, on in proxy mode): a real PostgreSQL behind pgssl, with a lookup user, and
//! real psql and the Rust client in front. Each test asserts what the client sees — the backend's
//! process ID, what the session remembers, SQLSTATEs — and what the repository sees in
//! `pg_stat_activity`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{connect_tls_unverified, ssl_request};
use crate::harness::{PASSWORD, Postgres, prepare_data_dir, psql_commands, wait_for, wait_until};

/// How long the repository and pgssl have to reach a state a test waits for.
const WAIT: Duration = Duration::from_secs(30);

/// A repository, pgssl in front of it in proxy mode with `pool` (TOML lines of `[pool]`) and a lookup
/// user applied.
pub(crate) struct Pooled {
    pub(crate) pg: Postgres,
    pub(crate) env: CliEnv,
    pub(crate) serve: ServeProcess,
}

impl Pooled {
    pub(crate) async fn start(pool: &str) -> Pooled {
        Pooled::start_on(Postgres::start_with_tcp(), "", "", pool).await
    }

    /// With `repository` lines in `[repository]`, `auth` lines in `[auth]` and `pool` lines in `[pool]`.
    pub(crate) async fn start_on(pg: Postgres, repository: &str, auth: &str, pool: &str) -> Pooled {
        Pooled::start_with(pg, "", repository, auth, pool).await
    }

    /// [`Pooled::start_on`] with `server` lines in `[server]` as well.
    pub(crate) async fn start_with(
        pg: Postgres,
        server: &str,
        repository: &str,
        auth: &str,
        pool: &str,
    ) -> Pooled {
        pg.sql("CREATE ROLE pgssl_lookup SUPERUSER LOGIN PASSWORD 'lookup-pw'");
        let upstream = format!("127.0.0.1:{}", pg.port());
        let env = CliEnv::new(&upstream);
        env.add_config("server", server);
        env.add_config("repository", repository);
        env.add_config("auth", &format!("mode = \"proxy\"\n{auth}"));
        env.add_config("pool", pool);
        prepare_data_dir(&env.data_dir(), pgssl::proxy::policy::Mode::Required);
        let serve = ServeProcess::start(
            &env,
            &["--repository", &upstream, "--metrics", "127.0.0.1:0"],
        )
        .await;
        ok(&env.stage_lookup_user("pgssl_lookup", "lookup-pw").await);
        ok(&env.run(&["pending-changes", "apply"]));
        Pooled { pg, env, serve }
    }

    /// A superuser session straight to the repository, beside pgssl.
    pub(crate) async fn superuser(&self) -> crate::client::Session {
        let repository = format!("127.0.0.1:{}", self.pg.tcp_port.unwrap())
            .parse()
            .unwrap();
        crate::client::connect_plain(repository, "postgres")
            .await
            .expect("the superuser logs into the repository")
    }

    pub(crate) fn conninfo(&self, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=tableau dbname=postgres sslmode=require {extra}",
            self.serve.addr.port()
        )
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.serve.addr
    }

    /// A scrape of `serve --metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let log = self.serve.log_text();
        let addr = log
            .split("metrics=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the metrics address is logged")
            .to_string();
        crate::metrics::scrape(&addr).await
    }

    /// Runs `commands` in one psql session; panics with its error if it fails.
    pub(crate) async fn psql(&self, extra: &str, commands: &[&str]) -> Vec<String> {
        let run = psql_commands(&self.conninfo(extra), commands).await;
        assert!(run.ok, "{}\n{}", run.stderr, self.serve.log_text());
        run.stdout.lines().map(str::to_string).collect()
    }

    /// Waits until `n` sessions of `user` sit idle in the pool, as the repository and pgssl see it:
    /// reset (their last query the reset) and checked in (pgssl's idle gauge, which counts every
    /// role: the tests pool one).
    pub(crate) async fn wait_warm(&self, user: &str, n: usize) {
        let sql = &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' AND state = 'idle' AND query = 'DISCARD ALL'"
        );
        let what = format!("{n} warm sessions of {user}");
        wait_for(&what, WAIT, || async move {
            let reset: usize = self.pg.sql(sql).parse().unwrap();
            let idle = crate::metrics::sample(
                &self.metrics().await,
                "pgssl_pool_sessions",
                &["state=\"idle\""],
            );
            if reset == n && idle == Some(n as f64) {
                Ok(())
            } else {
                Err(format!(
                    "{reset} reset, pgssl's idle gauge {idle:?}; {}",
                    self.pg
                        .sql("SELECT usename, state, query FROM pg_stat_activity")
                ))
            }
        })
        .await
    }

    /// The number of the repository's sessions of `user`.
    pub(crate) fn sessions_of(&self, user: &str) -> usize {
        self.pg
            .sql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"
            ))
            .parse()
            .unwrap()
    }

    /// Waits until the repository has `n` sessions of `user`.
    pub(crate) async fn wait_sessions(&self, user: &str, n: usize) {
        let what = format!("{n} sessions of {user}");
        wait_for(&what, WAIT, || async move {
            match self.sessions_of(user) {
                have if have == n => Ok(()),
                have => Err(format!("{have} sessions of {user}")),
            }
        })
        .await
    }

    /// Waits until the repository runs `query` (exactly this text) in the backend `pid`.
    pub(crate) async fn wait_running(&self, pid: &str, query: &str) {
        let sql = &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' AND query = '{query}'"
        );
        let what = format!("backend {pid} to run {query:?}");
        wait_for(&what, WAIT, || async move {
            if self.pg.sql(sql) == "1" {
                Ok(())
            } else {
                Err(self.pg.sql(&format!(
                    "SELECT state, query FROM pg_stat_activity WHERE pid = {pid}"
                )))
            }
        })
        .await
    }

    /// Whether the backend `pid` still runs `query`.
    pub(crate) fn still_running(&self, pid: &str, query: &str) -> bool {
        self.pg.sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' AND query = '{query}'"
        )) == "1"
    }
}

/// Sends a CancelRequest with `key` (process ID, secret) over TLS and waits until pgssl closes.
pub async fn send_cancel(addr: SocketAddr, key: (i32, i32)) {
    let (answer, tcp) = ssl_request(addr).await;
    assert_eq!(answer, b'S');
    let connector = pgssl::tls::client::require_mode_connector().unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut packet = Vec::new();
    packet.extend_from_slice(&16u32.to_be_bytes());
    packet.extend_from_slice(&80_877_102u32.to_be_bytes());
    packet.extend_from_slice(&key.0.to_be_bytes());
    packet.extend_from_slice(&key.1.to_be_bytes());
    tls.write_all(&packet).await.unwrap();
    tls.flush().await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut sink)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_client_gets_the_same_backend_as_a_fresh_session() {
    let p = Pooled::start("").await;
    p.pg.sql("GRANT CREATE ON SCHEMA public TO tableau");
    let first = p
        .psql(
            "application_name=alpha",
            &[
                "CREATE TEMP TABLE scratch (x int)",
                "PREPARE remembered AS SELECT 1",
                "SET DateStyle = 'German'",
                "SELECT pg_advisory_lock(42)",
                "LISTEN channel",
                "SELECT pg_backend_pid()",
            ],
        )
        .await;
    let pid = first.last().unwrap().clone();
    p.wait_warm("tableau", 1).await;

    let second = p
        .psql(
            "application_name=beta",
            &[
                "SELECT pg_backend_pid()",
                "SELECT count(*) FROM pg_prepared_statements",
                "SELECT count(*) FROM pg_class WHERE relname = 'scratch'",
                "SHOW DateStyle",
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
                "SELECT count(*) FROM pg_listening_channels()",
                "SHOW application_name",
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            ],
        )
        .await;
    assert_eq!(
        second,
        [&pid, "0", "0", "ISO, MDY", "0", "0", "beta", "beta"],
        "the second client must get the first one's backend with nothing of the first left"
    );

    // A client that leaves in the middle of a transaction leaves nothing open behind it.
    p.wait_warm("tableau", 1).await;
    let third = p
        .psql(
            "",
            &[
                "BEGIN",
                "CREATE TABLE leftover (x int)",
                "SELECT pg_backend_pid()",
            ],
        )
        .await;
    assert_eq!(third.last().unwrap(), &pid);
    p.wait_warm("tableau", 1).await;
    assert_eq!(
        p.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"),
        "0"
    );
    let fourth = p
        .psql(
            "",
            &[
                "SELECT pg_backend_pid()",
                "SELECT count(*) FROM pg_class WHERE relname = 'leftover'",
            ],
        )
        .await;
    assert_eq!(fourth, [pid.as_str(), "0"]);

    // `pool list` reports the hand-outs; the metrics count them. The fourth client's session goes
    // back to the pool (reset) after psql has exited: wait for it, as after the others.
    p.wait_warm("tableau", 1).await;
    let listed = ok(&p.env.run(&["pool", "list"]));
    assert!(
        listed.contains("tableau") && listed.contains("postgres"),
        "{listed}"
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with("tableau"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    // role database mode busy idle handouts opened
    assert_eq!(&row[2..], ["session", "0", "1", "3", "1"], "{listed}");
    assert!(listed.contains("Pool mode: session."), "{listed}");
    let text = p.metrics().await;
    let value = |name: &str, label: &str| crate::metrics::sample(&text, name, &[label]);
    assert_eq!(
        value("pgssl_pool_checkouts_total", "outcome=\"warm\""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value("pgssl_pool_checkouts_total", "outcome=\"opened\""),
        Some(1.0)
    );
    assert_eq!(
        value("pgssl_pool_returns_total", "outcome=\"kept\""),
        Some(4.0)
    );
    assert_eq!(value("pgssl_pool_sessions", "state=\"idle\""), Some(1.0));
    assert!(text.contains("pgssl_pool_checkout_wait_seconds"));
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_key_is_the_clients_own_and_an_earlier_clients_cancels_nothing() {
    let p = Pooled::start("").await;
    let addr = p.addr();
    let mut a = connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let key_a = a.backend_key.unwrap();
    let pid = a.simple_query("SELECT pg_backend_pid()").await.unwrap()[0][0]
        .clone()
        .unwrap();
    assert_ne!(
        key_a.0.to_string(),
        pid,
        "the key is pgssl's, not the backend's"
    );
    // The current client's key cancels its query (sent while it runs).
    let sleeper = tokio::spawn(async move {
        let r = a.simple_query("SELECT pg_sleep(30)").await;
        (a, r)
    });
    p.wait_running(&pid, "SELECT pg_sleep(30)").await;
    send_cancel(addr, key_a).await;
    let (a, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel ends the sleep")
        .unwrap();
    assert_eq!(crate::client::sqlstate(result), "57014");
    a.terminate().await.unwrap();
    p.wait_warm("tableau", 1).await;

    // The next client of the same backend has another key; the first client's cancels nothing.
    let mut b = connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let key_b = b.backend_key.unwrap();
    assert_ne!(key_a, key_b);
    let pid_b = b.simple_query("SELECT pg_backend_pid()").await.unwrap()[0][0]
        .clone()
        .unwrap();
    assert_eq!(pid_b, pid, "the same backend");
    // Each wrong key is sent while the query runs, and pgssl judges it unknown while the query still
    // runs; the query, long enough for a forwarded cancel to land, then ends as it would have.
    const SLEEP: &str = "SELECT pg_sleep(5)";
    let unknown = "outcome=\"cancel_unknown_key\"";
    let sleeper = tokio::spawn(async move {
        let r = b.simple_query(SLEEP).await.map(|_| ());
        (b, r)
    });
    p.wait_running(&pid, SLEEP).await;
    send_cancel(addr, key_a).await;
    p.serve.wait_for_log(unknown, 1).await;
    assert!(
        p.still_running(&pid, SLEEP),
        "the query ended before the earlier client's key was judged"
    );
    let (mut b, result) = sleeper.await.unwrap();
    assert!(
        result.is_ok(),
        "an earlier client's key cancelled: {result:?}"
    );
    // The backend's own key is no key at pgssl either.
    let real = (pid.parse::<i32>().unwrap(), key_b.1);
    let sleeper = tokio::spawn(async move {
        let r = b.simple_query(SLEEP).await.map(|_| ());
        (b, r)
    });
    p.wait_running(&pid, SLEEP).await;
    send_cancel(addr, real).await;
    p.serve.wait_for_log(unknown, 2).await;
    assert!(
        p.still_running(&pid, SLEEP),
        "the query ended before the guessed key was judged"
    );
    let (b, result) = sleeper.await.unwrap();
    assert!(result.is_ok(), "a guessed key cancelled: {result:?}");
    b.terminate().await.unwrap();
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_or_nologin_closes_the_roles_warm_sessions() {
    let p = Pooled::start("recheck_interval = \"1s\"").await;
    let pid = p.psql("", &["SELECT pg_backend_pid()"]).await;
    p.wait_warm("tableau", 1).await;
    p.pg.sql("ALTER ROLE tableau PASSWORD 'changed-pw'");
    // The sweep sees the new verifier and closes the warm session without any client arriving.
    p.wait_sessions("tableau", 0).await;
    let run = psql_commands(
        &p.conninfo("password=changed-pw"),
        &["SELECT pg_backend_pid()"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_ne!(run.stdout.lines().collect::<Vec<_>>(), pid);
    p.wait_warm("tableau", 1).await;

    p.pg.sql("ALTER ROLE tableau NOLOGIN");
    p.wait_sessions("tableau", 0).await;
    let refused = psql_commands(
        &p.conninfo("password=changed-pw"),
        &["SELECT pg_backend_pid()"],
    )
    .await;
    assert!(
        refused
            .stderr
            .contains("role \"tableau\" is not permitted to log in"),
        "{}",
        refused.stderr
    );
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_retires_warm_sessions_and_a_restarted_repository_gives_working_ones() {
    let p = Pooled::start("").await;
    let pid = p.psql("", &["SELECT pg_backend_pid()"]).await;
    p.wait_warm("tableau", 1).await;
    // Any apply may change who may connect: sessions logged in before it are not handed out.
    ok(&p
        .env
        .run(&["security", "repository-ssl", "enable", "--internal-only"]));
    ok(&p.env.run(&["pending-changes", "apply"]));
    let after_apply = p.psql("", &["SELECT pg_backend_pid()"]).await;
    assert_ne!(after_apply, pid);
    p.wait_warm("tableau", 1).await;
    assert_eq!(
        p.sessions_of("tableau"),
        1,
        "the retired session was closed"
    );

    // The repository restarts under warm sessions: the next clients get new, working ones.
    p.pg.restart();
    for _ in 0..3 {
        let run = p.psql("", &["SELECT 1"]).await;
        assert_eq!(run, ["1"]);
    }
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_a_backend_then_gets_53300_and_gets_in_once_one_is_free() {
    let p = Pooled::start("max_backends = 1\ncheckout_timeout = \"1s\"").await;
    let addr = p.addr();
    // The first client of the key takes its backend at login (to learn the parameters to tell the
    // next ones); it holds the only one.
    let holder = connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    // The next logs in without a backend, and waits for one at its first query, then gets 53300.
    let mut refused = connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .expect("a login takes no backend");
    let waited = std::time::Instant::now();
    let refused_state = crate::client::sqlstate(refused.simple_query("SELECT 1").await);
    assert!(waited.elapsed() >= Duration::from_millis(900));
    assert_eq!(refused_state, "53300");
    let psql_refused = psql_commands(&p.conninfo(""), &["SELECT 1"]).await;
    assert!(
        psql_refused
            .stderr
            .contains("sorry, too many clients already"),
        "{}",
        psql_refused.stderr
    );
    // Once the holder leaves, a waiting client gets its session, first come first served.
    let mut waiter = connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let rows = waiter.simple_query("SELECT 1").await;
        rows.map(|r| r[0][0].clone())
    });
    wait_until("pgssl to queue the waiter", WAIT, || async {
        let text = p.metrics().await;
        crate::metrics::sample(&text, "pgssl_pool_clients_waiting", &[]) == Some(1.0)
    })
    .await;
    assert!(
        !waiting.is_finished(),
        "the waiter got in while the holder held the only backend"
    );
    holder.terminate().await.unwrap();
    let got = waiting
        .await
        .unwrap()
        .expect("the waiter gets the freed session");
    assert_eq!(got.as_deref(), Some("1"));
    p.serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_a_repository_of_twenty_connections() {
    let pg = Postgres::start_with_tcp();
    pg.sql("ALTER SYSTEM SET max_connections = 20");
    pg.restart();
    assert_eq!(pg.sql("SHOW max_connections"), "20");
    // 200 TLS and SCRAM logins at once take seconds of CPU in a debug build, more on a machine
    // running other tests: the start-up deadline is not what this test is about.
    let server = "handshake_timeout = \"120s\"";
    let p = Pooled::start_with(pg, server, "max_connections = 20", "", "").await;
    let addr = p.addr();
    // The repository's sessions of tableau, watched all through the run over a session of the
    // superuser's opened before it (it fits: pgssl's bound leaves one slot more free than the
    // superuser_reserved_connections PostgreSQL keeps, besides its own two lookup sessions).
    let mut watcher = p.superuser().await;
    let running = tokio_util::sync::CancellationToken::new();
    let watching = running.clone();
    let peak = tokio::spawn(async move {
        let (mut peak, mut samples) = (0usize, 0usize);
        while !watching.is_cancelled() {
            let rows = watcher
                .simple_query("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tableau'")
                .await
                .expect("the watcher's query");
            let now: usize = rows[0][0].as_deref().unwrap().parse().unwrap();
            peak = peak.max(now);
            samples += 1;
            // Many looks, without taking a core from the clients.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (peak, samples)
    });
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..200 {
        clients.spawn(async move {
            let mut s = connect_tls_unverified(addr, "tableau", "postgres", PASSWORD).await?;
            let rows = s.simple_query(&format!("SELECT {i}")).await?;
            s.terminate().await?;
            Ok::<_, crate::client::ClientError>(rows[0][0].clone())
        });
    }
    let mut answered = Vec::new();
    while let Some(done) = clients.join_next().await {
        match done.unwrap() {
            Ok(v) => answered.push(v.unwrap().parse::<u32>().unwrap()),
            Err(e) => panic!("a client failed: {e}\n{}", p.serve.log_text()),
        }
    }
    running.cancel();
    let (peak, samples) = peak.await.unwrap();
    answered.sort();
    assert_eq!(answered, (0..200).collect::<Vec<_>>());
    // pgssl stayed within the repository's bound, less the superuser reserve and its own lookups,
    // all through the run, which did share the repository among several sessions at once.
    assert!(
        peak <= 14,
        "{peak} sessions of tableau at once ({samples} looks)"
    );
    assert!(
        peak > 1,
        "the watcher never saw the load: peak {peak} in {samples} looks"
    );
    p.serve.stop().await;
}

/// `auth.verifier_cache_ttl`: the repository is asked once per role per TTL; a new password fails
/// once against the kept verifier, which is then dropped, and works from the next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_verifier_is_dropped_by_a_failed_proof() {
    let pg = Postgres::start_with_tcp();
    pg.sql("ALTER SYSTEM SET log_statement = 'all'");
    pg.sql("SELECT pg_reload_conf()");
    let p = Pooled::start_on(
        pg,
        "",
        "verifier_cache_ttl = \"10m\"",
        "recheck_interval = \"10m\"",
    )
    .await;
    for _ in 0..3 {
        p.psql("", &["SELECT 1"]).await;
    }
    let log = std::fs::read_to_string(p.pg.log_path()).unwrap();
    // A lookup is the execution of the lookup query (an unnamed statement), its role a bound
    // parameter that the log's next line (DETAIL) shows.
    let lines: Vec<&str> = log.lines().collect();
    let asked = lines
        .windows(2)
        .filter(|w| {
            w[0].contains("execute")
                && w[0].contains("FROM pg_catalog.pg_authid WHERE rolname = $1")
                && w[1].contains("parameters: $1 = 'tableau'")
        })
        .count();
    assert_eq!(asked, 1, "three logins, one lookup:\n{log}");
    p.pg.sql("ALTER ROLE tableau PASSWORD 'changed-pw'");
    let first = psql_commands(&p.conninfo("password=changed-pw"), &["SELECT 1"]).await;
    assert!(
        first.stderr.contains("password authentication failed"),
        "{}",
        first.stderr
    );
    // The failure re-read the role at once and saw the change: said, and not counted as a guess.
    p.serve
        .wait_for_log("the role's password has changed since", 1)
        .await;
    let second = psql_commands(&p.conninfo("password=changed-pw"), &["SELECT 1"]).await;
    assert!(second.ok, "{}", second.stderr);
    p.serve.stop().await;
}

/// The default kept verifier's other bound: a changed password's old one stops working once the TTL
/// has passed since the change, with no failed proof to drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_passwords_old_one_stops_within_the_ttl() {
    let ttl = Duration::from_secs(2);
    let p = Pooled::start_on(
        Postgres::start_with_tcp(),
        "",
        "verifier_cache_ttl = \"2s\"",
        "recheck_interval = \"10m\"",
    )
    .await;
    p.psql("", &["SELECT 1"]).await;
    p.pg.sql("ALTER ROLE tableau PASSWORD 'changed-pw'");
    let altered = tokio::time::Instant::now();
    // Not a wait for a condition: the bound under test is time itself.
    tokio::time::sleep_until(altered + ttl).await;
    let old = psql_commands(&p.conninfo(""), &["SELECT 1"]).await;
    assert!(
        old.stderr.contains("password authentication failed"),
        "the old password still works past the TTL: {}",
        old.stderr
    );
    // A wrong password whose verifier had not changed is no stale cache: nothing said.
    assert!(!p.serve.log_text().contains("has changed since"));
    let new = psql_commands(&p.conninfo("password=changed-pw"), &["SELECT 1"]).await;
    assert!(new.ok, "{}", new.stderr);
    p.serve.stop().await;
}
