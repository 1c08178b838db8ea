//! The managed repository: `pgssl serve` with no upstream creates, runs, restarts and stops its own
//! PostgreSQL; internal credentials; secrets at rest.

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::harness::psql_commands;

async fn run(env: &CliEnv, args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(env.command(args))
        .output()
        .await
        .unwrap()
}

/// The internal credentials, with the port replaced by where the test's server really listens.
async fn credentials(env: &CliEnv, serve: &ServeProcess) -> String {
    let line = ok(&run(env, &["internal-credentials"]).await);
    line.trim()
        .split(' ')
        .map(|kv| {
            if kv.starts_with("port=") {
                format!("port={}", serve.addr.port())
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn password_of(conninfo: &str) -> String {
    conninfo
        .split(' ')
        .find_map(|kv| kv.strip_prefix("password="))
        .expect("a password in the connection string")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_a_managed_repository_with_no_tcp_port_and_reuses_it() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    assert!(serve.log_text().contains("creating the managed repository"));

    let out = ok(&run(&env, &["security", "repository-ssl", "enable"]).await);
    assert!(out.contains("(from the managed repository)"), "{out}");
    assert!(ok(&run(&env, &["pending-changes", "apply"]).await).contains("took the change"));

    let conninfo = credentials(&env, &serve).await;
    assert!(conninfo.contains("user=pgssl_internal") && conninfo.contains("dbname=repository"));
    assert!(
        conninfo.contains("sslmode=verify-full sslrootcert="),
        "{conninfo}"
    );
    let run1 = psql_commands(
        &conninfo,
        &[
            "\\conninfo",
            "SHOW listen_addresses",
            "CREATE TABLE kept (v text)",
            "INSERT INTO kept VALUES ('across restarts')",
            "SELECT current_user || '@' || current_database()",
        ],
    )
    .await;
    assert!(run1.ok, "{run1:?}");
    assert!(
        run1.stdout.contains("SSL connection (protocol: TLSv1.3"),
        "{}",
        run1.stdout
    );
    let lines: Vec<&str> = run1.stdout.lines().collect();
    // SHOW listen_addresses prints an empty line: the repository has no TCP listener.
    assert!(lines.contains(&""), "{:?}", lines);
    assert_eq!(lines.last(), Some(&"pgssl_internal@repository"));

    // The password is sealed in the keystore and never on a command line.
    let password = password_of(&conninfo);
    let keystore = std::fs::read(env.data_dir().join("config/keystore")).unwrap();
    assert!(
        !keystore
            .windows(password.len())
            .any(|w| w == password.as_bytes())
    );
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !cmdline
                    .windows(password.len())
                    .any(|w| w == password.as_bytes())
            );
        }
    }

    let log = serve.log.clone();
    assert!(serve.stop().await.success());
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("the repository stopped"), "{log}");
    assert!(!env.data_dir().join("pgdata/postmaster.pid").exists());

    // A second start reuses the cluster and its data.
    let serve = ServeProcess::start(&env, &[]).await;
    assert!(!serve.log_text().contains("creating the managed repository"));
    let conninfo = credentials(&env, &serve).await;
    let run2 = psql_commands(&conninfo, &["SELECT v FROM kept"]).await;
    assert_eq!(run2.stdout.trim(), "across restarts", "{run2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_repository_is_restarted_and_serves_again() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    let conninfo = credentials(&env, &serve).await;
    assert!(psql_commands(&conninfo, &["SELECT 1"]).await.ok);

    let pid_text = std::fs::read_to_string(env.data_dir().join("pgdata/postmaster.pid")).unwrap();
    let pid: i32 = pid_text.lines().next().unwrap().trim().parse().unwrap();
    // SAFETY: killing the test's own repository.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    serve
        .wait_for_log("the repository exited unexpectedly", 1)
        .await;
    serve
        .wait_for_log("the repository is running again", 1)
        .await;
    let after = psql_commands(&conninfo, &["SELECT 'back'"]).await;
    assert_eq!(after.stdout.trim(), "back", "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_keystore_is_refused_and_unknown_roles_have_no_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    let err = failed(&run(&env, &["internal-credentials", "--user", "tableau"]).await);
    assert!(err.contains("not an internal role"), "{err}");
    drop(serve);

    let keystore = env.data_dir().join("config/keystore");
    std::fs::set_permissions(&keystore, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = failed(&run(&env, &["internal-credentials"]).await);
    assert!(
        err.contains("chmod 600") && err.contains("keystore"),
        "{err}"
    );
}

/// A plaintext conninfo for a direct user of the managed repository behind `serve`.
pub fn direct(serve: &ServeProcess, user: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname=repository user={user} sslmode=disable",
        serve.addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_access_gives_tableau_read_write_and_readonly_select_only() {
    use crate::harness::PASSWORD;
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    let internal = credentials(&env, &serve).await;

    let out = ok(&env.stage_direct_user("tableau", PASSWORD).await);
    assert!(out.contains("Staged: enable login for 'tableau'"), "{out}");
    assert!(
        ok(&run(&env, &["pending-changes", "list"]).await)
            .contains("data-access tableau: enable login")
    );
    ok(&run(&env, &["pending-changes", "apply"]).await);

    assert!(
        psql_commands(
            &internal,
            &["CREATE TABLE t1 (id int)", "INSERT INTO t1 VALUES (1)"]
        )
        .await
        .ok
    );
    let rw = psql_commands(
        &direct(&serve, "tableau"),
        &[
            "INSERT INTO t1 VALUES (2)",
            "CREATE TABLE t3 (id int)",
            "INSERT INTO t3 VALUES (3)",
            "SELECT count(*) FROM t1",
        ],
    )
    .await;
    assert_eq!(rw.stdout.lines().last(), Some("2"), "{rw:?}");
    // libpq's default database is the user name: a landing database makes that connect too.
    let landing = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=tableau sslmode=disable",
        serve.addr.port()
    );
    let landed = psql_commands(&landing, &["SELECT current_database()"]).await;
    assert_eq!(landed.stdout.trim(), "tableau", "{landed:?}");

    ok(&env.stage_direct_user("readonly", PASSWORD).await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    // A table created after access was granted is readable too.
    assert!(
        psql_commands(&internal, &["CREATE TABLE t2 AS SELECT 5 AS id"])
            .await
            .ok
    );
    let ro = psql_commands(&direct(&serve, "readonly"), &[
        "SELECT (SELECT count(*) FROM t1) || '/' || (SELECT id FROM t2) || '/' || (SELECT id FROM t3)",
    ])
    .await;
    assert_eq!(ro.stdout.trim(), "2/5/3", "{ro:?}");
    let write = psql_commands(&direct(&serve, "readonly"), &["INSERT INTO t1 VALUES (9)"]).await;
    assert!(
        !write.ok && write.stderr.contains("permission denied for table t1"),
        "{write:?}"
    );

    let keystore = std::fs::read(env.data_dir().join("config/keystore")).unwrap();
    assert!(
        !keystore
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())
    );

    // Disable ends the open session and refuses new logins.
    let mut open = crate::client::connect_plain(serve.addr, "tableau")
        .await
        .unwrap();
    let out = ok(&run(
        &env,
        &[
            "data-access",
            "repository-access",
            "disable",
            "--repository-username",
            "tableau",
        ],
    )
    .await);
    assert!(out.contains("Staged: disable login for 'tableau'"), "{out}");
    ok(&run(&env, &["pending-changes", "apply"]).await);
    assert!(open.simple_query("SELECT 1").await.is_err());
    let refused = psql_commands(&direct(&serve, "tableau"), &["SELECT 1"]).await;
    assert!(
        !refused.ok && refused.stderr.contains("not permitted to log in"),
        "{refused:?}"
    );
}

#[test]
fn data_access_refuses_unknown_users_and_an_external_upstream() {
    let env = CliEnv::managed();
    let out = env.run(&[
        "data-access",
        "repository-access",
        "enable",
        "--repository-username",
        "admin",
        "--repository-password",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let external = CliEnv::new("127.0.0.1:1");
    let err = failed(&external.run(&[
        "data-access",
        "repository-access",
        "disable",
        "--repository-username",
        "tableau",
    ]));
    assert!(err.contains("needs the managed repository"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_roles_whose_names_need_quoting_are_created_granted_and_log_in() {
    // Plain names to the config, reserved words to SQL: unquoted, CREATE ROLE grant fails.
    let env = CliEnv::managed();
    let config = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(
        env.config(),
        format!("{config}[repository]\ninternal_roles = [\"grant\", \"order\"]\n"),
    )
    .unwrap();
    let serve = ServeProcess::start(&env, &[]).await;
    let conninfo = |user: &str| {
        let line = ok(&env
            .command(&["internal-credentials", "--user", user])
            .output()
            .unwrap());
        line.trim().to_string()
    };
    let owner = crate::harness::psql_commands(
        &conninfo("grant"),
        &[
            "SELECT current_user, pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'repository'",
            "CREATE TABLE made_by_grant (id int)",
            "INSERT INTO made_by_grant VALUES (42)",
        ],
    )
    .await;
    assert!(owner.ok, "{owner:?}");
    assert_eq!(
        owner.stdout.lines().next(),
        Some("grant|grant"),
        "{owner:?}"
    );
    let other = crate::harness::psql_commands(&conninfo("order"), &["SELECT current_user"]).await;
    assert_eq!(other.stdout.trim(), "order", "{other:?}");
    // readonly's default privileges name the creator "grant": it reads what grant creates later.
    ok(&env
        .stage_direct_user("readonly", crate::harness::PASSWORD)
        .await);
    ok(&run(&env, &["pending-changes", "apply"]).await);
    let later = crate::harness::psql_commands(
        &conninfo("grant"),
        &[
            "CREATE TABLE later_by_grant (id int)",
            "INSERT INTO later_by_grant VALUES (7)",
        ],
    )
    .await;
    assert!(later.ok, "{later:?}");
    let read = crate::harness::psql_commands(
        &direct(&serve, "readonly"),
        &["SELECT id FROM later_by_grant"],
    )
    .await;
    assert_eq!(read.stdout.trim(), "7", "{read:?}");
    drop(serve);
}

/// The children of process `parent`, from `/proc`.
fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: the name may hold spaces, so read after its closing parenthesis.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        if after.split_whitespace().nth(1) == Some(&parent.to_string()) {
            out.push(pid);
        }
    }
    out
}

/// A postmaster killed with `kill -9` while one of its processes is busy (held stopped here, as a
/// long query would hold it): that process keeps the old shared memory and PostgreSQL cannot
/// start. pgssl names it in the log, watches it, and restarts the repository as soon as it exits —
/// not after a backoff that grew while it waited (that took the repository down for a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_repository_restarts_as_soon_as_its_orphaned_processes_exit() {
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    let conninfo = credentials(&env, &serve).await;
    assert!(psql_commands(&conninfo, &["SELECT 1"]).await.ok);
    let pid_text = std::fs::read_to_string(env.data_dir().join("pgdata/postmaster.pid")).unwrap();
    let postmaster: i32 = pid_text.lines().next().unwrap().trim().parse().unwrap();
    let orphan = *children_of(postmaster)
        .first()
        .expect("the postmaster's processes");
    // SAFETY: signalling the test's own repository.
    unsafe {
        assert_eq!(libc::kill(orphan, libc::SIGSTOP), 0);
        assert_eq!(libc::kill(postmaster, libc::SIGKILL), 0);
    }
    serve
        .wait_for_log("the repository cannot restart yet", 1)
        .await;
    let named = serve
        .log_text()
        .lines()
        .find(|l| l.contains("cannot restart yet"))
        .unwrap()
        .to_string();
    assert!(named.contains(&orphan.to_string()), "{named}");
    // The "long query": held longer than the first restart attempts would have taken. Not a wait
    // for a condition: the scenario is the length of the hold (a backoff that grew meanwhile was
    // the bug).
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let released = std::time::Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(orphan, libc::SIGKILL) };
    serve
        .wait_for_log("the repository is running again", 1)
        .await;
    let waited = released.elapsed();
    assert!(
        // PostgreSQL's own start-up is in this on a loaded machine; the old backoff took ~7 s.
        waited < std::time::Duration::from_secs(6),
        "restarted {waited:?} after the last orphan exited: {}",
        serve.log_text()
    );
    let after = psql_commands(&conninfo, &["SELECT 'back'"]).await;
    assert_eq!(after.stdout.trim(), "back", "{after:?}");
}
