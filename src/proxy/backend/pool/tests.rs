//! The pool's bounds, hand-out rules and retirements, on loopback sockets that play the repository.

use super::*;
use crate::proxy::repository::RepositoryStream;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn key(role: &str) -> Arc<PoolKey> {
    Arc::new(PoolKey::unpooled(role, "db"))
}

fn verifier(seed: &str) -> Verifier {
    Verifier::mock(seed, b"secret")
}

/// A backend on a loopback socket whose far end (returned) plays the repository.
async fn backend(pool: &Arc<Pool>, slot: Slot, verifier: Verifier) -> (Backend, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut far, _) = listener.accept().await.unwrap();
    let mut answer = Vec::new();
    for (kind, body) in [
        (b'S', &b"application_name\0one\0"[..]),
        (b'K', &[0, 0, 0, 9, 1, 2, 3, 4][..]),
        (b'Z', &b"I"[..]),
    ] {
        answer.push(kind);
        answer.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        answer.extend_from_slice(body);
    }
    far.write_all(&answer).await.unwrap();
    let generation = pool.generation.load(Ordering::Relaxed);
    let b = Backend::after_login(
        RepositoryStream::Tcp(near),
        None,
        0,
        verifier,
        slot,
        generation,
    )
    .await
    .unwrap();
    (b, far)
}

fn options(max_backends: usize) -> PoolOptions {
    PoolOptions {
        enabled: true,
        max_backends,
        checkout_timeout: Duration::from_millis(50),
        ..PoolOptions::default()
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(50)
}

#[tokio::test]
async fn a_checked_in_session_goes_to_the_next_client_who_proved_the_same_verifier() {
    let pool = Pool::new(options(4));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!("an empty pool opens a backend")
    };
    let (b, _far) = backend(&pool, slot, v.clone()).await;
    assert_eq!(b.pid(), 9);
    assert_eq!(b.param("application_name"), Some(&b"one"[..]));
    pool.checkin(b);
    assert_eq!(pool.totals(), (1, 1));
    let Ok(Checkout::Warm(warm)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!("the warm session is handed out")
    };
    assert_eq!(warm.pid(), 9);
    pool.checkin(*warm);
    // Another verifier (the password changed): the session is retired, a new one opened.
    let other = verifier("b");
    assert!(matches!(
        pool.checkout(&k, &other, true, true, soon()).await,
        Ok(Checkout::Fork(_))
    ));
    assert_eq!(pool.stats()[0].idle, 0);
}

#[tokio::test]
async fn a_session_the_repository_spoke_on_or_closed_is_not_handed_out() {
    let pool = Pool::new(options(4));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!()
    };
    let (b, mut far) = backend(&pool, slot, v.clone()).await;
    pool.checkin(b);
    // pg_terminate_backend: a FATAL arrives on the idle session.
    far.write_all(b"E\0\0\0\x04").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(matches!(
        pool.checkout(&k, &v, true, true, soon()).await,
        Ok(Checkout::Fork(_))
    ));
}

#[tokio::test]
async fn at_the_bound_a_client_waits_then_is_refused_and_a_nologin_role_gets_nothing_warm() {
    let pool = Pool::new(options(1));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!()
    };
    assert_eq!(
        pool.checkout(&k, &v, true, true, soon()).await.unwrap_err(),
        Exhausted::Total
    );
    // Another key's idle session is closed to make room.
    let (b, _far) = backend(&pool, slot, v.clone()).await;
    pool.checkin(b);
    let other = key("bob");
    let waiting = pool.checkout(
        &other,
        &v,
        true,
        true,
        Instant::now() + Duration::from_secs(5),
    );
    assert!(matches!(waiting.await, Ok(Checkout::Fork(_))));
    // NOLOGIN: never a warm session, and the role's warm ones are closed.
    let pool = Pool::new(options(4));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!()
    };
    let (b, _far) = backend(&pool, slot, v.clone()).await;
    pool.checkin(b);
    assert!(matches!(
        pool.checkout(&k, &v, false, true, soon()).await,
        Ok(Checkout::Fork(_))
    ));
    assert_eq!(pool.stats()[0].idle, 0);
}

#[tokio::test]
async fn an_apply_retires_sessions_opened_before_it() {
    let pool = Pool::new(options(4));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!()
    };
    let (b, _far) = backend(&pool, slot, v.clone()).await;
    pool.saw_generation(7);
    pool.checkin(b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.totals(), (0, 0), "closed instead of kept");
}

#[tokio::test]
async fn waiting_clients_are_served_in_arrival_order_and_one_that_gives_up_leaves_the_queue() {
    let pool = Pool::new(options(1));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!()
    };
    let (b, _far) = backend(&pool, slot, v.clone()).await;
    let later = || Instant::now() + Duration::from_secs(5);
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for n in 0..3 {
        let (pool, k, v, tx) = (pool.clone(), k.clone(), v.clone(), order_tx.clone());
        waiters.push(tokio::spawn(async move {
            let Ok(Checkout::Warm(b)) = pool.checkout(&k, &v, true, true, later()).await else {
                panic!("waiter {n} gets the warm session")
            };
            tx.send(n).unwrap();
            pool.checkin(*b);
        }));
        // Each is queued before the next arrives.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.checkin(b);
    for w in waiters {
        w.await.unwrap();
    }
    let served: Vec<i32> = std::iter::from_fn(|| order.try_recv().ok()).collect();
    assert_eq!(served, [0, 1, 2]);
    assert_eq!(pool.totals(), (1, 1));
    assert_eq!(pool.stats()[0].handouts, 3);
    // A waiter that gives up leaves the queue: the next check-in keeps the session warm.
    let Ok(Checkout::Warm(b)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!()
    };
    assert!(pool.checkout(&k, &v, true, true, soon()).await.is_err());
    pool.checkin(*b);
    assert_eq!(pool.totals(), (1, 1));
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_first_waiter_of_another_key() {
    let pool = Pool::new(options(1));
    let v = verifier("a");
    let Ok(Checkout::Fork(slot)) = pool.checkout(&key("alice"), &v, true, true, soon()).await
    else {
        panic!()
    };
    let (b, _far) = backend(&pool, slot, v.clone()).await;
    let waiting = {
        let (pool, v) = (pool.clone(), v.clone());
        tokio::spawn(async move {
            let later = Instant::now() + Duration::from_secs(5);
            pool.checkout(&key("bob"), &v, true, true, later).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // alice's session would only sit idle while bob waits for room: it is closed, bob gets its slot.
    pool.checkin(b);
    let Ok(Checkout::Fork(slot)) = waiting.await.unwrap() else {
        panic!("bob gets the freed slot")
    };
    assert_eq!(slot.key().role, "bob");
}

#[test]
fn clients_of_a_key_and_name_share_what_they_are_told() {
    let pool = Pool::new(options(4));
    let k = key("welcome");
    assert!(
        pool.welcome(&k, "psql").is_none(),
        "no session has logged in"
    );
    let slot = pool.reserve(&k, 4).unwrap();
    let reported = [
        (Bytes::from("application_name"), Bytes::from("first")),
        (Bytes::from("TimeZone"), Bytes::from("UTC")),
    ];
    slot.remember_params(&reported);
    let a = pool.welcome(&k, "psql").unwrap();
    assert_eq!(a[0], (Bytes::from("application_name"), Bytes::from("psql")));
    assert_eq!(a[1], reported[1]);
    let b = pool.welcome(&k, "psql").unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "a second client of the same name shares the list"
    );
    let c = pool.welcome(&k, "").unwrap();
    assert_eq!(c[0].1, Bytes::new());
    assert_eq!(
        a[0].1,
        Bytes::from("psql"),
        "a client's list never changes under it"
    );
}

#[tokio::test]
async fn a_checked_in_session_prefers_a_waiter_on_its_worker_and_overtakes_a_bounded_number_of_times()
 {
    let pool = Pool::new(options(1));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!("an empty pool opens a backend")
    };
    let (mut b, _far) = backend(&pool, slot, v.clone()).await;
    b.worker = Some(0);
    let wanted = Wanted {
        verifier: &v,
        can_login: true,
        reuse: true,
    };
    let mut inner = pool.lock();
    set_worker(1);
    let (_, mut first) = queue::enqueue(&mut inner, &k, &wanted);
    set_worker(0);
    let mut local: Vec<_> = (0..=queue::MAX_OVERTAKEN)
        .map(|_| queue::enqueue(&mut inner, &k, &wanted).1)
        .collect();
    // The session goes to the waiters on its own worker, overtaking the first one ...
    for waiter in local.iter_mut().take(usize::from(queue::MAX_OVERTAKEN)) {
        assert!(queue::hand_warm(&mut inner, b).is_none());
        assert!(first.try_recv().is_err());
        let Ok(Checkout::Warm(back)) = waiter.try_recv() else {
            panic!("a waiter on the session's worker gets it")
        };
        b = *back;
    }
    // ... as often as allowed: then the first one gets it, whatever its worker.
    assert!(queue::hand_warm(&mut inner, b).is_none());
    let got = first.try_recv();
    drop(inner);
    assert!(matches!(got, Ok(Checkout::Warm(_))));
}

#[tokio::test]
async fn a_session_from_another_worker_is_moved_to_this_one_and_still_talks() {
    use tokio::io::AsyncReadExt;
    let pool = Pool::new(options(1));
    let (v, k) = (verifier("a"), key("alice"));
    let Ok(Checkout::Fork(slot)) = pool.checkout(&k, &v, true, true, soon()).await else {
        panic!("an empty pool opens a backend")
    };
    let (mut b, mut far) = backend(&pool, slot, v.clone()).await;
    b.worker = Some(1);
    set_worker(0);
    let mut moved = b;
    moved.adopt();
    assert_eq!(moved.worker, Some(0));
    far.write_all(b"ping").await.unwrap();
    let mut got = [0; 4];
    moved.stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    moved.stream.write_all(b"pong").await.unwrap();
    far.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong");
}
