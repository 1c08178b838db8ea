//! A real Patroni cluster for the tests: one etcd and N Patroni members, each running its own
//! PostgreSQL, all on 127.0.0.1 with free ports (never etcd's 2379), in one temp dir.
//!
//! Patroni and etcd come from Debian's `patroni` and `etcd-server` packages (scripts/test installs
//! them); PostgreSQL from `pg_config --bindir` or /usr/lib/postgresql/<N>/bin. As root, Patroni and
//! so PostgreSQL run as `postgres` (initdb refuses root). The settings follow
//! docs/design/repository-ha.md §2: `primary_start_timeout: 0` makes a killed postmaster a
//! failover rather than a restart in place; ttl 20, loop_wait 2, retry_timeout 5.
//!
//! [`PatroniCluster::start_in`] can also run member 0 inside a network namespace the caller made
//! ([`Namespaced`]), so that a test can cut it off from everything else, and can turn on Patroni's
//! `synchronous_mode`.
//!
//! On drop every process is killed by pid: Patroni first (so it cannot restart PostgreSQL), then
//! each postmaster left (immediate shutdown, which takes its backends along), then etcd.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use pgssl::keystore::Secret;
use pgssl::repository::patroni::{MemberStatus, PatroniClient, PatroniOptions, Role};
use tempfile::TempDir;

use crate::cli::CliEnv;
use crate::client::{Session, params};
use crate::harness::{free_port, pg_bindir, poll, postgres_ids};
use crate::pki::TestPki;

/// How long a cluster may take to elect a leader and clone its replicas.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What the cluster's REST API asks of its clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestSecurity {
    /// `restapi.authentication`: Basic auth on the unsafe endpoints (POST /switchover among them).
    pub basic_auth: bool,
    /// `restapi.certfile`: https, with `verify_client: optional` (a client certificate is asked
    /// for on POST, PUT, PATCH and DELETE).
    pub tls: bool,
}

/// Member 0 inside a network namespace: Patroni (and so its PostgreSQL) runs there through
/// `ip netns exec`, listening on `member_ip`; etcd and the other members listen on `host_ip`, the
/// host's end of the veth pair, which the namespace reaches. The caller makes (and removes) the
/// namespace, the veth pair and both addresses; both addresses lie in `host_ip/prefix`.
#[derive(Debug, Clone)]
pub struct Namespaced {
    /// The namespace's name, as `ip netns list` shows it.
    pub netns: String,
    /// The host's end of the veth pair.
    pub host_ip: Ipv4Addr,
    /// The namespace's end, member 0's address.
    pub member_ip: Ipv4Addr,
    /// The prefix length of the veth's network, for pg_hba.
    pub prefix: u8,
}

/// How [`PatroniCluster::start_in`] sets a cluster up.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// What the REST API asks of its clients.
    pub security: RestSecurity,
    /// Patroni's `synchronous_mode`: a commit on the primary waits for a replica, so a write the
    /// primary acknowledged survives a failover (asynchronous replication may lose the last ones).
    pub synchronous: bool,
    /// Member 0 bootstraps alone and leads; the others are started once it does.
    pub leader_first: bool,
    /// Member 0 in a network namespace; everything else on its veth's host address.
    pub namespaced: Option<Namespaced>,
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    rest_port: u16,
    pg_port: u16,
    patroni: Option<Child>,
}

/// TLS files of a cluster started with [`RestSecurity::tls`].
struct RestTls {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A running Patroni cluster; everything it started is killed on drop.
pub struct PatroniCluster {
    dir: TempDir,
    etcd: Option<Child>,
    members: Vec<Member>,
    superuser_password: Secret,
    rest_auth: Option<(String, Secret)>,
    rest_tls: Option<RestTls>,
    etcd_ip: Ipv4Addr,
    namespaced: Option<Namespaced>,
}

fn require_program(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "'{program}' is not installed: the Patroni tests need the Debian package {package} \
             (scripts/test installs it; or: apt-get install {package})"
        )
    })
}

fn random(len: usize) -> Secret {
    Secret::generate(len).expect("the system random source")
}

impl PatroniCluster {
    /// `members` Patroni members over plain http without authentication, one of them leader and
    /// the others streaming replicas.
    pub async fn start(members: usize) -> PatroniCluster {
        Self::start_with(members, RestSecurity::default()).await
    }

    /// Like [`PatroniCluster::start`], with the REST API secured as `security` says.
    pub async fn start_with(members: usize, security: RestSecurity) -> PatroniCluster {
        Self::start_in(
            members,
            Setup {
                security,
                ..Setup::default()
            },
        )
        .await
    }

    /// A cluster of `members` set up as `setup` says, one of them leader and the others streaming
    /// replicas.
    pub async fn start_in(members: usize, setup: Setup) -> PatroniCluster {
        assert!(members >= 1);
        let security = setup.security;
        let etcd_bin = require_program("etcd", "etcd-server");
        let patroni_bin = require_program("patroni", "patroni");
        let bindir = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("pgssl-patroni")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cluster = PatroniCluster {
            etcd: None,
            members: Vec::new(),
            superuser_password: random(24),
            rest_auth: security
                .basic_auth
                .then(|| ("pgssl-patroni".to_string(), random(24))),
            rest_tls: None,
            etcd_ip: setup
                .namespaced
                .as_ref()
                .map_or(Ipv4Addr::LOCALHOST, |n| n.host_ip),
            namespaced: setup.namespaced.clone(),
            dir,
        };
        let etcd_port = cluster.start_etcd(&etcd_bin).await;
        let pki = security.tls.then(|| cluster.make_pki());
        let (replicator, rewinder) = (random(24), random(24));
        let scope = format!("pgssl-test-{}", std::process::id());
        let etcd_ip = cluster.etcd_ip;
        // Clients from the veth's network: the host side connects to member 0 from host_ip, member
        // 0 to the others from member_ip.
        let veth_hba = match &setup.namespaced {
            Some(n) => format!(
                "\x20   - host replication replicator {net}/{p} scram-sha-256\n\
                 \x20   - host all all {net}/{p} scram-sha-256\n",
                net = network(n.host_ip, n.prefix),
                p = n.prefix
            ),
            None => String::new(),
        };
        let synchronous = if setup.synchronous {
            "\x20   synchronous_mode: true\n"
        } else {
            ""
        };
        for i in 0..members {
            let ip = match &setup.namespaced {
                Some(n) if i == 0 => n.member_ip,
                Some(n) => n.host_ip,
                None => Ipv4Addr::LOCALHOST,
            };
            let member = Member {
                name: format!("node{i}"),
                ip,
                dir: cluster.dir.path().join(format!("node{i}")),
                rest_port: free_port(),
                pg_port: free_port(),
                patroni: None,
            };
            std::fs::create_dir(&member.dir).unwrap();
            let restapi = cluster.restapi_yaml(&member, pki.as_ref());
            let yaml = format!(
                "scope: {scope}\n\
                 namespace: /{scope}-{unique}/\n\
                 name: {name}\n\
                 restapi:\n{restapi}\
                 etcd3: {{host: '{etcd_ip}:{etcd_port}'}}\n\
                 bootstrap:\n\
                 \x20 dcs:\n\
                 \x20   ttl: 20\n\
                 \x20   loop_wait: 2\n\
                 \x20   retry_timeout: 5\n\
                 \x20   maximum_lag_on_failover: 1048576\n\
                 \x20   primary_start_timeout: 0\n\
                 {synchronous}\
                 \x20   postgresql: {{use_pg_rewind: true, use_slots: true}}\n\
                 \x20 initdb: [{{encoding: UTF8}}, data-checksums]\n\
                 postgresql:\n\
                 \x20 listen: '{ip}:{pg_port}'\n\
                 \x20 connect_address: '{ip}:{pg_port}'\n\
                 \x20 data_dir: '{data}'\n\
                 \x20 bin_dir: '{bindir}'\n\
                 \x20 pgpass: '{pgpass}'\n\
                 \x20 authentication:\n\
                 \x20   superuser: {{username: postgres, password: '{superuser}'}}\n\
                 \x20   replication: {{username: replicator, password: '{replicator}'}}\n\
                 \x20   rewind: {{username: rewind_user, password: '{rewinder}'}}\n\
                 \x20 pg_hba:\n\
                 \x20   - local all all trust\n\
                 \x20   - host replication replicator 127.0.0.1/32 scram-sha-256\n\
                 \x20   - host all all 127.0.0.1/32 scram-sha-256\n\
                 {veth_hba}\
                 \x20 parameters: {{unix_socket_directories: '{sock}', shared_buffers: 16MB, max_connections: 40}}\n\
                 watchdog: {{mode: 'off'}}\n\
                 tags: {{nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}}\n",
                unique = cluster.dir.path().file_name().unwrap().to_string_lossy(),
                name = member.name,
                ip = member.ip,
                pg_port = member.pg_port,
                data = member.dir.join("data").display(),
                bindir = bindir.display(),
                pgpass = member.dir.join("pgpass").display(),
                superuser = cluster.superuser_password.expose(),
                replicator = replicator.expose(),
                rewinder = rewinder.expose(),
                sock = member.dir.display(),
            );
            let config = member.dir.join("patroni.yml");
            std::fs::write(&config, yaml).unwrap();
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
            cluster.members.push(member);
        }
        if let Some((uid, gid)) = postgres_ids() {
            chown_tree(cluster.dir.path(), uid, gid);
        }
        // All members at once: the first to take the DCS's initialize key runs initdb, the others
        // wait for its leader and clone from it. Or member 0 first, when it is to lead.
        let mut spawned = 0;
        if setup.leader_first {
            cluster.spawn_patroni(0, &patroni_bin);
            spawned = 1;
            let client = cluster.client();
            let leads = poll(START_TIMEOUT, || async {
                let member = client.member(0).await.ok()?;
                (member.role == Role::Primary && member.is_running()).then_some(())
            })
            .await;
            assert!(
                leads.is_some(),
                "node0 did not bootstrap and lead within {START_TIMEOUT:?}\n{}",
                cluster.logs()
            );
        }
        for i in spawned..members {
            cluster.spawn_patroni(i, &patroni_bin);
        }
        let ready = poll(START_TIMEOUT, || cluster.roles_settled()).await;
        if ready.is_none() {
            panic!(
                "the Patroni cluster did not settle (one primary, {} running replicas) within \
                 {START_TIMEOUT:?}; last roles: {:?}\n{}",
                members - 1,
                cluster.roles().await,
                cluster.logs()
            );
        }
        cluster
    }

    async fn start_etcd(&mut self, etcd: &Path) -> u16 {
        let ip = self.etcd_ip;
        let (client, peer) = (free_port(), free_port());
        assert!(client != 2379 && peer != 2379);
        let log = File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new(etcd)
            .arg("--name=pgssl-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("etcd").display()
            ))
            .arg(format!("--listen-client-urls=http://{ip}:{client}"))
            .arg(format!("--advertise-client-urls=http://{ip}:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!(
                "--initial-cluster=pgssl-test=http://127.0.0.1:{peer}"
            ))
            .arg("--initial-cluster-state=new")
            .arg(format!(
                "--initial-cluster-token=pgssl-{}",
                std::process::id()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.etcd = Some(child);
        let healthy = poll(Duration::from_secs(30), || async {
            let tcp = tokio::net::TcpStream::connect((ip, client)).await.ok()?;
            let authority = format!("{ip}:{client}");
            let (status, _, body) = pgssl::cli::remote::http_request(
                tcp,
                Method::GET,
                &authority,
                "/health",
                &[],
                None,
            )
            .await
            .ok()?;
            (status == 200 && String::from_utf8_lossy(&body).contains("true")).then_some(())
        })
        .await;
        assert!(
            healthy.is_some(),
            "etcd did not become healthy on port {client} within 30 s:\n{}",
            tail(&self.dir.path().join("etcd.log"))
        );
        client
    }

    fn make_pki(&mut self) -> TestPki {
        let pki = TestPki::new(self.dir.path(), "patroni-rest");
        let client = pki.server_from_root("rest-client", &["pgssl-test-client"], 30);
        self.rest_tls = Some(RestTls {
            ca: pki.root.clone(),
            client_cert: client.cert,
            client_key: client.key,
        });
        pki
    }

    fn restapi_yaml(&self, member: &Member, pki: Option<&TestPki>) -> String {
        let mut yaml = format!(
            "  listen: '{ip}:{port}'\n  connect_address: '{ip}:{port}'\n",
            ip = member.ip,
            port = member.rest_port
        );
        if let Some((user, password)) = &self.rest_auth {
            yaml.push_str(&format!(
                "  authentication: {{username: '{user}', password: '{}'}}\n",
                password.expose()
            ));
        }
        if let Some(pki) = pki {
            let ip = member.ip.to_string();
            let cert = pki.server_from_root(
                &format!("{}-rest", member.name),
                &["127.0.0.1", "localhost", &ip],
                30,
            );
            yaml.push_str(&format!(
                "  certfile: '{}'\n  keyfile: '{}'\n  cafile: '{}'\n  verify_client: optional\n",
                cert.cert.display(),
                cert.key.display(),
                pki.root.display()
            ));
        }
        yaml
    }

    fn spawn_patroni(&mut self, i: usize, patroni: &Path) {
        let member = &self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(member.dir.join("patroni.log"))
            .unwrap();
        let ids = postgres_ids();
        let mut command = match &self.namespaced {
            // `ip netns exec` and setpriv both exec what follows, so the child's pid is Patroni's
            // (runuser would fork and wait, and killing it would leave Patroni running).
            Some(n) if i == 0 => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &n.netns]);
                if let Some((uid, gid)) = ids {
                    command.arg("setpriv").args([
                        format!("--reuid={uid}"),
                        format!("--regid={gid}"),
                        "--clear-groups".to_string(),
                        "--".to_string(),
                    ]);
                }
                command.arg(patroni);
                command
            }
            _ => {
                let mut command = Command::new(patroni);
                if let Some((uid, gid)) = ids {
                    command.uid(uid).gid(gid);
                }
                command
            }
        };
        command
            .arg(member.dir.join("patroni.yml"))
            .current_dir(&member.dir)
            // Nothing of the caller's PG* environment may steer Patroni's own connections.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &member.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.members[i].patroni = Some(command.spawn().expect("patroni starts"));
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s name (`node<i>`), as Patroni knows it.
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Member `i`'s REST API URL (`http://` or, with [`RestSecurity::tls`], `https://`).
    pub fn rest_url(&self, i: usize) -> String {
        let scheme = if self.rest_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!(
            "{scheme}://{}:{}",
            self.members[i].ip, self.members[i].rest_port
        )
    }

    /// Every member's REST API URL, in member order.
    pub fn rest_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.rest_url(i)).collect()
    }

    /// Rows of `sql` (text, NULL as empty) run as the superuser over TCP on member `i`.
    pub async fn query(&self, i: usize, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.pg_addr(i))
            .await
            .map_err(|e| e.to_string())?;
        let mut session = Session::start(tcp, &params("postgres"), Some(self.superuser_password()))
            .await
            .map_err(|e| e.to_string())?;
        let rows = session.simple_query(sql).await.map_err(|e| e.to_string())?;
        let _ = session.terminate().await;
        Ok(rows
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    /// A pgssl CLI environment in front of every member: `repository.address` lists them,
    /// `repository.patroni` their REST APIs, the probes log in as `pgssl_probe` every 250 ms, and
    /// `extra` adds lines to `[repository]`.
    pub fn pgssl_env(&self, extra: &str) -> CliEnv {
        let hosts: Vec<String> = (0..self.len())
            .map(|i| self.pg_addr(i).to_string())
            .collect();
        let env = CliEnv::new(&hosts.join(","));
        let urls: Vec<String> = self
            .rest_urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect();
        env.add_config(
            "repository",
            &format!(
                "probe_user = \"pgssl_probe\"\nprobe_interval = \"250ms\"\npatroni = [{}]\n{extra}",
                urls.join(", ")
            ),
        );
        env
    }

    /// Member `i`'s PostgreSQL host and port.
    pub fn pg_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.members[i].ip), self.members[i].pg_port)
    }

    /// The folder of member `i`'s Unix socket (`.s.PGSQL.<port>`, `local all all trust`): it
    /// reaches a member in a namespace even while the namespace is cut off, since Unix sockets
    /// belong to the file system, not to a network namespace.
    pub fn socket_dir(&self, i: usize) -> &Path {
        &self.members[i].dir
    }

    /// The password of `postgres`, the superuser, on every member.
    pub fn superuser_password(&self) -> &str {
        self.superuser_password.expose()
    }

    /// The REST API's Basic-auth user and password, when the cluster has them.
    pub fn rest_credentials(&self) -> Option<(&str, &str)> {
        self.rest_auth
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.expose()))
    }

    /// Options for a client of this cluster: every URL, its CA and a client certificate when it
    /// serves https, its credentials when it has them, and a 5 s timeout.
    pub fn client_options(&self) -> PatroniOptions {
        PatroniOptions {
            urls: self.rest_urls(),
            ca_file: self.rest_tls.as_ref().map(|t| t.ca.clone()),
            cert_file: self.rest_tls.as_ref().map(|t| t.client_cert.clone()),
            key_file: self.rest_tls.as_ref().map(|t| t.client_key.clone()),
            username: self.rest_auth.as_ref().map(|(u, _)| u.clone()),
            password: self.rest_auth.as_ref().map(|(_, p)| p.clone()),
            timeout: Duration::from_secs(5),
        }
    }

    fn client(&self) -> PatroniClient {
        PatroniClient::new(self.client_options()).expect("the harness's own client options")
    }

    /// What each member says of itself (`GET /patroni`), or why it did not answer.
    pub async fn roles(&self) -> Vec<Result<MemberStatus, String>> {
        let client = self.client();
        let mut seen = Vec::new();
        for i in 0..self.len() {
            seen.push(client.member(i).await.map_err(|e| e.to_string()));
        }
        seen
    }

    /// The member that runs as primary, when exactly one does.
    pub async fn leader_index(&self) -> Option<usize> {
        leader_of(&self.roles().await)
    }

    /// `Some(leader)` when one member runs as primary and every other runs as a replica.
    pub async fn roles_settled(&self) -> Option<usize> {
        let roles = self.roles().await;
        let leader = leader_of(&roles)?;
        let replicas_running = roles.iter().enumerate().all(|(i, m)| {
            i == leader
                || m.as_ref()
                    .is_ok_and(|m| m.role == Role::Replica && m.is_running())
        });
        replicas_running.then_some(leader)
    }

    /// Kills member `i`'s postmaster with SIGKILL (Patroni lives on); returns its pid.
    pub fn kill_postmaster(&self, i: usize) -> i32 {
        let pid = self
            .postmaster_pid(i)
            .unwrap_or_else(|| panic!("{} has no postmaster.pid", self.name(i)));
        // SAFETY: kill with a pid read from the member's own postmaster.pid.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        pid
    }

    fn postmaster_pid(&self, i: usize) -> Option<i32> {
        let text = std::fs::read_to_string(self.members[i].dir.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok().filter(|p| *p > 0)
    }

    /// The end of each member's Patroni log (PostgreSQL's log goes there too), for failure reports.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.dir.join("patroni.log"))))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The network `ip/prefix` lies in, as pg_hba wants it (`10.213.4.0`).
fn network(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

/// The one member running as primary, if exactly one does.
fn leader_of(roles: &[Result<MemberStatus, String>]) -> Option<usize> {
    let primaries: Vec<usize> = roles
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.as_ref()
                .is_ok_and(|m| m.role == Role::Primary && m.is_running())
        })
        .map(|(i, _)| i)
        .collect();
    match primaries[..] {
        [one] => Some(one),
        _ => None,
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether process `pid` still runs: it exists and is not a zombie (a postmaster whose parent,
/// Patroni, was killed may wait unreaped under a container's init).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    state != Some("Z")
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.patroni.as_mut() {
                kill_child(child);
            }
        }
        // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster ends its backends and exits.
        // SIGKILL follows for one that is still there after 10 s.
        let postmasters: Vec<i32> = (0..self.len())
            .filter_map(|i| self.postmaster_pid(i))
            .filter(|pid| alive(*pid))
            .collect();
        for pid in &postmasters {
            // SAFETY: pids read from the members' own postmaster.pid files.
            unsafe { libc::kill(*pid, libc::SIGQUIT) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while postmasters.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in postmasters.iter().filter(|p| alive(**p)) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if let Some(etcd) = self.etcd.as_mut() {
            kill_child(etcd);
        }
    }
}
