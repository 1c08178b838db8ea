//! The client certificates pgssl presents to the repository for certificate-authenticated clients:
//! one per role and internal CA, CN = the role, minted on first use, valid for a day and minted again
//! when less than an hour is left. Each comes with its own TLS connector (rustls configures the client
//! certificate per connector). After a rotation there are two CAs: the current one's certificate is
//! presented first, the previous one's when the repository does not trust the current CA yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::tls::{RepositoryTls, RepositoryTlsError, RepositoryTlsMode};
use crate::tls::certs::CertError;
use crate::tls::internal_ca::InternalCa;

/// How long a minted certificate is valid.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A certificate with less left than this is minted again.
const RENEW_BEFORE: time::Duration = time::Duration::hours(1);
/// Roles kept at most (certificates only name roles a verified client certificate named).
const MAX_ROLES: usize = 1024;

/// Why no client certificate could be presented.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Minting failed.
    #[error("cannot mint a client certificate: {0}")]
    Mint(#[from] CertError),
    /// rustls refused the certificate or the trust settings.
    #[error(transparent)]
    Tls(#[from] RepositoryTlsError),
}

/// A connector presenting a minted certificate, and when that certificate ends.
type Minted = (Arc<RepositoryTls>, OffsetDateTime);

/// The internal CAs and the connectors minted from them, per role.
pub struct ClientIdentities {
    /// Current first.
    cas: Vec<Arc<InternalCa>>,
    mode: RepositoryTlsMode,
    custom_ca: Option<CertificateDer<'static>>,
    minted: Mutex<HashMap<(String, usize), Minted>>,
}

impl std::fmt::Debug for ClientIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentities")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ClientIdentities {
    /// Certificates from `cas` (current first), over TLS in `mode` (`disable` is taken as
    /// `require`) trusting `custom_ca` as the repository's other connections do.
    pub fn new(
        cas: Vec<Arc<InternalCa>>,
        mode: RepositoryTlsMode,
        custom_ca: Option<CertificateDer<'static>>,
    ) -> ClientIdentities {
        ClientIdentities {
            cas,
            mode,
            custom_ca,
            minted: Mutex::default(),
        }
    }

    /// The connectors that present `role`'s certificate, one per CA, current first.
    pub fn for_role(&self, role: &str) -> Result<Vec<Arc<RepositoryTls>>, IdentityError> {
        (0..self.cas.len())
            .map(|i| self.minted_by(role, i))
            .collect()
    }

    fn minted_by(&self, role: &str, ca: usize) -> Result<Arc<RepositoryTls>, IdentityError> {
        let now = OffsetDateTime::now_utc();
        let key = (role.to_string(), ca);
        {
            let minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((tls, not_after)) = minted.get(&key)
                && *not_after - now > RENEW_BEFORE
            {
                return Ok(tls.clone());
            }
        }
        let id = self.cas[ca].mint(role, VALIDITY)?;
        let tls = Arc::new(RepositoryTls::with_identity(
            self.mode,
            self.custom_ca.as_ref(),
            Some((id.chain, id.key)),
        )?);
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if minted.len() >= MAX_ROLES {
            minted.clear();
        }
        minted.insert(key, (tls.clone(), id.not_after));
        Ok(tls)
    }
}
