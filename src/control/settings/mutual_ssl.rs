//! The mutual-SSL part of a settings snapshot: the client-certificate verifier the acceptor asks
//! with, what the login compares, and the certificates pgssl presents to the repository.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use time::OffsetDateTime;
use tracing::warn;

use super::LoadError;
use crate::control::state::mutual_ssl::{self, MutualSslFiles};
use crate::control::state::{AppliedState, StateStore};
use crate::keystore::Keystore;
use crate::proxy::auth::cert::CertLogin;
use crate::proxy::repository::identity::ClientIdentities;
use crate::proxy::repository::tls::RepositoryTlsMode;
use crate::proxy::settings::RolePasswords;
use crate::repository::managed::{SUPERUSER, role_secret_name};
use crate::telemetry::names;
use zeroize::Zeroizing;

/// The managed repository's role passwords, read from the keystore at each certificate login: the
/// current one (`role/<name>`) and a rotation's candidate (`rotation/role/<name>`, sealed before the
/// repository learns it), so that a login during `regenerate-internal-tokens` finds the one that
/// works. Never the superuser's.
#[derive(Debug)]
struct KeystorePasswords {
    config_dir: std::path::PathBuf,
}

impl RolePasswords for KeystorePasswords {
    fn candidates(&self, role: &str) -> Vec<Zeroizing<String>> {
        if role == SUPERUSER || role.contains('/') {
            return Vec::new();
        }
        let Ok(keystore) = Keystore::open(&self.config_dir) else {
            warn!("the keystore could not be opened for a certificate login");
            return Vec::new();
        };
        [
            role_secret_name(role),
            format!("rotation/{}", role_secret_name(role)),
        ]
        .iter()
        .filter_map(|name| keystore.get(name).ok().flatten())
        .map(|secret| Zeroizing::new(secret.expose().to_string()))
        .collect()
    }
}

/// What an enabled mutual SSL adds to a snapshot.
pub(super) struct MutualSslSettings {
    pub(super) verifier: Arc<dyn ClientCertVerifier>,
    pub(super) login: Arc<CertLogin>,
    pub(super) identities: Option<Arc<ClientIdentities>>,
    pub(super) role_passwords: Arc<dyn RolePasswords>,
}

/// The settings of `state`'s mutual SSL, when it is enabled. A CRL past its next update is still
/// used — a stale list is better than none — but logged as a warning, and its next update is a
/// gauge (`pgssl_mutual_ssl_crl_next_update_seconds`) to alert on.
pub(super) fn build(
    store: &StateStore,
    state: &AppliedState,
    repository_tls: RepositoryTlsMode,
    custom_ca: Option<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Option<MutualSslSettings>, LoadError> {
    let Some(record) = state.mutual_ssl.as_ref().filter(|m| m.enabled) else {
        return Ok(None);
    };
    let now = OffsetDateTime::now_utc();
    let files = MutualSslFiles::load(&store.mutual_ssl_dir(&record.id), now)?;
    let mut crls = Vec::new();
    if let Some((crl, info)) = files.crl {
        if let Some(next) = info.next_update {
            metrics::gauge!(names::CRL_NEXT_UPDATE).set(next.unix_timestamp() as f64);
            if next < now {
                warn!(issuer = %info.issuer, next_update = %next,
                      "the mutual-SSL revocation list is past its next update; configure a current one with 'pgssl authentication mutual-ssl configure --revocation-file'");
            }
        }
        crls.push(crl);
    }
    let verifier = crate::tls::client_verifier(&files.cas, crls).map_err(LoadError::MutualSsl)?;
    let ca = mutual_ssl::internal_ca(&store.config_dir(), false)?;
    Ok(Some(MutualSslSettings {
        verifier,
        login: Arc::new(CertLogin {
            mapping: record.user_name_map,
            map: files.map,
            fallback: record.fallback,
        }),
        role_passwords: Arc::new(KeystorePasswords {
            config_dir: store.config_dir(),
        }),
        identities: ca.map(|cas| {
            let list = std::iter::once(cas.current)
                .chain(cas.previous)
                .map(Arc::new)
                .collect();
            Arc::new(ClientIdentities::new(list, repository_tls, custom_ca))
        }),
    }))
}
