//! Repository faults through a fault-injecting relay between pgssl and PostgreSQL: connections
//! refused, reset in the middle of a query, a repository that accepts and never answers, and one
//! whose max_connections is full. Clients get PostgreSQL-style errors within pgssl's timeouts, and
//! `pgssl_connections_active` returns to 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::cli::{CliEnv, ServeProcess};
use crate::client::{connect_plain, sqlstate};
use crate::harness::{Postgres, wait_for, wait_until};

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const STALL: u8 = 2;

/// A relay to `target` whose behaviour for new connections is `mode`; `reset()` resets every open
/// one (RST, as a crashed host or a middlebox would).
struct FaultRelay {
    port: u16,
    mode: Arc<AtomicU8>,
    reset: Arc<tokio::sync::Notify>,
}

impl FaultRelay {
    async fn start(target: std::net::SocketAddr) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let reset = Arc::new(tokio::sync::Notify::new());
        let (m, r) = (mode.clone(), reset.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (m, r) = (m.load(Ordering::SeqCst), r.clone());
                tokio::spawn(async move {
                    match m {
                        REFUSE => {
                            let _ = client.set_zero_linger();
                        }
                        // Not a wait: a repository that accepts and never answers.
                        STALL => tokio::time::sleep(Duration::from_secs(600)).await,
                        _ => {
                            let Ok(mut server) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                () = r.notified() => {
                                    let _ = client.set_zero_linger();
                                    let _ = server.set_zero_linger();
                                }
                            }
                        }
                    }
                });
            }
        });
        FaultRelay { port, mode, reset }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

async fn active(metrics: &str) -> f64 {
    let text = crate::metrics::scrape(metrics).await;
    text.lines()
        .find(|l| l.starts_with("pgssl_connections_active "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

async fn settles_at_zero(metrics: &str) {
    wait_for(
        "pgssl_connections_active to return to 0",
        Duration::from_secs(30),
        || async {
            let n = active(metrics).await;
            if n == 0.0 {
                Ok(())
            } else {
                Err(format!("pgssl_connections_active {n}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_faults_end_in_postgresql_errors_within_the_timeouts() {
    let pg = Postgres::start_with_tcp();
    let relay = FaultRelay::start(
        format!("127.0.0.1:{}", pg.tcp_port.unwrap())
            .parse()
            .unwrap(),
    )
    .await;
    let env = CliEnv::new(&format!("127.0.0.1:{}", relay.port));
    let metrics = format!("127.0.0.1:{}", crate::harness::free_port());
    let serve = ServeProcess::start(&env, &["--metrics", &metrics]).await;
    let addr = serve.addr;

    // Healthy first: the relay passes a login through.
    let mut s = connect_plain(addr, "tableau")
        .await
        .expect("a login through the relay");
    s.simple_query("SELECT 1").await.unwrap();

    // Reset in the middle of a query: the client's session ends with an error, not a hang.
    let sleeper =
        tokio::spawn(async move { s.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    wait_until("the query to run", Duration::from_secs(30), || async {
        pg.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tableau' AND state = 'active' AND query = 'SELECT pg_sleep(30)'",
        ) == "1"
    })
    .await;
    relay.reset.notify_waiters();
    let ended = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the reset ends the session")
        .unwrap();
    assert!(ended.is_err(), "a reset mid-query is an error: {ended:?}");
    settles_at_zero(&metrics).await;

    // Refused: 08006, with the repository's address kept out of the client's message.
    relay.set(REFUSE);
    let refused = connect_plain(addr, "tableau").await;
    assert_eq!(sqlstate(refused), "08006");

    // Accepts and never answers: the login fails within the connect and handshake timeouts
    // (2 s and 10 s here), not never.
    relay.set(STALL);
    let started = Instant::now();
    let stalled = tokio::time::timeout(Duration::from_secs(30), connect_plain(addr, "tableau"))
        .await
        .expect("a stalled repository does not hang the login");
    assert_eq!(sqlstate(stalled), "57014");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    settles_at_zero(&metrics).await;

    // The repository's max_connections full: PostgreSQL's own 53300 reaches the client.
    relay.set(PASS);
    pg.sql("ALTER SYSTEM SET max_connections = 3");
    pg.sql("ALTER SYSTEM SET superuser_reserved_connections = 0");
    pg.restart();
    let mut held = Vec::new();
    let mut full = None;
    for _ in 0..5 {
        match connect_plain(addr, "tableau").await {
            Ok(s) => held.push(s),
            Err(e) => {
                full = Some(sqlstate::<()>(Err(e)));
                break;
            }
        }
    }
    assert_eq!(full.as_deref(), Some("53300"), "held {}", held.len());
    drop(held);
    settles_at_zero(&metrics).await;
    serve.stop().await;
}

/// Damaged state files: a clear error naming the file from every command, and a running server keeps
/// serving its last good state through a reload that reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_files_are_named_and_the_last_good_state_is_served() {
    use crate::cli::{failed, ok};
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::new(&format!("127.0.0.1:{}", pg.tcp_port.unwrap()));
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let serve = ServeProcess::start(&env, &[]).await;
    let fingerprint = || async {
        let s = crate::client::connect_tls_unverified(
            serve.addr,
            "tableau",
            "postgres",
            crate::harness::PASSWORD,
        )
        .await
        .expect("a TLS login");
        crate::client::peer_fingerprint(&s)
    };
    let served = fingerprint().await;
    let config = env.data_dir().join("config");
    for (file, damage) in [
        ("applied.toml", b"mode = [unclosed".as_slice()),
        ("keystore", b"key_id = 7\n".as_slice()),
        (
            "pgsql15/security/server.key",
            b"-----BEGIN PRIVATE KEY-----\ntruncated".as_slice(),
        ),
    ] {
        let path = config.join(file);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, damage).unwrap();
        if file == "applied.toml" || file == "keystore" {
            let out = env.run(&["security", "repository-ssl", "list"]);
            let out = if file == "keystore" {
                env.stage_lookup_user("pgssl_lookup", "pw").await
            } else {
                out
            };
            let why = failed(&out);
            assert!(
                why.contains(file.rsplit('/').next().unwrap()),
                "{file}: {why}"
            );
        }
        let reloads = serve.log_text().matches("reload refused").count();
        serve.signal(libc::SIGHUP);
        if file == "keystore" {
            // Serving this state needs no secret: the reload succeeds without reading it.
            serve.wait_for_log("applied settings reloaded", 1).await;
        } else {
            serve.wait_for_log("reload refused", reloads + 1).await;
            assert!(serve.log_text().contains(file.rsplit('/').next().unwrap()));
        }
        assert_eq!(
            fingerprint().await,
            served,
            "{file}: the last good state is still served"
        );
        std::fs::write(&path, good).unwrap();
    }
    serve.stop().await;
}

/// `kill -9` at a random point of `pending-changes apply` and of `regenerate-internal-tokens`, again
/// and again (`PGSSL_KILL_LOOPS`, default 15 each; 200 by hand): every command afterwards reads the old
/// or the new state, never a torn one, a reload of the running server takes it, re-running finishes
/// the interrupted command, and logins keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_apply_and_rotation_leaves_the_old_or_the_new_state() {
    use crate::cli::ok;
    let loops = crate::harness::kill_loops(15);
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::new(&format!("127.0.0.1:{}", pg.tcp_port.unwrap()));
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let serve = ServeProcess::start(&env, &[]).await;
    // A small LCG: the kill points differ from one iteration to the next but a failure reproduces.
    let mut seed: u64 = 0x9e37_79b9;
    let mut next_delay = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        Duration::from_millis((seed >> 33) % 150)
    };
    let stages: [&[&str]; 3] = [
        &["security", "repository-ssl", "enable", "--internal-only"],
        &["security", "repository-ssl", "enable"],
        &["security", "repository-ssl", "disable"],
    ];
    for i in 0..loops * 2 {
        let command: &[&str] = if i % 2 == 0 {
            ok(&env.run(stages[(i / 2) % 3]));
            &["pending-changes", "apply"]
        } else {
            &["security", "regenerate-internal-tokens"]
        };
        let mut child = tokio::process::Command::from(env.command(command))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Not a wait: the random point at which the command is killed.
        tokio::time::sleep(next_delay()).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        // Old or new, never torn: the state reads, and the running server reloads it.
        let listed = env.run(&["security", "repository-ssl", "list"]);
        assert!(listed.status.success(), "iteration {i}: {listed:?}");
        let refused = serve.log_text().matches("reload refused").count();
        let reloads = serve
            .log_text()
            .matches("applied settings reloaded")
            .count();
        serve.signal(libc::SIGHUP);
        // The reload's outcome is in before anything writes again.
        wait_until(
            &format!("iteration {i}: the reload's outcome in the log"),
            Duration::from_secs(30),
            || async {
                let log = serve.log_text();
                log.matches("reload refused").count()
                    + log.matches("applied settings reloaded").count()
                    > refused + reloads
            },
        )
        .await;
        // Re-running finishes whatever was interrupted.
        let again = env.run(command);
        let why = String::from_utf8_lossy(&again.stderr);
        assert!(
            again.status.success() || why.contains("no pending changes"),
            "iteration {i}: {command:?} again: {why}"
        );
        assert_eq!(
            serve.log_text().matches("reload refused").count(),
            refused,
            "iteration {i}: {}",
            serve.log_text()
        );
        let login = connect_plain(serve.addr, "tableau").await;
        let tls = crate::client::connect_tls_unverified(
            serve.addr,
            "tableau",
            "postgres",
            crate::harness::PASSWORD,
        )
        .await;
        assert!(
            login.is_ok() || tls.is_ok(),
            "iteration {i}: no login works"
        );
    }
    serve.stop().await;
}

/// A small tmpfs mounted on a test's data directory, so that it can be filled up or made read-only;
/// unmounted when dropped (lazily, so a panic leaves nothing mounted behind the test).
pub(crate) struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    pub(crate) fn mount(path: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        Self::mount_cmd(&["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"], path);
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    fn mount_cmd(args: &[&str], path: &std::path::Path) {
        let out = std::process::Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?} needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn read_only(&self, ro: bool) {
        let opts = if ro { "remount,ro" } else { "remount,rw" };
        Self::mount_cmd(&["-o", opts], &self.path);
    }

    /// Fills the disk to the last byte and returns the filler to remove.
    pub(crate) fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [65_536, 4_096, 1] {
            let block = vec![0u8; chunk];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
        // Nothing more fits, not even a new empty file's first byte.
        let probe = self.path.join("probe");
        assert!(std::fs::write(&probe, b"x").is_err(), "the disk is full");
        let _ = std::fs::remove_file(&probe);
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A full disk and a read-only data directory during `pending-changes apply` and
/// `regenerate-internal-tokens`: the command fails with an error that says what it could not write,
/// nothing half-written is left, `serve` keeps serving the last good state (same certificate, TLS
/// logins work), and once there is room again the same commands succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_fails_the_command_and_keeps_the_served_state() {
    use crate::cli::{failed, ok};
    let pg = Postgres::start_with_tcp();
    let env = CliEnv::new(&format!("127.0.0.1:{}", pg.tcp_port.unwrap()));
    let disk = SmallDisk::mount(&env.data_dir());
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let serve = ServeProcess::start(&env, &[]).await;
    let fingerprint = || async {
        let s = crate::client::connect_tls_unverified(
            serve.addr,
            "tableau",
            "postgres",
            crate::harness::PASSWORD,
        )
        .await
        .expect("a TLS login");
        crate::client::peer_fingerprint(&s)
    };
    let first = fingerprint().await;
    let config = env.data_dir().join("config");
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = walk(dir)
            .into_iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect();
        names.sort();
        names
    };
    let before = listing(&config);

    // A full disk: a rotation and a staged change are refused, saying why; no stray file is left.
    let filler = disk.fill();
    let why = failed(&env.run(&["security", "regenerate-internal-tokens"]));
    assert!(why.contains("No space left on device"), "{why}");
    let why = failed(&env.run(&["security", "repository-ssl", "disable"]));
    assert!(why.contains("No space left on device"), "{why}");
    assert_eq!(listing(&config), before, "nothing half-written");
    ok(&env.run(&["security", "repository-ssl", "list"]));
    serve.signal(libc::SIGHUP);
    assert_eq!(
        fingerprint().await,
        first,
        "the full disk changed nothing served"
    );

    // A read-only data directory: the same.
    std::fs::remove_file(&filler).unwrap();
    disk.read_only(true);
    let why = failed(&env.run(&["security", "regenerate-internal-tokens"]));
    assert!(why.contains("Read-only file system"), "{why}");
    let why = failed(&env.run(&["security", "repository-ssl", "disable"]));
    assert!(why.contains("Read-only file system"), "{why}");
    assert_eq!(listing(&config), before);
    assert_eq!(fingerprint().await, first);

    // Room again: the rotation goes through and is served.
    disk.read_only(false);
    ok(&env.run(&["security", "regenerate-internal-tokens"]));
    let rotated = fingerprint().await;
    assert_ne!(rotated, first, "the rotated certificate is served");
    serve.stop().await;
    drop(disk);
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
