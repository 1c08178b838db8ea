//! Which certificate clients are served, and the mode: what `list`, `get-certificate-file`, the
//! admin page and the expiry warning all read.

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::RepositorySslError;
use crate::control::operations::{CommandError, Context};
use crate::control::state::served_ca;
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
    let mut chain = certs::read_chain(&paths.cert)?;
    let external = state.external_ssl.is_some();
    if !external {
        // During a CA rotation the next CA travels in the file too: a client that fetches it now
        // still verifies once the next CA signs.
        if let Some(next) = served_ca::read_in(&store.config_dir())?.and_then(|cas| cas.next) {
            chain.push(next.certificate_der().clone());
        }
    }
    Ok(ServedCertificate {
        chain,
        external,
        staged_only,
    })
}

/// What `get-certificate-file` says of a file of pgssl's own certificate: that it holds the CA.
pub fn file_note(external: bool, chain_len: usize) -> Option<&'static str> {
    match (external, chain_len) {
        (true, _) | (_, 0..=1) => None,
        (false, 2) => Some(
            "The file holds the served certificate and the repository CA that issued it: clients that trust it keep verifying when the certificate is renewed.",
        ),
        (false, _) => Some(
            "The file holds the served certificate, the repository CA that issued it and the next CA of a rotation: clients that trust it keep verifying when the certificate is renewed, and after the rotation.",
        ),
    }
}

/// The repository CA that issues the served certificate, and the next one during a rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryCa {
    /// Its subject.
    pub subject: String,
    /// Its expiry, RFC 3339.
    pub not_after: String,
    /// The next CA's subject, while a rotation overlaps.
    pub next: Option<String>,
    /// When the next CA starts signing, RFC 3339.
    pub next_signs_from: Option<String>,
}

/// `t` as the other listings date things (RFC 3339, to the second).
fn rfc3339(t: time::OffsetDateTime) -> String {
    crate::proxy::repository::hosts::status::rfc3339(t.into())
}

fn repository_ca(ctx: &Context) -> Result<Option<RepositoryCa>, CommandError> {
    let Some(cas) = served_ca::read_in(&ctx.data_dir.join("config"))? else {
        return Ok(None);
    };
    let current = served_ca::describe(&cas.current)?;
    let next = cas.next.as_ref().map(served_ca::describe).transpose()?;
    Ok(Some(RepositoryCa {
        subject: current.subject,
        not_after: rfc3339(current.not_after),
        next: next.map(|n| n.subject),
        next_signs_from: cas
            .next_signs_from(ctx.config.tls.ca_overlap_days)
            .map(rfc3339),
    }))
}

impl Status {
    /// The repository CA's lines of `list`.
    pub fn ca_lines(&self) -> Vec<String> {
        let Some(ca) = &self.repository_ca else {
            return Vec::new();
        };
        let mut lines = vec![format!(
            "  repository CA:       {} (expires {}): clients trust it through the file of 'get-certificate-file'",
            ca.subject, ca.not_after
        )];
        if let (Some(next), Some(from)) = (&ca.next, &ca.next_signs_from) {
            lines.push(format!(
                "  next repository CA:  {next}, in the certificate file now; signs from {from} (rotation overlap)"
            ));
        }
        lines
    }
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
    /// The repository CA that issues it (none before the first, or for a self-signed one).
    #[serde(default)]
    pub repository_ca: Option<RepositoryCa>,
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
        repository_ca: repository_ca(ctx)?,
    })
}
