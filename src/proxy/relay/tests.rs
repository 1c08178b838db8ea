use super::*;
use crate::proxy::protocol::session_watch::Idle;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

#[tokio::test]
async fn relays_both_ways_through_a_slow_writer_and_propagates_eof() {
    // Tiny duplex buffers force partial writes, exercising the spill path.
    let (mut client_far, mut client_near) = duplex(64);
    let (mut upstream_near, mut upstream_far) = duplex(64);
    let stop = CancellationToken::new();
    let relay =
        tokio::spawn(async move { relay(&mut client_near, &mut upstream_near, &stop).await });
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        client_far.write_all(&sent).await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_far.read_to_end(&mut back).await.unwrap();
        back
    });
    let mut received = Vec::new();
    upstream_far.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, payload);
    upstream_far.write_all(b"reply").await.unwrap();
    upstream_far.shutdown().await.unwrap();
    assert_eq!(writer.await.unwrap(), b"reply");
    match relay.await.unwrap() {
        RelayEnd::Closed(t) => assert_eq!((t.to_upstream, t.to_client), (200_000, 5)),
        other => panic!("{other:?}"),
    }
}

/// A pooled relay between two in-memory pipes, spawned: the client's far end, the repository's far
/// end, and the task, which gives how it ended, the watch's verdict and the repository's near end.
#[allow(clippy::type_complexity)]
fn pooled_relay() -> (
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<(PooledEnd, Option<Idle>, tokio::io::DuplexStream)>,
) {
    let (client_far, mut client_near) = duplex(1024);
    let (mut upstream_near, upstream_far) = duplex(1024);
    let relay = tokio::spawn(async move {
        let mut watch = SessionWatch::default();
        let live = crate::proxy::sessions::Sessions::for_test();
        let stop = CancellationToken::new();
        let end = relay_pooled(
            &mut client_near,
            &mut upstream_near,
            &stop,
            &mut watch,
            StreamGuard::default(),
            &live,
        )
        .await;
        (end, watch.idle(), upstream_near)
    });
    (client_far, upstream_far, relay)
}

/// A pooled relay ends when the client sends Terminate, which the repository never sees, and
/// leaves the repository's connection open and idle.
#[tokio::test]
async fn a_pooled_relay_holds_back_terminate_and_keeps_the_repository_side_open() {
    let (mut client_far, mut upstream_far, relay) = pooled_relay();
    client_far
        .write_all(b"Q\0\0\0\x0dselect 1\0")
        .await
        .unwrap();
    let mut query = [0u8; 14];
    upstream_far.read_exact(&mut query).await.unwrap();
    upstream_far.write_all(b"Z\0\0\0\x05I").await.unwrap();
    let mut ready = [0u8; 6];
    client_far.read_exact(&mut ready).await.unwrap();
    client_far.write_all(b"X\0\0\0\x04").await.unwrap();
    let (end, idle, mut upstream_near) = relay.await.unwrap();
    assert!(
        matches!(end, PooledEnd::ClientLeft(t) if t.to_upstream == 14),
        "{end:?}"
    );
    assert!(idle.is_some());
    // Nothing more reached the repository, and its connection still works.
    upstream_near.write_all(b"Q").await.unwrap();
    let mut next = [0u8; 1];
    upstream_far.read_exact(&mut next).await.unwrap();
    assert_eq!(&next, b"Q");
}

/// A pooled relay stops short of the last byte of a statement that writes `pgssl.*`: the
/// repository has the messages before it and never the whole of it.
#[tokio::test]
async fn a_pooled_relay_never_forwards_a_statement_that_sets_pgssl_whole() {
    let (mut client_far, mut upstream_far, relay) = pooled_relay();
    let set = b"SET pgssl.node = 'x'\0";
    let mut sent = b"Q\0\0\0\x0dselect 1\0".to_vec();
    sent.push(b'Q');
    sent.extend_from_slice(&(set.len() as u32 + 4).to_be_bytes());
    sent.extend_from_slice(set);
    client_far.write_all(&sent).await.unwrap();
    let (end, _, upstream_near) = relay.await.unwrap();
    drop(upstream_near);
    let forwarded = sent.len() as u64 - 1;
    assert!(
        matches!(end, PooledEnd::Refused(t) if t.to_upstream == forwarded),
        "{end:?}"
    );
    let mut got = Vec::new();
    upstream_far.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, &sent[..sent.len() - 1]);
}

#[tokio::test]
async fn stops_when_cancelled() {
    let (_a, mut b) = duplex(64);
    let (mut c, _d) = duplex(64);
    let stop = CancellationToken::new();
    stop.cancel();
    assert!(matches!(
        relay(&mut b, &mut c, &stop).await,
        RelayEnd::Shutdown(_)
    ));
}

/// A relayed login's relay ends at a statement that writes `pgssl.*`, short of its last byte.
#[tokio::test]
async fn a_relayed_session_never_forwards_a_statement_that_sets_pgssl_whole() {
    let (mut client_far, mut client_near) = duplex(1024);
    let (mut upstream_near, mut upstream_far) = duplex(1024);
    let stop = CancellationToken::new();
    let relay = tokio::spawn(async move {
        let live = crate::proxy::sessions::Sessions::for_test();
        relay_login(&mut client_near, &mut upstream_near, &stop, &live)
            .await
            .0
    });
    let set = b"SET pgssl.node = 'x'\0";
    let mut sent = vec![b'Q'];
    sent.extend_from_slice(&(set.len() as u32 + 4).to_be_bytes());
    sent.extend_from_slice(set);
    client_far.write_all(&sent).await.unwrap();
    let end = relay.await.unwrap();
    assert!(matches!(end, LoginRelayEnd::Refused(_)), "{end:?}");
    let mut got = Vec::new();
    upstream_far.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, &sent[..sent.len() - 1]);
}
