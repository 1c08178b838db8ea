//! Logins by client certificate ([`crate::proxy::cert_login`]): the certificate must name the
//! start-up's user; without one, fallback decides; a certificate-authenticated client reaches the
//! managed repository with the role's password from pgssl's keystore, never its own.

use std::sync::Arc;
use std::time::Duration;

use postgres_protocol::message::backend::Message;
use zeroize::Zeroizing;

use super::support::{
    CLIENT_USER, Client, FakeLookup, FakeRepository, PASSWORD, Server, acceptor, connect,
    password_verifier,
};
use crate::proxy::auth::AuthPlan;
use crate::proxy::auth::cert::{CertLogin, NameMapping};
use crate::proxy::auth::scram::Verifier;
use crate::proxy::policy::Mode;
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::settings::RolePasswords;
use crate::tls::internal_ca::InternalCa;

/// Mutual SSL by common name; `fallback` lets a client without a certificate log in otherwise.
fn by_common_name(fallback: bool) -> Option<Arc<CertLogin>> {
    Some(Arc::new(CertLogin {
        mapping: NameMapping::Cn,
        map: Vec::new(),
        fallback,
    }))
}

/// A CA whose certificates pgssl's acceptor verifies, and `server` set to ask for them.
fn trusting_a_ca(server: &mut Server, fallback: bool) -> InternalCa {
    let (ca, _) = InternalCa::generate().expect("a CA");
    let verifier =
        crate::tls::client_verifier(&[ca.certificate_der().clone()], Vec::new()).expect("ok");
    server.settings.acceptor = Some(acceptor(Some(verifier)));
    server.settings.cert_login = by_common_name(fallback);
    ca
}

/// A TLS client presenting a certificate `ca` made for `name`, having sent its start-up as `user`.
async fn presenting(server: &Server, ca: &InternalCa, name: &str, user: &str) -> Client {
    let identity = ca
        .mint(name, Duration::from_secs(3600))
        .expect("a client certificate");
    let (mut client, _) = connect(&server.settings, &server.ctx);
    assert_eq!(client.ssl_request().await, b'S');
    let mut client = client
        .tls_as((identity.chain, identity.key))
        .await
        .expect("a handshake");
    client
        .startup(&[("user", user), ("database", "repository")])
        .await;
    client
}

#[tokio::test]
async fn without_a_certificate_and_without_fallback_the_login_is_refused_with_28000() {
    let mut server = Server::passthrough(Mode::Required);
    server.settings.cert_login = by_common_name(false);
    let fatal = server.client(CLIENT_USER, true).await.fatal().await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "certificate required: connection requires a valid client certificate"
    );
    assert_eq!(server.repository.attempts(), 0);
}

#[tokio::test]
async fn with_fallback_a_client_without_a_certificate_is_asked_for_its_password() {
    let mut server = Server::new(Mode::Required);
    server.settings.cert_login = by_common_name(true);
    let mut client = server.client(CLIENT_USER, true).await;
    assert!(matches!(
        client.message().await,
        Message::AuthenticationSasl(_)
    ));
}

#[tokio::test]
async fn a_certificate_naming_another_user_is_refused_with_28000() {
    let mut server = Server::passthrough(Mode::Required);
    let ca = trusting_a_ca(&mut server, false);
    let fatal = presenting(&server, &ca, "alice", CLIENT_USER)
        .await
        .fatal()
        .await;
    assert_eq!(fatal.code, "28000");
    assert_eq!(
        fatal.message,
        "certificate authentication failed for user \"tableau\""
    );
    assert_eq!(server.repository.attempts(), 0);
}

/// The managed repository's role passwords, as pgssl's keystore holds them.
#[derive(Debug)]
struct Keystore;

impl RolePasswords for Keystore {
    fn candidates(&self, role: &str) -> Vec<Zeroizing<String>> {
        if role == CLIENT_USER {
            vec![Zeroizing::new(PASSWORD.to_string())]
        } else {
            Vec::new()
        }
    }
}

/// A passthrough server in front of the managed repository (on a Unix socket), logging clients in
/// by the certificates of the CA it returns, with role passwords from [`Keystore`].
fn managed_by_certificate() -> (Server, InternalCa) {
    let managed = FakeRepository::at(RepositoryAddr::Unix {
        dir: "/run/pgssl".into(),
        port: 5432,
    });
    let mut server = Server::at(managed, Mode::Required, FakeLookup::default(), |o| {
        o.auth = AuthPlan::Passthrough
    });
    let ca = trusting_a_ca(&mut server, false);
    server.settings.role_passwords = Some(Arc::new(Keystore));
    (server, ca)
}

/// The managed repository is on a Unix socket, where PostgreSQL takes no certificate: pgssl logs
/// in with the role's password, and the client never sees that exchange.
#[tokio::test]
async fn a_certificate_naming_the_user_logs_in_to_the_managed_repository_with_its_password() {
    let (server, ca) = managed_by_certificate();
    let mut client = presenting(&server, &ca, CLIENT_USER, CLIENT_USER).await;
    let mut backend = server.repository.session().await;
    let startup = backend.startup().await;
    assert_eq!(startup.user(), Some(CLIENT_USER));
    let verifier = Verifier::parse(&password_verifier()).expect("a verifier");
    assert!(backend.scram(&verifier).await, "pgssl knew the password");
    backend.welcome(&startup, 12, 34).await;
    let welcome = client.welcome().await;
    assert_eq!((welcome.pid, welcome.secret), (12, 34));
}

#[tokio::test]
async fn a_role_without_a_password_in_the_keystore_is_refused_with_28000() {
    let (server, ca) = managed_by_certificate();
    let fatal = presenting(&server, &ca, "svc", "svc").await.fatal().await;
    assert_eq!(fatal.code, "28000");
    assert!(fatal.message.starts_with(
        "certificate authentication failed for user \"svc\": pgssl keeps no password for this role"
    ));
    assert_eq!(server.repository.attempts(), 0);
}
