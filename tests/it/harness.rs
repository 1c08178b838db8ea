//! The shared test harness: a throwaway PostgreSQL (initdb in a temp dir, scram-sha-256, users
//! `tableau`, `readonly`, `internal_svc`) and pgssl in front of it on port 0.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and run as
//! the `postgres` user. The cluster listens on a Unix socket in its temp dir (no TCP port) unless a
//! test asks for TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgssl::app::node::{Node, NodeOptions};
use pgssl::config::Config;
use pgssl::control::state::{AppliedState, StateStore};
use pgssl::proxy::policy::Mode;

use pgssl::proxy::repository::RepositoryAddr;
use pgssl::proxy::repository::tls::RepositoryTlsMode;
use pgssl::tls::certs;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Password of every test role, the superuser included.
pub const PASSWORD: &str = "s3cret-pw";
/// The internal service user of the tests.
pub const INTERNAL_USER: &str = "internal_svc";
/// Port that names the cluster's Unix socket (it opens no TCP port unless asked).
pub const SOCKET_PORT: u16 = 5432;

/// The directory holding PostgreSQL's server programs, found the Debian way.
pub fn pg_bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| d.join("initdb").exists()) {
        return dir;
    }
    // Debian: /usr/lib/postgresql/<major>/bin; take the newest.
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, b)| b).expect(
        "PostgreSQL server binaries not found: install them with 'apt-get install postgresql postgresql-client'",
    )
}

/// The `postgres` user's uid and gid when running as root (PostgreSQL refuses root); `None` otherwise.
pub fn postgres_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once, before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root needs a 'postgres' user (apt-get install postgresql creates it)"
    );
    // SAFETY: non-null pointer returned by getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// A throwaway PostgreSQL cluster, stopped on drop.
pub struct Postgres {
    dir: TempDir,
    bindir: PathBuf,
    ids: Option<(u32, u32)>,
    /// TCP port when started with TCP.
    pub tcp_port: Option<u16>,
}

impl Postgres {
    /// A cluster on a Unix socket only.
    pub fn start() -> Postgres {
        Self::start_inner(false, None)
    }

    /// A cluster that also listens on 127.0.0.1 (port picked by the OS, retried if taken meanwhile).
    pub fn start_with_tcp() -> Postgres {
        Self::start_inner(true, None)
    }

    /// A TCP cluster with `ssl = on`, serving `cert_pem` (leaf then chain) and `key_pem`.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        Self::start_inner(true, Some((cert_pem, key_pem)))
    }

    fn start_inner(tcp: bool, tls: Option<(&str, &str)>) -> Postgres {
        let bindir = pg_bindir();
        let ids = postgres_ids();
        let dir = tempfile::Builder::new()
            .prefix("pgssl-pg")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = ids {
            for p in [dir.path(), sock.as_path(), pwfile.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut pg = Postgres {
            dir,
            bindir,
            ids,
            tcp_port: None,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        if let Some((cert, key)) = tls {
            for (name, text, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let path = data.join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                if let Some((uid, gid)) = ids {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
                }
            }
        }
        for attempt in 0..5 {
            let port = if tcp { Some(free_port()) } else { None };
            let conf = format!(
                "listen_addresses = '{}'\nport = {}\nunix_socket_directories = '{}'\n\
                 fsync = off\nshared_buffers = 16MB\nmax_connections = 60\nssl = {}\n",
                if tcp { "127.0.0.1" } else { "" },
                port.unwrap_or(SOCKET_PORT),
                sock.display(),
                if tls.is_some() { "on" } else { "off" },
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(data.join("postgresql.auto.conf"), Some(uid), Some(gid))
                    .unwrap();
            }
            let log = pg.dir.path().join("postgres.log");
            let out = pg
                .command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .output()
                .unwrap();
            if out.status.success() {
                pg.tcp_port = port;
                break;
            }
            assert!(
                tcp && attempt < 4,
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        pg.sql(&format!(
            "CREATE ROLE tableau LOGIN PASSWORD '{PASSWORD}';\
             CREATE ROLE readonly LOGIN PASSWORD '{PASSWORD}';\
             CREATE ROLE {INTERNAL_USER} LOGIN PASSWORD '{PASSWORD}';"
        ));
        pg
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs SQL as the superuser over the Unix socket, directly (not through pgssl).
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The cluster's data directory (pg_hba.conf, postgresql.auto.conf).
    pub fn data_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every backend is ended, the port stays.
    pub fn restart(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "restart",
                "-w",
                "-m",
                "fast",
                "-t",
                "60",
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
            ],
        );
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The port (TCP, or the one naming the socket file).
    pub fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(SOCKET_PORT)
    }

    /// The upstream address text for pgssl: the Unix socket directory.
    pub fn repository_text(&self) -> String {
        format!("unix:{}", self.socket_dir().display())
    }

    /// The upstream address pgssl uses.
    pub fn upstream(&self) -> RepositoryAddr {
        RepositoryAddr::Unix {
            dir: self.socket_dir(),
            port: self.port(),
        }
    }
}

impl Postgres {
    /// A hot standby of this cluster on its own TCP port: cloned with `pg_basebackup -R` (which
    /// writes `standby.signal` and a `primary_conninfo` over this cluster's Unix socket) and
    /// streaming from it.
    pub fn start_standby(&self) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("pgssl-standby")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        if let Some((uid, gid)) = self.ids {
            for p in [dir.path(), sock.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut standby = Postgres {
            dir,
            bindir: self.bindir.clone(),
            ids: self.ids,
            tcp_port: None,
        };
        let data = standby.data_path();
        let out = standby
            .command("pg_basebackup")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", "postgres", "-D"])
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The copy carries the primary's settings; these lines, later in the file, win.
        let copied = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let conf = format!(
                "{copied}\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n",
                sock.display()
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
            if let Some((uid, gid)) = self.ids {
                std::os::unix::fs::chown(data.join("postgresql.auto.conf"), Some(uid), Some(gid))
                    .unwrap();
            }
            let out = standby
                .command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(standby.log_path())
                .output()
                .unwrap();
            if out.status.success() {
                standby.tcp_port = Some(port);
                break;
            }
            assert!(
                attempt < 4,
                "the standby did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(standby.log_path()).unwrap_or_default()
            );
        }
        standby
    }

    /// Promotes a standby (`pg_ctl promote`, which waits until it accepts writes).
    pub fn promote(&self) {
        let data = self.data_path();
        self.run(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", data.to_str().unwrap()],
        );
    }

    /// Begins a smart shutdown and returns at once (`pg_ctl stop -m smart -W`): the server refuses
    /// new sessions (57P03, "the database system is shutting down") and waits for its open ones to
    /// end, as the old primary does in a switchover.
    pub fn stop_smart_no_wait(&self) {
        let data = self.data_path();
        self.run(
            "pg_ctl",
            &["stop", "-m", "smart", "-W", "-D", data.to_str().unwrap()],
        );
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop_immediate(&self) {
        let data = self.data_path();
        self.run(
            "pg_ctl",
            &["stop", "-m", "immediate", "-D", data.to_str().unwrap()],
        );
    }

    /// Its TCP address for pgssl (a cluster started with TCP, or a standby).
    pub fn tcp_upstream(&self) -> RepositoryAddr {
        RepositoryAddr::Tcp(format!(
            "127.0.0.1:{}",
            self.tcp_port.expect("a cluster listening on TCP")
        ))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&data)
            .output();
    }
}

/// A port the OS reports free right now (for PostgreSQL, which cannot bind port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Puts a data directory into `mode`, generating a certificate when SSL is on, as
/// `enable` + `apply` would.
pub fn prepare_data_dir(data_dir: &Path, mode: Mode) {
    let store = StateStore::open(data_dir).unwrap();
    let mut state = AppliedState::default();
    state.repository_ssl.mode = mode;
    if mode.offers_tls() {
        let paths = store.cert_paths(15);
        if !paths.exist() {
            certs::generate(&paths, &certs::default_subject_alt_names(&[]), 30).unwrap();
        }
        state.repository_ssl.postgres_major = Some(15);
    }
    pgssl::control::settings::for_state(&store, &state, RepositoryTlsMode::Disable).unwrap();
    store.promote(&state).unwrap();
}

/// pgssl running in this process on 127.0.0.1:0.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), pgssl::proxy::server::RunError>>,
}

impl Proxy {
    /// Starts pgssl in `mode` in front of `pg` with default settings.
    pub async fn start(pg: &Postgres, mode: Mode) -> Proxy {
        Self::start_with(pg.upstream(), mode, |_| {}).await
    }

    /// Starts pgssl in `mode` in front of `upstream`, letting the test adjust the config.
    pub async fn start_with(
        upstream: RepositoryAddr,
        mode: Mode,
        tweak: impl FnOnce(&mut Config),
    ) -> Proxy {
        let data_dir = tempfile::Builder::new()
            .prefix("pgssl-data")
            .tempdir()
            .unwrap();
        prepare_data_dir(data_dir.path(), mode);
        let mut config = Config::default();
        config.server.shutdown_grace = Duration::from_secs(2);
        tweak(&mut config);
        Self::start_in(data_dir, upstream, config)
            .await
            .expect("the proxy starts")
    }

    /// Starts pgssl on a data directory the test prepared, with `config`.
    pub async fn start_in(
        data_dir: TempDir,
        upstream: RepositoryAddr,
        config: Config,
    ) -> Result<Proxy, pgssl::app::node::ServerError> {
        Self::start_on_hosts(data_dir, vec![upstream], config).await
    }

    /// Starts pgssl on a data directory the test prepared, with `config`, in front of the hosts of
    /// one replicated repository.
    pub async fn start_on_hosts(
        data_dir: TempDir,
        repository: Vec<RepositoryAddr>,
        config: Config,
    ) -> Result<Proxy, pgssl::app::node::ServerError> {
        let server = Node::bind(NodeOptions {
            data_dir: data_dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            repository,
            managed: false,
            config,
            auth: Default::default(),
            relay_key: None,
            repository_is_node: false,
            probe_password: Some(pgssl::keystore::Secret::new(PASSWORD.to_string())),
        })
        .await?;
        let addr = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Ok(Proxy {
            addr,
            data_dir,
            shutdown,
            task,
        })
    }

    /// The certificate clients should trust (`server.crt`).
    pub fn cert_path(&self) -> PathBuf {
        StateStore::open(self.data_dir.path())
            .unwrap()
            .cert_paths(15)
            .cert
    }

    /// Stops the proxy and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("proxy stops within its grace period")
            .unwrap()
            .expect("the proxy accepted until it was stopped");
    }
}

/// What a psql run printed.
#[derive(Debug)]
pub struct PsqlRun {
    /// Exit status success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs real psql with `conninfo`, printing `\conninfo` then `current_user`.
pub async fn psql(conninfo: &str) -> PsqlRun {
    psql_commands(conninfo, &["\\conninfo", "SELECT current_user"]).await
}

/// Runs real psql with `conninfo` and the given `-c` commands.
pub async fn psql_commands(conninfo: &str, commands: &[&str]) -> PsqlRun {
    let args: Vec<&str> = commands.iter().flat_map(|c| ["-c", c]).collect();
    psql_run(conninfo, &args, Some(PASSWORD)).await
}

/// psql with `args` after the connection, and `password` in the environment (none: not even one
/// to fall back on).
pub async fn psql_run(conninfo: &str, args: &[&str], password: Option<&str>) -> PsqlRun {
    let mut cmd = tokio::process::Command::new(pg_bindir().join("psql"));
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo]);
    cmd.args(args);
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
    let out = cmd
        .env("PGCONNECT_TIMEOUT", "10")
        // No ambient client certificates or service files may change what is tested.
        .env("HOME", std::env::temp_dir())
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    PsqlRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How many iterations a kill -9 loop runs: `PGSSL_KILL_LOOPS` (200 by hand), else `default`.
pub fn kill_loops(default: usize) -> usize {
    std::env::var("PGSSL_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How often [`poll`], [`wait_for`] and [`wait_until`] look again.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Runs `check` until it gives a value, every [`POLL_EVERY`], for at most `timeout` (it is always
/// run at least once, and once more at the deadline); `None` when it never did. For a caller that
/// must gather its failure report itself (asynchronously); others use [`wait_for`] or
/// [`wait_until`].
pub async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let late = tokio::time::Instant::now() >= deadline;
        if let Some(value) = check().await {
            return Some(value);
        }
        if late {
            return None;
        }
        tokio::time::sleep(
            POLL_EVERY.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
    }
}

/// Waits until `check` gives `Ok(value)` and returns the value. `Err(seen)` means "not yet", with
/// what it saw; when `timeout` passes first, panics naming `what`, the timeout and the last `seen`.
/// Deadlines may be generous: they cost nothing when the condition holds early.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let last = std::cell::RefCell::new(String::new());
    let found = poll(timeout, || {
        let attempt = check();
        let last = &last;
        async move {
            match attempt.await {
                Ok(value) => Some(value),
                Err(seen) => {
                    *last.borrow_mut() = seen;
                    None
                }
            }
        }
    })
    .await;
    match found {
        Some(value) => value,
        None => panic!(
            "waited {timeout:?} for {what}, in vain; last seen: {}",
            last.into_inner()
        ),
    }
}

/// Waits until `check` holds; when `timeout` passes first, panics naming `what` and the timeout.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = poll(timeout, || {
        let attempt = check();
        async move { attempt.await.then_some(()) }
    })
    .await;
    assert!(held.is_some(), "waited {timeout:?} for {what}, in vain");
}
