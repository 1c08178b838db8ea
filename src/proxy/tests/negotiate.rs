//! The first-packet stage ([`crate::proxy::negotiate`]): what a client gets for each way of opening
//! a connection, and what negotiation hands on.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::support::{CLIENT_USER, Client, Fatal, settings};
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::negotiate::{self, NegotiateError, Negotiated};
use crate::proxy::policy::Mode;
use crate::proxy::protocol::PacketError;
use crate::proxy::protocol::first_packet::GSSENC_REQUEST_CODE;
use crate::proxy::settings::LiveSettings;
use crate::proxy::startups::{Deadline, Startups};
use crate::proxy::stream::{ClientSocket, MemorySocket};

type Outcome = JoinHandle<Result<Negotiated, NegotiateError>>;

/// Negotiation of a new connection with `settings`, ending by `deadline`.
fn negotiating_by(settings: LiveSettings, deadline: Deadline) -> (Client, Outcome) {
    let (far, near) = tokio::io::duplex(64 * 1024);
    let outcome = tokio::spawn(async move {
        let socket = ClientSocket::Memory(MemorySocket::new(near));
        negotiate::negotiate(socket, &settings, &ProxyMetrics::register(), &deadline).await
    });
    (Client::new(far), outcome)
}

/// Negotiation of a new connection with `settings` and five seconds to finish.
fn negotiating(settings: LiveSettings) -> (Client, Outcome) {
    negotiating_by(
        settings,
        Deadline::at(Instant::now() + Duration::from_secs(5)),
    )
}

/// The start-up negotiation handed on.
async fn startup_of(outcome: Outcome) -> Negotiated {
    let negotiated = outcome.await.expect("no panic").expect("a start-up");
    assert!(matches!(negotiated, Negotiated::Startup { .. }));
    negotiated
}

/// The FATAL the client got, and the error negotiation ended with once the client left.
async fn refused(mut client: Client, outcome: Outcome) -> (Fatal, NegotiateError) {
    let fatal = client.fatal().await;
    drop(client);
    let error = outcome.await.expect("no panic").expect_err("a refusal");
    (fatal, error)
}

fn gssenc_request() -> [u8; 8] {
    let mut packet = [0u8; 8];
    packet[..4].copy_from_slice(&8u32.to_be_bytes());
    packet[4..].copy_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
    packet
}

fn user() -> [(&'static str, &'static str); 2] {
    [("user", CLIENT_USER), ("database", "repository")]
}

#[tokio::test]
async fn ssl_request_is_answered_s_and_the_startup_arrives_inside_tls() {
    let (mut client, outcome) = negotiating(settings(Mode::Required));
    assert_eq!(client.ssl_request().await, b'S');
    let mut client = client.tls(true).await.expect("a handshake");
    client.startup(&user()).await;
    let Negotiated::Startup { startup, tls, .. } = startup_of(outcome).await else {
        unreachable!()
    };
    assert_eq!(startup.user(), Some(CLIENT_USER));
    let tls = tls.expect("a TLS session");
    assert!(!tls.direct);
    assert_eq!(tls.version, "TLSv1_3");
}

#[tokio::test]
async fn ssl_request_is_answered_n_when_ssl_is_off_and_the_startup_follows_in_plaintext() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    assert_eq!(client.ssl_request().await, b'N');
    client.startup(&user()).await;
    let Negotiated::Startup { startup, tls, .. } = startup_of(outcome).await else {
        unreachable!()
    };
    assert_eq!(startup.database(), Some("repository"));
    assert_eq!(tls, None);
}

#[tokio::test]
async fn gssenc_request_is_refused_with_n_even_when_tls_is_offered() {
    let (mut client, outcome) = negotiating(settings(Mode::Required));
    client.send(&gssenc_request()).await;
    assert_eq!(client.byte().await, b'N');
    client.startup(&user()).await;
    let Negotiated::Startup { tls, .. } = startup_of(outcome).await else {
        unreachable!()
    };
    assert_eq!(tls, None);
}

/// libpq's `gssencmode=prefer` asks for GSS first, then for SSL on the same connection.
#[tokio::test]
async fn gssenc_then_ssl_request_gets_n_then_s() {
    let (mut client, outcome) = negotiating(settings(Mode::Optional));
    client.send(&gssenc_request()).await;
    assert_eq!(client.byte().await, b'N');
    assert_eq!(client.ssl_request().await, b'S');
    let mut client = client.tls(true).await.expect("a handshake");
    client.startup(&user()).await;
    let Negotiated::Startup { tls, .. } = startup_of(outcome).await else {
        unreachable!()
    };
    assert!(tls.is_some());
}

#[tokio::test]
async fn a_second_ssl_request_is_refused_with_08p01() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    assert_eq!(client.ssl_request().await, b'N');
    let mut again = BytesMut::new();
    frontend::ssl_request(&mut again);
    client.send(&again).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(fatal.message, "duplicate SSLRequest");
    assert!(matches!(error, NegotiateError::OutOfOrder(_)));
}

#[tokio::test]
async fn a_second_gssenc_request_is_refused_with_08p01() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    client.send(&gssenc_request()).await;
    assert_eq!(client.byte().await, b'N');
    client.send(&gssenc_request()).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        ("08P01", "duplicate GSSENCRequest")
    );
    assert!(matches!(error, NegotiateError::OutOfOrder(_)));
}

/// CVE-2021-23214: plaintext sent after SSLRequest must never be read as part of the TLS session.
#[tokio::test]
async fn bytes_sent_after_ssl_request_before_the_handshake_are_refused() {
    let (mut client, outcome) = negotiating(settings(Mode::Required));
    let mut both = BytesMut::new();
    frontend::ssl_request(&mut both);
    both.extend_from_slice(&Client::startup_packet(&user()));
    client.send(&both).await;
    assert_eq!(client.byte().await, b'S');
    // No plaintext error either: the client now expects TLS.
    client.assert_closed().await;
    let error = outcome.await.expect("no panic").expect_err("a refusal");
    assert!(matches!(
        error,
        NegotiateError::UnencryptedDataAfterSslRequest
    ));
}

#[tokio::test]
async fn direct_tls_with_alpn_postgresql_is_accepted() {
    let (client, outcome) = negotiating(settings(Mode::Required));
    let mut client = client.tls(true).await.expect("a handshake");
    client.startup(&user()).await;
    let Negotiated::Startup { tls, .. } = startup_of(outcome).await else {
        unreachable!()
    };
    assert!(tls.expect("a TLS session").direct);
}

#[tokio::test]
async fn direct_tls_without_alpn_is_refused_with_08p01_inside_tls() {
    let (client, outcome) = negotiating(settings(Mode::Required));
    let client = client.tls(false).await.expect("a handshake");
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "received direct SSL connection request without ALPN protocol negotiation extension"
    );
    assert!(matches!(error, NegotiateError::DirectTlsWithoutAlpn));
}

#[tokio::test]
async fn direct_tls_while_ssl_is_off_is_closed_without_an_answer() {
    let (client, outcome) = negotiating(settings(Mode::Off));
    assert!(client.tls(true).await.is_err(), "no handshake");
    let error = outcome.await.expect("no panic").expect_err("a refusal");
    assert!(matches!(error, NegotiateError::DirectTlsWhileOff));
}

#[tokio::test]
async fn a_packet_length_below_8_is_refused_with_08p01() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    client.send(&[0, 0, 0, 4, 0, 3, 0, 0]).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(fatal.message, "invalid length of startup packet: 4 bytes");
    assert!(matches!(
        error,
        NegotiateError::Packet(PacketError::MalformedLength { len: 4 })
    ));
}

/// The limit is judged on the length field: pgssl never waits for (or allocates) the body.
#[tokio::test]
async fn a_startup_over_10000_bytes_is_refused_before_its_body_arrives() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    let mut header = BytesMut::new();
    header.put_u32(20_000);
    header.put_u32(0x0003_0000);
    client.send(&header).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "startup packet of 20000 bytes is over the limit of 10000 bytes"
    );
    assert!(matches!(
        error,
        NegotiateError::Packet(PacketError::TooLarge { size: 20_000, .. })
    ));
}

/// PostgreSQL logs in as the last `user`: judging the first would let an internal user in unchecked.
#[tokio::test]
async fn a_startup_naming_user_twice_is_refused_with_08p01() {
    let (mut client, outcome) = negotiating(settings(Mode::Optional));
    client
        .startup(&[("user", CLIENT_USER), ("user", "postgres")])
        .await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(fatal.message, "startup packet repeats parameter \"user\"");
    assert!(matches!(
        error,
        NegotiateError::Packet(PacketError::DuplicateParameter(_))
    ));
}

#[tokio::test]
async fn a_startup_without_a_user_is_refused_with_28000() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    client.startup(&[("database", "repository")]).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "no PostgreSQL user name specified in startup packet"
    );
    assert!(matches!(error, NegotiateError::NoUser));
}

#[tokio::test]
async fn protocol_version_2_is_refused_with_08p01() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    let mut packet = BytesMut::new();
    packet.put_u32(4 + 4 + 5 + 2 + 1);
    packet.put_u32(0x0002_0000);
    packet.put_slice(b"user\0u\0\0");
    client.send(&packet).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "unsupported frontend protocol 2.0: server supports 3.0 to 3.2"
    );
    assert!(matches!(
        error,
        NegotiateError::Packet(PacketError::UnsupportedProtocol { major: 2, .. })
    ));
}

#[tokio::test]
async fn a_cancel_request_ends_negotiation_with_the_packet_as_sent() {
    let (mut client, outcome) = negotiating(settings(Mode::Optional));
    let mut cancel = BytesMut::new();
    frontend::cancel_request(4242, 77, &mut cancel);
    client.send(&cancel).await;
    let negotiated = outcome.await.expect("no panic").expect("a cancel request");
    let Negotiated::Cancel { packet, .. } = negotiated else {
        panic!("expected a cancel request, got {negotiated:?}")
    };
    assert_eq!(packet, cancel.freeze());
}

#[tokio::test]
async fn a_cancel_request_inside_tls_is_handed_on_too() {
    let (mut client, outcome) = negotiating(settings(Mode::Required));
    assert_eq!(client.ssl_request().await, b'S');
    let mut client = client.tls(true).await.expect("a handshake");
    let mut cancel = BytesMut::new();
    frontend::cancel_request(1, 2, &mut cancel);
    client.send(&cancel).await;
    let negotiated = outcome.await.expect("no panic").expect("a cancel request");
    assert!(
        matches!(&negotiated, Negotiated::Cancel { packet, .. } if packet[..] == cancel[..]),
        "{negotiated:?}"
    );
}

#[tokio::test]
async fn an_ssl_request_inside_tls_is_refused_with_08p01() {
    let (mut client, outcome) = negotiating(settings(Mode::Required));
    assert_eq!(client.ssl_request().await, b'S');
    let mut client = client.tls(true).await.expect("a handshake");
    let mut again = BytesMut::new();
    frontend::ssl_request(&mut again);
    client.send(&again).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "08P01");
    assert_eq!(
        fatal.message,
        "SSLRequest received inside an encrypted connection"
    );
    assert!(matches!(error, NegotiateError::OutOfOrder(_)));
}

#[tokio::test]
async fn bytes_after_the_startup_are_kept_to_follow_it() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    let mut both = Client::startup_packet(&user());
    let mut query = BytesMut::new();
    frontend::query("select 1", &mut query).expect("encoded");
    both.extend_from_slice(&query);
    client.send(&both).await;
    let Negotiated::Startup { pipelined, .. } = startup_of(outcome).await else {
        unreachable!()
    };
    assert_eq!(pipelined, query);
}

#[tokio::test]
async fn a_client_that_leaves_after_n_closed_the_connection_itself() {
    let (mut client, outcome) = negotiating(settings(Mode::Off));
    assert_eq!(client.ssl_request().await, b'N');
    drop(client);
    let error = outcome.await.expect("no panic").expect_err("no start-up");
    assert!(matches!(error, NegotiateError::ClosedByClient));
}

#[tokio::test(start_paused = true)]
async fn a_startup_not_finished_by_the_deadline_is_refused_with_57014() {
    let deadline = Deadline::at(Instant::now() + Duration::from_secs(3));
    let (mut client, outcome) = negotiating_by(settings(Mode::Off), deadline);
    client.send(&[0, 0, 0, 40]).await;
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(fatal.code, "57014");
    assert!(fatal.message.starts_with("canceling start-up"));
    assert!(matches!(error, NegotiateError::Timeout));
}

/// `server.max_startups`: the connection negotiating longest makes room for a new one.
#[tokio::test]
async fn the_oldest_negotiation_is_evicted_with_53300_when_max_startups_are_taken() {
    let startups = Startups::new(1);
    let (oldest, _) = startups.admit();
    let deadline = oldest.deadline(Instant::now() + Duration::from_secs(5));
    let (mut client, outcome) = negotiating_by(settings(Mode::Off), deadline);
    client.send(&[0, 0]).await;
    let (_newest, evicted) = startups.admit();
    assert!(evicted);
    let (fatal, error) = refused(client, outcome).await;
    assert_eq!(
        (fatal.code.as_str(), fatal.message.as_str()),
        ("53300", "sorry, too many clients already")
    );
    assert!(matches!(error, NegotiateError::Evicted));
    drop(oldest);
}
