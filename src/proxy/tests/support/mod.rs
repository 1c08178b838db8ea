//! What the stage tests share: a served certificate, settings and connection contexts, a verifier
//! lookup, and connections driven through [`crate::proxy::connection::serve_accepted`] with a
//! scripted client ([`Client`]) and a fake repository ([`FakeRepository`]).

pub(super) mod client;
pub(super) mod repository;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use postgres_protocol::authentication::sasl::ChannelBinding;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub(super) use client::{Client, Fatal, Welcome};
pub(super) use repository::{FakeRepository, RepoSession};

use crate::proxy::auth::AuthPlan;
use crate::proxy::auth::lockout::LockoutPolicy;
use crate::proxy::auth::scram::{SCRAM, SCRAM_PLUS};
use crate::proxy::auth::terminate::{LookupError, LookupFuture, RoleSecret, VerifierSource};
use crate::proxy::backend::PoolOptions;
use crate::proxy::connection::{self, ConnectionContext};
use crate::proxy::policy::{Mode, UserClassifier};
use crate::proxy::repository::hosts::Hosts;
use crate::proxy::repository::{RepositoryAddr, Target};
use crate::proxy::server::{Limits, ServerOptions};
use crate::proxy::settings::LiveSettings;
use crate::proxy::startups::Startups;
use crate::proxy::stream::{ClientSocket, MemorySocket};

/// The client users of every test context; any other name is an internal user.
pub(super) const CLIENT_USER: &str = "tableau";
/// An internal user.
pub(super) const INTERNAL_USER: &str = "svc";
/// The password every role the lookup knows has.
pub(super) const PASSWORD: &str = "correct horse battery";

/// How long any one step of a test may take before it fails (a hang is a failure, not a wait).
pub(super) const STEP: Duration = Duration::from_secs(10);

/// Awaits `work`, failing the test when it takes longer than [`STEP`].
pub(super) async fn within<F: std::future::Future>(what: &str, work: F) -> F::Output {
    match tokio::time::timeout(STEP, work).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not happen within {STEP:?}"),
    }
}

/// The certificate pgssl serves in the tests, generated once.
pub(super) struct Served {
    /// The certificate (DER).
    pub(super) der: CertificateDer<'static>,
    key: Vec<u8>,
}

/// The served certificate.
pub(super) fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        Served {
            der: generated.cert.der().clone(),
            key: generated.signing_key.serialize_der(),
        }
    })
}

/// An acceptor serving [`served`]'s certificate (ALPN `postgresql`, as the server's own).
pub(super) fn acceptor(
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> TlsAcceptor {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(served().key.clone()));
    let config = crate::tls::server_config_from(
        vec![served().der.clone()],
        key,
        crate::tls::protocols::ProtocolSet::ALL,
        client_auth,
    )
    .expect("a server configuration");
    TlsAcceptor::from(config)
}

/// Settings in `mode`, serving [`served`]'s certificate whenever the mode offers TLS.
pub(super) fn settings(mode: Mode) -> LiveSettings {
    let mut settings = LiveSettings::off();
    settings.mode = mode;
    if mode.offers_tls() {
        settings.acceptor = Some(acceptor(None));
        settings.channel_binding =
            Some(crate::proxy::auth::scram::tls_server_end_point(&served().der).into());
        settings.cert_fingerprint = Some(crate::tls::certs::sha256_fingerprint(&served().der));
    }
    settings.generation = 1;
    settings
}

/// A server's options for tests: generous limits, the default lockout, no pool.
fn options(auth: AuthPlan) -> ServerOptions {
    ServerOptions {
        listen: "127.0.0.1:0".parse().expect("an address"),
        // The fake repository takes its place in `context`.
        repository: Arc::new(Hosts::single(Arc::new(Target::new(RepositoryAddr::Tcp(
            "repository.test:5432".into(),
        ))))),
        classifier: UserClassifier::new(vec![CLIENT_USER.into()]),
        limits: Limits {
            max_connections: 16,
            max_startups: 16,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(1),
            workers: 1,
            lockout: LockoutPolicy::default(),
            proxy_protocol_from: Vec::new(),
        },
        auth,
        pool: PoolOptions::default(),
        relay_key: None,
        repository_is_node: false,
        identity: None,
    }
}

/// Keeps warm sessions (a tuning for [`Server::with`]).
pub(super) fn keep_warm(options: &mut ServerOptions) {
    options.pool = PoolOptions {
        enabled: true,
        ..PoolOptions::default()
    };
}

/// pgssl authenticates clients itself against `lookup`.
fn proxy_plan(lookup: Arc<FakeLookup>) -> AuthPlan {
    AuthPlan::Proxy {
        lookup: Some(lookup),
        mock_secret: [7; 32],
        required: true,
    }
}

/// The context of a server with `options` whose repository is `repository`.
fn context(mut options: ServerOptions, repository: &Arc<FakeRepository>) -> Arc<ConnectionContext> {
    options.repository = Arc::new(Hosts::single(repository.clone()));
    Arc::new(options.context())
}

/// The client address of connections started with [`connect`].
pub(super) fn peer() -> SocketAddr {
    "192.0.2.10:50000".parse().expect("an address")
}

/// Opens a connection from `peer` to a server with `settings` and `ctx`: the client's end, and the
/// task serving pgssl's (it ends when the connection is over).
fn connect_from(
    peer: SocketAddr,
    settings: &LiveSettings,
    ctx: &Arc<ConnectionContext>,
) -> (Client, JoinHandle<()>) {
    let (far, near) = tokio::io::duplex(64 * 1024);
    let (settings, ctx) = (Arc::new(settings.clone()), ctx.clone());
    let task = tokio::spawn(async move {
        let (starting, _) = Startups::new(16).admit();
        let started = Instant::now();
        let deadline = starting.deadline(started + ctx.handshake_timeout);
        let socket = ClientSocket::Memory(MemorySocket::new(near));
        let accepted =
            connection::serve_accepted(socket, peer, &settings, &ctx, starting, deadline, started);
        if let Some(pooled) = accepted.await {
            pooled.serve(&settings, &ctx, started).await;
        }
    });
    (Client::new(far), task)
}

/// [`connect_from`] the usual [`peer`].
pub(super) fn connect(
    settings: &LiveSettings,
    ctx: &Arc<ConnectionContext>,
) -> (Client, JoinHandle<()>) {
    connect_from(peer(), settings, ctx)
}

/// The SCRAM-SHA-256 verifier of [`PASSWORD`], as PostgreSQL stores it (derived once: PBKDF2 is
/// slow in a debug build).
pub(super) fn password_verifier() -> String {
    static VERIFIER: OnceLock<String> = OnceLock::new();
    VERIFIER
        .get_or_init(|| postgres_protocol::password::scram_sha_256(PASSWORD.as_bytes()))
        .clone()
}

/// Verifiers as a lookup user would read them from the repository.
#[derive(Debug, Default)]
pub(super) struct FakeLookup {
    roles: HashMap<String, RoleSecret>,
    /// Every lookup fails (the repository cannot be asked).
    pub(super) failing: bool,
}

impl FakeLookup {
    /// A lookup that knows `roles`, each with [`PASSWORD`].
    pub(super) fn with(roles: &[&str]) -> FakeLookup {
        let mut lookup = FakeLookup::default();
        for role in roles {
            lookup.set(role, password_verifier(), false);
        }
        lookup
    }

    /// Gives `role` the stored password `password` (a verifier, or anything else).
    pub(super) fn set(&mut self, role: &str, password: String, expired: bool) {
        let secret = RoleSecret {
            password: Some(password),
            expired,
            can_login: true,
        };
        self.roles.insert(role.to_string(), secret);
    }

    /// The stored verifier of `role`.
    pub(super) fn verifier(&self, role: &str) -> crate::proxy::auth::scram::Verifier {
        let stored = self.roles[role].password.as_deref().expect("a password");
        crate::proxy::auth::scram::Verifier::parse(stored).expect("a SCRAM verifier")
    }
}

impl VerifierSource for FakeLookup {
    fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            if self.failing {
                return Err(LookupError("the lookup connection is down".into()));
            }
            Ok(self.roles.get(role).cloned())
        })
    }
}

/// A server whose repository is a [`FakeRepository`]: its settings, context, repository and verifier
/// lookup (used in proxy mode, where pgssl authenticates clients itself).
pub(super) struct Server {
    pub(super) settings: LiveSettings,
    pub(super) ctx: Arc<ConnectionContext>,
    pub(super) repository: Arc<FakeRepository>,
    pub(super) lookup: Arc<FakeLookup>,
}

/// The process ID and secret of the backends the fake repository opens for a [`Server`].
pub(super) const BACKEND_KEY: (i32, i32) = (4100, 99);

impl Server {
    /// A proxy-mode server in `mode` whose lookup is `lookup`, its options changed by `tune`.
    pub(super) fn with(
        mode: Mode,
        lookup: FakeLookup,
        tune: impl FnOnce(&mut ServerOptions),
    ) -> Server {
        Server::at(FakeRepository::new(), mode, lookup, tune)
    }

    /// [`Server::with`] in front of `repository`.
    pub(super) fn at(
        repository: Arc<FakeRepository>,
        mode: Mode,
        lookup: FakeLookup,
        tune: impl FnOnce(&mut ServerOptions),
    ) -> Server {
        let lookup = Arc::new(lookup);
        let mut options = options(proxy_plan(lookup.clone()));
        tune(&mut options);
        Server {
            settings: settings(mode),
            ctx: context(options, &repository),
            repository,
            lookup,
        }
    }

    /// A proxy-mode server in `mode` that knows the client user and the internal user.
    pub(super) fn new(mode: Mode) -> Server {
        Server::with(
            mode,
            FakeLookup::with(&[CLIENT_USER, INTERNAL_USER]),
            |_| {},
        )
    }

    /// A server in `mode` where the repository authenticates (passthrough).
    pub(super) fn passthrough(mode: Mode) -> Server {
        Server::with(mode, FakeLookup::default(), |o| {
            o.auth = AuthPlan::Passthrough
        })
    }

    /// A client from `peer` that has sent a start-up with `params` (over TLS when `tls`), and the
    /// task serving it.
    pub(super) async fn client_with(
        &self,
        peer: SocketAddr,
        params: &[(&str, &str)],
        tls: bool,
    ) -> (Client, JoinHandle<()>) {
        let (mut client, task) = connect_from(peer, &self.settings, &self.ctx);
        if tls {
            assert_eq!(client.ssl_request().await, b'S');
            client = client.tls(true).await.expect("a handshake");
        }
        client.startup(params).await;
        (client, task)
    }

    /// A client from `peer` that has sent its start-up as `user` to database `repository`.
    pub(super) async fn client_from(&self, peer: SocketAddr, user: &str, tls: bool) -> Client {
        let params = [("user", user), ("database", "repository")];
        self.client_with(peer, &params, tls).await.0
    }

    /// [`Server::client_from`] the usual [`peer`].
    pub(super) async fn client(&self, user: &str, tls: bool) -> Client {
        self.client_from(peer(), user, tls).await
    }

    /// The repository's side of a new backend for `user`: the start-up pgssl forwards, SCRAM
    /// pass-through proven against the role's own verifier, the start-up answer with
    /// [`BACKEND_KEY`]. Returns the backend's end, to script the session on.
    pub(super) async fn opens_backend(&self, user: &str) -> RepoSession {
        let mut session = self.repository.session().await;
        let startup = session.startup().await;
        assert_eq!(startup.user(), Some(user));
        assert!(
            session.scram(&self.lookup.verifier(user)).await,
            "pgssl proved the client's key to the repository"
        );
        session
            .welcome(&startup, BACKEND_KEY.0, BACKEND_KEY.1)
            .await;
        session
    }

    /// A client from `peer` that has sent a start-up with `params` (over TLS when `tls`) and logged
    /// in as its `user` with the right password while the repository opened a new backend: over
    /// TLS with SCRAM-SHA-256-PLUS bound to the served certificate, in plaintext with
    /// SCRAM-SHA-256, as libpq would.
    pub(super) async fn logged_in_with(
        &self,
        peer: SocketAddr,
        params: &[(&str, &str)],
        tls: bool,
    ) -> LoggedIn {
        let user = params
            .iter()
            .find_map(|(key, value)| (*key == "user").then_some(*value))
            .expect("a user in the start-up");
        let (mut client, task) = self.client_with(peer, params, tls).await;
        let (mechanism, binding) = if tls {
            let end_point = client.server_end_point();
            (SCRAM_PLUS, ChannelBinding::tls_server_end_point(end_point))
        } else {
            (SCRAM, ChannelBinding::unsupported())
        };
        let (offered, backend) = tokio::join!(
            client.scram(PASSWORD, mechanism, binding),
            self.opens_backend(user)
        );
        let offered = offered.expect("logged in");
        let welcome = client.welcome().await;
        assert_ne!(
            (welcome.pid, welcome.secret),
            BACKEND_KEY,
            "the client gets a cancel key pgssl minted"
        );
        LoggedIn {
            client,
            task,
            offered,
            welcome,
            backend,
        }
    }

    /// [`Server::logged_in_with`] the start-up of [`CLIENT_USER`] to database `repository`.
    pub(super) async fn logged_in_from(&self, peer: SocketAddr, tls: bool) -> LoggedIn {
        let params = [("user", CLIENT_USER), ("database", "repository")];
        self.logged_in_with(peer, &params, tls).await
    }

    /// [`Server::logged_in_from`] the usual [`peer`].
    pub(super) async fn logged_in(&self, tls: bool) -> LoggedIn {
        self.logged_in_from(peer(), tls).await
    }

    /// The FATAL pgssl refuses a plaintext client from `peer` with, when it has sent its start-up
    /// as `user` and answers SCRAM-SHA-256 with `password`.
    pub(super) async fn refused_from(&self, peer: SocketAddr, user: &str, password: &str) -> Fatal {
        let mut client = self.client_from(peer, user, false).await;
        client
            .refused(password, SCRAM, ChannelBinding::unsupported())
            .await
    }

    /// [`Server::refused_from`] the usual [`peer`].
    pub(super) async fn refused(&self, user: &str, password: &str) -> Fatal {
        self.refused_from(peer(), user, password).await
    }
}

/// A client logged in on a new backend ([`Server::logged_in`]).
pub(super) struct LoggedIn {
    /// The client's end.
    pub(super) client: Client,
    /// The task serving the client (it ends when the connection is over).
    pub(super) task: JoinHandle<()>,
    /// The mechanisms pgssl offered.
    pub(super) offered: Vec<String>,
    /// What pgssl welcomed the client with.
    pub(super) welcome: Welcome,
    /// The repository's end of the backend.
    pub(super) backend: RepoSession,
}
