//! Client sessions (`pgssl sessions list`, `pgssl sessions terminate`, issue #31): a real
//! PostgreSQL behind pgssl in transaction-pooling mode, real TLS clients in front. The tests assert
//! what the listing says of each client — TLS version and suite, authentication, state, backend
//! pid as the repository reports it — and that a termination ends exactly the session named, with
//! FATAL 57P01.

use std::time::Duration;

use crate::cli::{failed, ok};
use crate::client::{ServerError, connect_tls_unverified, sqlstate};
use crate::harness::{PASSWORD, wait_for};
use crate::pool::Pooled;

/// How long pgssl has to reach a state a test waits for.
const WAIT: Duration = Duration::from_secs(30);

/// One row of `sessions list`: its columns, split on blanks (the tests' values have none).
fn rows_of(listed: &str, user: &str) -> Vec<Vec<String>> {
    listed
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|cols| cols.get(1).map(String::as_str) == Some(user))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_with_their_facts_and_terminate_ends_exactly_the_one_named() {
    let p = Pooled::start("mode = \"transaction\"").await;
    let mut a = connect_tls_unverified(p.addr(), "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let mut b = connect_tls_unverified(p.addr(), "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        a.simple_query("SELECT 1").await.unwrap()[0][0].as_deref(),
        Some("1")
    );
    // b sits inside a transaction: it holds its backend between requests.
    b.simple_query("BEGIN").await.unwrap();
    let pid_b = b.simple_query("SELECT pg_backend_pid()").await.unwrap()[0][0]
        .clone()
        .unwrap();

    // id user database application client tls auth state… age backend…
    let listed = wait_for(
        "a idle without a backend, b in a transaction",
        WAIT,
        || async {
            let listed = ok(&p.env.run(&["sessions", "list", "--user", "tableau"]));
            let rows = rows_of(&listed, "tableau");
            let settled =
                rows.len() == 2 && rows[0][7] == "idle" && rows[1][7..9] == ["in", "transaction"];
            if settled { Ok(listed) } else { Err(listed) }
        },
    )
    .await;
    let rows = rows_of(&listed, "tableau");
    let (id_a, id_b) = (rows[0][0].clone(), rows[1][0].clone());
    for row in &rows {
        assert_eq!(row[2], "postgres", "{listed}");
        assert!(row[4].starts_with("127.0.0.1:"), "{listed}");
        assert_eq!(row[5], "TLSv1_3", "{listed}");
        assert_eq!(row[6], "scram-sha-256", "{listed}");
    }
    // The transaction-pooled client between transactions holds no backend; b holds the one the
    // repository says it is on.
    assert!(rows[0].last().is_some_and(|c| c == "-"), "{listed}");
    assert_eq!(rows[1].last(), Some(&pid_b), "{listed}");
    assert!(listed.contains("TLS13_AES_128_GCM_SHA256"), "{listed}");
    assert!(listed.contains("2 client sessions."), "{listed}");
    // Another role's filter lists none of them.
    let none = ok(&p.env.run(&["sessions", "list", "--user", "readonly"]));
    assert!(none.contains("No client sessions."), "{none}");

    // Terminate a: it is told (57P01) and gone; b goes on, its transaction intact.
    let said = ok(&p.env.run(&["sessions", "terminate", "--id", &id_a]));
    assert!(
        said.contains(&format!("Terminated 1 client session(s): {id_a}.")),
        "{said}"
    );
    // Gone from the listing once pgssl has told it and closed it: only then does the test close
    // its side (closing first races the Terminate it sends with pgssl's 57P01).
    wait_for("a gone from the listing", WAIT, || async {
        let listed = ok(&p.env.run(&["sessions", "list"]));
        let rows = rows_of(&listed, "tableau");
        if rows.len() == 1 && rows[0][0] == id_b {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await;
    let ended = a.terminate().await;
    let told: Option<ServerError> = ended.as_ref().err().and_then(|e| e.server());
    assert_eq!(sqlstate(ended), "57P01");
    let told = told.unwrap();
    assert!(told.message.contains("administrator command"), "{told:?}");
    assert_eq!(
        b.simple_query("SELECT pg_backend_pid()").await.unwrap()[0][0].as_deref(),
        Some(pid_b.as_str())
    );
    b.simple_query("COMMIT").await.unwrap();
    let log = p.serve.log_text();
    assert!(
        log.contains("outcome=\"terminated\"") || log.contains("outcome=terminated"),
        "{log}"
    );

    // Nothing to terminate is an error, and so is naming nothing.
    let again = failed(&p.env.run(&["sessions", "terminate", "--id", &id_a]));
    assert!(
        again.contains(&format!("no client session matches --id {id_a}")),
        "{again}"
    );
    let vague = failed(&p.env.run(&["sessions", "terminate"]));
    assert!(vague.contains("say which sessions to terminate"), "{vague}");

    // By role: b too.
    ok(&p.env.run(&["sessions", "terminate", "--user", "tableau"]));
    wait_for("b gone from the listing", WAIT, || async {
        let listed = ok(&p.env.run(&["sessions", "list"]));
        match rows_of(&listed, "tableau").is_empty() {
            true => Ok(()),
            false => Err(listed),
        }
    })
    .await;
    assert_eq!(sqlstate(b.terminate().await), "57P01");
}

/// Two cluster nodes: `sessions list` on either lists the clients of both, each with its node;
/// `sessions terminate --node N --id I` on the other node ends exactly that client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_sessions_are_listed_and_ended_from_any_node() {
    let (dir, _pg, _upstream, mut n1, mut n2) = crate::cluster::two_nodes_over_tcp();
    crate::cluster::two_nodes_in_required_mode(&mut n1, &mut n2, dir.path()).await;
    let mut on1 = connect_tls_unverified(n1.addr(), "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    let mut on2 = connect_tls_unverified(n2.addr(), "tableau", "postgres", PASSWORD)
        .await
        .unwrap();
    on1.simple_query("SELECT 1").await.unwrap();
    on2.simple_query("SELECT 1").await.unwrap();
    // node:id user … tls …: one tableau client on each node, listed from n2.
    let n2_ref = &n2;
    let rows = wait_for("one client on each node", WAIT, || async move {
        let listed = ok(&n2_ref.run(&["sessions", "list", "--user", "tableau"]).await);
        let rows = rows_of(&listed, "tableau");
        let nodes: Vec<&str> = rows
            .iter()
            .map(|r| r[0].split(':').next().unwrap())
            .collect();
        if nodes == ["n1", "n2"] {
            Ok(rows)
        } else {
            Err(listed)
        }
    })
    .await;
    for row in &rows {
        assert_eq!(row[5], "TLSv1_3", "{rows:?}");
    }
    let on_n1 = rows[0][0].clone();
    let id1 = on_n1.strip_prefix("n1:").unwrap();
    // Per-node ids: an id alone is ambiguous in a cluster.
    let vague = failed(&n2.run(&["sessions", "terminate", "--id", id1]).await);
    assert!(vague.contains("--id needs --node"), "{vague}");
    let said = ok(&n2
        .run(&["sessions", "terminate", "--node", "n1", "--id", id1])
        .await);
    assert!(
        said.contains(&format!("Terminated 1 client session(s): {on_n1}.")),
        "{said}"
    );
    // Gone from n1's listing once told and closed; then the test closes its side.
    let n1_ref = &n1;
    wait_for("n1's client gone", WAIT, || async move {
        let only_n1 = ok(&n1_ref.run(&["sessions", "list", "--node", "n1"]).await);
        match rows_of(&only_n1, "tableau").is_empty() {
            true => Ok(()),
            false => Err(only_n1),
        }
    })
    .await;
    assert_eq!(sqlstate(on1.terminate().await), "57P01");
    on2.simple_query("SELECT 1").await.unwrap();

    // `status` on n1: both nodes live on one state version, n2's client counted, the served
    // certificate with its expiry.
    let status = ok(&n1.run(&["status"]).await);
    let node_rows: Vec<Vec<&str>> = status
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| matches!(c.first(), Some(&"n1" | &"n2")))
        .collect();
    assert_eq!(node_rows.len(), 2, "{status}");
    assert!(node_rows.iter().all(|r| r[1] == "yes"), "{status}");
    assert_eq!(node_rows[0][2], node_rows[1][2], "one version: {status}");
    assert!(status.contains("Client sessions (1):"), "{status}");
    assert!(status.contains("tableau              TLSv1_3"), "{status}");
    assert!(status.contains("served"), "{status}");
    assert!(status.contains("No pending changes."), "{status}");
}
