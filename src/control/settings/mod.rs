//! Builds the data plane's settings snapshot ([`LiveSettings`]) from the applied state on disk: the
//! SSL mode, the TLS acceptor for the generated or external certificate (its passphrase from the
//! keystore), and the upstream TLS connector trusting the custom CA.
//!
//! The data plane only ever sees the finished snapshot; everything that knows the on-disk format is
//! here. `apply` builds the snapshot of the staged state to validate it before promoting it, and a
//! reload builds the applied one.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::control::state::external_cert::{self, ExternalCertError};
use crate::control::state::security::{self, ExternalSsl};
use crate::control::state::{AppliedState, CertError, StateError, StateStore, custom_ca};
use crate::keystore::{Keystore, KeystoreError, Secret};
use crate::proxy::auth::terminate::VerifierSource;
use crate::proxy::policy::Mode;
use crate::proxy::repository::tls::{RepositoryTls, RepositoryTlsError, RepositoryTlsMode};
use crate::proxy::settings::LiveSettings;
use crate::tls;
use crate::tls::certs;
use crate::tls::protocols::{self, ProtocolError};

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
    /// The administrator's certificate cannot be served.
    #[error("the external-ssl certificate cannot be served: {0}")]
    External(#[from] ExternalCertError),
    /// The stored protocol list is invalid.
    #[error("the external-ssl protocol list cannot be used: {0}")]
    Protocols(#[from] ProtocolError),
    /// rustls refused the external certificate.
    #[error("the external-ssl certificate cannot be served: {0}")]
    ExternalTls(rustls::Error),
    /// The keystore is unusable.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The passphrase of an encrypted external key is missing from the keystore.
    #[error(
        "the passphrase of the external-ssl key is missing from the keystore (run 'pgssl security external-ssl enable' again with --passphrase)"
    )]
    MissingPassphrase,
    /// The lookup user's password is missing from the keystore.
    #[error(
        "the lookup user's password is missing from the keystore (run 'pgssl authentication lookup-user set' again)"
    )]
    MissingLookupPassword,
    /// The upstream TLS settings cannot be built.
    #[error(transparent)]
    RepositoryTls(#[from] RepositoryTlsError),
    /// The mutual-SSL files cannot be used.
    #[error("authentication mutual-ssl cannot be used: {0}")]
    MutualSslFiles(#[from] crate::control::state::mutual_ssl::MutualSslError),
    /// rustls refused the mutual-SSL CA bundle or CRL.
    #[error("authentication mutual-ssl cannot be used: {0}")]
    MutualSsl(rustls::Error),
}

impl LoadError {
    /// Settings that cannot be served are the administrator's to fix, whatever the cause: what was
    /// staged (a certificate, a protocol list, a secret) is refused, and the message says what to
    /// change or run again.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::User
    }
}

mod mutual_ssl;

/// The lookup user's credentials, from the applied state and the keystore.
#[derive(Debug, Clone)]
pub struct LookupCredentials {
    /// The role.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

/// Makes the verifier source for a lookup user (the composition root's: it knows the repository's
/// address and the lookup query), reaching the repository with the snapshot's upstream TLS.
#[derive(Clone)]
pub struct LookupBuilder(pub Arc<BuildLookup>);

/// What a [`LookupBuilder`] calls.
pub type BuildLookup =
    dyn Fn(LookupCredentials, &RepositoryTls) -> Arc<dyn VerifierSource> + Send + Sync;

impl std::fmt::Debug for LookupBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupBuilder")
    }
}

/// Builds the settings for the applied state of `store`; with `lookups`, a lookup user in the state
/// gets its verifier source (one per snapshot, so a changed password takes effect on apply).
pub fn load(
    store: &StateStore,
    repository_tls: RepositoryTlsMode,
    lookups: Option<&LookupBuilder>,
) -> Result<LiveSettings, LoadError> {
    let applied = store.applied()?;
    let mut settings = for_state(store, &applied, repository_tls)?;
    let Some(build) = lookups else {
        return Ok(settings);
    };
    let credentials = match &applied.lookup_user {
        Some(user) => {
            let keystore = Keystore::open(&store.config_dir())?;
            let password = keystore
                .get(&security::lookup_password_name(&user.id))?
                .ok_or(LoadError::MissingLookupPassword)?;
            Some(LookupCredentials {
                username: user.username.clone(),
                password,
            })
        }
        None => node_lookup_credentials(store)?,
    };
    if let Some(credentials) = credentials {
        settings.lookup = Some((build.0)(credentials, &settings.repository_tls));
    }
    Ok(settings)
}

/// On a node that reaches its cluster's managed repository through the first node's listener, the
/// credentials that node reads verifiers with: the managed repository's superuser, whose password is
/// in the keystore every node shares. So a joined node authenticates its clients itself, as the
/// first node does — with channel binding to the certificate they share — instead of relaying
/// logins that libpq's default `channel_binding=prefer` would fail across two TLS legs.
pub fn node_lookup_credentials(store: &StateStore) -> Result<Option<LookupCredentials>, LoadError> {
    if !crate::control::cluster::Membership::joined_through_node(&store.config_dir()) {
        return Ok(None);
    }
    let superuser = crate::repository::managed::SUPERUSER;
    let keystore = Keystore::open(&store.config_dir())?;
    Ok(keystore
        .get(&crate::repository::managed::role_secret_name(superuser))?
        .map(|password| LookupCredentials {
            username: superuser.to_string(),
            password,
        }))
}

/// Builds the settings a given state would serve; `apply` uses this to validate before promoting.
pub fn for_state(
    store: &StateStore,
    state: &AppliedState,
    repository_tls: RepositoryTlsMode,
) -> Result<LiveSettings, LoadError> {
    let custom_ca = custom_ca_of(store, state)?;
    let upstream_mode = repository_tls;
    let repository_tls = RepositoryTls::new(upstream_mode, custom_ca.as_ref())?;
    let mode = state.repository_ssl.mode;
    let mutual = mutual_ssl::build(store, state, upstream_mode, custom_ca)?;
    let (cert_login, identities, role_passwords) = match &mutual {
        Some(m) => (
            Some(m.login.clone()),
            m.identities.clone(),
            Some(m.role_passwords.clone()),
        ),
        None => (None, None, None),
    };
    if !mode.offers_tls() {
        return Ok(LiveSettings {
            repository_tls,
            cert_login,
            identities,
            role_passwords,
            ..LiveSettings::off()
        });
    }
    let client_auth = mutual.map(|m| m.verifier);
    let (config, leaf) = match &state.external_ssl {
        Some(external) => external_config(store, external, client_auth)?,
        None => {
            let paths = store
                .cert_paths_of(state)
                .ok_or(LoadError::NoCertificate(mode))?;
            store.settle_certificates(&paths);
            // Read the file once: the fingerprint comes from the same leaf the server will present.
            let chain = certs::read_chain(&paths.cert)?;
            let leaf = chain[0].clone();
            (
                tls::server_config_with_chain(&paths, chain, client_auth)?,
                leaf,
            )
        }
    };
    Ok(LiveSettings {
        mode,
        acceptor: Some(TlsAcceptor::from(config)),
        cert_fingerprint: Some(certs::sha256_fingerprint(&leaf)),
        // Hashed once here, for every SCRAM-SHA-256-PLUS login this snapshot serves.
        channel_binding: Some(crate::proxy::auth::scram::tls_server_end_point(&leaf).into()),
        repository_tls,
        lookup: None,
        cert_login,
        identities,
        role_passwords,
        generation: 0,
    })
}

/// The upstream TLS settings of a state: `mode` from the configuration, trusting the state's custom CA.
pub fn repository_tls_for(
    store: &StateStore,
    state: &AppliedState,
    mode: RepositoryTlsMode,
) -> Result<RepositoryTls, LoadError> {
    Ok(RepositoryTls::new(
        mode,
        custom_ca_of(store, state)?.as_ref(),
    )?)
}

/// The state's custom CA certificate, if one is added.
fn custom_ca_of(
    store: &StateStore,
    state: &AppliedState,
) -> Result<Option<rustls::pki_types::CertificateDer<'static>>, LoadError> {
    Ok(state
        .custom_ca
        .as_ref()
        .map(|ca| custom_ca::load(&store.custom_ca_path(&ca.id)))
        .transpose()?)
}

/// The server configuration of an `external-ssl` certificate and its leaf.
fn external_config(
    store: &StateStore,
    external: &ExternalSsl,
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<
    (
        Arc<rustls::ServerConfig>,
        rustls::pki_types::CertificateDer<'static>,
    ),
    LoadError,
> {
    let passphrase = if external.encrypted_key {
        let keystore = Keystore::open(&store.config_dir())?;
        Some(
            keystore
                .get(&security::passphrase_name(&external.id))?
                .ok_or(LoadError::MissingPassphrase)?,
        )
    } else {
        None
    };
    let paths = store.external_ssl_paths(&external.id);
    let (chain, key) = external_cert::load(&paths, passphrase.as_ref())?;
    let leaf = chain[0].clone();
    let protocols = protocols::parse(&external.protocols)?.set;
    let config = tls::server_config_from(chain, key, protocols, client_auth)
        .map_err(LoadError::ExternalTls)?;
    Ok((config, leaf))
}
