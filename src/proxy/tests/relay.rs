//! The relay stage as a session sees it ([`crate::proxy::relay`] behind
//! [`crate::proxy::connection`] and [`crate::proxy::session`]): after the login, bytes both ways
//! unchanged until either side leaves; the repository's own words, a FATAL included, reach the
//! client as they were sent.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use tokio::task::JoinHandle;

use super::support::repository::{TERMINATE, error, message, ready};
use super::support::{
    CLIENT_USER, Client, FakeLookup, LoggedIn, RepoSession, Server, keep_warm, peer, within,
};
use crate::proxy::auth::scram::{SCRAM, SCRAM_PLUS};
use crate::proxy::policy::Mode;
use crate::proxy::protocol::auth_message::sasl_offer;

/// A passthrough session the repository let in without a password (`trust`): the client, the task
/// serving it, the backend's end.
async fn passthrough_session(server: &Server) -> (Client, JoinHandle<()>, RepoSession) {
    let params = [("user", CLIENT_USER), ("database", "repository")];
    let (mut client, task) = server.client_with(peer(), &params, false).await;
    let mut backend = server.repository.session().await;
    let startup = backend.startup().await;
    backend.trust(&startup, 7, 8).await;
    let welcome = client.welcome().await;
    // In passthrough the key is the repository's own.
    assert_eq!((welcome.pid, welcome.secret), (7, 8));
    (client, task, backend)
}

#[tokio::test]
async fn after_a_passthrough_login_bytes_flow_both_ways_unchanged() {
    let server = Server::passthrough(Mode::Off);
    let (mut client, _task, mut backend) = passthrough_session(&server).await;
    client.query("select 1").await;
    assert_eq!(backend.raw(14).await, b"Q\0\0\0\x0dselect 1\0");
    let mut answer = message(b'D', &[0, 1, 0, 0, 0, 1, b'1']);
    answer.extend(message(b'C', b"SELECT 1\0"));
    answer.extend(ready(b'I'));
    backend.send(&answer).await;
    assert_eq!(client.raw(answer.len()).await, answer);
}

#[tokio::test]
async fn terminate_reaches_the_repository_and_both_sides_close() {
    let server = Server::passthrough(Mode::Off);
    let (mut client, task, mut backend) = passthrough_session(&server).await;
    client.terminate().await;
    drop(client);
    assert_eq!(backend.until_closed().await, TERMINATE);
    drop(backend);
    within("the session's end", task).await.expect("no panic");
}

#[tokio::test]
async fn a_fatal_from_the_repository_reaches_the_client_as_it_was_sent() {
    let server = Server::passthrough(Mode::Off);
    let (mut client, task, mut backend) = passthrough_session(&server).await;
    let fatal = error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    );
    backend.send(&fatal).await;
    drop(backend);
    assert_eq!(client.rest().await, fatal);
    // The relay ends once the client, told, closes its side too.
    drop(client);
    within("the session's end", task).await.expect("no panic");
}

#[tokio::test]
async fn the_end_of_the_shutdown_grace_closes_an_open_session() {
    let server = Server::passthrough(Mode::Off);
    let (mut client, task, _backend) = passthrough_session(&server).await;
    server.ctx.closing.cancel();
    within("the session's end", task).await.expect("no panic");
    client.assert_closed().await;
}

/// Channel binding cannot hold across a TLS terminator: the repository's PLUS offer is withheld.
#[tokio::test]
async fn a_passthrough_login_offers_the_client_scram_without_plus() {
    let server = Server::passthrough(Mode::Required);
    let mut client = server.client(CLIENT_USER, true).await;
    let mut backend = server.repository.session().await;
    backend.startup().await;
    backend
        .send(&sasl_offer(&[SCRAM_PLUS, SCRAM]).encode())
        .await;
    let Message::AuthenticationSasl(offer) = client.message().await else {
        panic!("expected AuthenticationSASL")
    };
    let mut mechanisms = offer.mechanisms();
    assert_eq!(mechanisms.next().expect("a mechanism"), Some(SCRAM));
    assert_eq!(mechanisms.next().expect("the end"), None);
}

/// A pooled session whose backend dies mid-session: the client hears why, and nothing is kept.
#[tokio::test]
async fn in_proxy_mode_a_backend_fatal_reaches_the_client_and_the_backend_is_dropped() {
    let server = Server::with(Mode::Off, FakeLookup::with(&[CLIENT_USER]), keep_warm);
    let LoggedIn {
        mut client,
        task,
        mut backend,
        ..
    } = server.logged_in(false).await;
    backend
        .send(&error("FATAL", "57P01", "terminating connection"))
        .await;
    drop(backend);
    let fatal = client.fatal().await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        ("57P01", "terminating connection")
    );
    within("the session's end", task).await.expect("no panic");
    assert_eq!(server.ctx.pool.totals(), (0, 0));
}
