//! The Debian package (packaging/README.md). packaging/build-deb.sh makes it from this build's binary;
//! its listing is checked with dpkg-deb, then it is installed with dpkg into the debootstrap base
//! image of the container test plus systemd (docker/test/base-image.sh), in a container where
//! systemd runs as PID 1. Checked there: the files with their owners and modes, the account, `pgssl
//! serve` as that account with its managed PostgreSQL, the unit with `systemd-analyze verify` and
//! under systemd itself (start, hardening in force, reload, journal, stop), and that only a purge
//! removes the data. Needs a Docker engine and debootstrap, like the container test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PORT: &str = "6432";

/// The .deb, built once for both tests from the binary under test.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-test");
        let _ = std::fs::remove_dir_all(&out_dir);
        let out = Command::new(format!("{REPO}/packaging/build-deb.sh"))
            .arg(&out_dir)
            .env("PGSSL_BIN", env!("CARGO_BIN_EXE_pgssl"))
            .env("CARGO_DEB_FAST", "1")
            .output()
            .expect("packaging/build-deb.sh runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "build-deb.sh: {stdout}\n{stderr}");
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default());
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(format!("pgssl_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")).as_str()),
            "{stdout}\n{stderr}"
        );
        path
    })
}

/// What a command printed and how it exited.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn package_lists_the_binary_conffile_unit_man_pages_and_completions() {
    let deb = deb();
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    assert_eq!(listing.code, 0, "{listing:?}");
    // `dpkg-deb -c`: mode, owner/group, size, date, time, path.
    let entries: Vec<(String, String)> = listing
        .stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(5)?.to_string(), format!("{} {}", f[0], f[1])))
        })
        .collect();
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{path} not in the package:\n{}", listing.stdout))
    };
    assert_eq!(mode_of("./usr/bin/pgssl"), "-rwxr-xr-x 0/0");
    for file in [
        "./etc/pgssl/pgssl.toml",
        "./lib/systemd/system/pgssl.service",
        "./usr/share/bash-completion/completions/pgssl",
        "./usr/share/zsh/vendor-completions/_pgssl",
        "./usr/share/fish/vendor_completions.d/pgssl.fish",
        "./usr/share/man/man1/pgssl.1.gz",
        "./usr/share/man/man1/pgssl-serve.1.gz",
        "./usr/share/man/man1/pgssl-security-repository-ssl-enable.1.gz",
        "./usr/share/man/man1/pgssl-pending-changes-apply.1.gz",
        "./usr/share/doc/pgssl/examples/pgssl.toml",
    ] {
        assert_eq!(mode_of(file), "-rw-r--r-- 0/0", "{file}");
    }
    let man_pages = entries
        .iter()
        .filter(|(p, _)| p.starts_with("./usr/share/man/man1/pgssl") && p.ends_with(".1.gz"))
        .count();
    assert!(
        man_pages >= 40,
        "{man_pages} man pages:\n{}",
        listing.stdout
    );
    // The hidden command that writes them documents everything but itself.
    assert!(
        !listing.stdout.contains("generate-docs"),
        "{}",
        listing.stdout
    );
    // Nothing of the data directory is shipped: postinst makes it, so dpkg never owns the data.
    assert!(!listing.stdout.contains("./var/"), "{}", listing.stdout);

    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("conffiles"));
    assert_eq!(
        (conffiles.code, conffiles.stdout.as_str()),
        (0, "/etc/pgssl/pgssl.toml\n")
    );
    let field = |name: &str| {
        let out = run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name));
        assert_eq!(out.code, 0, "{name}: {out:?}");
        out.stdout.trim().to_string()
    };
    let depends = field("Depends");
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "{depends}"
    );
    assert_eq!(field("Recommends"), "postgresql");
}

/// A container of the systemd base image with systemd as PID 1, removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn start(image: &str, deb: &Path) -> Container {
        let name = format!(
            "pgssl-package-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        // systemd as PID 1 needs its own /run and a writable cgroup tree (cgroup v1 here), and
        // CAP_SYS_ADMIN to set up the unit's sandbox (namespaces, read-only mounts).
        let out = run(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &name,
            "--cap-add",
            "SYS_ADMIN",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v",
            &format!("{}:/tmp/pgssl.deb:ro", deb.display()),
            image,
            "/lib/systemd/systemd",
        ]));
        assert_eq!(out.code, 0, "docker run: {out:?}");
        let container = Container { name };
        // Until systemd has opened its bus, systemctl cannot even ask; then --wait waits for boot.
        let deadline = Instant::now() + Duration::from_secs(60);
        let boot = loop {
            let boot = container.sh("systemctl is-system-running --wait");
            if !boot.stderr.contains("Failed to connect to bus") || Instant::now() > deadline {
                break boot;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            matches!(boot.stdout.trim(), "running" | "degraded"),
            "systemd did not come up: {boot:?}\n{:?}",
            container.sh("systemctl --failed --no-pager")
        );
        // Debian's own cluster (15/main, made when the image installed postgresql) would start
        // too; stopped, every postgres process the checks see is pgssl's managed one.
        container.ok("systemctl stop postgresql.service 'postgresql@*.service'");
        container
    }

    /// Runs `script` with sh inside the container, as root.
    fn sh(&self, script: &str) -> Out {
        run(Command::new("docker").args(["exec", &self.name, "sh", "-c", script]))
    }

    /// Runs `script` and expects exit code 0; returns its standard output.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert_eq!(out.code, 0, "{script}: {out:?}");
        out.stdout
    }

    /// pg_isready's exit code for pgssl's listener: 0 accepting, 2 no response.
    fn ready(&self) -> i32 {
        self.sh(&format!("pg_isready -q -t 3 -h 127.0.0.1 -p {PORT}"))
            .code
    }

    fn wait_ready(&self, what: &str, log: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.ready() != 0 {
            assert!(
                Instant::now() < deadline,
                "{what} never accepted connections:\n{:?}",
                self.sh(log)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `user uid` of every process named `comm` (from /proc: the image has no ps).
    fn owners(&self, comm: &str) -> Vec<String> {
        let script = format!(
            r#"for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = {comm} ] && stat -c '%U %u' $p; done | sort -u"#
        );
        self.ok(&script).lines().map(str::to_string).collect()
    }

    /// A field of /proc/PID/status, e.g. `NoNewPrivs`.
    fn status(&self, pid: &str, field: &str) -> String {
        self.ok(&format!(
            "sed -n 's/^{field}:[[:space:]]*//p' /proc/{pid}/status"
        ))
        .trim()
        .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

#[test]
fn package_installs_a_pgssl_account_and_a_hardened_service_that_serves() {
    let deb = deb();
    let base = run(Command::new(format!("{REPO}/docker/test/base-image.sh")).arg("systemd"));
    assert_eq!(base.code, 0, "base-image.sh: {base:?}");
    let c = Container::start(base.stdout.trim(), deb);

    c.ok("dpkg -i /tmp/pgssl.deb");
    let stat = c.ok("stat -c '%n %U:%G %a %F' /usr/bin/pgssl /etc/pgssl/pgssl.toml /var/lib/pgssl /lib/systemd/system/pgssl.service");
    assert_eq!(
        stat.lines().collect::<Vec<_>>(),
        [
            "/usr/bin/pgssl root:root 755 regular file",
            "/etc/pgssl/pgssl.toml root:root 644 regular file",
            "/var/lib/pgssl pgssl:pgssl 750 directory",
            "/lib/systemd/system/pgssl.service root:root 644 regular file",
        ]
    );
    // name:x:uid:gid:gecos:home:shell — a system account (uid below 1000) that cannot log in.
    let passwd = c.ok("getent passwd pgssl");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd}");
    let uid: u32 = fields[2].parse().unwrap();
    assert!((100..1000).contains(&uid), "{passwd}");
    assert_eq!(
        (fields[5], fields[6]),
        ("/var/lib/pgssl", "/usr/sbin/nologin")
    );
    let group = c.ok("getent group pgssl");
    assert_eq!(group.split(':').nth(2), Some(fields[3]), "{group} {passwd}");
    let conffiles = c.ok("dpkg-query -W -f '${Conffiles}' pgssl");
    assert!(conffiles.contains(" /etc/pgssl/pgssl.toml "), "{conffiles}");
    assert_eq!(
        c.ok("pgssl --version").trim(),
        format!("pgssl {}", env!("CARGO_PKG_VERSION"))
    );
    // Installed, not enabled or started: the administrator configures first.
    let enabled = c.sh("systemctl is-enabled pgssl");
    assert_eq!((enabled.code, enabled.stdout.trim()), (1, "disabled"));
    let active = c.sh("systemctl is-active pgssl");
    assert_eq!((active.code, active.stdout.trim()), (3, "inactive"));

    // The unit as systemd reads it, its ExecStart/ExecReload programs and Documentation= man pages.
    let verify = c.sh("systemd-analyze verify /lib/systemd/system/pgssl.service");
    assert_eq!(
        (verify.code, verify.stdout.as_str(), verify.stderr.as_str()),
        (0, "", "")
    );
    assert_eq!(
        c.ok("man -w pgssl-serve").trim(),
        "/usr/share/man/man1/pgssl-serve.1.gz"
    );
    let completed = c.ok(
        "bash -c '. /usr/share/bash-completion/completions/pgssl; COMP_WORDS=(pgssl sec); COMP_CWORD=1; _pgssl pgssl sec pgssl; echo \"${COMPREPLY[*]}\"'",
    );
    assert_eq!(completed.trim(), "security");

    serves_as_the_account(&c, uid);
    serves_under_systemd(&c, uid);

    // Removing keeps the data and the configuration; only a purge removes them.
    c.ok("dpkg -r pgssl");
    assert_eq!(
        c.sh("test -e /usr/bin/pgssl").code,
        1,
        "binary left after remove"
    );
    c.ok("test -f /var/lib/pgssl/pgdata/PG_VERSION && test -f /etc/pgssl/pgssl.toml");
    c.ok("dpkg --purge pgssl");
    let gone = c.sh("ls -d /var/lib/pgssl /etc/pgssl");
    assert_eq!(gone.code, 2, "left after purge: {gone:?}");
    // The account stays (Debian's practice: files elsewhere may still carry its uid).
    c.ok("getent passwd pgssl");
}

/// `pgssl serve` run by hand as the account, with the service's environment: it makes its managed
/// PostgreSQL in /var/lib/pgssl, which runs as pgssl too, answers, and stops on SIGTERM.
fn serves_as_the_account(c: &Container, uid: u32) {
    c.ok(&format!(
        "cd /var/lib/pgssl && runuser -u pgssl -- env PGSSL_DATA_DIR=/var/lib/pgssl \
         PGSSL_CONFIG=/etc/pgssl/pgssl.toml pgssl serve --listen 127.0.0.1:{PORT} \
         >/tmp/serve.log 2>&1 & echo started"
    ));
    c.wait_ready("pgssl serve as pgssl", "cat /tmp/serve.log");
    let me = format!("pgssl {uid}");
    assert_eq!(c.owners("pgssl"), [me.as_str()]);
    assert_eq!(c.owners("postgres"), [me.as_str()]);
    assert_eq!(
        c.ok("stat -c '%U %a' /var/lib/pgssl/pgdata /var/lib/pgssl/pgsocket"),
        "pgssl 700\npgssl 700\n"
    );
    c.ok(r#"for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = pgssl ] && kill -TERM ${p#/proc/}; done; true"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.owners("pgssl").is_empty() || !c.owners("postgres").is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running 60 s after SIGTERM:\n{}",
            c.ok("cat /tmp/serve.log")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(c.ready(), 2, "{}", c.ok("cat /tmp/serve.log"));
}

/// The unit under systemd: it starts (reusing the cluster made above), runs pgssl and PostgreSQL as
/// pgssl with no new privileges, a seccomp filter and no capabilities, logs to the journal,
/// reloads on `systemctl reload`, and stops with its PostgreSQL.
fn serves_under_systemd(c: &Container, uid: u32) {
    let journal = "journalctl -u pgssl --no-pager -o cat";
    c.ok("systemctl enable --now pgssl");
    c.wait_ready("systemctl start pgssl", &format!("{journal} -n 40"));
    let pid = c
        .ok("systemctl show -p MainPID --value pgssl")
        .trim()
        .to_string();
    let main_comm = c.ok(&format!("cat /proc/{pid}/comm"));
    assert_eq!(main_comm.trim(), "pgssl");
    let uids = format!("{uid}\t{uid}\t{uid}\t{uid}");
    for field in ["Uid", "NoNewPrivs", "Seccomp", "CapBnd", "CapEff"] {
        let expected = match field {
            "Uid" => uids.as_str(),
            "NoNewPrivs" => "1",
            "Seccomp" => "2",
            _ => "0000000000000000",
        };
        assert_eq!(c.status(&pid, field), expected, "pgssl's {field}");
    }
    let postmaster = c
        .ok("head -1 /var/lib/pgssl/pgdata/postmaster.pid")
        .trim()
        .to_string();
    assert_eq!(c.status(&postmaster, "Uid"), uids, "PostgreSQL's Uid");
    assert_eq!(c.status(&postmaster, "NoNewPrivs"), "1");
    let logged = c.ok(journal);
    assert!(
        logged.contains(&format!("pgssl is serving listen=127.0.0.1:{PORT}")),
        "{logged}"
    );

    c.ok("systemctl reload pgssl");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.ok(journal).contains("applied settings reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            c.ok(journal)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        c.ok("systemctl show -p MainPID --value pgssl").trim(),
        pid,
        "reload restarted pgssl"
    );
    assert_eq!(c.ready(), 0, "{}", c.ok(journal));

    c.ok("systemctl stop pgssl");
    let active = c.sh("systemctl is-active pgssl");
    assert_eq!((active.code, active.stdout.trim()), (3, "inactive"));
    assert!(c.owners("postgres").is_empty(), "{}", c.ok(journal));
    assert_eq!(c.ready(), 2);
}
