//! `pool.min_warm`: sessions opened ahead of clients once a client of the role has logged in, topped
//! up in the background, handed out warm, and forgotten when the role's password changes.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::client::connect_tls_unverified;
use crate::harness::{PASSWORD, Postgres, psql_commands, wait_for};
use crate::metrics::sample;
use crate::pool::Pooled;

const MIN_WARM: &str = "min_warm = [{ role = \"tableau\", database = \"postgres\", sessions = 3 }]";

/// The start-up parameters are part of a warm session's key, and the Rust client (tokio-postgres)
/// always sends `client_encoding=UTF8`: psql sends it too here, so both are clients of one key.
const AS_THE_RUST_CLIENT: &str = "client_encoding=UTF8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_warm_sessions_are_opened_after_the_first_login_and_handed_out_warm() {
    // Verifiers read at every login: this test changes the password and logs in with the new one at
    // once (the kept verifier's bounds are tested in pool.rs).
    let p = Pooled::start_on(
        Postgres::start_with_tcp(),
        "",
        "verifier_cache_ttl = \"0s\"",
        MIN_WARM,
    )
    .await;
    // Nothing can be opened before a client of the role has proved its password. An absence, so not
    // a wait for a condition: the top-up runs once a second (src/proxy/prefill.rs) and this watches
    // over more than one of its rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(p.sessions_of("tableau"), 0);

    p.psql(AS_THE_RUST_CLIENT, &["SELECT 1"]).await;
    // Its own session comes back warm and two more are opened in the background.
    wait_idle(&p, 3).await;
    let warm: BTreeSet<String> = p
        .pg
        .sql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE usename = 'tableau'")
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(warm.len(), 3);

    // Three clients at once: each gets one of them, none is forked.
    let mut held = Vec::new();
    let mut pids = BTreeSet::new();
    for _ in 0..3 {
        let mut c = connect_tls_unverified(p.addr(), "tableau", "postgres", PASSWORD)
            .await
            .unwrap();
        let pid = c.simple_query("SELECT pg_backend_pid()").await.unwrap()[0][0]
            .clone()
            .unwrap();
        pids.insert(pid);
        held.push(c);
    }
    assert_eq!(
        pids, warm,
        "the clients got the sessions opened ahead of them"
    );
    let m = p.metrics().await;
    let checkouts = "pgssl_pool_checkouts_total";
    assert_eq!(sample(&m, checkouts, &["outcome=\"opened\""]), Some(1.0));
    assert_eq!(sample(&m, checkouts, &["outcome=\"warm\""]), Some(3.0));
    assert_eq!(sample(&m, "pgssl_pool_prefilled_total", &[]), Some(2.0));
    for c in held {
        c.terminate().await.unwrap();
    }
    wait_idle(&p, 3).await;

    // A new password: the repository refuses what was learned, so nothing is reopened with it...
    p.pg.sql("ALTER ROLE tableau PASSWORD 'changed-pw'");
    p.pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tableau'");
    p.wait_sessions("tableau", 0).await;
    // The next top-up tries the old password, is refused, and says so.
    p.serve
        .wait_for_log("could not open a session ahead of clients", 1)
        .await;
    assert_eq!(p.sessions_of("tableau"), 0, "{}", p.serve.log_text());
    // ...until a client proves the new one.
    let run = psql_commands(
        &p.conninfo(&format!("password=changed-pw {AS_THE_RUST_CLIENT}")),
        &["SELECT 1"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    wait_idle(&p, 3).await;
    assert_eq!(p.sessions_of("tableau"), 3);
    p.serve.stop().await;
}

/// Waits until pgssl holds `n` idle sessions (its gauge, so they are checked in, not just logged in).
async fn wait_idle(p: &Pooled, n: usize) {
    let what = format!("{n} idle sessions");
    wait_for(&what, Duration::from_secs(30), || async {
        let idle = sample(
            &p.metrics().await,
            "pgssl_pool_sessions",
            &["state=\"idle\""],
        );
        if idle == Some(n as f64) {
            Ok(())
        } else {
            Err(format!("{idle:?}:\n{}", p.serve.log_text()))
        }
    })
    .await
}
