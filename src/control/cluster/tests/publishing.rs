//! A command on a node ([`Change`]): brought up to the newest version before it runs, committed
//! after, and put back when the commit cannot be made.

use std::time::Duration;

use super::*;
use crate::control::cluster::memory::Fault;
use crate::control::cluster::publish::{catch_up_on, wait_for_nodes};
use crate::control::cluster::repo::Beat;
use crate::control::cluster::store::StoreSession;
use crate::control::operations::ErrorKind;

#[tokio::test(start_paused = true)]
async fn a_change_commits_the_next_version_on_the_newest_one() {
    let (store, a, b) = two_nodes().await;
    assert_eq!(a.change(&store, "two").await.unwrap(), Some(2));
    // b holds version 1: its command first takes version 2, then commits on it.
    assert_eq!(b.change(&store, "three").await.unwrap(), Some(3));
    assert_eq!(store.head().unwrap().version, 3);
    assert_eq!(store.applied_by(), ["a: test", "a: test", "b: test"]);
    let m = b.membership();
    assert_eq!((m.version, m.digest), (3, b.digest()));
    // What was committed is what b holds.
    let committed = Snapshot::open(
        &Keystore::open(a.config()).unwrap(),
        3,
        &store.stored().unwrap().sealed,
    )
    .unwrap();
    assert_eq!(committed.digest(), b.digest());
}

#[tokio::test(start_paused = true)]
async fn a_command_that_changed_nothing_commits_nothing() {
    let (store, a) = one_node().await;
    assert_eq!(a.change(&store, "version one").await.unwrap(), None);
    assert_eq!(store.head().unwrap().version, 1);
    assert_eq!(store.applied_by().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_generation_is_committed_even_when_no_file_changed() {
    let (store, a) = one_node().await;
    let mut change = a.begin(&store).await;
    assert_eq!(
        change.commit("a: regenerate", Some(2)).await.unwrap(),
        Some(2)
    );
    let head = store.head().unwrap();
    assert_eq!((head.version, head.generation), (2, 2));
    assert_eq!(a.membership().version, 2);
}

#[tokio::test(start_paused = true)]
async fn a_change_made_while_another_node_committed_conflicts_and_applies_nothing() {
    let (store, a, b) = two_nodes().await;
    let mut change = a.begin(&store).await;
    a.write(APPLIED, "a's change");
    assert_eq!(b.change(&store, "b's change").await.unwrap(), Some(2));
    let e = change.commit("a: test", None).await.unwrap_err();
    assert_conflict(&e, 1, 2);
    assert!(e.to_string().contains("nothing was applied"), "{e}");
    assert_eq!(kind(e), ErrorKind::User);
    // The store keeps b's version, and a now holds it instead of its own change.
    assert_eq!(store.head().unwrap().version, 2);
    assert_eq!(a.applied(), "b's change");
    assert_eq!(
        (a.membership().version, a.membership().digest),
        (2, b.digest())
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_commit_race_puts_the_nodes_files_back_to_the_winners_version() {
    let (store, a) = one_node().await;
    store.lose_next_commit();
    let e = a.change(&store, "mine").await.unwrap_err();
    assert_conflict(&e, 1, 2);
    assert_eq!(store.head().unwrap().version, 2);
    assert_eq!(store.applied_by().last().unwrap(), "another node");
    assert_eq!(a.applied(), "version one");
    assert_eq!(a.membership().version, 2);
    assert_eq!(a.membership().digest, a.digest());
}

#[tokio::test(start_paused = true)]
async fn a_killed_commands_uncommitted_files_are_put_back_at_the_same_version() {
    let (store, a) = one_node().await;
    let committed = a.digest();
    // A command changed files and was killed before it committed (its Change is dropped).
    let change = a.begin(&store).await;
    a.write(APPLIED, "half done");
    a.write("external-ssl/x/server.crt", "stray");
    drop(change);
    assert_ne!(a.digest(), committed);
    // The next command finds files that are not the version the node holds and puts it back.
    let change = a.begin(&store).await;
    assert_eq!(a.applied(), "version one");
    assert!(!a.config().join("external-ssl/x/server.crt").exists());
    assert_eq!(a.digest(), committed);
    assert_eq!(change.membership().version, 1);
    assert_eq!(store.head().unwrap().version, 1);
}

#[tokio::test(start_paused = true)]
async fn catch_up_reports_the_files_it_replaced_and_leaves_an_intact_node_alone() {
    let (store, a, b) = two_nodes().await;
    let mut m = b.membership();
    let mut s = session(&store, &b).await;
    assert!(
        catch_up_on(&mut s, b.config(), &mut m)
            .await
            .unwrap()
            .is_none()
    );
    let before = b.digest();
    a.change(&store, "two").await.unwrap();
    let replaced = catch_up_on(&mut s, b.config(), &mut m)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replaced.digest(), before);
    assert_eq!(b.applied(), "two");
    assert_eq!(b.membership(), m);
    assert_eq!(m.version, 2);
}

#[tokio::test(start_paused = true)]
async fn catch_up_on_a_store_with_no_version_changes_nothing() {
    let store = MemoryStore::new();
    let a = first_node(&MemoryStore::new(), "a").await;
    let mut m = a.membership();
    let mut s = session(&store, &a).await;
    a.write(APPLIED, "local");
    assert!(
        catch_up_on(&mut s, a.config(), &mut m)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(a.applied(), "local");
}

#[tokio::test(start_paused = true)]
async fn a_version_sealed_under_another_master_key_is_corrupt_and_installs_nothing() {
    let (store, a) = one_node().await;
    let stranger = tempfile::tempdir().unwrap();
    let sealed = Snapshot::default()
        .seal(&Keystore::open(stranger.path()).unwrap())
        .unwrap();
    store.put(sealed, "a stranger");
    let e = a.cannot_begin(&store).await;
    assert!(matches!(e, ClusterError::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("master key"), "{e}");
    assert_eq!(kind(e), ErrorKind::Server);
    assert_eq!(a.applied(), "version one");
    assert_eq!(a.membership().version, 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_store_fails_a_command_before_it_runs_as_an_upstream_error() {
    let (store, a, b) = two_nodes().await;
    a.change(&store, "two").await.unwrap();
    store.set_fault("b", Some(Fault::Unreachable));
    let e = b.cannot_begin(&store).await;
    assert!(matches!(e, ClusterError::Unreachable { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::Upstream);
    // b keeps serving its local copy of version 1.
    assert_eq!(b.applied(), "version one");
    assert_eq!(b.membership().version, 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_lost_before_the_commit_puts_the_files_back_as_an_upstream_error() {
    let (store, a) = one_node().await;
    let mut change = a.begin(&store).await;
    a.write(APPLIED, "unpublished");
    store.set_fault("a", Some(Fault::Unreachable));
    let e = change.commit("a: test", None).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::Upstream);
    assert_eq!(a.applied(), "version one");
    assert_eq!(a.membership().version, 1);
    assert_eq!(store.head().unwrap().version, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_cluster_role_is_an_upstream_error_that_says_to_join_again() {
    let (store, a) = one_node().await;
    store.set_fault("a", Some(Fault::Refused));
    let e = a.cannot_begin(&store).await;
    assert!(e.to_string().contains("topology join"), "{e}");
    assert_eq!(kind(e), ErrorKind::Upstream);
}

#[tokio::test(start_paused = true)]
async fn a_data_directory_that_is_no_node_begins_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let change = Change::begin_on(MemoryStore::new(), dir.path())
        .await
        .unwrap();
    assert!(change.is_none());
}

/// Records a heartbeat for `name` serving `version`.
async fn beat(store: &MemoryStore, node: &Node, name: &str, version: u64) {
    let beat = Beat {
        name,
        address: &format!("{name}.test:6432"),
        version,
        fingerprint: "",
    };
    session(store, node).await.heartbeat(&beat).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_nodes_reports_each_one_and_gives_up_on_a_lagging_live_node() {
    let (store, a) = one_node().await;
    beat(&store, &a, "gone", 1).await;
    beat(&store, &a, "removed", 1).await;
    store.remove("removed");
    // "gone" stops beating: after five seconds it is not live, and not waited for.
    tokio::time::sleep(Duration::from_secs(6)).await;
    beat(&store, &a, "a", 2).await;
    beat(&store, &a, "slow", 1).await;
    let change = a.begin(&store).await;
    let started = Instant::now();
    let outcomes = wait_for_nodes(&change, 2, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    let seen: Vec<(&str, bool, bool)> = outcomes
        .iter()
        .map(|o| (o.name.as_str(), o.took, o.live))
        .collect();
    assert_eq!(
        seen,
        [
            ("a", true, true),
            ("gone", false, false),
            ("slow", false, true)
        ]
    );
    assert!(
        outcomes[1].outcome.contains("when it starts"),
        "{}",
        outcomes[1].outcome
    );
    assert!(
        outcomes[2].outcome.contains("did not take the change"),
        "{}",
        outcomes[2].outcome
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_nodes_ends_as_soon_as_every_live_node_serves_the_version() {
    let (store, a) = one_node().await;
    beat(&store, &a, "a", 1).await;
    let change = a.begin(&store).await;
    let started = Instant::now();
    let outcomes = wait_for_nodes(&change, 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].took);
    assert_eq!(outcomes[0].address, "a.test:6432");
}
