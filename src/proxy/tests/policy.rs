//! Admission ([`crate::proxy::policy`] and the checks around it in
//! [`crate::proxy::connection`]): the SSL mode × user class × transport matrix, shutdown and
//! `server.max_connections`. An admitted start-up reaches the repository (passthrough); a refused
//! one gets its FATAL and never does.

use super::support::{CLIENT_USER, Client, FakeLookup, Fatal, INTERNAL_USER, Server, peer};
use crate::proxy::auth::AuthPlan;
use crate::proxy::policy::Mode;
use crate::proxy::protocol::StartupMessage;

/// The start-up the repository got from an admitted client.
async fn admitted(mode: Mode, user: &str, tls: bool) -> StartupMessage {
    let server = Server::passthrough(mode);
    let _client = server.client(user, tls).await;
    let startup = server.repository.session().await.startup().await;
    assert_eq!(startup.user(), Some(user));
    startup
}

/// The FATAL a refused client got; the repository was never asked.
async fn refused(mode: Mode, user: &str, tls: bool) -> Fatal {
    let server = Server::passthrough(mode);
    let fatal = server.client(user, tls).await.fatal().await;
    assert_eq!(
        server.repository.attempts(),
        0,
        "a refused start-up reached the repository"
    );
    fatal
}

const TLS_HINT: &str = "Connect with sslmode=require, verify-ca or verify-full.";

#[tokio::test]
async fn required_mode_refuses_a_plaintext_client_user_with_28000() {
    let fatal = refused(Mode::Required, CLIENT_USER, false).await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "SSL required for user \"tableau\": repository SSL is required for all connections"
    );
    assert_eq!(fatal.hint.as_deref(), Some(TLS_HINT));
}

#[tokio::test]
async fn required_mode_refuses_a_plaintext_internal_user_with_28000() {
    let fatal = refused(Mode::Required, INTERNAL_USER, false).await;
    assert_eq!(fatal.code, "28000");
    assert!(fatal.message.starts_with("SSL required for user \"svc\""));
}

#[tokio::test]
async fn required_mode_admits_a_client_user_over_tls() {
    admitted(Mode::Required, CLIENT_USER, true).await;
}

#[tokio::test]
async fn required_mode_admits_an_internal_user_over_tls() {
    admitted(Mode::Required, INTERNAL_USER, true).await;
}

#[tokio::test]
async fn optional_mode_admits_a_plaintext_client_user() {
    admitted(Mode::Optional, CLIENT_USER, false).await;
}

#[tokio::test]
async fn optional_mode_refuses_a_plaintext_internal_user_with_28000() {
    let fatal = refused(Mode::Optional, INTERNAL_USER, false).await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "SSL required for user \"svc\": repository SSL is required for internal users"
    );
    assert_eq!(fatal.hint.as_deref(), Some(TLS_HINT));
}

#[tokio::test]
async fn optional_mode_admits_an_internal_user_over_tls() {
    admitted(Mode::Optional, INTERNAL_USER, true).await;
}

#[tokio::test]
async fn off_mode_admits_a_plaintext_internal_user() {
    admitted(Mode::Off, INTERNAL_USER, false).await;
}

/// The repository gets the start-up exactly as the client sent it.
#[tokio::test]
async fn an_admitted_startup_reaches_the_repository_unchanged() {
    let startup = admitted(Mode::Optional, CLIENT_USER, true).await;
    let sent = Client::startup_packet(&[("user", CLIENT_USER), ("database", "repository")]);
    assert_eq!(startup.raw, sent.freeze());
}

#[tokio::test]
async fn a_server_that_is_shutting_down_refuses_a_new_session_with_57p01() {
    let server = Server::passthrough(Mode::Off);
    server.ctx.draining.cancel();
    let fatal = server.client(CLIENT_USER, false).await.fatal().await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        ("57P01", "the proxy is shutting down")
    );
    assert_eq!(server.repository.attempts(), 0);
}

/// `server.max_connections` counts sessions, judged once the start-up is read, as PostgreSQL does.
#[tokio::test]
async fn a_session_past_max_connections_is_refused_with_53300() {
    let server = Server::with(Mode::Off, FakeLookup::default(), |o| {
        o.auth = AuthPlan::Passthrough;
        o.limits.max_connections = 1;
    });
    let _first = server.client(CLIENT_USER, false).await;
    let _session = server.repository.session().await;
    let fatal = server.client(CLIENT_USER, false).await.fatal().await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        ("53300", "sorry, too many clients already")
    );
    assert_eq!(server.repository.attempts(), 1);
}

/// Only another node of the cluster, over TLS, may say which client it relays.
#[tokio::test]
async fn a_relayed_client_address_from_a_plain_client_is_refused_with_28000() {
    let server = Server::passthrough(Mode::Off);
    let params = [
        ("user", CLIENT_USER),
        (crate::proxy::relayed_client::PARAM, "203.0.113.9:5000 tag"),
    ];
    let (mut client, _) = server.client_with(peer(), &params, false).await;
    let fatal = client.fatal().await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "pgssl.relayed_client is set only by a pgssl node of this cluster, over TLS"
    );
    assert_eq!(server.repository.attempts(), 0);
}
