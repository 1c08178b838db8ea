//! pgssl's own authentication in proxy mode ([`crate::proxy::auth::terminate`], driven by
//! [`crate::proxy::login`]): SCRAM-SHA-256 and SCRAM-SHA-256-PLUS bound to the served certificate,
//! PostgreSQL's answers to every failure, and the failed-login lockout.

use std::net::SocketAddr;
use std::time::Duration;

use postgres_protocol::authentication::sasl::ChannelBinding;
use postgres_protocol::message::backend::Message;

use super::support::{
    CLIENT_USER, Client, FakeLookup, INTERNAL_USER, PASSWORD, Server, connect, password_verifier,
};
use crate::proxy::auth::AuthPlan;
use crate::proxy::auth::lockout::LockoutPolicy;
use crate::proxy::auth::scram::{SCRAM, SCRAM_PLUS};
use crate::proxy::policy::Mode;
use crate::proxy::server::ServerOptions;

#[tokio::test]
async fn over_plaintext_only_scram_sha_256_is_offered_and_a_right_password_logs_in() {
    let proxy = Server::new(Mode::Off);
    let offered = proxy.logged_in(false).await.offered;
    assert_eq!(offered, [SCRAM]);
    assert_eq!(proxy.repository.attempts(), 1);
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_28p01_before_the_repository_is_reached() {
    let proxy = Server::new(Mode::Off);
    let fatal = proxy.refused(CLIENT_USER, "wrong").await;
    assert_eq!(fatal.code, "28P01");
    assert_eq!(
        fatal.message,
        "password authentication failed for user \"tableau\""
    );
    assert_eq!(proxy.repository.attempts(), 0);
}

/// An unknown role goes through a whole exchange against a mock verifier: its answer is a wrong
/// password's, so role names cannot be probed.
#[tokio::test]
async fn an_unknown_user_is_refused_with_28p01_like_a_wrong_password() {
    let proxy = Server::new(Mode::Off);
    let fatal = proxy.refused("nobody", PASSWORD).await;
    assert_eq!(fatal.code, "28P01");
    assert_eq!(
        fatal.message,
        "password authentication failed for user \"nobody\""
    );
}

#[tokio::test]
async fn an_expired_password_is_refused_with_28p01() {
    let mut lookup = FakeLookup::default();
    lookup.set(CLIENT_USER, password_verifier(), true);
    let proxy = Server::with(Mode::Off, lookup, |_| {});
    let fatal = proxy.refused(CLIENT_USER, PASSWORD).await;
    assert_eq!(fatal.code, "28P01");
    assert_eq!(proxy.repository.attempts(), 0);
}

#[tokio::test]
async fn a_role_with_an_md5_password_is_refused_with_28p01() {
    let mut lookup = FakeLookup::default();
    lookup.set(
        CLIENT_USER,
        "md5a3556571e93b0d20722ba62be61e8c2d".into(),
        false,
    );
    let proxy = Server::with(Mode::Off, lookup, |_| {});
    let fatal = proxy.refused(CLIENT_USER, PASSWORD).await;
    assert_eq!(fatal.code, "28P01");
}

#[tokio::test]
async fn scram_plus_bound_to_the_served_certificate_logs_in() {
    let proxy = Server::new(Mode::Required);
    // Over TLS the client binds to the certificate it was served.
    let offered = proxy.logged_in(true).await.offered;
    assert_eq!(offered, [SCRAM_PLUS, SCRAM]);
}

/// A man in the middle terminating TLS with its own certificate gets another binding.
#[tokio::test]
async fn scram_plus_bound_to_another_certificate_is_refused_with_08p01() {
    let proxy = Server::new(Mode::Required);
    let mut client = proxy.client(CLIENT_USER, true).await;
    let binding = ChannelBinding::tls_server_end_point(vec![0x5a; 32]);
    let fatal = client.refused(PASSWORD, SCRAM_PLUS, binding).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "SCRAM channel binding negotiation error: the channel-binding data does not match"
    );
    assert_eq!(proxy.repository.attempts(), 0);
}

/// `channel_binding=require` without TLS: there is nothing to bind to, and PLUS is not offered.
#[tokio::test]
async fn scram_plus_over_plaintext_is_refused_with_08p01() {
    let proxy = Server::new(Mode::Optional);
    let mut client = proxy.client(CLIENT_USER, false).await;
    let binding = ChannelBinding::tls_server_end_point(vec![1; 32]);
    let fatal = client.refused(PASSWORD, SCRAM_PLUS, binding).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "malformed SCRAM message: a mechanism that was not offered"
    );
}

/// RFC 5802 §6: a client that could bind but believes the server cannot saw an offer without PLUS.
#[tokio::test]
async fn a_client_that_thinks_pgssl_cannot_bind_over_tls_is_refused_as_a_downgrade() {
    let proxy = Server::new(Mode::Required);
    let mut client = proxy.client(CLIENT_USER, true).await;
    let fatal = client
        .refused(PASSWORD, SCRAM, ChannelBinding::unrequested())
        .await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not"
    );
}

#[tokio::test]
async fn a_binding_sent_with_plain_scram_is_refused_with_08p01() {
    let proxy = Server::new(Mode::Required);
    let mut client = proxy.client(CLIENT_USER, true).await;
    let binding = ChannelBinding::tls_server_end_point(client.server_end_point());
    let fatal = client.refused(PASSWORD, SCRAM, binding).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "SCRAM channel binding negotiation error: binding requested with SCRAM-SHA-256"
    );
}

fn two_failures(options: &mut ServerOptions) {
    options.limits.lockout = LockoutPolicy {
        max_failures: 2,
        window: Duration::from_secs(300),
        lockout: Duration::from_secs(300),
    };
}

/// Fails `user`'s password from `peer` once, with 28P01.
async fn fail_once(proxy: &Server, peer: SocketAddr, user: &str) {
    let fatal = proxy.refused_from(peer, user, "wrong").await;
    assert_eq!(fatal.code, "28P01");
}

#[tokio::test]
async fn after_max_failures_even_the_right_password_is_refused_with_28000() {
    let proxy = Server::with(Mode::Off, FakeLookup::with(&[CLIENT_USER]), two_failures);
    let peer = super::support::peer();
    fail_once(&proxy, peer, CLIENT_USER).await;
    fail_once(&proxy, peer, CLIENT_USER).await;
    // Refused before any exchange: the answer says nothing of the password.
    let fatal = proxy.client(CLIENT_USER, false).await.fatal().await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "too many failed logins for user \"tableau\" from this address; try again in 300 s"
    );
    assert_eq!(proxy.repository.attempts(), 0);
}

#[tokio::test]
async fn a_lockout_holds_only_for_its_address_and_user() {
    let proxy = Server::with(
        Mode::Off,
        FakeLookup::with(&[CLIENT_USER, INTERNAL_USER]),
        two_failures,
    );
    let peer = super::support::peer();
    fail_once(&proxy, peer, CLIENT_USER).await;
    fail_once(&proxy, peer, CLIENT_USER).await;
    // Another user from the same address is asked for a password.
    let mut other_user = proxy.client_from(peer, INTERNAL_USER, false).await;
    assert!(matches!(
        other_user.message().await,
        Message::AuthenticationSasl(_)
    ));
    // The same user from another address logs in.
    let elsewhere: SocketAddr = "198.51.100.7:40000".parse().expect("an address");
    proxy.logged_in_from(elsewhere, false).await;
}

#[tokio::test]
async fn a_failed_verifier_lookup_is_answered_08006() {
    let mut lookup = FakeLookup::with(&[CLIENT_USER]);
    lookup.failing = true;
    let proxy = Server::with(Mode::Off, lookup, |_| {});
    let fatal = proxy.refused(CLIENT_USER, PASSWORD).await;
    assert_eq!(fatal.code, "08006");
    assert_eq!(
        fatal.message,
        "could not connect to the repository: the credentials lookup failed"
    );
}

/// Nothing may come before pgssl's authentication request has been answered.
#[tokio::test]
async fn a_message_pipelined_after_the_startup_is_refused_with_08p01() {
    let proxy = Server::new(Mode::Off);
    let (mut client, _) = connect(&proxy.settings, &proxy.ctx);
    let mut both = Client::startup_packet(&[("user", CLIENT_USER)]);
    postgres_protocol::message::frontend::query("select 1", &mut both).expect("encoded");
    client.send(&both).await;
    let fatal = client.fatal().await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "invalid authentication message: data arrived after the start-up packet before the authentication request"
    );
}

#[tokio::test]
async fn proxy_mode_without_any_lookup_user_is_refused_with_28000() {
    let server = Server::with(Mode::Off, FakeLookup::default(), |o| {
        o.auth = AuthPlan::Proxy {
            lookup: None,
            mock_secret: [7; 32],
            required: true,
        }
    });
    let fatal = server.client(CLIENT_USER, false).await.fatal().await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "pgssl cannot authenticate clients yet: no lookup user is applied"
    );
    assert_eq!(server.repository.attempts(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stalls_mid_exchange_is_cut_off_with_57014() {
    let proxy = Server::new(Mode::Off);
    let mut client = proxy.client(CLIENT_USER, false).await;
    assert!(matches!(
        client.message().await,
        Message::AuthenticationSasl(_)
    ));
    // No answer: the handshake timeout (five seconds here) ends the exchange.
    let fatal = client.fatal().await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        ("57014", "authentication did not finish in time")
    );
}
