//! Where a CancelRequest goes ([`crate::proxy::cancel_route`]): a key pgssl minted is exchanged
//! for its backend's own, a passthrough key travels unchanged, and a key nobody holds reaches
//! nothing. pgssl answers a cancel request with nothing but the close, as PostgreSQL does.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::support::{BACKEND_KEY, LoggedIn, Server, connect, within};
use crate::proxy::policy::Mode;

fn cancel_request(pid: i32, secret: i32) -> BytesMut {
    let mut packet = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut packet);
    packet
}

/// Sends a cancel request with `key` on a new connection and waits until pgssl is done with it;
/// it must close the connection without a word.
async fn cancel_with(server: &Server, key: (i32, i32)) {
    let (mut client, task) = connect(&server.settings, &server.ctx);
    client.send(&cancel_request(key.0, key.1)).await;
    client.assert_closed().await;
    within("the cancel request's end", task)
        .await
        .expect("no panic");
}

#[tokio::test]
async fn a_minted_key_reaches_the_repository_as_its_backends_own_key() {
    let server = Server::new(Mode::Off);
    let session = server.logged_in(false).await;
    let welcome = &session.welcome;
    let (mut canceller, task) = connect(&server.settings, &server.ctx);
    canceller
        .send(&cancel_request(welcome.pid, welcome.secret))
        .await;
    let mut delivery = server.repository.session().await;
    let delivered = delivery.cancel_request().await;
    assert_eq!(delivered, cancel_request(BACKEND_KEY.0, BACKEND_KEY.1));
    // The repository closes once it has read the request; only then does pgssl close the client.
    drop(delivery);
    canceller.assert_closed().await;
    within("the cancel request's end", task)
        .await
        .expect("no panic");
}

#[tokio::test]
async fn a_cancel_over_tls_is_routed_like_one_in_plaintext() {
    let server = Server::new(Mode::Required);
    let session = server.logged_in(true).await;
    let welcome = &session.welcome;
    let (mut canceller, _task) = connect(&server.settings, &server.ctx);
    assert_eq!(canceller.ssl_request().await, b'S');
    let mut canceller = canceller.tls(true).await.expect("a handshake");
    canceller
        .send(&cancel_request(welcome.pid, welcome.secret))
        .await;
    let delivered = server.repository.session().await.cancel_request().await;
    assert_eq!(delivered, cancel_request(BACKEND_KEY.0, BACKEND_KEY.1));
}

/// In proxy mode every session's key is minted: any other key is a guess, and cancels nothing.
#[tokio::test]
async fn in_proxy_mode_a_key_nobody_holds_reaches_nothing() {
    let server = Server::new(Mode::Off);
    cancel_with(&server, (4100, 99)).await;
    assert_eq!(server.repository.attempts(), 0);
}

#[tokio::test]
async fn a_key_cancels_nothing_once_its_client_has_left() {
    let server = Server::new(Mode::Off);
    let LoggedIn {
        mut client,
        welcome,
        mut backend,
        ..
    } = server.logged_in(false).await;
    client.terminate().await;
    backend.until_closed().await;
    client.assert_closed().await;
    assert!(server.ctx.cancels.is_empty(), "the key was revoked");
    cancel_with(&server, (welcome.pid, welcome.secret)).await;
    assert_eq!(
        server.repository.attempts(),
        1,
        "only the session's own connection"
    );
}

/// A passthrough session's key is the repository's own: it is passed on as it came.
#[tokio::test]
async fn in_passthrough_a_cancel_request_is_forwarded_unchanged() {
    let server = Server::passthrough(Mode::Off);
    let (mut canceller, _task) = connect(&server.settings, &server.ctx);
    canceller.send(&cancel_request(42, 7)).await;
    let delivered = server.repository.session().await.cancel_request().await;
    assert_eq!(delivered, cancel_request(42, 7));
}
