//! A proxy-mode session's backend ([`crate::proxy::session`] over [`crate::proxy::backend`]): a
//! miss opens one through the repository connector, a client that leaves an idle session has it
//! reset and kept, the next client of the same key gets it warm; failures reach the client with
//! the SQLSTATE and words a client may see.

use std::time::Duration;

use postgres_protocol::authentication::sasl::ChannelBinding;
use postgres_protocol::message::backend::Message;
use tokio::task::JoinHandle;

use super::support::repository::{TERMINATE, error, message, parameter, ready};
use super::support::{
    BACKEND_KEY, CLIENT_USER, Client, FakeLookup, PASSWORD, RepoSession, Server, Welcome,
    keep_warm, peer, within,
};
use crate::proxy::auth::scram::SCRAM;
use crate::proxy::policy::Mode;
use crate::proxy::protocol::auth_message::auth_request;
use crate::proxy::repository::RepositoryConnectError;

/// A proxy-mode server that keeps warm sessions.
fn pooled_server() -> Server {
    Server::with(Mode::Off, FakeLookup::with(&[CLIENT_USER]), keep_warm)
}

fn params(application_name: &str) -> [(&'static str, &str); 3] {
    [
        ("user", CLIENT_USER),
        ("database", "repository"),
        ("application_name", application_name),
    ]
}

/// A client that has logged in with `params` on a new backend: the client, the task serving it,
/// its welcome and the backend's end.
async fn on_new_backend(
    server: &Server,
    params: &[(&str, &str)],
) -> (Client, JoinHandle<()>, Welcome, RepoSession) {
    let session = server.logged_in_with(peer(), params, false).await;
    (
        session.client,
        session.task,
        session.welcome,
        session.backend,
    )
}

/// A client that logged in without a backend (a session of its key reported the parameters to tell
/// it before) and took a new one at its first query, `select 1`, which the backend receives.
async fn on_backend_at_first_query(
    server: &Server,
    params: &[(&str, &str)],
) -> (Client, Welcome, RepoSession) {
    let (mut client, _task) = server.client_with(peer(), params, false).await;
    prove(&mut client).await.expect("logged in");
    let welcome = client.welcome().await;
    assert_eq!(server.repository.attempts(), 1, "no backend at login");
    client.query("select 1").await;
    let mut backend = server.opens_backend(CLIENT_USER).await;
    assert_eq!(backend.query().await, "select 1");
    (client, welcome, backend)
}

/// The client's SCRAM exchange with the right password.
async fn prove(client: &mut Client) -> Result<Vec<String>, super::support::Fatal> {
    client
        .scram(PASSWORD, SCRAM, ChannelBinding::unsupported())
        .await
}

/// The client leaves an idle session: it is reset (answered here) and kept.
async fn leave_and_keep(mut client: Client, task: JoinHandle<()>, backend: &mut RepoSession) {
    client.terminate().await;
    client.assert_closed().await;
    assert_eq!(backend.query().await, "DISCARD ALL");
    backend.complete("DISCARD ALL").await;
    within("the session's end", task).await.expect("no panic");
}

#[tokio::test]
async fn a_pool_miss_opens_a_backend_through_the_connector_and_welcomes_with_its_parameters() {
    let server = pooled_server();
    let (_client, _task, welcome, _backend) = on_new_backend(&server, &params("app")).await;
    assert_eq!(server.repository.attempts(), 1);
    assert_eq!(
        welcome.params,
        [
            ("server_version".to_string(), "15.8".to_string()),
            ("application_name".to_string(), "app".to_string()),
        ]
    );
}

#[tokio::test]
async fn a_session_left_idle_is_reset_with_discard_all_and_handed_warm_to_the_next_client() {
    let server = pooled_server();
    let (client, task, first, mut backend) = on_new_backend(&server, &params("app")).await;
    leave_and_keep(client, task, &mut backend).await;
    assert_eq!(server.ctx.pool.totals(), (1, 1), "one live session, idle");

    let (mut client, _task) = server.client_with(peer(), &params("app"), false).await;
    prove(&mut client).await.expect("logged in");
    let second = client.welcome().await;
    assert_eq!(server.repository.attempts(), 1, "no new backend");
    assert_ne!((second.pid, second.secret), (first.pid, first.secret));
    assert_ne!((second.pid, second.secret), BACKEND_KEY);
    client.query("select 2").await;
    assert_eq!(backend.query().await, "select 2");
}

#[tokio::test]
async fn a_warm_session_takes_the_next_clients_application_name() {
    let server = pooled_server();
    let (client, task, _, mut backend) = on_new_backend(&server, &params("one")).await;
    leave_and_keep(client, task, &mut backend).await;

    // The client logs in without a backend, told its own name; the warm session takes it at the
    // client's first query.
    let (mut client, _task) = server.client_with(peer(), &params("two"), false).await;
    prove(&mut client).await.expect("logged in");
    let welcome = client.welcome().await;
    assert!(
        welcome
            .params
            .contains(&("application_name".into(), "two".into()))
    );
    client.query("select 2").await;
    assert_eq!(backend.query().await, "SET application_name TO 'two'\n;");
    backend.send(&parameter("application_name", "two")).await;
    backend.complete("SET").await;
    assert_eq!(backend.query().await, "select 2");
}

#[tokio::test]
async fn a_session_left_inside_a_transaction_is_rolled_back_before_it_is_kept() {
    let server = pooled_server();
    let (mut client, task, _, mut backend) = on_new_backend(&server, &params("app")).await;
    client.query("begin").await;
    assert_eq!(backend.query().await, "begin");
    let mut answer = message(b'C', b"BEGIN\0");
    answer.extend(ready(b'T'));
    backend.send(&answer).await;
    assert!(matches!(
        client.message().await,
        Message::CommandComplete(_)
    ));
    assert!(matches!(client.message().await, Message::ReadyForQuery(_)));
    client.terminate().await;
    assert_eq!(backend.query().await, "ROLLBACK");
    assert_eq!(backend.query().await, "DISCARD ALL");
    backend.complete("ROLLBACK").await;
    backend.complete("DISCARD ALL").await;
    within("the session's end", task).await.expect("no panic");
    assert_eq!(server.ctx.pool.totals(), (1, 1));
}

#[tokio::test]
async fn a_session_whose_reset_fails_is_closed_and_the_next_client_gets_a_new_one() {
    let server = pooled_server();
    let (mut client, task, _, mut backend) = on_new_backend(&server, &params("app")).await;
    client.terminate().await;
    assert_eq!(backend.query().await, "DISCARD ALL");
    let mut refusal = error("ERROR", "XX000", "cannot discard");
    refusal.extend(ready(b'I'));
    backend.send(&refusal).await;
    assert_eq!(backend.until_closed().await, TERMINATE);
    within("the session's end", task).await.expect("no panic");
    assert_eq!(server.ctx.pool.totals(), (0, 0));
    on_backend_at_first_query(&server, &params("app")).await;
    assert_eq!(server.repository.attempts(), 2);
}

/// The pool's kernel check: a backend that closed while idle is never handed out.
#[tokio::test]
async fn a_warm_session_the_repository_closed_meanwhile_is_not_handed_out() {
    let server = pooled_server();
    let (client, task, _, mut backend) = on_new_backend(&server, &params("app")).await;
    leave_and_keep(client, task, &mut backend).await;
    drop(backend);
    on_backend_at_first_query(&server, &params("app")).await;
    assert_eq!(server.repository.attempts(), 2);
}

/// Without the pool the client's Terminate is held back and pgssl closes the backend itself.
#[tokio::test]
async fn without_the_pool_a_leaving_client_has_its_backend_closed_with_one_terminate() {
    let server = Server::new(Mode::Off);
    let (mut client, task, _, mut backend) = on_new_backend(&server, &params("app")).await;
    client.terminate().await;
    assert_eq!(backend.until_closed().await, TERMINATE);
    within("the session's end", task).await.expect("no panic");
    assert_eq!(server.ctx.pool.totals(), (0, 0));
}

#[tokio::test]
async fn the_client_holds_a_minted_cancel_key_only_while_it_holds_the_backend() {
    let server = Server::new(Mode::Off);
    let (mut client, task, welcome, mut backend) = on_new_backend(&server, &params("a")).await;
    assert_ne!((welcome.pid, welcome.secret), BACKEND_KEY);
    assert!(welcome.pid > 0, "a positive process ID, as a real one");
    assert_eq!(server.ctx.cancels.len(), 1);
    client.terminate().await;
    backend.until_closed().await;
    within("the session's end", task).await.expect("no panic");
    assert!(server.ctx.cancels.is_empty());
}

#[tokio::test]
async fn a_refused_repository_connection_is_answered_08006_without_its_address() {
    let server = Server::new(Mode::Off);
    server
        .repository
        .fail_next(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
    let fatal = server.refused(CLIENT_USER, PASSWORD).await;
    assert_eq!(fatal.code, "08006");
    assert_eq!(
        fatal.message,
        "could not connect to the repository: the repository refused the connection"
    );
    assert!(!fatal.message.contains("repository.test"));
}

#[tokio::test]
async fn a_repository_that_does_not_answer_in_time_is_answered_08006() {
    let server = Server::new(Mode::Off);
    server
        .repository
        .fail_next(RepositoryConnectError::TimedOut);
    let fatal = server.refused(CLIENT_USER, PASSWORD).await;
    assert_eq!(fatal.code, "08006");
    assert_eq!(
        fatal.message,
        "could not connect to the repository: the repository did not answer in time"
    );
}

#[tokio::test]
async fn a_passthrough_session_whose_repository_refuses_the_connection_gets_08006() {
    let server = Server::passthrough(Mode::Off);
    server
        .repository
        .fail_next(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
    let fatal = server.client(CLIENT_USER, false).await.fatal().await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        (
            "08006",
            "could not connect to the repository: the repository refused the connection"
        )
    );
}

#[tokio::test]
async fn the_repositorys_refusal_after_login_reaches_the_client_in_its_own_words() {
    let server = Server::new(Mode::Off);
    let mut client = server.client(CLIENT_USER, false).await;
    let (proven, ()) = tokio::join!(prove(&mut client), async {
        let mut backend = server.repository.session().await;
        backend.startup().await;
        assert!(backend.scram(&server.lookup.verifier(CLIENT_USER)).await);
        let refusal = error("FATAL", "3D000", "database \"repository\" does not exist");
        backend.send(&refusal).await;
    });
    let fatal = proven.expect_err("refused");
    assert_eq!(fatal.code, "3D000");
    assert_eq!(fatal.message, "database \"repository\" does not exist");
}

#[tokio::test]
async fn a_repository_asking_for_md5_is_refused_with_28000_and_a_hint() {
    let server = Server::new(Mode::Off);
    let mut client = server.client(CLIENT_USER, false).await;
    let (proven, ()) = tokio::join!(prove(&mut client), async {
        let mut backend = server.repository.session().await;
        backend.startup().await;
        backend.send(&auth_request(5, b"salt").encode()).await;
    });
    let fatal = proven.expect_err("refused");
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "the repository asks for md5 authentication, which pgssl cannot answer without the password"
    );
    assert!(fatal.hint.expect("a hint").contains("scram-sha-256"));
}

#[tokio::test]
async fn when_every_backend_is_busy_past_the_checkout_timeout_a_client_gets_53300() {
    let server = Server::with(Mode::Off, FakeLookup::with(&[CLIENT_USER]), |o| {
        keep_warm(o);
        o.pool.max_backends = 1;
        o.pool.checkout_timeout = Duration::from_millis(50);
    });
    let _busy = on_new_backend(&server, &params("app")).await;
    // The next client logs in without a backend, and waits for one at its first query.
    let (mut client, _task) = server.client_with(peer(), &params("app"), false).await;
    prove(&mut client).await.expect("logged in");
    client.welcome().await;
    client.query("select 1").await;
    let fatal = client.fatal().await;
    assert_eq!(fatal.code, "53300");
    assert!(
        fatal
            .message
            .starts_with("sorry, too many clients already: no repository session came free within pool.checkout_timeout"),
        "{}",
        fatal.message
    );
    assert_eq!(server.repository.attempts(), 1);
}

/// Transaction mode: a client that leaves after an extended-protocol batch it never synced (libpq's
/// PQfinish in pipeline mode) has its backend closed — the server would never answer the batch,
/// and waiting for the answer would hold the backend forever.
#[tokio::test]
async fn a_client_leaving_an_unsynced_batch_has_its_backend_closed_not_held() {
    let server = Server::with(Mode::Off, FakeLookup::with(&[CLIENT_USER]), |o| {
        keep_warm(o);
        o.pool.mode = crate::proxy::backend::pool::PoolMode::Transaction;
    });
    let (mut client, task, _, mut backend) = on_new_backend(&server, &params("app")).await;
    let mut batch = bytes::BytesMut::new();
    postgres_protocol::message::frontend::parse("", "select 1", [], &mut batch).unwrap();
    postgres_protocol::message::frontend::terminate(&mut batch);
    client.send(&batch).await;
    let parse = backend.frame().await;
    assert_eq!(parse.kind, b'P');
    assert_eq!(backend.until_closed().await, TERMINATE);
    within("the session's end", task).await.expect("no panic");
    assert_eq!(server.ctx.pool.totals(), (0, 0), "closed, not kept");
}

/// A client that logged in without a backend hears the repository's own refusal of the session its
/// first query opens, in its words.
#[tokio::test]
async fn the_repositorys_refusal_of_a_session_taken_at_the_first_query_reaches_the_client() {
    let server = pooled_server();
    let (_holder, _task, _, _backend) = on_new_backend(&server, &params("app")).await;
    let (mut client, _task) = server.client_with(peer(), &params("app"), false).await;
    prove(&mut client).await.expect("logged in");
    client.welcome().await;
    client.query("select 1").await;
    let mut backend = server.repository.session().await;
    backend.startup().await;
    assert!(backend.scram(&server.lookup.verifier(CLIENT_USER)).await);
    let refusal = error(
        "FATAL",
        "53300",
        "too many connections for role \"tableau\"",
    );
    backend.send(&refusal).await;
    let fatal = client.fatal().await;
    assert_eq!(fatal.code, "53300");
    assert_eq!(fatal.message, "too many connections for role \"tableau\"");
}
