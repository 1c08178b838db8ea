//! The managed repository: a PostgreSQL cluster that pgssl creates, starts, supervises and stops.
//!
//! ```text
//! <data-dir>/pgdata/      the cluster (initdb, scram-sha-256), owned by the OS user that runs it
//! <data-dir>/pgsocket/    its only listening socket, .s.PGSQL.<port>, mode 0700: no TCP port at all,
//!                         so the proxy is the only network entrance
//! <data-dir>/log/postgresql.log
//! ```
//!
//! The superuser's password is generated, sealed in the keystore, and handed to initdb through a FIFO,
//! so it never touches disk. When pgssl runs as root the cluster runs as `repository.os_user`.
//! Every start reconciles the internal roles and the `repository` database, which also finishes any
//! interrupted password rotation.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{info, warn};

use super::host::{can_traverse, find_bindir, lookup_user};
pub use super::roles::{ensure_database, ensure_login_role, role_exists, set_password};
use super::session::{Login, Session, SessionError};
use super::sql;
pub use super::supervise::supervise;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::keystore::{Keystore, KeystoreError, Secret};
use crate::proxy::repository::RepositoryAddr;

/// The superuser of a managed cluster.
pub const SUPERUSER: &str = "postgres";
/// Length of generated passwords (about 192 bits).
pub const PASSWORD_LEN: usize = 32;
/// The database internal services use.
pub const REPOSITORY_DATABASE: &str = "repository";

/// Keystore entry name of a role's password.
pub fn role_secret_name(role: &str) -> String {
    format!("role/{role}")
}

/// Failures of the managed repository.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// No PostgreSQL server binaries are installed.
    #[error(
        "PostgreSQL server binaries not found (looked at 'pg_config --bindir' and /usr/lib/postgresql/*/bin); install them with 'apt-get install postgresql', or set repository.address to use an existing PostgreSQL"
    )]
    NoBinaries,
    /// The configured OS user does not exist.
    #[error(
        "pgssl runs as root, so the repository must run as repository.os_user '{0}', which does not exist (create it, or install the postgresql package, which creates 'postgres')"
    )]
    NoOsUser(String),
    /// The OS user cannot reach the data directory.
    #[error(
        "the '{user}' user cannot reach {path} (no search permission on {blocking}); choose a --data-dir it can traverse, such as /var/lib/pgssl"
    )]
    Unreachable {
        /// The OS user.
        user: String,
        /// The data directory.
        path: PathBuf,
        /// The ancestor that blocks it.
        blocking: PathBuf,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// initdb failed.
    #[error("initdb failed: {0}")]
    Initdb(String),
    /// The cluster did not become ready.
    #[error("the repository did not become ready: {0} (see {1})")]
    NotReady(String, PathBuf),
    /// Keystore trouble.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// A session on the repository failed (its SQLSTATE, if it answered one, is kept).
    #[error("repository: {0}")]
    Client(#[from] SessionError),
}

impl ManagedError {
    /// Who has to act: a repository that is not there or refuses is the repository's, the rest is
    /// pgssl's own (its files, its keystore, the machine it runs on).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ManagedError::Client(e) => e.kind(),
            ManagedError::Unreachable { .. } | ManagedError::NotReady(..) => ErrorKind::Upstream,
            ManagedError::NoBinaries
            | ManagedError::NoOsUser(_)
            | ManagedError::Io { .. }
            | ManagedError::Initdb(_)
            | ManagedError::Keystore(_) => ErrorKind::Server,
        }
    }

    /// The SQLSTATE the repository answered, if this is its answer (28P01: a refused password).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ManagedError::Client(e) => e.sqlstate(),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ManagedError {
    let what = what.into();
    move |source| ManagedError::Io { what, source }
}

/// A managed cluster's files and how to run it.
#[derive(Debug, Clone)]
pub struct ManagedRepository {
    /// PostgreSQL's server programs.
    pub bindir: PathBuf,
    /// The cluster directory.
    pub pgdata: PathBuf,
    /// The socket directory.
    pub socket_dir: PathBuf,
    /// The port that names the socket.
    pub port: u16,
    /// The server log.
    pub log_file: PathBuf,
    /// The OS user (name, uid, gid) to run as, when pgssl is root.
    pub run_as: Option<(String, u32, u32)>,
    /// Internal roles to reconcile.
    pub internal_roles: Vec<String>,
    /// The cluster's `max_connections`.
    pub max_connections: u32,
}

impl ManagedRepository {
    /// Finds the binaries and the OS user for a managed repository in `data_dir`.
    pub fn locate(data_dir: &Path, config: &Config) -> Result<ManagedRepository, ManagedError> {
        let bindir = find_bindir().ok_or(ManagedError::NoBinaries)?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            let user = &config.repository.os_user;
            let (uid, gid) =
                lookup_user(user).ok_or_else(|| ManagedError::NoOsUser(user.clone()))?;
            Some((user.clone(), uid, gid))
        } else {
            None
        };
        Ok(ManagedRepository {
            bindir,
            pgdata: data_dir.join("pgdata"),
            socket_dir: data_dir.join("pgsocket"),
            port: config.repository.port,
            log_file: data_dir.join("log").join("postgresql.log"),
            run_as,
            internal_roles: config.repository.internal_roles.clone(),
            max_connections: config.repository.max_connections,
        })
    }

    /// The address the proxy and the control plane use.
    pub fn upstream(&self) -> RepositoryAddr {
        RepositoryAddr::Unix {
            dir: self.socket_dir.clone(),
            port: self.port,
        }
    }

    /// Whether initdb has run.
    pub fn is_initialized(&self) -> bool {
        self.pgdata.join("PG_VERSION").is_file()
    }

    /// The cluster's major version (from `PG_VERSION`), or the binaries' when not yet initialized.
    pub fn major(&self) -> Option<u32> {
        if let Ok(v) = fs::read_to_string(self.pgdata.join("PG_VERSION")) {
            return v.trim().parse().ok();
        }
        let out = std::process::Command::new(self.bindir.join("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 15.18 (Debian …)"
        text.split_whitespace()
            .nth(2)
            .and_then(super::version::parse_major)
    }

    /// Creates the directories the cluster needs, owned by its OS user, and checks it can reach them.
    pub fn prepare_dirs(&self, data_dir: &Path) -> Result<(), ManagedError> {
        for dir in [
            &self.pgdata,
            &self.socket_dir,
            &self.log_file.parent().unwrap_or(data_dir).to_path_buf(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .create(dir)
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("cannot set the mode of {}", dir.display())))?;
            if let Some((_, uid, gid)) = &self.run_as {
                std::os::unix::fs::chown(dir, Some(*uid), Some(*gid)).map_err(io_err(format!(
                    "cannot hand {} to the repository user",
                    dir.display()
                )))?;
            }
        }
        if let Some((user, uid, gid)) = &self.run_as {
            // The data directory itself: traversable, not listable, by the repository user.
            let mode = fs::metadata(data_dir)
                .map_err(io_err(format!("cannot read {}", data_dir.display())))?
                .mode();
            if mode & 0o001 == 0 {
                fs::set_permissions(
                    data_dir,
                    fs::Permissions::from_mode((mode & 0o7777) | 0o711),
                )
                .map_err(io_err(format!(
                    "cannot set the mode of {}",
                    data_dir.display()
                )))?;
            }
            let absolute = fs::canonicalize(data_dir)
                .map_err(io_err(format!("cannot resolve {}", data_dir.display())))?;
            for ancestor in absolute.ancestors() {
                if !can_traverse(ancestor, *uid, *gid) {
                    return Err(ManagedError::Unreachable {
                        user: user.clone(),
                        path: absolute.clone(),
                        blocking: ancestor.to_path_buf(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs initdb with scram-sha-256, the superuser's password generated and sealed first.
    pub async fn initdb(&self, keystore: &mut Keystore) -> Result<(), ManagedError> {
        let password = keystore.get_or_generate(&role_secret_name(SUPERUSER), PASSWORD_LEN)?;
        // A FIFO carries the password: it never rests on disk. We hold it open read-write, so the
        // write cannot block and initdb's read finds the line already there.
        let fifo = self.socket_dir.join(".initdb-password");
        let _ = fs::remove_file(&fifo);
        let c_path = CString::new(fifo.as_os_str().as_encoded_bytes())
            .map_err(|_| ManagedError::Initdb("socket path contains NUL".into()))?;
        // SAFETY: a valid C string and a plain mode.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(io_err("cannot create the password FIFO")(
                io::Error::last_os_error(),
            ));
        }
        let result = async {
            if let Some((_, uid, gid)) = &self.run_as {
                std::os::unix::fs::chown(&fifo, Some(*uid), Some(*gid)).map_err(io_err(
                    "cannot hand the password FIFO to the repository user",
                ))?;
            }
            let mut pipe = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .map_err(io_err("cannot open the password FIFO"))?;
            pipe.write_all(format!("{}\n", password.expose()).as_bytes())
                .map_err(io_err("cannot write the password FIFO"))?;
            let out = self
                .command("initdb")
                .arg("-D")
                .arg(&self.pgdata)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .arg(format!("--pwfile={}", fifo.display()))
                .output()
                .await
                .map_err(io_err("cannot run initdb"))?;
            drop(pipe);
            if !out.status.success() {
                return Err(ManagedError::Initdb(
                    String::from_utf8_lossy(&out.stderr)
                        .trim()
                        .replace('\n', " "),
                ));
            }
            Ok(())
        }
        .await;
        let _ = fs::remove_file(&fifo);
        result
    }

    /// Stops a postmaster left running by a pgssl that was killed, so this one can own the cluster.
    pub async fn stop_orphan(&self) {
        let Ok(pid_text) = fs::read_to_string(self.pgdata.join("postmaster.pid")) else {
            return;
        };
        let Some(pid) = pid_text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return;
        };
        // SAFETY: signal 0 only checks that the process exists.
        if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
            return;
        }
        warn!(
            pid,
            "stopping a repository left running by a previous pgssl"
        );
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.pgdata)
            .output()
            .await;
    }

    /// Starts the postmaster: Unix socket only, output appended to the log file.
    pub fn start(&self) -> Result<Child, ManagedError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log_file)
            .map_err(io_err(format!("cannot open {}", self.log_file.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err("cannot duplicate the log handle"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            .args(["-c", &format!("port={}", self.port)])
            .args(["-c", "unix_socket_permissions=0700"])
            .args(["-c", &format!("max_connections={}", self.max_connections)])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(false)
            .spawn()
            .map_err(io_err("cannot start postgres"))?;
        Ok(child)
    }

    /// Waits until the superuser can log in, or `child` exits, or `limit` passes.
    pub async fn wait_ready(
        &self,
        keystore_password: &Secret,
        child: &mut Child,
        limit: Duration,
    ) -> Result<(), ManagedError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ManagedError::NotReady(
                    format!("postgres exited with {status}"),
                    self.log_file.clone(),
                ));
            }
            let last = match self.connect(SUPERUSER, "postgres", keystore_password).await {
                Ok(session) => {
                    let _ = session.terminate().await;
                    return Ok(());
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(ManagedError::NotReady(
                    last.to_string(),
                    self.log_file.clone(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a session as `user` over the Unix socket.
    pub async fn connect(
        &self,
        user: &str,
        database: &str,
        password: &Secret,
    ) -> Result<Session, SessionError> {
        let stream = self.upstream().connect(Duration::from_secs(5)).await?;
        let login = Login {
            user,
            database,
            application_name: "pgssl",
            password: Some(password),
        };
        Session::start(stream, &login).await
    }

    /// Opens a superuser session with the password from the keystore.
    pub async fn connect_admin(
        &self,
        keystore: &Keystore,
        database: &str,
    ) -> Result<Session, ManagedError> {
        let password = keystore.get(&role_secret_name(SUPERUSER))?.ok_or_else(|| {
            ManagedError::NotReady(
                "the keystore holds no superuser password".into(),
                self.log_file.clone(),
            )
        })?;
        Ok(self.connect(SUPERUSER, database, &password).await?)
    }

    /// Ensures the `repository` database and every internal role exist, each role with LOGIN and the
    /// password sealed in the keystore (generated on first use).
    pub async fn reconcile(&self, keystore: &mut Keystore) -> Result<(), ManagedError> {
        let mut admin = self.connect_admin(keystore, "postgres").await?;
        for role in &self.internal_roles {
            let password = keystore.get_or_generate(&role_secret_name(role), PASSWORD_LEN)?;
            if ensure_login_role(&mut admin, role, &password).await? {
                info!(role, "created internal role");
            }
        }
        let owner = &self.internal_roles[0];
        if ensure_database(&mut admin, REPOSITORY_DATABASE, Some(owner)).await? {
            info!(
                database = REPOSITORY_DATABASE,
                owner, "created the repository database"
            );
        }
        for role in &self.internal_roles[1..] {
            admin
                .batch_execute(&format!(
                    "GRANT CONNECT ON DATABASE {} TO {}",
                    sql::ident(REPOSITORY_DATABASE),
                    sql::ident(role)
                ))
                .await
                .map_err(SessionError::from)?;
        }
        let _ = admin.terminate().await;
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.stdin(Stdio::null()).current_dir("/");
        if let Some((_, uid, gid)) = &self.run_as {
            // std drops root's supplementary groups when it changes the uid.
            cmd.uid(*uid).gid(*gid);
        }
        // If pgssl dies without stopping the cluster (SIGKILL, abort), the kernel sends it SIGINT, a fast
        // shutdown, instead of leaving it orphaned. The signal follows the thread that spawned it; pgssl
        // spawns from the main thread or runtime workers, which live as long as the process.
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours; it runs
        // after the uid change, which would otherwise clear it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}
