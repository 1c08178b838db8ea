//! What the data plane serves right now: the SSL mode and the TLS acceptor, swapped as one snapshot.
//!
//! Every connection loads the current snapshot once, at accept, and keeps it: a reload changes what new
//! connections get and never touches sessions already open. A reload that fails keeps the old snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use crate::policy::Mode;
use crate::state::{CertError, StateError, StateStore};
use crate::tls;

/// One consistent view of the applied settings.
#[derive(Clone)]
pub struct LiveSettings {
    /// The applied SSL mode.
    pub mode: Mode,
    /// The acceptor; present exactly when `mode` offers TLS.
    pub acceptor: Option<TlsAcceptor>,
    /// SHA-256 fingerprint of the served certificate, for logs and `apply`'s report.
    pub cert_fingerprint: Option<String>,
}

impl std::fmt::Debug for LiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSettings")
            .field("mode", &self.mode)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The state files are unreadable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The certificate or key is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// SSL is on but no certificate folder is recorded.
    #[error(
        "repository SSL is {0} but no certificate is recorded (run 'pgssl security repository-ssl enable' and 'pgssl pending-changes apply')"
    )]
    NoCertificate(Mode),
}

impl LiveSettings {
    /// Settings that serve no TLS.
    pub fn off() -> LiveSettings {
        LiveSettings {
            mode: Mode::Off,
            acceptor: None,
            cert_fingerprint: None,
        }
    }

    /// Builds the settings for the applied state of `store`.
    pub fn load(store: &StateStore) -> Result<LiveSettings, LoadError> {
        Self::for_state(store, &store.applied()?)
    }

    /// Builds the settings a given state would serve; `apply` uses this to validate before promoting.
    pub fn for_state(
        store: &StateStore,
        state: &crate::state::AppliedState,
    ) -> Result<LiveSettings, LoadError> {
        let mode = state.repository_ssl.mode;
        if !mode.offers_tls() {
            return Ok(LiveSettings::off());
        }
        let paths = store
            .cert_paths_of(state)
            .ok_or(LoadError::NoCertificate(mode))?;
        // Read the file once: the fingerprint comes from the same leaf the server will present.
        let chain = crate::state::certs::read_chain(&paths.cert)?;
        let fingerprint = crate::state::certs::sha256_fingerprint(&chain[0]);
        let config = tls::server_config_with_chain(&paths, chain)?;
        Ok(LiveSettings {
            mode,
            acceptor: Some(TlsAcceptor::from(config)),
            cert_fingerprint: Some(fingerprint),
        })
    }
}

/// The swap cell shared by the accept loop and the reload handler.
#[derive(Debug, Clone)]
pub struct SettingsCell(Arc<ArcSwap<LiveSettings>>);

impl SettingsCell {
    /// A cell holding `initial`.
    pub fn new(initial: LiveSettings) -> SettingsCell {
        SettingsCell(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<LiveSettings> {
        self.0.load_full()
    }

    /// Replaces the snapshot for connections accepted from now on.
    pub fn replace(&self, next: LiveSettings) {
        self.0.store(Arc::new(next));
    }
}
