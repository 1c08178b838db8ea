//! Which certificate clients are served, and the mode: what `list`, `get-certificate-file`, the
//! admin page and the expiry warning all read.

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::RepositorySslError;
use crate::control::operations::{CommandError, Context};
use crate::proxy::policy::Mode;
use crate::tls::certs;

/// The public certificate clients should trust, and where it comes from.
#[derive(Debug, Clone)]
pub struct ServedCertificate {
    /// Leaf first, then any chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Whether it is the external-ssl certificate.
    pub external: bool,
    /// Whether repository SSL is only staged, not applied.
    pub staged_only: bool,
}

impl ServedCertificate {
    /// The chain as PEM.
    pub fn pem(&self) -> String {
        certs::chain_pem(&self.chain)
    }
}

/// The certificate of the applied state, else of the staged one; refused when SSL is off in both.
pub fn served_certificate(ctx: &Context) -> Result<ServedCertificate, CommandError> {
    let store = ctx.store()?;
    let applied = store.applied()?;
    let next = store.pending()?.merged_into(&applied);
    let (state, staged_only) = if applied.repository_ssl.mode.offers_tls() {
        (&applied, false)
    } else if next.repository_ssl.mode.offers_tls() {
        (&next, true)
    } else {
        return Err(RepositorySslError::Off.into());
    };
    let paths = store
        .served_cert_paths(state)
        .ok_or(RepositorySslError::NoCertificate)?;
    Ok(ServedCertificate {
        chain: certs::read_chain(&paths.cert)?,
        external: state.external_ssl.is_some(),
        staged_only,
    })
}

/// The applied and staged mode and the served certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The applied mode: `required`, `optional` or `off`.
    pub mode: Mode,
    /// The staged mode, when it differs.
    pub pending_mode: Option<Mode>,
    /// Whether clients are served the external-ssl certificate.
    pub external_ssl: bool,
    /// The certificate clients are (or will be) served.
    pub certificate: Option<CertificateStatus>,
}

/// A certificate's public details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// SANs as `DNS:` / `IP:` entries.
    pub subject_alt_names: Vec<String>,
    /// SHA-256, colon-separated hex.
    pub sha256_fingerprint: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
}

/// Reads the [`Status`].
pub fn status(ctx: &Context) -> Result<Status, CommandError> {
    let store = ctx.store()?;
    let applied = store.applied()?;
    let next = store.pending()?.merged_into(&applied);
    let mode = applied.repository_ssl.mode;
    let shown = if applied.repository_ssl.mode.offers_tls() {
        &applied
    } else {
        &next
    };
    let certificate = match store.served_cert_paths(shown) {
        Some(paths) if paths.cert.exists() => {
            let info = certs::read_info(&paths.cert)?;
            Some(CertificateStatus {
                subject: info.subject,
                issuer: info.issuer,
                subject_alt_names: info.subject_alt_names,
                sha256_fingerprint: info.sha256_fingerprint,
                not_after: info
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            })
        }
        _ => None,
    };
    Ok(Status {
        mode,
        pending_mode: (next.repository_ssl.mode != mode).then_some(next.repository_ssl.mode),
        external_ssl: applied.external_ssl.is_some(),
        certificate,
    })
}
