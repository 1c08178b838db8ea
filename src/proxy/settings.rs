//! What the data plane serves right now: the SSL mode, the TLS acceptor (the generated repository
//! certificate, or the administrator's own with `external-ssl`) and the upstream TLS connector
//! (trusting the custom CA), swapped as one snapshot.
//!
//! Every connection loads the current snapshot once, at accept, and keeps it: a reload changes what new
//! connections get and never touches sessions already open. A reload that fails keeps the old snapshot.
//! The snapshot is plain data: the control plane builds it (`control::settings`) from the state on
//! disk, which the data plane never reads.

use crate::proxy::auth::cert::CertLogin;
use crate::proxy::repository::identity::ClientIdentities;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use crate::proxy::auth::terminate::VerifierSource;
use crate::proxy::policy::Mode;
use crate::proxy::repository::tls::RepositoryTls;

/// One consistent view of the applied settings.
#[derive(Clone)]
pub struct LiveSettings {
    /// The applied SSL mode.
    pub mode: Mode,
    /// The acceptor; present exactly when `mode` offers TLS.
    pub acceptor: Option<TlsAcceptor>,
    /// SHA-256 fingerprint of the served certificate, for logs and `apply`'s report.
    pub cert_fingerprint: Option<String>,
    /// The served certificate's `tls-server-end-point` channel-binding data (RFC 5929), fixed for
    /// every connection accepted with this snapshot, so a reload during a login cannot break it.
    pub channel_binding: Option<Arc<[u8]>>,
    /// TLS from pgssl to the repository.
    pub repository_tls: RepositoryTls,
    /// Verifiers through the lookup user, when one is applied (an external repository in proxy mode).
    pub lookup: Option<Arc<dyn VerifierSource>>,
    /// Client certificates as credentials (`authentication mutual-ssl`), when enabled.
    pub cert_login: Option<Arc<CertLogin>>,
    /// The certificates pgssl presents to the repository for certificate-authenticated clients
    /// (an external repository over TCP; absent for the managed one).
    pub identities: Option<Arc<ClientIdentities>>,
    /// The managed repository's role passwords pgssl logs certificate-authenticated clients in with
    /// (its superuser's excluded), when mutual SSL is on.
    pub role_passwords: Option<Arc<dyn RolePasswords>>,
    /// Counts the snapshots a [`SettingsCell`] has held (it sets this): warm repository sessions
    /// logged in under an older snapshot are not handed out, since an apply may have changed who may
    /// connect (data access, internal tokens, the lookup user, TLS to the repository).
    pub generation: u64,
}

impl std::fmt::Debug for LiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSettings")
            .field("mode", &self.mode)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .field("repository_tls", &self.repository_tls.mode())
            .finish_non_exhaustive()
    }
}

impl LiveSettings {
    /// Settings that serve no TLS, with plaintext to the repository.
    pub fn off() -> LiveSettings {
        LiveSettings {
            mode: Mode::Off,
            acceptor: None,
            cert_fingerprint: None,
            channel_binding: None,
            repository_tls: RepositoryTls::disabled(),
            lookup: None,
            cert_login: None,
            identities: None,
            role_passwords: None,
            generation: 0,
        }
    }
}

/// The swap cell shared by the accept loop and the reload handler.
#[derive(Debug, Clone)]
pub struct SettingsCell(Arc<ArcSwap<LiveSettings>>);

impl SettingsCell {
    /// A cell holding `initial` (generation 1).
    pub fn new(mut initial: LiveSettings) -> SettingsCell {
        initial.generation = 1;
        SettingsCell(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<LiveSettings> {
        self.0.load_full()
    }

    /// Replaces the snapshot for connections accepted from now on, as the next generation.
    pub fn replace(&self, mut next: LiveSettings) {
        self.0.rcu(|old| {
            next.generation = old.generation + 1;
            Arc::new(next.clone())
        });
    }
}

/// Where a managed role's password is read at each certificate login, so that a rotation
/// (`regenerate-internal-tokens`) counts at once.
pub trait RolePasswords: Send + Sync + std::fmt::Debug {
    /// The passwords to try for `role`, current first, then a rotation's candidate; empty when pgssl
    /// keeps none for it.
    fn candidates(&self, role: &str) -> Vec<zeroize::Zeroizing<String>>;
}
