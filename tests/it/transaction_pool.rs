//! Transaction pooling (`[pool] mode = "transaction"`, issue #30): a real PostgreSQL behind pgssl,
//! and real clients in front — pgbench in its three query modes, psql, tokio-postgres, psycopg 3 and
//! pgjdbc. A repository session is held from a client's first message to the ReadyForQuery that
//! ends its transaction, then serves other clients. Each test asserts what the clients see (rows,
//! SQLSTATEs, `pg_backend_pid()`), what the repository sees (`pg_stat_activity`) and what pgssl
//! counts (its metrics).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::NoTls;

use crate::client::{ClientError, Session, connect_tls_unverified, sqlstate, ssl_request};
use crate::harness::{PASSWORD, Postgres, PsqlRun, pg_bindir, wait_for};
use crate::pool::{Pooled, send_cancel};

/// How long the repository and pgssl have to reach a state a test waits for.
const WAIT: Duration = Duration::from_secs(30);

/// How long one pgbench run may take before the test gives up on it (a stall is a failure).
const PGBENCH_LIMIT: Duration = Duration::from_secs(180);

/// pgssl in transaction mode in front of a fresh repository, with `pool` lines added to `[pool]`.
async fn transaction_pool(pool: &str) -> Pooled {
    Pooled::start(&format!("mode = \"transaction\"\n{pool}")).await
}

/// [`Pooled::start_on`] with `server` lines in `[server]` as well.
async fn transaction_pool_on(pg: Postgres, server: &str, repository: &str, pool: &str) -> Pooled {
    let pool = format!("mode = \"transaction\"\n{pool}");
    Pooled::start_with(pg, server, repository, "", &pool).await
}

/// A harness client of `tableau` through pgssl (it knows its cancel key).
async fn connect(addr: SocketAddr) -> Session {
    connect_tls_unverified(addr, "tableau", "postgres", PASSWORD)
        .await
        .expect("tableau logs in through pgssl")
}

/// The first column of the first row of `sql`, run with the simple query protocol.
async fn one(s: &mut Session, sql: &str) -> String {
    match s.simple_query(sql).await {
        Ok(rows) => rows
            .first()
            .and_then(|r| r[0].clone())
            .unwrap_or_else(|| panic!("{sql}: no value in {rows:?}")),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Runs `sql` (simple query protocol), which must succeed.
async fn run(s: &mut Session, sql: &str) {
    if let Err(e) = s.simple_query(sql).await {
        panic!("{sql}: {e}");
    }
}

/// The backend the client's next transaction runs on.
async fn pid(s: &mut Session) -> String {
    one(s, "SELECT pg_backend_pid()").await
}

/// The value of the sample `name` with `labels`, 0 when pgssl has none.
async fn metric(p: &Pooled, name: &str, labels: &[&str]) -> f64 {
    crate::metrics::sample(&p.metrics().await, name, labels).unwrap_or(0.0)
}

/// The address of pgssl's metrics endpoint, from its start-up log line.
fn metrics_addr(p: &Pooled) -> String {
    p.serve
        .log_text()
        .split("metrics=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the metrics address is logged")
        .to_string()
}

/// The last 100 lines pgssl logged (a run of 1,000 clients logs many more).
fn log_tail(p: &Pooled) -> String {
    let log = p.serve.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(100)..].join("\n")
}

/// Raises this process's open-file limit (its children, pgbench and pgssl, inherit it) to at least
/// `at_least`: pgbench refuses to start more clients than it may open files.
fn raise_open_files(at_least: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur >= at_least {
            return;
        }
        assert!(
            limit.rlim_max >= at_least,
            "this test needs {at_least} open files; the hard limit is {} (ulimit -Hn)",
            limit.rlim_max
        );
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raised), 0);
    }
}

/// What a pgbench run printed and how it ended.
struct Pgbench {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Pgbench {
    /// "number of transactions actually processed: N/M" → (N, M).
    fn processed(&self) -> (u64, u64) {
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .unwrap_or_else(|| panic!("no processed count:\n{}\n{}", self.stdout, self.stderr));
        let (done, planned) = line.split_once('/').unwrap();
        (
            done.trim().parse().unwrap(),
            planned.trim().parse().unwrap(),
        )
    }

    /// "number of failed transactions: N (…)" → N (0 when pgbench prints no such line).
    fn failed(&self) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
            .unwrap_or(0)
    }

    /// Asserts that the run ended well and processed `expected` transactions.
    fn assert_processed(&self, expected: u64, what: &str, log: &str) {
        assert!(
            self.ok && self.processed() == (expected, expected) && self.failed() == 0,
            "{what}: expected {expected} transactions\n{}\n{}\npgssl:\n{log}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs pgbench with `args` (the connection string last), the harness password in the environment.
async fn pgbench(args: &[&str]) -> Pgbench {
    let mut cmd = tokio::process::Command::new(pg_bindir().join("pgbench"));
    cmd.args(args)
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "30")
        .env("HOME", std::env::temp_dir())
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PGBENCH_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pgbench {args:?} did not finish in {PGBENCH_LIMIT:?}"))
        .expect("pgbench runs");
    Pgbench {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `pgbench -i` (scale 1) straight against the repository as the superuser; `tableau` may read the
/// tables.
async fn pgbench_init(pg: &Postgres) {
    let direct = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        pg.tcp_port.expect("a repository on TCP")
    );
    let init = pgbench(&["-i", "-q", "-s", "1", &direct]).await;
    assert!(init.ok, "pgbench -i: {}\n{}", init.stdout, init.stderr);
    pg.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO tableau");
}

/// The most sessions of `tableau` the repository had at once, and the most client connections
/// pgssl had open at once, sampled from before `load` starts until it ends.
struct Peaks {
    sessions: usize,
    clients: f64,
    samples: usize,
}

async fn watch_peaks<T>(p: &Pooled, load: impl std::future::Future<Output = T>) -> (T, Peaks) {
    // A superuser session straight to the repository, opened before the load.
    let mut watcher = p.superuser().await;
    // Scraped straight, without reading pgssl's growing log for the address each time.
    let metrics = metrics_addr(p);
    let running = tokio_util::sync::CancellationToken::new();
    let watching = running.clone();
    let watch = async {
        let mut peaks = Peaks {
            sessions: 0,
            clients: 0.0,
            samples: 0,
        };
        while !watching.is_cancelled() {
            let rows = watcher
                .simple_query("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tableau'")
                .await
                .expect("the watcher's query");
            let now: usize = rows[0][0].as_deref().unwrap().parse().unwrap();
            peaks.sessions = peaks.sessions.max(now);
            let clients = crate::metrics::sample(
                &crate::metrics::scrape(&metrics).await,
                "pgssl_connections_active",
                &[],
            )
            .unwrap_or(0.0);
            peaks.clients = peaks.clients.max(clients);
            peaks.samples += 1;
            // Many looks, without taking a core from the clients.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peaks
    };
    let load = async {
        let out = load.await;
        running.cancel();
        out
    };
    tokio::join!(load, watch)
}

/// Waits until pgssl has no client connection open.
async fn wait_no_clients(p: &Pooled) {
    wait_for("pgssl to have no client left", WAIT, || async {
        let open = metric(p, "pgssl_connections_active", &[]).await;
        if open == 0.0 {
            Ok(())
        } else {
            Err(format!("{open} client connections"))
        }
    })
    .await
}

/// 1,000 pgbench clients, connected all at once, in each query mode (simple, extended, prepared:
/// pgbench's named statements, the same names on every client) on 20 repository sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pgbench_clients_in_every_query_mode_share_twenty_backends() {
    // pgbench needs one file per client and a few more; pgssl two per client at most.
    raise_open_files(2048);
    let pg = Postgres::start_with_tcp();
    pgbench_init(&pg).await;
    let p = transaction_pool_on(
        pg,
        "max_connections = 1100",
        "",
        "max_backends = 20\ncheckout_timeout = \"60s\"",
    )
    .await;
    let conninfo = p.conninfo("");
    for mode in ["simple", "extended", "prepared"] {
        let args = [
            "-n",
            "-c",
            "1000",
            "-j",
            "2",
            "-t",
            "10",
            "-b",
            "select-only",
            "-M",
            mode,
            &conninfo,
        ];
        let (run, peaks) = watch_peaks(&p, pgbench(&args)).await;
        run.assert_processed(10_000, &format!("-M {mode}"), &log_tail(&p));
        // pgbench opens all its connections before the first transaction: pgssl held them all
        // at once while the repository served them with at most 20 sessions.
        assert!(
            peaks.clients >= 1000.0,
            "-M {mode}: pgssl never had the 1,000 clients at once (peak {}, {} looks)",
            peaks.clients,
            peaks.samples
        );
        assert!(
            peaks.sessions <= 20,
            "-M {mode}: {} sessions of tableau at once ({} looks)",
            peaks.sessions,
            peaks.samples
        );
        assert!(
            peaks.sessions >= 1,
            "-M {mode}: the watcher never saw a session ({} looks)",
            peaks.samples
        );
        wait_no_clients(&p).await;
    }
    assert!(
        p.sessions_of("tableau") <= 20,
        "{}",
        p.pg.sql("SELECT usename, state, query FROM pg_stat_activity")
    );
    p.serve.stop().await;
}

/// Issue #30's stall: pgbench -C logs in one client after another while the ones it opened hold
/// their connections; a login takes no backend, so all 300 transactions finish on a repository of
/// 20 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pgbench_clients_reconnecting_per_transaction_finish_on_twenty_connections() {
    // Both modes: in session mode too, a login takes no backend, so clients that connected cannot
    // starve the ones that did before them (that stalled pgbench -C before transaction pooling).
    for pool in ["", "rules = [{ role = \"tableau\", mode = \"session\" }]"] {
        reconnecting_clients_finish(pool).await;
    }
}

async fn reconnecting_clients_finish(pool: &str) {
    let pg = Postgres::start_with_tcp();
    pgbench_init(&pg).await;
    pg.sql("ALTER SYSTEM SET max_connections = 20");
    pg.restart();
    assert_eq!(pg.sql("SHOW max_connections"), "20");
    let p = transaction_pool_on(pg, "", "max_connections = 20", pool).await;
    let run = pgbench(&[
        "-n",
        "-C",
        "-c",
        "100",
        "-j",
        "2",
        "-t",
        "3",
        "-b",
        "select-only",
        &p.conninfo(""),
    ])
    .await;
    run.assert_processed(300, &format!("pgbench -C ({pool})"), &log_tail(&p));
    assert!(!run.stderr.contains("too many clients"), "{}", run.stderr);
    p.serve.stop().await;
}

/// One psql session driven line by line on its standard input (`-q`: results only).
struct PsqlSession {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

impl PsqlSession {
    fn start(conninfo: &str) -> PsqlSession {
        let mut child = tokio::process::Command::new(pg_bindir().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                conninfo,
            ])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("HOME", std::env::temp_dir())
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("psql runs");
        let stdin = child.stdin.take().unwrap();
        PsqlSession { child, stdin }
    }

    /// Sends `lines` (statements ending with `;`).
    async fn send(&mut self, lines: &str) {
        self.stdin.write_all(lines.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Ends the input and returns what psql printed.
    async fn finish(self) -> PsqlRun {
        let PsqlSession { child, stdin } = self;
        drop(stdin);
        let out = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("psql ends once its input does")
            .unwrap();
        PsqlRun {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Waits until the table `progress` (which the clients insert into) has the row `step`: a client
/// driven on its input has run everything before it.
async fn wait_step(p: &Pooled, step: &str) {
    let sql = format!("SELECT count(*) FROM progress WHERE step = '{step}'");
    let what = format!("the step {step}");
    wait_for(&what, WAIT, || async {
        match p.pg.sql(&sql).as_str() {
            "1" => Ok(()),
            n => Err(format!(
                "{n} rows; {}",
                p.pg.sql("SELECT usename, state, query FROM pg_stat_activity")
            )),
        }
    })
    .await
}

/// An explicit transaction runs all its statements on one backend, which no other client gets while
/// it is open (even idle between statements); other clients use the other backend meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psql_transaction_keeps_its_backend_between_statements() {
    let p = transaction_pool("max_backends = 2").await;
    p.pg.sql("CREATE TABLE shared (v int); GRANT SELECT, INSERT ON shared TO tableau");
    let mut a = PsqlSession::start(&p.conninfo("application_name=client_a"));
    a.send("BEGIN;\nINSERT INTO shared VALUES (1);\nSELECT pg_backend_pid();\n")
        .await;
    // A idles inside its transaction, its row not committed.
    let pid_a = wait_for("A idle in its transaction", WAIT, || async {
        let pid = p.pg.sql(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'tableau' \
             AND state = 'idle in transaction' AND query LIKE 'SELECT pg_backend_pid()%'",
        );
        if pid.is_empty() {
            Err(p
                .pg
                .sql("SELECT pid, state, query FROM pg_stat_activity WHERE usename = 'tableau'"))
        } else {
            Ok(pid)
        }
    })
    .await;
    // Other clients meanwhile: another backend, outside A's transaction.
    for _ in 0..3 {
        let b = p
            .psql(
                "application_name=client_b",
                &["SELECT pg_backend_pid() || ' ' || (SELECT count(*) FROM shared)"],
            )
            .await;
        let (pid_b, seen) = b[0].split_once(' ').unwrap();
        assert_ne!(pid_b, pid_a, "B ran on A's backend in A's transaction");
        assert_eq!(seen, "0", "B saw A's uncommitted row");
    }
    a.send(
        "SELECT pg_backend_pid();\nSELECT count(*) FROM shared;\nCOMMIT;\n\
         SELECT count(*) FROM shared;\n",
    )
    .await;
    let run = a.finish().await;
    assert!(run.ok, "{}\n{}", run.stderr, p.serve.log_text());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [pid_a.as_str(), pid_a.as_str(), "1", "1"],
        "A's transaction: one backend, its own row"
    );
    assert_eq!(
        p.psql("", &["SELECT count(*) FROM shared"]).await,
        ["1"],
        "A's commit is seen by others"
    );
    p.serve.stop().await;
}

/// search_path, TimeZone and a parameter of `track_parameters` (work_mem) SET outside a transaction
/// follow their client into every later transaction, whichever backend it gets, without pinning it;
/// another client on the very same backend (there is only one) sees the defaults and its own
/// application_name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_outside_a_transaction_follow_their_client_and_no_other() {
    let p = transaction_pool("max_backends = 1\ntrack_parameters = [\"work_mem\"]").await;
    p.pg.sql(
        "CREATE SCHEMA tenant; GRANT USAGE ON SCHEMA tenant TO tableau;\
         CREATE TABLE tenant.whoami (v text); INSERT INTO tenant.whoami VALUES ('tenant');\
         CREATE TABLE public.whoami (v text); INSERT INTO public.whoami VALUES ('public');\
         GRANT SELECT ON tenant.whoami, public.whoami TO tableau;\
         CREATE TABLE progress (step text); GRANT INSERT ON progress TO tableau",
    );
    let default_tz = p.pg.sql("SHOW TimeZone");
    assert_ne!(default_tz, "Asia/Tokyo");
    let default_work_mem = p.pg.sql("SHOW work_mem");
    assert_ne!(default_work_mem, "7MB");
    let seen = "SELECT pg_backend_pid() || ' ' || v || ' ' || current_setting('TimeZone') \
                || ' ' || current_setting('work_mem') || ' ' || current_setting('search_path') \
                || ' ' || current_setting('application_name') FROM whoami";

    let mut a = PsqlSession::start(&p.conninfo("application_name=client_a"));
    a.send(&format!(
        "SET search_path = tenant, public;\nSET TimeZone = 'Asia/Tokyo';\nSET work_mem = '7MB';\n\
         {seen};\n\
         INSERT INTO progress VALUES ('a-set');\n"
    ))
    .await;
    wait_step(&p, "a-set").await;
    let backend =
        p.pg.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'tableau'");
    let defaults =
        format!("{backend} public {default_tz} {default_work_mem} \"$user\", public client_b");
    // B, on A's backend (the only one), between A's transactions.
    assert_eq!(
        p.psql("application_name=client_b", &[seen]).await,
        [defaults.as_str()],
        "B saw A's settings"
    );
    a.send(&format!(
        "{seen};\nBEGIN;\n{seen};\nCOMMIT;\nSHOW TimeZone;\nSHOW search_path;\n"
    ))
    .await;
    let run = a.finish().await;
    assert!(run.ok, "{}\n{}", run.stderr, p.serve.log_text());
    let mine = format!("{backend} tenant Asia/Tokyo 7MB tenant, public client_a");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            mine.as_str(),
            mine.as_str(),
            mine.as_str(),
            "Asia/Tokyo",
            "tenant, public"
        ],
        "A lost its settings after B used the backend"
    );
    assert_eq!(
        p.psql("application_name=client_b", &[seen]).await,
        [defaults.as_str()],
        "B saw A's settings after A left"
    );
    // Tracked settings move with their client: nothing pinned.
    let text = p.metrics().await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("pgssl_pool_pinned_total{") && !l.ends_with(" 0")),
        "{text}"
    );
    p.serve.stop().await;
}

/// Five clients connected at once on one backend: each runs its transactions in turn on it (in
/// session mode the second one would wait for the first to leave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connected_at_once_share_one_backend() {
    let p = transaction_pool("max_backends = 1\ncheckout_timeout = \"5s\"").await;
    let addr = p.addr();
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(addr).await);
    }
    let mut pids = BTreeSet::new();
    for _round in 0..3 {
        for c in &mut clients {
            pids.insert(pid(c).await);
        }
    }
    // And at once: they queue for the one backend.
    let mut running = tokio::task::JoinSet::new();
    for mut c in clients {
        running.spawn(async move {
            let rows = c
                .simple_query("SELECT pg_backend_pid(), pg_sleep(0.05)")
                .await;
            (c, rows)
        });
    }
    let mut clients = Vec::new();
    while let Some(done) = running.join_next().await {
        let (c, rows) = done.unwrap();
        pids.insert(
            rows.expect("a queued client's query")[0][0]
                .clone()
                .unwrap(),
        );
        clients.push(c);
    }
    let backend =
        p.pg.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'tableau'");
    assert_eq!(
        pids.into_iter().collect::<Vec<_>>(),
        [backend],
        "five clients, one backend"
    );
    for c in clients {
        c.terminate().await.unwrap();
    }
    p.serve.stop().await;
}

/// Per-role rules: tableau's clients share one backend (transaction mode, its own bound) while
/// readonly's keep a backend each for their whole session (the global session mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_puts_one_role_in_transaction_mode_and_leaves_the_others_in_session_mode() {
    let p = Pooled::start(
        "checkout_timeout = \"5s\"\nrules = [{ role = \"tableau\", mode = \"transaction\", max_backends = 1 }]",
    )
    .await;
    let addr = p.addr();
    let mut tableau = Vec::new();
    for _ in 0..3 {
        tableau.push(connect(addr).await);
    }
    let mut readonly = Vec::new();
    for _ in 0..2 {
        readonly.push(
            connect_tls_unverified(addr, "readonly", "postgres", PASSWORD)
                .await
                .unwrap(),
        );
    }
    let mut tableau_pids = BTreeSet::new();
    let mut readonly_pids = vec![BTreeSet::new(), BTreeSet::new()];
    for _round in 0..3 {
        for c in &mut tableau {
            tableau_pids.insert(pid(c).await);
        }
        for (c, seen) in readonly.iter_mut().zip(&mut readonly_pids) {
            seen.insert(pid(c).await);
        }
    }
    assert_eq!(tableau_pids.len(), 1, "tableau: {tableau_pids:?}");
    assert_eq!(p.sessions_of("tableau"), 1);
    assert!(
        readonly_pids.iter().all(|s| s.len() == 1) && readonly_pids[0] != readonly_pids[1],
        "readonly (session mode): one backend per client, kept: {readonly_pids:?}"
    );
    p.serve.stop().await;
}

/// A tokio-postgres client through pgssl over TLS (no certificate check), as `tableau`.
async fn driver_client(addr: SocketAddr) -> tokio_postgres::Client {
    let (answer, tcp) = ssl_request(addr).await;
    assert_eq!(answer, b'S');
    let tls = pgssl::tls::client::require_mode_connector()
        .unwrap()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .user("tableau")
        .dbname("postgres")
        .password(PASSWORD)
        .ssl_mode(SslMode::Disable);
    let (client, connection) = config
        .connect_raw(tls, NoTls)
        .await
        .expect("tokio-postgres logs in through pgssl");
    tokio::spawn(connection);
    client
}

/// The SQLSTATE of a tokio-postgres error.
fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| panic!("not a server error: {e}"))
}

/// The protocol-level name tokio-postgres gave `statement` (it shows it only in Debug).
fn statement_name(statement: &tokio_postgres::Statement) -> String {
    let debug = format!("{statement:?}");
    debug
        .split("name: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no name in {debug}"))
        .to_string()
}

/// 50 tokio-postgres clients at once on 5 backends, every statement prepared (named, Parse +
/// Describe) and run with parameters (Bind/Execute) in later transactions on whatever backend the
/// client gets, then closed; statements in a transaction stay on its backend; DEALLOCATE name and
/// ALL reach the client's statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tokio_postgres_clients_run_prepared_statements_on_five_backends() {
    let p = transaction_pool("max_backends = 5\ncheckout_timeout = \"30s\"").await;
    let addr = p.addr();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..50i32 {
        clients.spawn(async move {
            let mut client = driver_client(addr).await;
            let mut pids = BTreeSet::new();
            for round in 0..6i32 {
                // Prepared in another order by half the clients.
                let (add, echo) = if i % 2 == 0 {
                    let add = client
                        .prepare("SELECT $1::int4 + $2::int4, pg_backend_pid()")
                        .await?;
                    let echo = client.prepare("SELECT $1::text || '-' || $2::int4").await?;
                    (add, echo)
                } else {
                    let echo = client.prepare("SELECT $1::text || '-' || $2::int4").await?;
                    let add = client
                        .prepare("SELECT $1::int4 + $2::int4, pg_backend_pid()")
                        .await?;
                    (add, echo)
                };
                for k in 0..3i32 {
                    let row = client.query_one(&add, &[&i, &(round * 10 + k)]).await?;
                    assert_eq!(row.get::<_, i32>(0), i + round * 10 + k, "client {i}");
                    pids.insert(row.get::<_, i32>(1));
                    let row = client.query_one(&echo, &[&format!("c{i}"), &k]).await?;
                    assert_eq!(row.get::<_, String>(0), format!("c{i}-{k}"));
                }
                // Dropped: tokio-postgres sends Close for both.
                drop((add, echo));
            }
            // In a transaction: prepared and run on its one backend.
            let tx = client.transaction().await?;
            let here = tx.prepare("SELECT pg_backend_pid()").await?;
            let first: i32 = tx.query_one(&here, &[]).await?.get(0);
            let again: i32 = tx.query_one(&here, &[]).await?.get(0);
            tx.commit().await?;
            assert_eq!(first, again, "client {i}: a transaction moved backends");
            pids.insert(first);
            Ok::<_, tokio_postgres::Error>(pids)
        });
    }
    let mut all = BTreeSet::new();
    let mut moved = 0;
    while let Some(done) = clients.join_next().await {
        match done.unwrap() {
            Ok(pids) => {
                moved += usize::from(pids.len() > 1);
                all.extend(pids);
            }
            Err(e) => panic!("a client failed: {e:?}\n{}", p.serve.log_text()),
        }
    }
    assert!(all.len() <= 5, "50 clients ran on {} backends", all.len());
    assert!(
        moved > 0,
        "no client ran its statements on more than one backend: nothing was prepared again"
    );
    assert!(p.sessions_of("tableau") <= 5);

    // DEALLOCATE, by name and ALL, reaches the client's own statements.
    let client = driver_client(addr).await;
    let one = client.prepare("SELECT 1").await.unwrap();
    let two = client.prepare("SELECT 2").await.unwrap();
    client
        .batch_execute(&format!("DEALLOCATE {}", statement_name(&one)))
        .await
        .expect("DEALLOCATE of the client's statement");
    let gone = client.query(&one, &[]).await.unwrap_err();
    assert_eq!(code(&gone), "26000", "{gone}");
    assert_eq!(
        client.query_one(&two, &[]).await.unwrap().get::<_, i32>(0),
        2
    );
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    let gone = client.query(&two, &[]).await.unwrap_err();
    assert_eq!(code(&gone), "26000", "{gone}");
    let three = client.prepare("SELECT 3").await.unwrap();
    assert_eq!(
        client
            .query_one(&three, &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
    p.serve.stop().await;
}

/// The first column of the first row of `sql`, run by tokio-postgres with the simple protocol.
async fn driver_one(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

/// `max_prepared_statements` bounds the statements pgssl keeps prepared on a backend (least
/// recently used first out); a client's statement pushed out is prepared again when it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_beyond_max_prepared_statements_are_prepared_again_when_used() {
    let p = transaction_pool("max_backends = 1\nmax_prepared_statements = 2").await;
    let client = driver_client(p.addr()).await;
    let mut statements = Vec::new();
    for k in 0..5i32 {
        statements.push(
            client
                .prepare(&format!("SELECT {k}::int4 + $1::int4"))
                .await
                .unwrap(),
        );
    }
    for round in 0..3i32 {
        for (k, statement) in (0i32..).zip(&statements) {
            let got: i32 = client
                .query_one(statement, &[&round])
                .await
                .unwrap_or_else(|e| panic!("statement {k}, round {round}: {e}"))
                .get(0);
            assert_eq!(got, k + round, "statement {k}, round {round}");
        }
    }
    // The one backend holds at most the bound of them.
    let held: usize = driver_one(&client, "SELECT count(*) FROM pg_prepared_statements")
        .await
        .parse()
        .unwrap();
    assert!(held <= 2, "{held} statements prepared on the backend");
    p.serve.stop().await;
}

/// A Python interpreter that has psycopg 3: Debian's (python3-psycopg), which the project's venv,
/// first on PATH under scripts/test, does not see.
pub(crate) fn python_with_psycopg() -> &'static str {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| {
            std::process::Command::new(python)
                .args(["-c", "import psycopg"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("python3 with psycopg 3: apt-get install python3-psycopg (scripts/test does)")
}

/// A driver program's report line (`prefix key=value ...`), once it succeeded: it ran
/// `connections` connections on at most `backends` repository sessions.
fn driver_report(
    out: &std::process::Output,
    p: &Pooled,
    prefix: &str,
    connections: u64,
    backends: u64,
) -> (std::collections::BTreeMap<String, u64>, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\npgssl:\n{}",
        p.serve.log_text()
    );
    let seen = report(&stdout, prefix);
    assert_eq!(seen["connections"], connections, "{stdout}");
    assert!(
        (1..=backends).contains(&seen["backends"]),
        "{connections} connections on {} backends",
        seen["backends"]
    );
    (seen, stdout)
}

/// The `key=value` words of the line of `stdout` that starts with `prefix`.
fn report(stdout: &str, prefix: &str) -> std::collections::BTreeMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{stdout}"));
    line[prefix.len()..]
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// psycopg 3 with every statement prepared on the server (`prepare_threshold=0`: the same driver
/// names on every connection), pipeline mode and transactions, six connections on two backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_statements_and_pipelines_share_two_backends() {
    let python = python_with_psycopg();
    let p = transaction_pool("max_backends = 2\ncheckout_timeout = \"30s\"").await;
    p.pg.sql("CREATE TABLE psycopg_items (conn int, n int); GRANT SELECT, INSERT ON psycopg_items TO tableau");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/python/psycopg_transaction_pool.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(&script)
            .arg(p.conninfo(""))
            .env("PGPASSWORD", PASSWORD)
            .env("HOME", std::env::temp_dir())
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the psycopg script finishes")
    .unwrap();
    let (seen, stdout) = driver_report(&out, &p, "psycopg ok:", 6, 2);
    assert_eq!(seen["rows"], 6 * 20, "{stdout}");
    assert_eq!(
        p.pg.sql("SELECT count(*) || ' ' || sum(n) FROM psycopg_items"),
        format!("{} {}", 6 * 20, 6 * 190)
    );
    p.serve.stop().await;
}

/// pgjdbc with `prepareThreshold=1` (server-prepared from the first run: S_1, S_2… on every
/// connection), a batch insert in a transaction and prepared selects, four connections on two
/// backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_batches_and_prepared_selects_share_two_backends() {
    let p = transaction_pool("max_backends = 2\ncheckout_timeout = \"30s\"").await;
    p.pg.sql(
        "CREATE TABLE jdbc_items (conn int, n int, label text); \
         GRANT SELECT, INSERT ON jdbc_items TO tableau",
    );
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/java/JdbcTransactionPool.java");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/postgres?user=tableau&password={PASSWORD}&sslmode=require\
         &sslfactory=org.postgresql.ssl.NonValidatingFactory&prepareThreshold=1",
        p.addr().port()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("java")
            .args(["-cp", "/usr/share/java/postgresql.jar"])
            .arg(&source)
            .arg(&url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the pgjdbc program finishes")
    .expect("java runs (apt-get install default-jre-headless libpostgresql-jdbc-java)");
    let (seen, stdout) = driver_report(&out, &p, "jdbc ok:", 4, 2);
    assert_eq!(seen["rows"], 200, "{stdout}");
    assert_eq!(
        p.pg.sql("SELECT count(*) || ' ' || sum(n) FROM jdbc_items"),
        format!("200 {}", 4 * 1225)
    );
    p.serve.stop().await;
}

/// Each reason to pin: the statement, then a query whose answer shows the pinned state is still
/// there in a later transaction, and that answer.
const PINS: &[(&str, &str, &str, &str)] = &[
    (
        "listen",
        "LISTEN pool_channel",
        "SELECT count(*) FROM pg_listening_channels()",
        "1",
    ),
    (
        "advisory_lock",
        "SELECT pg_advisory_lock(4242)",
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()",
        "1",
    ),
    (
        "temp_table",
        "CREATE TEMP TABLE scratch (x int)",
        "SELECT count(*) FROM scratch",
        "0",
    ),
    (
        "hold_cursor",
        "DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 3)",
        "SELECT count(*) FROM pg_cursors WHERE name = 'held'",
        "1",
    ),
    (
        "sql_prepare",
        "PREPARE plus_one(int) AS SELECT $1 + 1",
        "EXECUTE plus_one(41)",
        "42",
    ),
    (
        "set_role",
        "SET ROLE pool_reader",
        "SELECT current_user",
        "pool_reader",
    ),
    (
        "unknown_set",
        "SET work_mem = '7MB'",
        "SHOW work_mem",
        "7MB",
    ),
];

/// Waits until two clients can each hold a backend at once (a pinned one was given back).
async fn wait_two_backends_free(p: &Pooled) {
    let addr = p.addr();
    wait_for("both backends free", WAIT, || async {
        let mut x = connect(addr).await;
        let mut y = connect(addr).await;
        let held = async {
            x.simple_query("BEGIN").await?;
            y.simple_query("BEGIN").await?;
            x.simple_query("ROLLBACK").await?;
            y.simple_query("ROLLBACK").await?;
            Ok::<_, ClientError>(())
        }
        .await;
        held.map_err(|e| e.to_string())
    })
    .await
}

/// Each statement that ties session state to a backend pins it to its client for the rest of the
/// session: the state is there in every later transaction, no other client gets that backend (a
/// third client, with the other one busy, times out), and the pin is counted by its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pinning_statement_keeps_its_backend_for_the_client_and_is_counted() {
    let p = transaction_pool("max_backends = 2\ncheckout_timeout = \"1s\"").await;
    p.pg.sql("CREATE ROLE pool_reader NOLOGIN; GRANT pool_reader TO tableau");
    let addr = p.addr();
    for (done, (reason, pin, check, expected)) in PINS.iter().enumerate() {
        let mut a = connect(addr).await;
        a.simple_query(pin)
            .await
            .unwrap_or_else(|e| panic!("{reason}: {pin}: {e}"));
        let pinned = pid(&mut a).await;
        // B's transaction, open: the other backend.
        let mut b = connect(addr).await;
        run(&mut b, "BEGIN").await;
        let other = pid(&mut b).await;
        assert_ne!(
            other, pinned,
            "{reason}: B's transaction got A's pinned backend"
        );
        for _ in 0..2 {
            assert_eq!(pid(&mut a).await, pinned, "{reason}: A moved backends");
            assert_eq!(one(&mut a, check).await, *expected, "{reason}: {check}");
        }
        // Neither backend is free: a third client waits, then gets 53300.
        let mut c = connect(addr).await;
        assert_eq!(
            sqlstate(c.simple_query("SELECT 1").await),
            "53300",
            "{reason}: a third client got a backend while A's is pinned and B's busy"
        );
        run(&mut b, "COMMIT").await;
        assert_eq!(
            pid(&mut b).await,
            other,
            "{reason}: B got A's pinned backend"
        );
        assert_eq!(pid(&mut a).await, pinned, "{reason}: A moved backends");
        let label = format!("reason=\"{reason}\"");
        wait_for(&format!("the {reason} pin counted"), WAIT, || async {
            let counted = metric(&p, "pgssl_pool_pinned_total", &[&label]).await;
            if counted == 1.0 {
                Ok(())
            } else {
                Err(format!("{counted}\n{}", p.metrics().await))
            }
        })
        .await;
        // Each pin counted once, under its own reason.
        let text = p.metrics().await;
        let total: f64 = PINS
            .iter()
            .map(|(r, ..)| {
                crate::metrics::sample(
                    &text,
                    "pgssl_pool_pinned_total",
                    &[&format!("reason=\"{r}\"")],
                )
                .unwrap_or(0.0)
            })
            .sum();
        assert_eq!(total, (done + 1) as f64, "{reason}: {text}");
        a.terminate().await.unwrap();
        b.terminate().await.unwrap();
        drop(c);
        wait_two_backends_free(&p).await;
    }
    p.serve.stop().await;
}

/// `on_pin = "refuse"`: a statement that would pin fails with 0A000 naming transaction pooling,
/// leaves nothing on the backend, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_pin_refuse_a_pinning_statement_fails_and_the_session_goes_on() {
    let p = transaction_pool("max_backends = 1\non_pin = \"refuse\"").await;
    let addr = p.addr();
    let mut a = connect(addr).await;
    for (statement, left) in [
        (
            "LISTEN pool_channel",
            "SELECT count(*) FROM pg_listening_channels()",
        ),
        (
            "PREPARE plus_one(int) AS SELECT $1 + 1",
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'plus_one'",
        ),
        (
            "CREATE TEMP TABLE scratch (x int)",
            "SELECT count(*) FROM pg_class WHERE relname = 'scratch'",
        ),
    ] {
        let refused = a
            .simple_query(statement)
            .await
            .expect_err(&format!("{statement} was not refused"));
        let server = refused
            .server()
            .unwrap_or_else(|| panic!("{statement}: {refused}"));
        assert_eq!(server.code, "0A000", "{statement}: {}", server.message);
        assert!(
            server.message.contains("transaction pooling"),
            "{statement}: {}",
            server.message
        );
        assert_eq!(one(&mut a, "SELECT 1").await, "1", "after {statement}");
        // Another client on the only backend: nothing of the refused statement is there.
        let mut b = connect(addr).await;
        assert_eq!(
            one(&mut b, left).await,
            "0",
            "{statement} left state behind"
        );
        b.terminate().await.unwrap();
    }
    assert_eq!(one(&mut a, "SELECT 2").await, "2");
    a.terminate().await.unwrap();
    p.serve.stop().await;
}

/// Waits until the repository runs `query` (exactly) in some backend and returns its pid.
async fn wait_running_anywhere(p: &Pooled, query: &str) -> String {
    let sql =
        format!("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query = '{query}'");
    let what = format!("a backend to run {query:?}");
    wait_for(&what, WAIT, || async {
        match p.pg.sql(&sql) {
            pid if pid.is_empty() => Err(p
                .pg
                .sql("SELECT pid, state, query FROM pg_stat_activity WHERE usename = 'tableau'")),
            pid => Ok(pid),
        }
    })
    .await
}

/// A client's cancel key reaches only the backend running its own query: the key of a client idle
/// between transactions (whose last transaction ran on that very backend) cancels nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_only_the_query_of_the_client_whose_key_it_is() {
    const SLEEP: &str = "SELECT pg_sleep(30)";
    let p = transaction_pool("max_backends = 1\ncheckout_timeout = \"60s\"").await;
    let addr = p.addr();
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    // Connected and never ran anything.
    let c = connect(addr).await;
    let (key_a, key_b, key_c) = (
        a.backend_key.unwrap(),
        b.backend_key.unwrap(),
        c.backend_key.unwrap(),
    );
    assert!(key_a != key_b && key_b != key_c && key_a != key_c);
    // B's last transaction ran on the one backend, which A's query now runs on.
    let backend = pid(&mut b).await;
    let sleeper = tokio::spawn(async move {
        let r = a.simple_query(SLEEP).await;
        (a, r)
    });
    assert_eq!(wait_running_anywhere(&p, SLEEP).await, backend);
    for (whose, key) in [("B", key_b), ("C", key_c)] {
        send_cancel(addr, key).await;
        assert!(
            p.still_running(&backend, SLEEP),
            "{whose}'s key, idle between transactions, cancelled A's query"
        );
    }
    send_cancel(addr, key_a).await;
    let (mut a, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("A's own key ends its query")
        .unwrap();
    assert_eq!(sqlstate(result), "57014");

    // The other way round: B's query, A idle, A's key (its last query ran there) does nothing.
    let sleeper = tokio::spawn(async move {
        let r = b.simple_query(SLEEP).await;
        (b, r)
    });
    p.wait_running(&backend, SLEEP).await;
    for (whose, key) in [("A", key_a), ("C", key_c)] {
        send_cancel(addr, key).await;
        assert!(
            p.still_running(&backend, SLEEP),
            "{whose}'s key, idle between transactions, cancelled B's query"
        );
    }
    send_cancel(addr, key_b).await;
    let (b, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("B's own key ends its query")
        .unwrap();
    assert_eq!(sqlstate(result), "57014");
    // Two cancels were forwarded to the repository, no more.
    wait_for("the two cancels counted", WAIT, || async {
        let forwarded = metric(&p, "pgssl_cancel_requests_total", &[]).await;
        if forwarded >= 2.0 {
            Ok(())
        } else {
            Err(format!("{forwarded} forwarded"))
        }
    })
    .await;
    assert_eq!(
        metric(&p, "pgssl_cancel_requests_total", &[]).await,
        2.0,
        "{}",
        p.serve.log_text()
    );
    // Everyone goes on.
    assert_eq!(one(&mut a, "SELECT 1").await, "1");
    a.terminate().await.unwrap();
    b.terminate().await.unwrap();
    c.terminate().await.unwrap();
    p.serve.stop().await;
}

/// A client waiting for a backend past `checkout_timeout` gets 53300 (its login needed none);
/// once the transaction holding the only backend ends, the next client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_past_checkout_timeout_gets_53300() {
    let p = transaction_pool("max_backends = 1\ncheckout_timeout = \"1s\"").await;
    let addr = p.addr();
    let mut a = connect(addr).await;
    run(&mut a, "BEGIN").await;
    let held = pid(&mut a).await;
    // B logs in without a backend, then waits for one.
    let mut b = connect(addr).await;
    let waited = Instant::now();
    let refused = b.simple_query("SELECT 1").await;
    let waited = waited.elapsed();
    assert_eq!(sqlstate(refused), "53300");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "B waited {waited:?} for a checkout timeout of 1 s"
    );
    // A's transaction was not disturbed.
    assert_eq!(pid(&mut a).await, held);
    run(&mut a, "COMMIT").await;
    let mut next = connect(addr).await;
    assert_eq!(
        pid(&mut next).await,
        held,
        "the freed backend serves the next client"
    );
    next.terminate().await.unwrap();
    a.terminate().await.unwrap();
    p.serve.stop().await;
}
