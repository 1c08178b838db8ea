//! A network partition of the primary, behind pgssl (docs/design/repository-ha.md §6 "Partition"):
//! member 0 of a Patroni cluster runs, Patroni and PostgreSQL, in a network namespace this test makes,
//! joined to the host by a veth pair; etcd, member 1 and pgssl stay on the host. While a loop of
//! stamped writes runs through pgssl, the host's end of the veth goes down: member 0 loses etcd,
//! Patroni demotes it and promotes member 1. Then the link comes back and member 0 rejoins.
//!
//! Each write is `INSERT … RETURNING` the port and the live timeline of the server that ran it. The
//! cluster runs Patroni's `synchronous_mode`, so every write a primary acknowledged is on member 1
//! too: a write acknowledged but missing on member 1 would have gone to the cut-off primary. The
//! test asserts that every acknowledged write is on member 1 with the stamp it was acknowledged
//! with, that none was acknowledged by member 0 once the link was down and none after a write
//! landed on member 1 (not even once member 0 is back, as a replica), that no write met a server in
//! recovery (SQLSTATE 25006), that a write stuck on the cut-off primary is ended by pgssl (57P01)
//! rather than left hanging, and that tableau lands on member 1 in the end. The times (cut →
//! demotion → promotion → first write on member 1 → rejoin) are printed.
//!
//! Creating namespaces and veth pairs needs root: run as anyone else, the test fails saying so.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgssl::proxy::policy::Mode;
use pgssl::repository::patroni::{ClusterRole, PatroniClient, Role};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::tls::NoTls;

use super::cluster::{Namespaced, PatroniCluster, Setup};
use super::tableau;
use crate::cli::ServeProcess;
use crate::client::{Session, connect_plain};
use crate::harness::{PASSWORD, prepare_data_dir, wait_for};

/// Each phase's bound (docs/design/repository-ha.md §6: a failover case takes 60 s at most).
const WAIT: Duration = Duration::from_secs(60);

/// How long one write may take before the writer gives its session up: longer than Patroni's ttl
/// (20 s), so that a write stuck on the cut-off primary is there when node1 is promoted, and pgssl
/// must end it (57P01) rather than leave it to TCP's retransmissions.
const WRITE_TIMEOUT: Duration = Duration::from_secs(45);
/// A login waits at most `repository.failover_wait` (30 s) for a primary.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(40);

/// The timeline the server writes WAL on now (not the last checkpoint's): the first 8 hex digits
/// of the WAL file name of the insert position. It fails in recovery, as the INSERT would.
const TIMELINE: &str =
    "('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int";

/// A network namespace and a veth pair joining it to the host, removed on drop (also when the test
/// panics). Its addresses are a /30 of 10.213.0.0/16 no interface of the host has yet.
struct Netns {
    name: String,
    host_veth: String,
    host_ip: Ipv4Addr,
    member_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl Netns {
    fn create() -> Netns {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "the partition test must run as root (it runs as uid {euid}): it creates a network \
             namespace and a veth pair (ip netns add, ip link add), which only root may; run the \
             Patroni tests as root, as scripts/test does"
        );
        let pid = std::process::id();
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .expect("ip runs (Debian package iproute2)");
        let used = String::from_utf8_lossy(&used.stdout).into_owned();
        // One /30 per process id, moved on while the host has an address in it.
        let base = (0..16_384u32)
            .map(|k| 0x0AD5_0000 | (((pid + k) % 16_384) * 4))
            .find(|b| {
                let net = Ipv4Addr::from(*b).to_string();
                let net = net.rsplit_once('.').map_or("", |(n, _)| n);
                !(1..=2).any(|h| used.contains(&format!(" {net}.{}/", (b & 0xff) + h)))
            })
            .expect("a free /30 in 10.213.0.0/16");
        let netns = Netns {
            name: format!("pgssl-{pid}"),
            host_veth: format!("pgh{pid}"),
            host_ip: Ipv4Addr::from(base + 1),
            member_ip: Ipv4Addr::from(base + 2),
        };
        let ns_veth = format!("pgn{pid}");
        let host_cidr = format!("{}/30", netns.host_ip);
        let member_cidr = format!("{}/30", netns.member_ip);
        let steps: [&[&str]; 8] = [
            &["netns", "add", &netns.name],
            &[
                "link",
                "add",
                &netns.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &ns_veth,
            ],
            &["link", "set", &ns_veth, "netns", &netns.name],
            &["addr", "add", &host_cidr, "dev", &netns.host_veth],
            &["link", "set", &netns.host_veth, "up"],
            &[
                "-n",
                &netns.name,
                "addr",
                "add",
                &member_cidr,
                "dev",
                &ns_veth,
            ],
            &["-n", &netns.name, "link", "set", &ns_veth, "up"],
            &["-n", &netns.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            // On failure, drop removes what was made so far.
            ip(step).unwrap_or_else(|e| panic!("setting up the partition's namespace: {e}"));
        }
        netns
    }

    fn placement(&self) -> Namespaced {
        Namespaced {
            netns: self.name.clone(),
            host_ip: self.host_ip,
            member_ip: self.member_ip,
            prefix: 30,
        }
    }

    /// The partition: the host's end of the veth goes down, and with it the namespace's carrier.
    fn cut(&self) {
        ip(&["link", "set", &self.host_veth, "down"]).unwrap();
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_veth, "up"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; the namespace goes once its processes are
        // gone (the cluster, declared after, is dropped first).
        for step in [
            ["link", "del", self.host_veth.as_str()],
            ["netns", "del", self.name.as_str()],
        ] {
            if let Err(e) = ip(&step) {
                eprintln!("cleaning up the partition: {e}");
            }
        }
    }
}

/// What became of one write through pgssl.
#[derive(Debug, Clone)]
enum Outcome {
    /// Acknowledged by the server on `port`, writing on timeline `timeline`.
    Acked { port: u16, timeline: i32 },
    /// Refused: SQLSTATE and message, or the client's own error (login or socket).
    Failed {
        code: Option<String>,
        message: String,
    },
    /// No answer within [`WRITE_TIMEOUT`] or [`LOGIN_TIMEOUT`]: it may or may not have committed.
    Unknown(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Acked { port, timeline } => {
                write!(f, "acknowledged by :{port}, timeline {timeline}")
            }
            Outcome::Failed { code, message } => write!(f, "failed ({code:?}): {message}"),
            Outcome::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Write {
    id: i64,
    /// When it was sent (a write sent before the cut may be acknowledged just after it).
    begun: Instant,
    finished: Instant,
    outcome: Outcome,
}

/// One write through pgssl as tableau, on `session` (logged in first when there is none).
async fn write(addr: SocketAddr, session: &mut Option<Session>, id: i64) -> Outcome {
    if session.is_none() {
        match tokio::time::timeout(LOGIN_TIMEOUT, connect_plain(addr, "tableau")).await {
            Ok(Ok(s)) => *session = Some(s),
            Ok(Err(e)) => {
                return Outcome::Failed {
                    code: e.server().map(|s| s.code),
                    message: format!("login: {e}"),
                };
            }
            Err(_) => return Outcome::Unknown(format!("login took over {LOGIN_TIMEOUT:?}")),
        }
    }
    let Some(s) = session.as_mut() else {
        unreachable!("logged in above")
    };
    let sql = format!(
        "INSERT INTO t(id, at_port, at_tl) VALUES ({id}, current_setting('port')::int, {TIMELINE}) \
         RETURNING at_port, at_tl"
    );
    let answer = tokio::time::timeout(WRITE_TIMEOUT, s.simple_query(&sql)).await;
    let outcome = match answer {
        Ok(Ok(rows)) => {
            let row = rows.first().cloned().unwrap_or_default();
            let field = |n: usize| row.get(n).cloned().flatten().unwrap_or_default();
            Outcome::Acked {
                port: field(0).parse().unwrap_or(0),
                timeline: field(1).parse().unwrap_or(0),
            }
        }
        Ok(Err(e)) => Outcome::Failed {
            code: e.server().map(|s| s.code),
            message: e.to_string(),
        },
        Err(_) => Outcome::Unknown(format!("no answer within {WRITE_TIMEOUT:?}")),
    };
    if !matches!(outcome, Outcome::Acked { .. }) {
        // A failed or hung session is given up; the next write logs in again.
        *session = None;
    }
    outcome
}

/// Writes through pgssl, one after the other, until `stop`; every outcome goes to `log`.
fn spawn_writer(
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Write>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut session = None;
        // A pace, not a wait: a write every 20 ms at most leaves the two cores to the servers.
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        let mut id = 0;
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            id += 1;
            let begun = Instant::now();
            let outcome = write(addr, &mut session, id).await;
            log.lock().unwrap().push(Write {
                id,
                begun,
                finished: Instant::now(),
                outcome,
            });
        }
        if let Some(s) = session {
            let _ = s.terminate().await;
        }
    })
}

/// Acknowledged writes in `log` on `port` finished after `since`.
fn acked_on(log: &Mutex<Vec<Write>>, port: u16, since: Instant) -> Vec<Write> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|w| {
            w.finished > since && matches!(w.outcome, Outcome::Acked { port: p, .. } if p == port)
        })
        .cloned()
        .collect()
}

/// `pg_is_in_recovery()` on member `i` over its Unix socket, which works while its network is cut.
async fn in_recovery_by_socket(cluster: &PatroniCluster, i: usize) -> Result<bool, String> {
    let path = cluster
        .socket_dir(i)
        .join(format!(".s.PGSQL.{}", cluster.pg_addr(i).port()));
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (client, connection) = tokio_postgres::Config::new()
        .user("postgres")
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| pgssl::repository::session::describe(&e))?;
    let connection = tokio::spawn(connection);
    let answer = client
        .simple_query("SELECT pg_is_in_recovery()")
        .await
        .map_err(|e| pgssl::repository::session::describe(&e));
    drop(client);
    let _ = connection.await;
    let in_recovery = answer?.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
        _ => None,
    });
    in_recovery.ok_or_else(|| "no row".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_gets_no_write_through_pgssl_once_patroni_demotes_it() {
    // Declared before the cluster, so dropped after it: its processes are gone when the
    // namespace and the veth are removed.
    let netns = Netns::create();
    let started = Instant::now();
    let cluster = PatroniCluster::start_in(
        2,
        Setup {
            synchronous: true,
            leader_first: true,
            namespaced: Some(netns.placement()),
            ..Setup::default()
        },
    )
    .await;
    assert_eq!(cluster.roles_settled().await, Some(0), "{}", cluster.logs());
    let (old, new) = (cluster.pg_addr(0).port(), cluster.pg_addr(1).port());
    cluster
        .query(
            0,
            &format!(
                "CREATE ROLE pgssl_probe LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor;\
             CREATE ROLE tableau LOGIN PASSWORD '{PASSWORD}';\
             CREATE TABLE t(id bigint PRIMARY KEY, at_port int NOT NULL, at_tl int NOT NULL);\
             GRANT INSERT, SELECT ON t TO tableau;"
            ),
        )
        .await
        .unwrap();
    let first_timeline: i32 = cluster
        .query(0, &format!("SELECT {TIMELINE}"))
        .await
        .unwrap()[0][0]
        .parse()
        .unwrap();
    // Member 1 can only be promoted once Patroni names it the synchronous standby.
    let patroni = PatroniClient::new(cluster.client_options()).unwrap();
    wait_for("node1 to be the synchronous standby", WAIT, || async {
        let view = patroni.cluster().await.map_err(|e| e.to_string())?;
        match view.member(cluster.name(1)) {
            Some(m) if m.role == ClusterRole::SyncStandby => Ok(()),
            m => Err(format!("{m:?}")),
        }
    })
    .await;

    let env = cluster.pgssl_env("probe_timeout = \"1s\"");
    prepare_data_dir(&env.data_dir(), Mode::Off);
    let serve = ServeProcess::start(&env, &[]).await;
    wait_for("tableau to land on node0", WAIT, || async {
        match tableau(serve.addr).await {
            Ok(at) if at == (false, old) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let ready = started.elapsed();

    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(serve.addr, log.clone(), stop.clone());
    wait_for("20 writes through pgssl on node0", WAIT, || async {
        let n = acked_on(&log, old, started).len();
        if n >= 20 {
            Ok(())
        } else {
            Err(format!("{n} so far: {:?}", log.lock().unwrap().last()))
        }
    })
    .await;

    // The partition.
    netns.cut();
    let cut = Instant::now();
    let demoted = wait_for("Patroni to demote the cut-off node0", WAIT, || async {
        match in_recovery_by_socket(&cluster, 0).await {
            Ok(false) => Err("node0 still runs as primary".to_string()),
            // In recovery, or stopped: either way it takes no write.
            seen => Ok(format!("{seen:?}")),
        }
    })
    .await;
    let demoted_after = cut.elapsed();
    let promoted = wait_for("Patroni to promote node1", WAIT, || async {
        let member = patroni.member(1).await.map_err(|e| e.to_string())?;
        match member.role == Role::Primary && member.is_running() {
            true => Ok(member),
            false => Err(format!("{member:?}")),
        }
    })
    .await;
    let promoted_after = cut.elapsed();
    let first_on_new = wait_for("a write through pgssl on node1", WAIT, || async {
        match acked_on(&log, new, cut).first() {
            Some(w) => Ok(w.clone()),
            None => Err(format!("{:?}", log.lock().unwrap().last())),
        }
    })
    .await;
    let first_write_after = first_on_new.finished - cut;

    // The link comes back: node0 rejoins as node1's replica, reachable by pgssl again, while the
    // writes go on.
    netns.heal();
    let healed = Instant::now();
    wait_for("node0 to rejoin as a replica of node1", WAIT, || async {
        match cluster.roles_settled().await {
            Some(1) => Ok(()),
            _ => Err(format!("{:?}", cluster.roles().await)),
        }
    })
    .await;
    let rejoined = Instant::now();
    let rejoined_after = healed.elapsed();
    wait_for("20 writes on node1 after node0 rejoined", WAIT, || async {
        let n = acked_on(&log, new, rejoined).len();
        if n >= 20 {
            Ok(())
        } else {
            Err(format!("{n} so far: {:?}", log.lock().unwrap().last()))
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let writes = log.lock().unwrap().clone();
    let lands = tableau(serve.addr).await;
    let on_new: std::collections::HashMap<i64, (u16, i32)> = cluster
        .query(1, "SELECT id, at_port, at_tl FROM t")
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].parse().unwrap(),
                (r[1].parse().unwrap(), r[2].parse().unwrap()),
            )
        })
        .collect();
    let report = format!("{}\n--- pgssl ---\n{}", cluster.logs(), serve.log_text());

    let acked: Vec<(&Write, u16, i32)> = writes
        .iter()
        .filter_map(|w| match w.outcome {
            Outcome::Acked { port, timeline } => Some((w, port, timeline)),
            _ => None,
        })
        .collect();
    let failed: Vec<&Write> = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Failed { .. }))
        .collect();
    let unknown: Vec<&Write> = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Unknown(_)))
        .collect();
    println!(
        "partition test: cluster and pgssl ready in {ready:.1?}; node0 demoted {demoted_after:.1?} \
         after the cut ({demoted}), node1 promoted {promoted_after:.1?} after it (timeline {:?}), \
         first write through pgssl on node1 {first_write_after:.1?} after it (write {}); node0 \
         rejoined {rejoined_after:.1?} after the link came back; {} writes: {} acknowledged, {} \
         failed, {} without an answer",
        promoted.timeline,
        first_on_new.id,
        writes.len(),
        acked.len(),
        failed.len(),
        unknown.len()
    );
    for w in failed.iter().chain(&unknown) {
        println!(
            "  write {} at +{:.1?} from the cut: {}",
            w.id,
            w.finished.saturating_duration_since(cut),
            w.outcome
        );
    }
    for line in serve
        .log_text()
        .lines()
        .filter(|l| l.contains("repository"))
    {
        println!("  pgssl: {line}");
    }

    // Every acknowledged write is on the new primary, stamped as it was acknowledged: none went
    // to a primary whose writes did not survive.
    let missing: Vec<_> = acked
        .iter()
        .filter(|(w, port, tl)| on_new.get(&w.id) != Some(&(*port, *tl)))
        .map(|(w, port, tl)| (w.id, port, tl, on_new.get(&w.id)))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on node1: {missing:?}\n{report}"
    );
    // node0 acknowledged writes on the first timeline only, and none sent once the link was down.
    // (One sent just before the cut may be acknowledged just after it: it committed before the
    // cut, and the check above found it on node1.)
    let late_on_old: Vec<_> = acked
        .iter()
        .filter(|(w, port, tl)| *port == old && (w.begun >= cut || *tl != first_timeline))
        .map(|(w, _, tl)| (w.id, tl, w.finished.saturating_duration_since(cut)))
        .collect();
    assert!(
        late_on_old.is_empty(),
        "node0 acknowledged writes after the cut: {late_on_old:?}\n{report}"
    );
    // node1 acknowledged writes on its new timeline only, and every write after its first was
    // acknowledged there: nothing went back to node0, not even once it was reachable again.
    let new_timeline = promoted.timeline.map(|t| t as i32);
    assert!(
        new_timeline.is_some_and(|t| t > first_timeline),
        "{promoted:?}"
    );
    let stray: Vec<_> = acked
        .iter()
        .filter(|(w, port, tl)| {
            if *port == new {
                Some(*tl) != new_timeline
            } else {
                *port != old || w.id > first_on_new.id
            }
        })
        .map(|(w, port, tl)| (w.id, port, tl))
        .collect();
    assert!(
        stray.is_empty(),
        "writes acknowledged off node1's new timeline: {stray:?}\n{report}"
    );
    assert!(
        acked
            .iter()
            .any(|(w, port, _)| *port == old && w.finished < cut),
        "no write acknowledged by node0 before the cut"
    );
    assert!(
        acked
            .iter()
            .any(|(w, port, _)| *port == new && w.finished > rejoined),
        "no write acknowledged by node1 once node0 was back"
    );
    // No write was ever sent to a server in recovery (node0 demoted, or rejoining).
    let read_only: Vec<_> = failed
        .iter()
        .filter(|w| matches!(&w.outcome, Outcome::Failed { code: Some(c), .. } if c == "25006"))
        .collect();
    assert!(
        read_only.is_empty(),
        "writes sent to a server in recovery: {read_only:?}\n{report}"
    );
    // A write stuck on the cut-off primary is ended by pgssl once node1 is the primary (57P01, as
    // for any primary-bound session whose host stopped being the primary), not left hanging.
    assert!(
        unknown.is_empty(),
        "writes without an answer within {WRITE_TIMEOUT:?}: {unknown:?}\n{report}"
    );
    // And tableau's logins land on node1, out of recovery.
    assert_eq!(lands, Ok((false, new)), "{report}");
    serve.stop().await;
}
