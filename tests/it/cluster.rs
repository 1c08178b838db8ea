//! Several pgssl nodes sharing one state through the repository (README: Cluster): real processes
//! on 127.0.0.2–4 in front of one real PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::client::{connect_plain, connect_tls_unverified, peer_fingerprint};
use crate::harness::{PASSWORD, Postgres, wait_for, wait_until};

/// How long the nodes have to agree, converge or catch up (generous: a loaded machine runs several
/// nodes, each doing a TLS login per look).
const CONVERGE: Duration = Duration::from_secs(90);

const PASSPHRASE: &str = "cluster passphrase 1";

/// One node: its data directory and config, and its server when running.
pub(crate) struct Node {
    pub(crate) name: &'static str,
    ip: &'static str,
    pub(crate) env: CliEnv,
    pub(crate) serve: Option<ServeProcess>,
}

impl Node {
    pub(crate) fn new(name: &'static str, ip: &'static str, upstream: &str) -> Node {
        Node {
            name,
            ip,
            env: CliEnv::new(upstream),
            serve: None,
        }
    }

    pub(crate) async fn start(&mut self) {
        self.start_with(&[]).await;
    }

    /// [`Node::start`] with more `serve` arguments (`--admin-listen 127.0.0.1:0`).
    pub(crate) async fn start_with(&mut self, extra: &[&str]) {
        let listen = format!("{}:0", self.ip);
        self.serve = Some(ServeProcess::start_on(&self.env, &listen, extra).await);
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.serve.as_ref().expect("running").addr
    }

    pub(crate) async fn run(&self, args: &[&str]) -> std::process::Output {
        let env = &self.env;
        let mut cmd = tokio::process::Command::from(env.command(args));
        cmd.output().await.unwrap()
    }

    /// `topology get-bootstrap-file -f FILE` as this node.
    pub(crate) async fn bootstrap_file(&self, file: &std::path::Path) -> std::process::Output {
        self.topology("get-bootstrap-file", "-f", file).await
    }

    /// `topology join --bootstrap-file FILE` as this node.
    pub(crate) async fn join(&self, file: &std::path::Path) -> std::process::Output {
        self.topology("join", "--bootstrap-file", file).await
    }

    /// A topology command about `file` named after this node, the passphrase on standard input.
    async fn topology(
        &self,
        verb: &str,
        flag: &str,
        file: &std::path::Path,
    ) -> std::process::Output {
        let file = file.to_str().unwrap();
        let args = ["topology", verb, flag, file, "--node-name", self.name];
        self.env
            .run_with_stdin(&args, &format!("{PASSPHRASE}\n"))
            .await
    }

    /// The fingerprint a TLS client sees here.
    pub(crate) async fn fingerprint(&self) -> String {
        let s = connect_tls_unverified(self.addr(), "tableau", "postgres", PASSWORD)
            .await
            .expect("a TLS login through the node");
        peer_fingerprint(&s)
    }
}

/// Waits until every node serves the same certificate, other than `old`; returns it.
async fn converged(nodes: &[&Node], old: Option<&str>) -> String {
    wait_for(
        "the nodes to serve one new certificate",
        CONVERGE,
        || async move {
            let mut seen = Vec::new();
            for n in nodes {
                seen.push(n.fingerprint().await);
            }
            if seen.iter().all(|f| *f == seen[0]) && old != Some(seen[0].as_str()) {
                Ok(seen.remove(0))
            } else {
                Err(format!("{seen:?} (old: {old:?})"))
            }
        },
    )
    .await
}

/// Three nodes: made and joined with a bootstrap file; a change applied on one is served by all
/// (each node's certificate checked with a TLS client), required mode holds on every node; two
/// applies at once commit one version; a node killed during an apply serves the new state on
/// restart; after regenerate-internal-tokens every node serves the new certificate and the old
/// bootstrap file is refused as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_one_state_changed_on_any_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::TestPki::new(dir.path(), "Cluster");
    let leaf = pki.server_from_root("pg", &["localhost", "127.0.0.1"], 30);
    let pg = Postgres::start_with_tls(&leaf.cert_pem, &leaf.key_pem);
    let upstream = format!("127.0.0.1:{}", pg.port());
    let mut n1 = Node::new("n1", "127.0.0.2", &upstream);
    let mut n2 = Node::new("n2", "127.0.0.3", &upstream);
    let mut n3 = Node::new("n3", "127.0.0.4", &upstream);
    let file = dir.path().join("bootstrap.toml");

    n1.start().await;
    // A node in no cluster says so.
    let out = n1.run(&["topology", "list-nodes"]).await;
    assert!(failed(&out).contains("not a cluster node"), "{out:?}");
    let out = n1.bootstrap_file(&file).await;
    let text = ok(&out);
    assert!(text.contains("Made a cluster"), "{text}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let sealed = std::fs::read_to_string(&file).unwrap();
    assert!(
        !sealed.contains(&upstream),
        "the file's contents are sealed"
    );
    // Only the cluster role (and superusers) may read the schema.
    let may = pg.sql(
        "SELECT has_table_privilege('tableau', 'pgssl.state', 'SELECT'), has_table_privilege('pgssl_cluster', 'pgssl.state', 'SELECT')",
    );
    assert_eq!(may, "f|t");

    // A wrong passphrase joins nothing.
    let out = n2
        .env
        .run_with_stdin(
            &[
                "topology",
                "join",
                "--bootstrap-file",
                file.to_str().unwrap(),
            ],
            "not the passphrase\n",
        )
        .await;
    assert!(failed(&out).contains("passphrase does not open"), "{out:?}");
    for n in [&mut n2, &mut n3] {
        let out = n.join(&file).await;
        assert!(ok(&out).contains("Joined the cluster"), "{out:?}");
        n.start().await;
    }
    wait_live(&n1, 3).await;

    // Staged on one node, applied on another: every node serves it.
    let out = n2.run(&["security", "repository-ssl", "enable"]).await;
    ok(&out);
    let out = n3.run(&["pending-changes", "apply"]).await;
    let text = ok(&out);
    assert_eq!(text.matches("took the change").count(), 3, "{text}");
    let served = converged(&[&n1, &n2, &n3], None).await;
    for n in [&n1, &n2, &n3] {
        let plain = connect_plain(n.addr(), "tableau").await;
        assert_eq!(
            crate::client::sqlstate(plain),
            "28000",
            "{} requires TLS",
            n.name
        );
    }

    // Two applies at once on two nodes: one version is committed, the other is refused whole.
    let version_before = state_version(&pg);
    ok(&n1
        .run(&["security", "repository-ssl", "enable", "--internal-only"])
        .await);
    let (a, b) = tokio::join!(
        n1.run(&["pending-changes", "apply"]),
        n2.run(&["pending-changes", "apply"])
    );
    let succeeded = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(succeeded, 1, "{a:?}\n{b:?}");
    let loser = if a.status.success() { &b } else { &a };
    let why = String::from_utf8_lossy(&loser.stderr);
    assert!(
        why.contains("another node applied a change first") || why.contains("no pending changes"),
        "{why}"
    );
    // The stage committed one version, the winning apply one more.
    assert_eq!(state_version(&pg), version_before + 2);
    for n in [&n1, &n2, &n3] {
        let plain = connect_plain(n.addr(), "tableau").await;
        assert!(
            plain.is_ok(),
            "tableau may skip TLS in optional mode on {}",
            n.name
        );
    }

    // A node killed during an apply takes the change when it starts again.
    let mut dead = n3.serve.take().unwrap();
    dead.child.start_kill().unwrap();
    let _ = dead.child.wait().await;
    ok(&n1.run(&["security", "repository-ssl", "disable"]).await);
    let out = n1.run(&["pending-changes", "apply"]).await;
    let text = ok(&out);
    assert!(text.contains("n3"), "{text}");
    n3.start().await;
    let addr = n3.addr();
    wait_until(
        "the restarted node to serve repository SSL off (SSLRequest answered N)",
        CONVERGE,
        || async move { crate::client::ssl_request(addr).await.0 == b'N' },
    )
    .await;

    // Back on, then a rotation: every node serves the one new certificate; the old file is stale.
    ok(&n2.run(&["security", "repository-ssl", "enable"]).await);
    ok(&n2.run(&["pending-changes", "apply"]).await);
    let before = converged(&[&n1, &n2, &n3], None).await;
    assert_eq!(before, served, "enabled again, the same certificate");
    // The rotation under a load of new TLS logins on every node: none fails.
    let stop = tokio_util::sync::CancellationToken::new();
    let done: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let loads: Vec<_> = [&n1, &n2, &n3]
        .iter()
        .zip(&done)
        .map(|(n, done)| tokio::spawn(login_loop(n.addr(), stop.clone(), done.clone())))
        .collect();
    // Every node is under load before the rotation starts, and still after every node serves the
    // new certificate.
    logins_done(&done, &[1; 3]).await;
    let out = n1.run(&["security", "regenerate-internal-tokens"]).await;
    assert!(
        ok(&out).contains("bootstrap files made before now no longer work"),
        "{out:?}"
    );
    let after = converged(&[&n1, &n2, &n3], Some(&before)).await;
    assert_ne!(after, before);
    let at_convergence: Vec<usize> = done.iter().map(|d| d.load(Ordering::SeqCst) + 2).collect();
    logins_done(&done, &at_convergence).await;
    stop.cancel();
    for load in loads {
        let (logins, failures) = load.await.unwrap();
        assert!(logins > 0, "the load ran");
        assert!(
            failures.is_empty(),
            "{} of {logins} logins failed: {failures:?}",
            failures.len()
        );
    }
    let n4 = Node::new("n4", "127.0.0.5", &upstream);
    let out = n4.join(&file).await;
    assert!(failed(&out).contains("bootstrap file is stale"), "{out:?}");
    // The nodes still reach the repository with the new password: a new file joins.
    let fresh = dir.path().join("fresh.toml");
    ok(&n2.bootstrap_file(&fresh).await);
    let out = n4.join(&fresh).await;
    assert!(ok(&out).contains("Joined"), "{out:?}");
    let out = n1.run(&["topology", "list-nodes"]).await;
    let text = ok(&out);
    for name in ["n1 (this node)", "n2", "n3", "n4"] {
        assert!(text.contains(name), "{text}");
    }
    let n4_line = |listing: &str| {
        listing
            .lines()
            .find(|l| l.trim_start().starts_with("n4:"))
            .unwrap_or_else(|| panic!("n4 is not listed: {listing}"))
            .to_string()
    };
    assert!(!n4_line(&text).ends_with("(removed)"), "{text}");
    ok(&n1.run(&["topology", "remove-node", "n4"]).await);
    // remove-node marks the row removed (src/control/cluster/repo.rs `remove`) and list-nodes
    // still lists it, as removed.
    let text = ok(&n1.run(&["topology", "list-nodes"]).await);
    let line = n4_line(&text);
    assert!(
        line.ends_with("(removed)"),
        "n4 must be listed as removed: {text}"
    );
    assert_eq!(
        text.matches("(removed)").count(),
        1,
        "only n4 is removed: {text}"
    );
}

/// TLS logins and a query through `addr` until `stop`: how many, and the failures; `done` counts
/// the logins finished so far (for the test to wait on).
async fn login_loop(
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    done: Arc<AtomicUsize>,
) -> (usize, Vec<String>) {
    let (mut logins, mut failures) = (0, Vec::new());
    while !stop.is_cancelled() {
        logins += 1;
        match connect_tls_unverified(addr, "tableau", "postgres", PASSWORD).await {
            Ok(mut s) => match s.simple_query("SELECT 1").await {
                Ok(rows) if rows == vec![vec![Some("1".to_string())]] => {
                    let _ = s.terminate().await;
                }
                other => failures.push(format!("{other:?}")),
            },
            Err(e) => failures.push(e.to_string()),
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    (logins, failures)
}

/// Waits until each `login_loop` has finished at least `at_least` logins (one count per loop).
async fn logins_done(done: &[Arc<AtomicUsize>], at_least: &[usize]) {
    wait_for("logins through every node", CONVERGE, || async move {
        let now: Vec<usize> = done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        if now.iter().zip(at_least).all(|(n, least)| n >= least) {
            Ok(())
        } else {
            Err(format!("logins done per node {now:?}, wanted {at_least:?}"))
        }
    })
    .await
}

/// The committed version, read as the superuser.
pub(crate) fn state_version(pg: &Postgres) -> u64 {
    pg.sql("SELECT version FROM pgssl.state")
        .trim()
        .parse()
        .expect("a version")
}

/// Waits until `n` lists `count` live nodes.
pub(crate) async fn wait_live(n: &Node, count: usize) {
    let what = format!("{} to list {count} live nodes", n.name);
    wait_for(&what, CONVERGE, || async move {
        let out = n.run(&["topology", "list-nodes"]).await;
        let listed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if listed.matches("(live)").count() == count {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await
}

/// A TCP relay to the repository that the test can cut (every connection closed, new ones refused)
/// and heal: one node's path to the repository.
struct Relay {
    port: u16,
    cut: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::Mutex::new(
            tokio_util::sync::CancellationToken::new(),
        ));
        let state = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let token = state.lock().unwrap().clone();
                if token.is_cancelled() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    fn cut(&self) {
        self.cut.lock().unwrap().cancel();
    }

    fn heal(&self) {
        *self.cut.lock().unwrap() = tokio_util::sync::CancellationToken::new();
    }
}

/// In proxy mode a node's cancel keys name it, so a cancel sent to another node cancels the query;
/// a node cut off from the repository keeps serving its last state, says so in
/// `pgssl_cluster_state_age_seconds`, and catches up when the repository is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_reach_the_sessions_node_and_a_cut_off_node_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::TestPki::new(dir.path(), "Cluster2");
    let leaf = pki.server_from_root("pg", &["localhost", "127.0.0.1"], 30);
    let pg = Postgres::start_with_tls(&leaf.cert_pem, &leaf.key_pem);
    let upstream = format!("127.0.0.1:{}", pg.port());
    let relay = Relay::start(upstream.parse().unwrap()).await;
    let mut n1 = Node::new("a1", "127.0.0.2", &upstream);
    let mut n2 = Node::new("a2", "127.0.0.3", &upstream);
    let file = dir.path().join("bootstrap.toml");
    n1.start().await;
    ok(&n1.bootstrap_file(&file).await);
    ok(&n2.join(&file).await);
    // This node reaches the repository's cluster tables through the relay.
    let membership = n2.env.data_dir().join("config/cluster.toml");
    let text = std::fs::read_to_string(&membership).unwrap();
    let via_relay = text.replace(&upstream, &format!("127.0.0.1:{}", relay.port));
    std::fs::write(&membership, via_relay).unwrap();
    let metrics = format!("127.0.0.3:{}", crate::harness::free_port());
    n2.serve = Some(ServeProcess::start_on(&n2.env, "127.0.0.3:0", &["--metrics", &metrics]).await);
    wait_live(&n1, 2).await;

    // Proxy mode on both nodes (a lookup user), then a query on a1 cancelled through a2.
    ok(&n1.env.stage_lookup_user("postgres", PASSWORD).await);
    // Forwarded cancels travel inside TLS, to the certificate the other node serves.
    ok(&n1.run(&["security", "repository-ssl", "enable"]).await);
    let applied = ok(&n1.run(&["pending-changes", "apply"]).await);
    assert_eq!(applied.matches("took the change").count(), 2, "{applied}");
    let mut session = connect_tls_unverified(n1.addr(), "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let key = session.backend_key.unwrap();
    let id = pg.sql("SELECT id FROM pgssl.nodes WHERE name = 'a1'");
    assert_eq!(
        ((key.0 as u32) >> 24).to_string(),
        id,
        "the key names its node"
    );
    let sleeper = tokio::spawn(async move {
        let r = session.simple_query("SELECT pg_sleep(30)").await;
        (session, r)
    });
    // The query runs before the cancel is sent, however loaded the machine is.
    let repository = &pg;
    wait_until("the query to run", CONVERGE, || async move {
        let running = repository.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
        );
        running == "1"
    })
    .await;
    crate::pool::send_cancel(n2.addr(), key).await;
    let (_, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel sent to the other node ends the sleep")
        .unwrap();
    assert_eq!(crate::client::sqlstate(result), "57014");

    // Cut off: a2 serves its last state and says how old it is; back, it catches up.
    let served = n2.fingerprint().await;
    relay.cut();
    ok(&n1.run(&["security", "repository-ssl", "disable"]).await);
    let out = ok(&n1.run(&["pending-changes", "apply"]).await);
    assert_eq!(out.matches("took the change").count(), 1, "{out}");
    assert!(out.contains("a2 ("), "{out}");
    assert_eq!(
        n2.fingerprint().await,
        served,
        "the cut-off node still serves its certificate"
    );
    let metrics = &metrics;
    wait_for(
        "the state age to grow past 2 s while cut off",
        CONVERGE,
        || async move {
            let text = crate::metrics::scrape(metrics).await;
            let age: f64 = text
                .lines()
                .find(|l| l.starts_with("pgssl_cluster_state_age_seconds "))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0.0);
            if age >= 2.0 {
                Ok(())
            } else {
                Err(format!("pgssl_cluster_state_age_seconds {age}"))
            }
        },
    )
    .await;
    assert_eq!(crate::client::ssl_request(n1.addr()).await.0, b'N');
    relay.heal();
    let addr = n2.addr();
    wait_until(
        "the node to catch up after the repository came back (SSLRequest answered N)",
        CONVERGE,
        || async move { crate::client::ssl_request(addr).await.0 == b'N' },
    )
    .await;
}

/// A managed first node `m1` on 127.0.0.2 in required mode with `tableau` enabled, which makes the
/// cluster, and `m2` on 127.0.0.3 joined to it (reaching it over TLS, as it requires), both serving.
async fn managed_first_node_and_a_second(dir: &std::path::Path) -> (Node, Node) {
    managed_first_node_and_a_second_with(dir, "").await
}

/// [`managed_first_node_and_a_second`] with `n2_config` added to the second node's config file.
async fn managed_first_node_and_a_second_with(
    dir: &std::path::Path,
    n2_config: &str,
) -> (Node, Node) {
    let mut n1 = Node {
        name: "m1",
        ip: "127.0.0.2",
        env: CliEnv::managed(),
        serve: None,
    };
    let mut n2 = Node::new("m2", "127.0.0.3", "unused:1");
    // No upstream: the cluster's (the first node's listener), with TLS, as that node requires.
    std::fs::write(
        n2.env.config(),
        format!(
            "[repository]\ntls = \"require\"\n\n[server]\nconnect_timeout = \"2s\"\n{n2_config}"
        ),
    )
    .unwrap();
    let file = dir.join("bootstrap.toml");
    n1.start().await;
    let out = n1.bootstrap_file(&file).await;
    assert!(failed(&out).contains("enable repository SSL"), "{out:?}");
    ok(&n1.run(&["security", "repository-ssl", "enable"]).await);
    ok(&n1.env.stage_direct_user("tableau", PASSWORD).await);
    ok(&n1.run(&["pending-changes", "apply"]).await);
    let made = ok(&n1.bootstrap_file(&file).await);
    assert!(made.contains("Made a cluster"), "{made}");
    assert!(!made.contains("offers no TLS"), "{made}");
    ok(&n2.join(&file).await);
    n2.start().await;
    wait_live(&n1, 2).await;
    (n1, n2)
}

/// With the managed repository the first node runs it and makes the cluster in it; a second node
/// reaches it through the first node's listener over TLS (pinned to the certificate it serves) as
/// the cluster role, relays its clients there, and a change applied on the second node reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_first_node_is_the_store_reached_through_its_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = managed_first_node_and_a_second(dir.path()).await;

    // A client of the second node reaches the managed repository through the first.
    let mut s = connect_tls_unverified(n2.addr(), "tableau", "repository", PASSWORD)
        .await
        .expect("a login through the second node");
    let who = s.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(who[0][0].as_deref(), Some("tableau"));
    assert_eq!(peer_fingerprint(&s), n1.fingerprint().await);

    // Applied on the second node: both serve optional mode.
    ok(&n2
        .run(&["security", "repository-ssl", "enable", "--internal-only"])
        .await);
    let out = ok(&n2.run(&["pending-changes", "apply"]).await);
    assert_eq!(out.matches("took the change").count(), 2, "{out}");
    let plain = connect_plain(n1.addr(), "tableau").await;
    assert!(plain.is_ok(), "optional mode on the first node: {plain:?}");
}

/// A node's id, as `topology list-nodes` on `on` lists it.
async fn node_id(on: &Node, name: &str) -> u8 {
    let nodes = ok(&on.run(&["topology", "list-nodes"]).await);
    let line = nodes
        .lines()
        .find(|l| {
            l.trim_start().starts_with(&format!("{name}:"))
                || l.contains(&format!("{name} (this node):"))
        })
        .unwrap_or_else(|| panic!("{name} is not listed: {nodes}"));
    let id = line.split(": id ").nth(1).and_then(|r| r.split(',').next());
    id.and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("no id in {line}"))
}

/// One spoofed, plaintext CancelRequest to the first node carrying the second node's id (the
/// second relays to the first in passthrough): the first forwards it to the second once, and the
/// second, which minted no such key, drops it instead of passing it to its repository — the first
/// node — which would forward it back, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_cancel_naming_another_node_is_forwarded_once_and_never_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    // The joined node relays its clients' logins (passthrough), so it would pass a key it does not
    // know to its repository — the first node — which is how one packet used to bounce forever.
    let relaying = "[auth]\nmode = \"passthrough\"\n";
    let (n1, n2) = managed_first_node_and_a_second_with(dir.path(), relaying).await;
    let id = node_id(&n1, "m2").await;
    let (log1, log2) = (n1.serve.as_ref().unwrap(), n2.serve.as_ref().unwrap());
    let count = |log: &ServeProcess, what: &str| log.log_text().matches(what).count();
    let (unknown, forwarded) = (
        "outcome=\"cancel_unknown_key\"",
        "outcome=\"cancel_forwarded",
    );
    // The first node learns of the second from its heartbeat: spoof until one has reached it.
    let mut sent = 0;
    while count(log2, unknown) == 0 {
        assert!(
            sent < 100,
            "the second node never dropped the cancel: {}",
            log2.log_text()
        );
        let mut tcp = tokio::net::TcpStream::connect(n1.addr()).await.unwrap();
        let key = [id, 0x5a, 0x5a, 0x5a, 1, 2, 3, 4];
        tcp.write_all(&crate::client::raw_packet(80_877_102, &key))
            .await
            .unwrap();
        // Answered by a close, as PostgreSQL does.
        assert_eq!(tcp.read(&mut [0u8; 16]).await.unwrap(), 0);
        sent += 1;
        // Paces the spoofs (each is a send, not a look): at most 100, some 10 s.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each spoof that reached the second node was forwarded by the first exactly once (the two
    // log lines come a moment apart), and the second forwarded none.
    let to_node = "outcome=\"cancel_forwarded_to_node\"";
    wait_for(
        "one forward by the first node per spoof the second dropped",
        CONVERGE,
        || async move {
            let (forwards, arrivals) = (count(log1, to_node), count(log2, unknown));
            if forwards == arrivals {
                Ok(())
            } else {
                Err(format!(
                    "forwarded {forwards} times for {arrivals} arrivals: {}",
                    log1.log_text()
                ))
            }
        },
    )
    .await;
    assert!(count(log1, to_node) <= sent);
    assert_eq!(count(log2, forwarded), 0, "{}", log2.log_text());
    // Still serving, with no connection left open by the cancel.
    let s = connect_tls_unverified(n2.addr(), "tableau", "repository", PASSWORD).await;
    assert!(s.is_ok(), "{s:?}");
}

/// What a node's command line says its state is: the repository SSL listing and the pending changes
/// (both read from its `config/` folder, which the cluster shares).
async fn listed_state(n: &Node) -> String {
    let ssl = n.run(&["security", "repository-ssl", "list"]).await;
    let pending = n.run(&["pending-changes", "list"]).await;
    assert!(ssl.status.success(), "{}: {ssl:?}", n.name);
    assert!(pending.status.success(), "{}: {pending:?}", n.name);
    // Paths name the node's own data directory.
    format!(
        "{}{}",
        String::from_utf8_lossy(&ssl.stdout),
        String::from_utf8_lossy(&pending.stdout)
    )
    .replace(n.env.data_dir().to_str().unwrap(), "<data-dir>")
}

/// Waits until `a` and `b` list the same state and their servers answer an SSLRequest the same way
/// with the same certificate; panics with both listings when they never do.
async fn agree(a: &Node, b: &Node, what: &str) {
    let (left, right) = (
        std::cell::RefCell::new(String::new()),
        std::cell::RefCell::new(String::new()),
    );
    let (seen_left, seen_right) = (&left, &right);
    let agreed = crate::harness::poll(CONVERGE, || async move {
        let (l, r) = (listed_state(a).await, listed_state(b).await);
        let (answer_a, _) = crate::client::ssl_request(a.addr()).await;
        let (answer_b, _) = crate::client::ssl_request(b.addr()).await;
        let same_cert = answer_a != b'S' || a.fingerprint().await == b.fingerprint().await;
        let same = l == r && answer_a == answer_b && same_cert;
        *seen_left.borrow_mut() = l;
        *seen_right.borrow_mut() = r;
        same.then_some(())
    })
    .await;
    if agreed.is_some() {
        return;
    }
    let (left, right) = (left.into_inner(), right.into_inner());
    let log = |n: &Node| {
        let text = n.serve.as_ref().map(|s| s.log_text()).unwrap_or_default();
        // The probes' own connection lines say nothing here.
        let text: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" connection{"))
            .collect();
        text[text.len().saturating_sub(30)..].join("\n")
    };
    panic!(
        "{what}: {} and {} never agree\n{}:\n{left}\n{}\n{}:\n{right}\n{}",
        a.name,
        b.name,
        a.name,
        log(a),
        b.name,
        log(b)
    );
}

/// A PostgreSQL on TCP and two nodes in front of it, neither started: a scratch folder, the
/// repository, its address, `n1` on 127.0.0.2 and `n2` on 127.0.0.3.
pub(crate) fn two_nodes_over_tcp() -> (tempfile::TempDir, Postgres, String, Node, Node) {
    let pg = Postgres::start_with_tcp();
    let upstream = format!("127.0.0.1:{}", pg.tcp_port.unwrap());
    let n1 = Node::new("n1", "127.0.0.2", &upstream);
    let n2 = Node::new("n2", "127.0.0.3", &upstream);
    (tempfile::tempdir().unwrap(), pg, upstream, n1, n2)
}

/// `n1` makes a cluster (its bootstrap file in `dir`), `n2` joins it, both serve, and repository SSL
/// is applied as required on both.
pub(crate) async fn two_nodes_in_required_mode(
    n1: &mut Node,
    n2: &mut Node,
    dir: &std::path::Path,
) {
    two_nodes_in_required_mode_with(n1, n2, dir, &[]).await;
}

/// [`two_nodes_in_required_mode`], `n1` serving with `n1_args` too.
pub(crate) async fn two_nodes_in_required_mode_with(
    n1: &mut Node,
    n2: &mut Node,
    dir: &std::path::Path,
    n1_args: &[&str],
) {
    n1.start_with(n1_args).await;
    let file = dir.join("bootstrap.toml");
    ok(&n1.bootstrap_file(&file).await);
    ok(&n2.join(&file).await);
    n2.start().await;
    wait_live(n1, 2).await;
    ok(&n1.run(&["security", "repository-ssl", "enable"]).await);
    ok(&n1.run(&["pending-changes", "apply"]).await);
    agree(n1, n2, "after the first apply").await;
}

/// `kill -9` at a random point of a cluster apply, of `regenerate-internal-tokens` and of
/// `topology join`, again and again (`PGSSL_KILL_LOOPS`, default 8 each; 200 by hand): afterwards
/// both running nodes list and serve one state (the old or the new, never a change one node holds
/// and the repository does not), re-running finishes what was interrupted, and a node whose join
/// was killed joins when asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_cluster_apply_rotation_and_join_leaves_the_old_or_the_new_state() {
    let loops = crate::harness::kill_loops(8);
    let (dir, _pg, upstream, mut n1, mut n2) = two_nodes_over_tcp();
    two_nodes_in_required_mode(&mut n1, &mut n2, dir.path()).await;

    // A small LCG: the kill points differ from one iteration to the next but a failure reproduces.
    let mut seed: u64 = 0x2545_f491;
    let mut next_delay = move |most: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        Duration::from_millis((seed >> 33) % most)
    };
    let stages: [&[&str]; 3] = [
        &["security", "repository-ssl", "enable", "--internal-only"],
        &["security", "repository-ssl", "disable"],
        &["security", "repository-ssl", "enable"],
    ];
    for i in 0..loops * 3 {
        match i % 3 {
            // An apply on n2 of a change staged on n1.
            0 | 1 => {
                let command: &[&str] = if i % 3 == 0 {
                    ok(&n1.run(stages[(i / 3) % 3]).await);
                    &["pending-changes", "apply"]
                } else {
                    &["security", "regenerate-internal-tokens"]
                };
                let mut child = tokio::process::Command::from(n2.env.command(command))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                // Not a wait: the random point at which the command is killed.
                tokio::time::sleep(next_delay(400)).await;
                let _ = child.start_kill();
                let _ = child.wait().await;
                agree(&n1, &n2, &format!("iteration {i}: {command:?} killed")).await;
                let again = n2.run(command).await;
                let why = String::from_utf8_lossy(&again.stderr);
                assert!(
                    again.status.success() || why.contains("no pending changes"),
                    "iteration {i}: {command:?} again: {why}"
                );
                agree(&n1, &n2, &format!("iteration {i}: {command:?} again")).await;
            }
            // A new node's join (the bootstrap file made now: a rotation made the old one stale).
            _ => {
                let fresh = dir.path().join(format!("bootstrap-{i}.toml"));
                ok(&n1.bootstrap_file(&fresh).await);
                let name: &'static str = Box::leak(format!("j{i}").into_boxed_str());
                let mut joiner = Node::new(name, "127.0.0.4", &upstream);
                let path = fresh.to_str().unwrap();
                let args = [
                    "topology",
                    "join",
                    "--bootstrap-file",
                    path,
                    "--node-name",
                    name,
                ];
                let mut child = crate::cli::spawn_with_stdin(
                    joiner.env.command(&args),
                    &format!("{PASSPHRASE}\n"),
                )
                .await;
                // Not a wait: the random point at which the join is killed.
                tokio::time::sleep(next_delay(600)).await;
                let _ = child.start_kill();
                let joined_already = child.wait().await.is_ok_and(|s| s.success());
                // Joined or not, never half: asked again, it joins, or says it is a member (the
                // kill may land after the join's last write, before its exit status); either way
                // it then serves the cluster's state (`agree` below).
                let again = joiner.join(&fresh).await;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&again.stdout),
                    String::from_utf8_lossy(&again.stderr)
                );
                assert!(
                    again.status.success() || text.contains("already node"),
                    "iteration {i}: join again (first run exited 0: {joined_already}): {text}"
                );
                joiner.start().await;
                agree(&n1, &joiner, &format!("iteration {i}: join killed")).await;
                ok(&n1.run(&["topology", "remove-node", name]).await);
                if let Some(s) = joiner.serve.take() {
                    s.stop().await;
                }
            }
        }
    }
    // Logins still work through both nodes, over TLS where the last applied mode offers it (the
    // stages cycle through off as well).
    for n in [&n1, &n2] {
        let (answer, _) = crate::client::ssl_request(n.addr()).await;
        if answer == b'S' {
            let s = connect_tls_unverified(n.addr(), "tableau", "postgres", PASSWORD).await;
            assert!(s.is_ok(), "{}: {:?}", n.name, s.err());
        } else {
            let s = connect_plain(n.addr(), "tableau").await;
            assert!(s.is_ok(), "{}: {:?}", n.name, s.err());
        }
    }
}

/// A full disk, then a read-only data directory, on one node of two while the other applies a change
/// and rotates: the node cannot install the new version and keeps serving the last one (also after
/// a restart), logging why; the apply reports it did not take the change; the rotation commits the
/// new certificate but leaves the cluster role its password, since the node would be locked out; a
/// command run on the node itself fails with the OS's reason and commits nothing. Once there is room
/// the node takes the newest version by itself and the rotation, run again, completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_on_one_node_keeps_it_on_the_last_version_until_there_is_room() {
    let (dir, pg, _upstream, mut n1, mut n2) = two_nodes_over_tcp();
    let disk = crate::faults::SmallDisk::mount(&n2.env.data_dir());
    two_nodes_in_required_mode(&mut n1, &mut n2, dir.path()).await;
    // Required mode refuses a plaintext login; optional mode lets tableau in.
    let plaintext_ok = |n: &Node| {
        let addr = n.addr();
        async move { connect_plain(addr, "tableau").await.is_ok() }
    };

    for full in [true, false] {
        let (fault, reason) = if full {
            ("a full disk", "No space left on device")
        } else {
            ("a read-only data directory", "Read-only file system")
        };
        let served = n2.fingerprint().await;
        let filler = if full {
            Some(disk.fill())
        } else {
            disk.read_only(true);
            None
        };

        // A change applied on n1 is committed; n2 cannot install it and says why.
        ok(&n1
            .run(&["security", "repository-ssl", "enable", "--internal-only"])
            .await);
        let applied = ok(&n1.run(&["pending-changes", "apply"]).await);
        assert!(
            applied.contains("n2") && applied.contains("did not take the change"),
            "{fault}: {applied}"
        );
        let log = n2.serve.as_ref().unwrap().log_text();
        assert!(
            log.contains("cannot install the cluster's newest state version")
                && log.contains(reason),
            "{fault}: n2's log: {log}"
        );
        assert!(plaintext_ok(&n1).await, "{fault}: n1 serves optional mode");
        assert!(
            !plaintext_ok(&n2).await,
            "{fault}: n2 still serves required mode"
        );
        assert_eq!(n2.fingerprint().await, served, "{fault}");
        let nodes = ok(&n1.run(&["topology", "list-nodes"]).await);
        assert_eq!(nodes.matches("(live)").count(), 2, "{fault}: {nodes}");

        // A rotation on n1: the certificate is committed and n1 serves it; the cluster role keeps
        // its password, which n2 still needs.
        let why = failed(&n1.run(&["security", "regenerate-internal-tokens"]).await);
        assert!(
            why.contains("keeps its password") && why.contains("n2"),
            "{fault}: {why}"
        );
        assert_ne!(
            n1.fingerprint().await,
            served,
            "{fault}: n1 serves the rotated certificate"
        );
        assert_eq!(
            n2.fingerprint().await,
            served,
            "{fault}: n2 keeps its certificate"
        );

        // A command on n2 itself fails with the OS's reason and commits nothing.
        let version = state_version(&pg);
        let why = failed(&n2.run(&["security", "repository-ssl", "disable"]).await);
        assert!(why.contains(reason), "{fault}: {why}");
        assert_eq!(state_version(&pg), version, "{fault}: nothing committed");

        // Restarted on the full disk, n2 serves the version it had.
        if full {
            n2.serve.take().unwrap().stop().await;
            n2.start().await;
            assert_eq!(n2.fingerprint().await, served, "{fault}: after a restart");
            assert!(
                !plaintext_ok(&n2).await,
                "{fault}: required mode after a restart"
            );
        }

        // Room again: n2 takes the newest version by itself, and the rotation completes.
        match filler {
            Some(filler) => std::fs::remove_file(filler).unwrap(),
            None => disk.read_only(false),
        }
        agree(&n1, &n2, &format!("{fault}: room again")).await;
        assert!(plaintext_ok(&n2).await, "{fault}: n2 took optional mode");
        let rotated = ok(&n1.run(&["security", "regenerate-internal-tokens"]).await);
        assert!(
            rotated.contains("cluster role: its password changed"),
            "{fault}: {rotated}"
        );
        agree(&n1, &n2, &format!("{fault}: rotated")).await;
        ok(&n1.run(&["security", "repository-ssl", "enable"]).await);
        ok(&n1.run(&["pending-changes", "apply"]).await);
        agree(&n1, &n2, &format!("{fault}: required again")).await;
    }
    // Both nodes still reach the repository as the cluster role (the password they hold works).
    let nodes = ok(&n2.run(&["topology", "list-nodes"]).await);
    assert_eq!(nodes.matches("(live)").count(), 2, "{nodes}");
}

/// Node ids are one byte of the cancel keys, 1 to 127, and a removed node's row keeps its id: with
/// every id taken (125 removed nodes beside two live ones, written into `pgssl.nodes` here), the
/// live nodes' heartbeats go on and a new node joins on the id of the removed node seen longest ago.
/// (A 200-iteration kill loop found that ids were one past the highest ever given: after 127 joins
/// every heartbeat failed and the whole cluster called itself cut off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_node_ids_are_all_taken_keeps_beating_and_reuses_a_removed_nodes_id() {
    let (dir, pg, upstream, mut n1, mut n2) = two_nodes_over_tcp();
    two_nodes_in_required_mode(&mut n1, &mut n2, dir.path()).await;
    pg.sql(
        "INSERT INTO pgssl.nodes (name, id, address, version, fingerprint, heartbeat, removed)
         SELECT 'gone' || i, i, '127.0.0.9:1', 1, '', now() - (200 - i) * interval '1 minute', true
           FROM generate_series(1, 127) AS i
          WHERE i NOT IN (SELECT id FROM pgssl.nodes)",
    );
    assert_eq!(pg.sql("SELECT count(*) FROM pgssl.nodes").trim(), "127");
    let oldest = pg.sql("SELECT id FROM pgssl.nodes WHERE removed ORDER BY heartbeat LIMIT 1");
    // The live nodes keep beating and taking changes.
    ok(&n2
        .run(&["security", "repository-ssl", "enable", "--internal-only"])
        .await);
    let applied = ok(&n2.run(&["pending-changes", "apply"]).await);
    assert_eq!(applied.matches("took the change").count(), 2, "{applied}");
    // Both live nodes beat after every id was taken (before the fix their heartbeat failed).
    let taken = pg.sql("SELECT now()");
    let (repository, beaten) = (
        &pg,
        &format!("SELECT count(*) FROM pgssl.nodes WHERE NOT removed AND heartbeat > '{taken}'"),
    );
    wait_for(
        "both live nodes to beat after every id was taken",
        CONVERGE,
        || async move {
            if repository.sql(beaten) == "2" {
                Ok(())
            } else {
                Err(repository.sql("SELECT name, heartbeat FROM pgssl.nodes WHERE NOT removed"))
            }
        },
    )
    .await;
    wait_live(&n1, 2).await;
    for n in [&n1, &n2] {
        let log = n.serve.as_ref().unwrap().log_text();
        assert!(!log.contains("cut off"), "{}: {log}", n.name);
    }
    // A third node joins on the reclaimed id.
    let mut n3 = Node::new("n3", "127.0.0.4", &upstream);
    let file = dir.path().join("bootstrap-n3.toml");
    ok(&n1.bootstrap_file(&file).await);
    ok(&n3.join(&file).await);
    n3.start().await;
    wait_live(&n1, 3).await;
    assert_eq!(
        pg.sql("SELECT id FROM pgssl.nodes WHERE name = 'n3'"),
        oldest,
        "n3 took the id of the removed node seen longest ago"
    );
    agree(&n1, &n3, "the third node").await;
}

/// The second node relays its clients to the first, which counts failed logins per client address:
/// it must see each client's own address (carried in the start-up under the cluster's key, bound
/// to that TLS connection), not the second node's. Five wrong passwords for `readonly` from one
/// address lock out that address alone; clients on other addresses still log in through the same
/// node, and the first node logs the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_locked_out_behind_a_relaying_node_locks_out_no_one_else() {
    use crate::client::{connect_tls_unverified_from, sqlstate};
    let dir = tempfile::tempdir().unwrap();
    // A joined node authenticates its clients itself; told to relay their logins instead, it is the
    // case where the first node counts them.
    let relaying = "[auth]\nmode = \"passthrough\"\n";
    let (n1, n2) = managed_first_node_and_a_second_with(dir.path(), relaying).await;
    ok(&n1.env.stage_direct_user("readonly", PASSWORD).await);
    ok(&n1.run(&["pending-changes", "apply"]).await);
    let ip = |last: u8| Some(std::net::IpAddr::from([127, 0, 0, last]));
    let login = |source, password: &'static str| {
        connect_tls_unverified_from(source, n2.addr(), "readonly", "repository", password)
    };
    // Applied on both nodes before the guesses start (probed from an address of its own: a refusal
    // meanwhile counts as a failure of that address).
    let login = &login;
    wait_for(
        "readonly's direct access to reach the second node",
        CONVERGE,
        || async move {
            login(ip(23), PASSWORD)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(sqlstate(login(ip(20), "wrong").await), "28P01");
    }
    assert_eq!(sqlstate(login(ip(20), PASSWORD).await), "28000");
    for other in [21, 22] {
        let s = login(ip(other), PASSWORD).await;
        assert!(s.is_ok(), "127.0.0.{other} is locked out too: {s:?}");
    }
    // The first node saw the client, not the second node.
    let log = n1.serve.as_ref().unwrap().log_text();
    assert!(log.contains("peer=127.0.0.20:"), "{log}");
    // A start-up that names a relayed client itself, without the cluster's key, is refused.
    let mut params = crate::client::params("readonly").to_vec();
    params.push(("pgssl.relayed_client", "127.0.0.99:1 AAAA"));
    let (answer, tcp) = crate::client::ssl_request(n1.addr()).await;
    assert_eq!(answer, b'S');
    let connector = pgssl::tls::client::require_mode_connector().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tls.write_all(&crate::client::startup_packet(&params, 0))
        .await
        .unwrap();
    let err = crate::client::read_error(&mut tls).await;
    assert_eq!(err.code, "28000", "{err:?}");
    assert!(err.message.contains("pgssl.relayed_client"), "{err:?}");
}

/// A node joined to a managed first node authenticates its clients itself, with nothing more to
/// configure: psql with libpq's default `channel_binding=prefer` logs in through it, and so does
/// `channel_binding=require`, bound to the certificate the cluster serves (before, it relayed logins
/// in passthrough over TLS and the first node took the missing channel binding for a downgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_libpqs_defaults_logs_in_through_a_node_joined_to_a_managed_first_node() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = managed_first_node_and_a_second(dir.path()).await;
    let log = n2.serve.as_ref().unwrap().log_text();
    assert!(log.contains("auth=proxy"), "{log}");
    for setting in ["", "channel_binding=require"] {
        let run = crate::harness::psql_commands(
            &format!(
                "host=localhost hostaddr={} port={} user=tableau dbname=repository sslmode=require {setting}",
                n2.ip,
                n2.addr().port()
            ),
            &["SELECT current_user"],
        )
        .await;
        assert!(
            run.ok && run.stdout.trim() == "tableau",
            "{setting}: {}\n{}",
            run.stderr,
            n2.serve.as_ref().unwrap().log_text()
        );
    }
    // The second node checked the password: a wrong one is its refusal, as PostgreSQL words it.
    let run = crate::harness::psql(&format!(
        "host=localhost hostaddr={} port={} user=tableau dbname=repository sslmode=require password=wrong",
        n2.ip,
        n2.addr().port()
    ))
    .await;
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    drop(n1);
}
