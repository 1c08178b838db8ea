//! A running node following its cluster ([`Following`]): it installs and serves each new version
//! once, whether a notification or its poll brings it, keeps serving its local copy while cut off,
//! and never serves files that are not a committed version.

use super::*;
use crate::control::cluster::follow::TICK;
use crate::control::cluster::memory::Fault;
use crate::control::cluster::publish::try_cluster_lock;

/// The version `node`'s heartbeat says it serves, once it has beaten.
fn served(store: &MemoryStore, node: &str) -> Option<u64> {
    store.node(node).map(|n| n.version)
}

/// Lets the follower run for a few ticks (on the paused clock).
async fn ticks(n: u32) {
    tokio::time::sleep(TICK * n).await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_installs_a_newer_version_and_reloads_once() {
    let (store, a, b) = two_nodes().await;
    let f = follow(&store, &b);
    eventually("b serves version 1", || served(&store, "b") == Some(1)).await;
    assert_eq!(f.server.reloads(), ["version one"]);
    a.change(&store, "two").await.unwrap();
    eventually("b serves version 2", || served(&store, "b") == Some(2)).await;
    ticks(5).await;
    assert_eq!(f.server.reloads(), ["version one", "two"]);
    assert_eq!(b.applied(), "two");
    assert_eq!(b.membership().version, 2);
    assert_eq!(b.membership().digest, a.digest());
}

#[tokio::test(start_paused = true)]
async fn a_follower_started_after_another_nodes_commit_installs_it_and_reloads() {
    let (store, a) = one_node().await;
    // b's server loaded version 1 when it started; version 2 is committed before its follower runs.
    let b = join(&store, &a, "b").await;
    a.change(&store, "two").await.unwrap();
    let f = follow(&store, &b);
    eventually("b serves version 2", || served(&store, "b") == Some(2)).await;
    ticks(3).await;
    assert_eq!(f.server.reloads(), ["two"]);
}

#[tokio::test(start_paused = true)]
async fn a_follower_started_after_its_own_nodes_commit_still_reloads_what_it_holds() {
    let (store, _a, b) = two_nodes().await;
    // A command on b committed version 2 before b's follower began: b's files and membership
    // already say version 2, but its server was loaded before and serves version 1's settings.
    b.change(&store, "two").await.unwrap();
    assert_eq!(b.membership().version, 2);
    let f = follow(&store, &b);
    eventually("b serves version 2", || served(&store, "b") == Some(2)).await;
    ticks(3).await;
    assert_eq!(f.server.reloads(), ["two"]);
}

#[tokio::test(start_paused = true)]
async fn a_follower_puts_back_a_killed_commands_files_before_it_serves() {
    let (store, a, b) = two_nodes().await;
    b.write(APPLIED, "half done");
    let f = follow(&store, &b);
    eventually("b serves version 1", || served(&store, "b") == Some(1)).await;
    assert_eq!(f.server.reloads(), ["version one"]);
    assert_eq!(b.digest(), a.digest());
    assert_eq!(store.head().unwrap().version, 1);
}

/// A cluster of two nodes whose second, `b`, is followed; returns once b's first heartbeat is
/// recorded: the follower then waits a tick for a notification.
async fn settled() -> (MemoryStore, Node, Node, Followed) {
    let (store, a, b) = two_nodes().await;
    let f = follow(&store, &b);
    eventually("b serves version 1", || served(&store, "b") == Some(1)).await;
    (store, a, b, f)
}

#[tokio::test(start_paused = true)]
async fn a_notified_change_is_taken_without_waiting_for_the_poll() {
    let (store, a, _b, f) = settled().await;
    let committed = Instant::now();
    a.change(&store, "two").await.unwrap();
    eventually("b reloads version 2", || f.server.reloads().len() == 2).await;
    assert!(committed.elapsed() < TICK / 2, "{:?}", committed.elapsed());
}

#[tokio::test(start_paused = true)]
async fn the_poll_takes_a_change_within_a_tick_when_no_notification_comes() {
    let (store, a, _b, f) = settled().await;
    store.set_silent(true);
    let committed = Instant::now();
    a.change(&store, "two").await.unwrap();
    eventually("b reloads version 2", || f.server.reloads().len() == 2).await;
    // It came with the next poll, not before.
    let waited = committed.elapsed();
    assert!(waited >= TICK / 2 && waited <= TICK, "{waited:?}");
    assert_eq!(f.server.reloads(), ["version one", "two"]);
    eventually("b beats version 2", || served(&store, "b") == Some(2)).await;
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_follower_serves_its_local_copy_and_catches_up_when_the_store_is_back() {
    let (store, a, b, f) = settled().await;
    store.set_fault("b", Some(Fault::Unreachable));
    a.change(&store, "two").await.unwrap();
    a.change(&store, "three").await.unwrap();
    ticks(10).await;
    assert_eq!(b.applied(), "version one");
    assert_eq!(b.membership().version, 1);
    assert_eq!(f.server.reloads(), ["version one"]);
    assert!(!f.task.is_finished());
    store.set_fault("b", None);
    eventually("b serves version 3", || served(&store, "b") == Some(3)).await;
    // It reads the whole state again: the newest version, not each one it missed.
    assert_eq!(f.server.reloads(), ["version one", "three"]);
    assert_eq!(b.applied(), "three");
}

#[tokio::test(start_paused = true)]
async fn a_version_that_does_not_load_is_put_back_and_not_tried_again() {
    let (store, a, b, f) = settled().await;
    *f.server.refuse.lock().unwrap() = Some("broken".into());
    a.change(&store, "broken").await.unwrap();
    eventually("b puts version 1's files back", || {
        b.membership().version == 2 && b.applied() == "version one"
    })
    .await;
    ticks(5).await;
    // It keeps serving version 1, says so in its heartbeat, and the files it serves are intact
    // (so they are not taken for a killed command's).
    assert_eq!(f.server.reloads(), ["version one"]);
    assert_eq!(served(&store, "b"), Some(1));
    assert_eq!(b.membership().digest, b.digest());
    assert_eq!(b.applied(), "version one");
    // The next version that loads is served.
    a.change(&store, "three").await.unwrap();
    eventually("b serves version 3", || served(&store, "b") == Some(3)).await;
    assert_eq!(f.server.reloads(), ["version one", "three"]);
}

#[tokio::test(start_paused = true)]
async fn a_follower_installs_nothing_while_a_command_on_its_node_holds_the_state() {
    let (store, a, b, f) = settled().await;
    // Taken between two of the follower's looks (never waited for: it would block this runtime).
    let mut lock = None;
    eventually("b's cluster lock is free", || {
        lock = try_cluster_lock(b.config()).unwrap();
        lock.is_some()
    })
    .await;
    a.change(&store, "two").await.unwrap();
    ticks(5).await;
    assert_eq!(b.applied(), "version one");
    assert_eq!(f.server.reloads(), ["version one"]);
    drop(lock);
    eventually("b serves version 2", || served(&store, "b") == Some(2)).await;
    assert_eq!(f.server.reloads(), ["version one", "two"]);
}

#[tokio::test(start_paused = true)]
async fn a_follower_learns_its_id_and_its_live_peers_and_beats_its_certificate() {
    let (store, a, b) = two_nodes().await;
    let c = join(&store, &a, "c").await;
    let (_fa, fb, _fc) = (follow(&store, &a), follow(&store, &b), follow(&store, &c));
    eventually("every node beats", || {
        ["a", "b", "c"].iter().all(|n| served(&store, n) == Some(1))
    })
    .await;
    let id = |n: &str| store.node(n).unwrap().id;
    // Ids go by which node beat first: compare in id order, as `cluster()` lists them.
    let others = |b_peers: &[(u8, &str)]| {
        let mut peers: Vec<(u8, String)> =
            b_peers.iter().map(|(i, a)| (*i, a.to_string())).collect();
        peers.sort();
        Some((id("b"), peers))
    };
    eventually("b knows a and c", || {
        fb.server.cluster() == others(&[(id("a"), "a.test:6432"), (id("c"), "c.test:6432")])
    })
    .await;
    assert_eq!(
        store.node("b").unwrap().fingerprint,
        "fingerprint of version one"
    );
    store.remove("c");
    eventually("b forgets the removed c", || {
        fb.server.cluster() == others(&[(id("a"), "a.test:6432")])
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_node_stops_following_and_keeps_its_last_state() {
    let (store, a, b, f) = settled().await;
    store.remove("b");
    eventually("b's follower ends", || f.task.is_finished()).await;
    a.change(&store, "two").await.unwrap();
    ticks(3).await;
    assert_eq!(b.applied(), "version one");
    assert_eq!(f.server.reloads(), ["version one"]);
}

#[tokio::test(start_paused = true)]
async fn a_server_in_no_cluster_follows_once_its_node_joins() {
    let (store, a) = one_node().await;
    let b = Node {
        name: "b".into(),
        dir: tempfile::tempdir().unwrap(),
    };
    let f = follow(&store, &b);
    ticks(3).await;
    assert!(f.server.reloads().is_empty());
    assert_eq!(served(&store, "b"), None);
    join_as(&store, &a, &b);
    eventually("b serves version 1", || served(&store, "b") == Some(1)).await;
    assert_eq!(f.server.reloads(), ["version one"]);
}

#[tokio::test(start_paused = true)]
async fn every_following_node_answers_a_question_once_and_garbage_is_answered_as_such() {
    let (store, a, b) = two_nodes().await;
    let _fa = follow(&store, &a);
    let _fb = follow(&store, &b);
    eventually("both serve", || {
        served(&store, "a") == Some(1) && served(&store, "b") == Some(1)
    })
    .await;
    let question = Question::Sessions(crate::proxy::sessions::Selector::default());
    let id = store.ask(&serde_json::to_string(&question).unwrap());
    eventually("both answer", || store.answers(id).len() == 2).await;
    for (node, body) in store.answers(id) {
        let Answer::Sessions(sessions) = serde_json::from_str(&body).unwrap() else {
            panic!("{body}");
        };
        assert_eq!(sessions[0].user, node, "each node answers about itself");
    }
    let before = store.answers(id);
    ticks(3).await;
    assert_eq!(store.answers(id), before, "answered once");
    let garbage = store.ask("{\"shutdown\":{}}");
    eventually("both answer the garbage", || {
        store.answers(garbage).len() == 2
    })
    .await;
    for body in store.answers(garbage).values() {
        let answer: Answer = serde_json::from_str(body).unwrap();
        assert!(
            matches!(&answer, Answer::Failed(why) if why.contains("does not know")),
            "{answer:?}"
        );
    }
}
