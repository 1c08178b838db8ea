//! Several pgssl nodes sharing one state through the repository (README: Cluster): real processes
//! on 127.0.0.2–4 in front of one real PostgreSQL.

use std::time::Duration;

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::client::{connect_plain, connect_tls_unverified, peer_fingerprint};
use crate::harness::{PASSWORD, Postgres};

const PASSPHRASE: &str = "cluster passphrase 1";

/// One node: its data directory and config, and its server when running.
struct Node {
    name: &'static str,
    ip: &'static str,
    env: CliEnv,
    serve: Option<ServeProcess>,
}

impl Node {
    fn new(name: &'static str, ip: &'static str, upstream: &str) -> Node {
        Node {
            name,
            ip,
            env: CliEnv::new(upstream),
            serve: None,
        }
    }

    async fn start(&mut self) {
        let listen = format!("{}:0", self.ip);
        self.serve = Some(ServeProcess::start_on(&self.env, &listen, &[]).await);
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.serve.as_ref().expect("running").addr
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        let env = &self.env;
        let mut cmd = tokio::process::Command::from(env.command(args));
        cmd.output().await.unwrap()
    }

    async fn bootstrap_file(&self, file: &std::path::Path) -> std::process::Output {
        let args = [
            "topology",
            "get-bootstrap-file",
            "-f",
            file.to_str().unwrap(),
            "--node-name",
            self.name,
        ];
        self.env
            .run_with_stdin(&args, &format!("{PASSPHRASE}\n"))
            .await
    }

    async fn join(&self, file: &std::path::Path) -> std::process::Output {
        let args = [
            "topology",
            "join",
            "--bootstrap-file",
            file.to_str().unwrap(),
            "--node-name",
            self.name,
        ];
        self.env
            .run_with_stdin(&args, &format!("{PASSPHRASE}\n"))
            .await
    }

    /// The fingerprint a TLS client sees here.
    async fn fingerprint(&self) -> String {
        let s = connect_tls_unverified(self.addr(), "tableau", "postgres", PASSWORD)
            .await
            .expect("a TLS login through the node");
        peer_fingerprint(&s)
    }
}

/// Waits until every node serves the same certificate, other than `old`; returns it.
async fn converged(nodes: &[&Node], old: Option<&str>) -> String {
    for _ in 0..100 {
        let mut seen = Vec::new();
        for n in nodes {
            seen.push(n.fingerprint().await);
        }
        if seen.iter().all(|f| *f == seen[0]) && old != Some(seen[0].as_str()) {
            return seen.remove(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the nodes never served one new certificate");
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
    for _ in 0..100 {
        let (answer, _) = crate::client::ssl_request(n3.addr()).await;
        if answer == b'N' {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, _) = crate::client::ssl_request(n3.addr()).await;
    assert_eq!(answer, b'N', "the restarted node serves repository SSL off");

    // Back on, then a rotation: every node serves the one new certificate; the old file is stale.
    ok(&n2.run(&["security", "repository-ssl", "enable"]).await);
    ok(&n2.run(&["pending-changes", "apply"]).await);
    let before = converged(&[&n1, &n2, &n3], None).await;
    assert_eq!(before, served, "enabled again, the same certificate");
    let out = n1.run(&["security", "regenerate-internal-tokens"]).await;
    assert!(
        ok(&out).contains("bootstrap files made before now no longer work"),
        "{out:?}"
    );
    let after = converged(&[&n1, &n2, &n3], Some(&before)).await;
    assert_ne!(after, before);
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
    ok(&n1.run(&["topology", "remove-node", "n4"]).await);
    let text = ok(&n1.run(&["topology", "list-nodes"]).await);
    assert!(!text.contains("n4:") || text.contains("removed"), "{text}");
}

/// The committed version, read as the superuser.
fn state_version(pg: &Postgres) -> u64 {
    pg.sql("SELECT version FROM pgssl.state")
        .trim()
        .parse()
        .expect("a version")
}

/// Waits until `n` lists `count` live nodes.
async fn wait_live(n: &Node, count: usize) {
    for _ in 0..100 {
        let out = n.run(&["topology", "list-nodes"]).await;
        if String::from_utf8_lossy(&out.stdout)
            .matches("(live)")
            .count()
            == count
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never {count} live nodes");
}
