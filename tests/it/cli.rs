//! The CLI as a user runs it: the real `pgssl` binary, its output and exit codes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{PASSWORD, Postgres, wait_for};

/// How long a server has to log what a test waits for.
const LOG_WAIT: Duration = Duration::from_secs(60);

/// A data directory and a config file pointing at `upstream`.
pub struct CliEnv {
    /// Holds the data dir and config file.
    pub dir: tempfile::TempDir,
}

impl CliEnv {
    /// A fresh environment whose config names the repository `address` (e.g. `unix:/path`).
    pub fn new(address: &str) -> CliEnv {
        let dir = tempfile::Builder::new()
            .prefix("pgssl-cli")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("pgssl.toml"),
            format!(
                "[repository]\naddress = \"{address}\"\n\n[server]\nconnect_timeout = \"2s\"\n"
            ),
        )
        .unwrap();
        CliEnv { dir }
    }

    /// A fresh environment with no upstream in its config: `serve` runs a managed repository. The
    /// folder is world-traversable so that the repository's OS user can reach the data directory.
    pub fn managed() -> CliEnv {
        let dir = tempfile::Builder::new()
            .prefix("pgssl-managed")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("pgssl.toml"),
            "[server]\nconnect_timeout = \"2s\"\n",
        )
        .unwrap();
        CliEnv { dir }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("pgssl.toml")
    }

    /// Adds `lines` to the config file's `[table]`, which is added when the file has none (a TOML
    /// table cannot be opened twice).
    pub fn add_config(&self, table: &str, lines: &str) {
        let config = std::fs::read_to_string(self.config()).unwrap();
        let header = format!("[{table}]\n");
        let config = if config.contains(&header) {
            config.replacen(&header, &format!("{header}{lines}\n"), 1)
        } else {
            format!("{config}\n{header}{lines}\n")
        };
        std::fs::write(self.config(), config).unwrap();
    }

    /// The command line for `args`, with the data dir, config and probe password set.
    pub fn command(&self, args: &[&str]) -> Command {
        pgssl_command(&self.data_dir(), &self.config(), args)
    }

    /// Runs `args` without blocking the async runtime, feeding `input` on standard input.
    pub async fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        spawn_with_stdin(self.command(args), input)
            .await
            .wait_with_output()
            .await
            .unwrap()
    }

    /// Stages direct access for `user` with `password` fed on standard input, as an operator should.
    pub async fn stage_direct_user(&self, user: &str, password: &str) -> Output {
        let args = [
            "data-access",
            "repository-access",
            "enable",
            "--repository-username",
            user,
            "--repository-password",
            "-",
        ];
        self.run_with_stdin(&args, &format!("{password}\n")).await
    }

    /// Stages the lookup user `user` with `password` fed on standard input.
    pub async fn stage_lookup_user(&self, user: &str, password: &str) -> Output {
        let args = [
            "authentication",
            "lookup-user",
            "set",
            "--lookup-user",
            user,
            "--lookup-password",
            "-",
        ];
        self.run_with_stdin(&args, &format!("{password}\n")).await
    }

    /// Runs `args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// `pgssl serve` as a child process, with its log lines collected.
pub struct ServeProcess {
    /// The child process.
    pub child: tokio::process::Child,
    /// Lines it logged.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl ServeProcess {
    /// Starts `pgssl serve --listen 127.0.0.1:0 extra…` and waits until it listens.
    pub async fn start(env: &CliEnv, extra: &[&str]) -> ServeProcess {
        ServeProcess::start_on(env, "127.0.0.1:0", extra).await
    }

    /// Starts `pgssl serve --listen LISTEN extra…` and waits until it listens.
    pub async fn start_on(env: &CliEnv, listen: &str, extra: &[&str]) -> ServeProcess {
        let mut args = vec!["serve", "--listen", listen];
        // Many servers run at once: no admin server unless the test asks for one.
        if !extra.iter().any(|a| a.starts_with("--admin-listen")) {
            args.push("--no-admin");
        }
        args.extend_from_slice(extra);
        let mut cmd =
            tokio::process::Command::from(pgssl_command(&env.data_dir(), &env.config(), &args));
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("listen=").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            panic!("serve exited before listening: {:?}", log.lock().unwrap());
        })
        .await
        .expect("serve starts");
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        ServeProcess { child, log, addr }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: sending a signal to our own child has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Stops it with SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("serve stops within its grace period")
            .unwrap()
    }

    /// The admin server's address, from its start-up log line.
    pub async fn admin_addr(&self) -> std::net::SocketAddr {
        wait_for(
            "the admin server's address in the log",
            LOG_WAIT,
            || async move {
                // The guard is dropped before log_text locks again.
                let found = self.log.lock().unwrap().iter().find_map(|l| {
                    let rest = l.split("admin=https://").nth(1)?;
                    rest.split('/').next()?.parse().ok()
                });
                found.ok_or_else(|| self.log_text())
            },
        )
        .await
    }

    /// Waits (up to 60 s) until `needle` appears `count` times in what it logged.
    pub async fn wait_for_log(&self, needle: &str, count: usize) {
        let what = format!("{needle:?} logged {count} times");
        wait_for(&what, LOG_WAIT, || async move {
            let log = self.log_text();
            if log.matches(needle).count() >= count {
                Ok(())
            } else {
                Err(log)
            }
        })
        .await
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ServeProcess {
    /// A test that ends early still stops the server cleanly, so a managed repository is not left
    /// running.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        for _ in 0..600 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.start_kill();
    }
}

/// `pgssl --data-dir D --config C args…` with the probe password in the environment.
pub fn pgssl_command(data_dir: &Path, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgssl"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PGSSL_UPSTREAM_PASSWORD", PASSWORD)
        .env_remove("PGSSL_DATA_DIR")
        .env_remove("PGSSL_LOG");
    cmd
}

/// Stdout of a successful run.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The single `error:` line of a failed run, checking exit code 1.
pub fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    lines[0].to_string()
}

fn mode_bits(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_fresh_data_dir_lists_off_and_refuses_get_certificate_and_an_empty_apply() {
    let env = CliEnv::new("127.0.0.1:1");
    // A mistyped --data-dir: read-only commands say there is none, and create nothing.
    for args in [
        &["security", "repository-ssl", "list"][..],
        &["pending-changes", "list"],
        &["pending-changes", "apply"],
        &["security", "external-ssl", "list"],
        &["internal-credentials"],
        &["admin-user", "list"],
    ] {
        let err = failed(&env.run(args));
        assert!(
            err.contains(&format!(
                "no pgssl data directory at {}",
                env.data_dir().display()
            )),
            "{args:?}: {err}"
        );
        assert!(
            !env.data_dir().exists(),
            "{args:?} created the data directory"
        );
    }
    // Staging a change creates it.
    ok(&env.run(&["security", "repository-ssl", "disable"]));
    assert!(env.data_dir().join("config").is_dir());
    let list = ok(&env.run(&["security", "repository-ssl", "list"]));
    assert!(
        list.contains("mode:                off (Off for all connections)"),
        "{list}"
    );
    assert!(list.contains("certificate:         none"), "{list}");

    let out = env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        "x.crt",
    ]);
    let err = failed(&out);
    assert!(err.starts_with("error: repository SSL is off"), "{err}");
    assert!(err.contains("repository-ssl enable"), "{err}");

    let err = failed(&env.run(&["pending-changes", "apply", "--ignore-prompt"]));
    assert!(
        err.contains("there are no pending changes to apply"),
        "{err}"
    );
    assert_eq!(
        ok(&env.run(&["pending-changes", "list"])).trim(),
        "No pending changes."
    );
}

#[test]
fn enable_reads_the_major_version_generates_a_certificate_and_stages_until_apply() {
    let pg = Postgres::start();
    let major: u32 = pg.sql("SHOW server_version_num").parse::<u32>().unwrap() / 10_000;
    let env = CliEnv::new(&pg.repository_text());

    let out = ok(&env.run(&["security", "repository-ssl", "enable"]));
    assert!(
        out.contains(&format!(
            "PostgreSQL major version {major} (from the upstream's server_version '{major}."
        )),
        "{out}"
    );
    assert!(out.contains("Generated a new certificate"), "{out}");
    assert!(
        out.contains("Staged repository SSL mode off -> required"),
        "{out}"
    );
    let security = env.data_dir().join(format!("config/pgsql{major}/security"));
    assert_eq!(mode_bits(&security.join("server.key")), 0o600);
    assert!(security.join("server.crt").is_file());

    let pending = ok(&env.run(&["pending-changes", "list"]));
    assert!(
        pending.contains("repository-ssl mode: off -> required"),
        "{pending}"
    );
    let list = ok(&env.run(&["security", "repository-ssl", "list"]));
    assert!(list.contains("mode:                off"), "{list}");
    assert!(list.contains("pending mode:        required"), "{list}");

    assert!(ok(&env.run(&["pending-changes", "discard"])).contains("Discarded"));
    assert_eq!(
        ok(&env.run(&["pending-changes", "list"])).trim(),
        "No pending changes."
    );

    // Enabling again reuses the certificate; --internal-only stages optional.
    let out = ok(&env.run(&["security", "repository-ssl", "enable", "--internal-only"]));
    assert!(out.contains("Using the existing certificate"), "{out}");
    assert!(out.contains("-> optional"), "{out}");
    let applied = ok(&env.run(&["pending-changes", "apply", "--ignore-prompt"]));
    assert!(
        applied.contains("repository-ssl mode: off -> optional"),
        "{applied}"
    );
    assert!(applied.contains("No pgssl server is running"), "{applied}");

    let list = ok(&env.run(&["security", "repository-ssl", "list"]));
    assert!(list.contains("mode:                optional"), "{list}");
    assert!(!list.contains("pending mode"), "{list}");
    assert!(
        list.contains("DNS:localhost, IP:127.0.0.1, IP:::1"),
        "{list}"
    );
    assert!(list.contains("expires:"), "{list}");
    let info = pgssl::tls::certs::read_info(&security.join("server.crt")).unwrap();
    assert!(list.contains(&info.sha256_fingerprint), "{list}");

    let exported = env.dir.path().join("client.crt");
    std::fs::write(&exported, "old content").unwrap();
    let out = ok(&env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        exported.to_str().unwrap(),
    ]));
    assert!(out.contains(&info.sha256_fingerprint), "{out}");
    assert_eq!(pgssl::tls::certs::read_info(&exported).unwrap(), info);
    assert!(
        !std::fs::read_to_string(&exported)
            .unwrap()
            .contains("PRIVATE KEY")
    );

    // Staging the applied mode stages nothing.
    let again = ok(&env.run(&["security", "repository-ssl", "enable", "--internal-only"]));
    assert!(again.contains("already optional"), "{again}");
    let out = ok(&env.run(&["security", "repository-ssl", "disable"]));
    assert!(out.contains("optional -> off"), "{out}");
}

#[test]
fn enable_without_a_reachable_upstream_uses_the_configured_major_and_says_so() {
    let dead = tempfile::tempdir().unwrap();
    let env = CliEnv::new(&format!("unix:{}", dead.path().display()));
    let out = ok(&env.run(&["security", "repository-ssl", "enable"]));
    assert!(
        out.contains("PostgreSQL major version 15 (from config repository.postgres_major; could not read the upstream's server_version"),
        "{out}"
    );
    assert!(
        env.data_dir()
            .join("config/pgsql15/security/server.crt")
            .is_file()
    );
}

#[test]
fn apply_refuses_an_unusable_key_and_keeps_the_change_pending() {
    let env = CliEnv::new("127.0.0.1:1");
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    let key = env.data_dir().join("config/pgsql15/security/server.key");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = failed(&env.run(&["pending-changes", "apply"]));
    assert!(
        err.contains("server.key") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(ok(&env.run(&["pending-changes", "list"])).contains("off -> required"));

    std::fs::write(&key, "garbage").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = failed(&env.run(&["pending-changes", "apply"]));
    assert!(err.contains("holds no PEM private key"), "{err}");
    assert!(
        ok(&env.run(&["security", "repository-ssl", "list"])).contains("mode:                off")
    );
}

#[test]
fn usage_errors_exit_2_and_config_errors_exit_1() {
    let env = CliEnv::new("127.0.0.1:1");
    for args in [
        vec!["security", "repository-ssl", "enable", "--bogus"],
        vec!["security", "repository-ssl"],
        vec!["security", "repository-ssl", "get-certificate-file"],
        vec!["pending-changes", "apply", "now"],
        vec![],
    ] {
        let out = env.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(env.config(), "[server]\nlisten_address = \"x\"\n").unwrap();
    let err = failed(&env.run(&["pending-changes", "list"]));
    assert!(
        err.contains("pgssl.toml is invalid") && err.contains("listen_address"),
        "{err}"
    );
    let missing = env.dir.path().join("missing.toml");
    let out = pgssl_command(&env.data_dir(), &missing, &["pending-changes", "list"])
        .output()
        .unwrap();
    assert!(failed(&out).contains("cannot read config file"));
}

#[test]
fn the_data_dir_comes_from_pgssl_data_dir_when_not_given() {
    let env = CliEnv::new("127.0.0.1:1");
    let out = Command::new(env!("CARGO_BIN_EXE_pgssl"))
        .args([
            "--config",
            env.config().to_str().unwrap(),
            "security",
            "repository-ssl",
            "enable",
        ])
        .env("PGSSL_DATA_DIR", env.data_dir())
        .output()
        .unwrap();
    ok(&out);
    assert!(env.data_dir().join("config/pending.toml").is_file());
}

#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let env = CliEnv::new("127.0.0.1:1");
    ok(&env.run(&["security", "repository-ssl", "disable"]));
    let mut child = env
        .command(&["security", "repository-ssl", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `pgssl … | head -0`: the reader is gone before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn serve_exits_1_naming_the_address_when_it_cannot_listen() {
    let env = CliEnv::new("127.0.0.1:1");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = env
        .command(&["serve", "--no-admin", "--listen", &addr])
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );
}

/// A config written for an older pgssl still loads: each old key name (`server.upstream`, the
/// `_secs` keys) and `serve --upstream` warns once, naming its new name, on a command's standard
/// error and in `serve`'s log; a key given under both names is refused, naming both and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_key_names_and_the_upstream_flag_warn_once_each_and_both_names_are_refused() {
    let env = CliEnv::new("127.0.0.1:1");
    std::fs::write(
        env.config(),
        "[server]\nupstream = \"127.0.0.1:1\"\nupstream_tls = \"disable\"\nhandshake_timeout_secs = 10\n",
    )
    .unwrap();
    let warnings = [
        "server.upstream is the old name of repository.address",
        "server.upstream_tls is the old name of repository.tls",
        "server.handshake_timeout_secs is the old name of server.handshake_timeout",
    ];
    let out = env.run(&["security", "repository-ssl", "disable"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for warning in warnings {
        assert_eq!(stderr.matches(warning).count(), 1, "{warning}: {stderr}");
    }

    let serve = ServeProcess::start(&env, &["--upstream", "127.0.0.1:1"]).await;
    let log = serve.log_text();
    let flag = "--upstream (PGSSL_UPSTREAM) is the old name of --repository (PGSSL_REPOSITORY)";
    for warning in warnings.into_iter().chain([flag]) {
        assert_eq!(log.matches(warning).count(), 1, "{warning}: {log}");
    }
    assert!(log.contains("upstream=127.0.0.1:1"), "{log}");
    serve.stop().await;

    std::fs::write(
        env.config(),
        "[server]\nupstream = \"127.0.0.1:1\"\n[repository]\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let err = failed(&env.run(&["pending-changes", "list"]));
    assert!(
        err.contains(&format!(
            "config file {} is invalid",
            env.config().display()
        )) && err.contains("server.upstream and repository.address are both set"),
        "{err}"
    );
}

/// Starts `cmd` with `input` on its standard input (then closed) and its output piped, without
/// waiting for it: the caller may wait, or kill it first.
pub async fn spawn_with_stdin(cmd: Command, input: &str) -> tokio::process::Child {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::from(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child
}
