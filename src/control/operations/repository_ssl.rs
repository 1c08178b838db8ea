//! `pgssl security repository-ssl enable [--internal-only] | disable | list | get-certificate-file`.

use std::path::Path;

use super::{CommandError, Context, apply_hint, block_on, describe_expiry};
use crate::atomic::{self, PUBLIC_MODE};
use crate::proxy::policy::Mode;

use crate::proxy::upstream::tls::UpstreamTls;
use crate::repository::managed::ManagedRepository;
use crate::repository::version::{self, VersionSource};
use crate::tls::certs::{self, CertError};
use rustls::pki_types::CertificateDer;

/// Stages `required` (or `optional` with `internal_only`), generating the certificate if missing.
pub fn enable(ctx: &Context, internal_only: bool) -> Result<(), CommandError> {
    let out = &ctx.out;
    let mode = if internal_only {
        Mode::Optional
    } else {
        Mode::Required
    };
    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let mut pending = store.pending()?;

    let found = match ctx.config.upstream_addr()? {
        Some(upstream) => {
            // Reach the upstream the way the proxy will, with the TLS settings in force.
            let tls = crate::control::settings::upstream_tls_for(
                &store,
                &applied,
                ctx.config.server.upstream_tls,
            )
            .unwrap_or_else(|_| UpstreamTls::disabled());
            block_on(version::probe(&ctx.config, &upstream, &tls))?
        }
        None => managed_major(ctx),
    };
    match &found.source {
        VersionSource::Upstream { server_version } => say!(
            out,
            "PostgreSQL major version {} (from the upstream's server_version '{server_version}')",
            found.major
        ),
        VersionSource::Managed => say!(
            out,
            "PostgreSQL major version {} (from the managed repository)",
            found.major
        ),
        VersionSource::Config { reason } => say!(
            out,
            "PostgreSQL major version {} (from config repository.postgres_major; could not read the upstream's server_version: {reason})",
            found.major
        ),
    }

    let paths = store.cert_paths(found.major);
    if paths.exist() {
        // An existing pair is reused only if it can be served; never overwrite it silently.
        crate::tls::server_config(&paths).map_err(|e| {
            CommandError::Invalid(format!(
                "the existing certificate cannot be used: {e}; move {} and {} aside and run enable again to generate new ones",
                paths.cert.display(),
                paths.key.display()
            ))
        })?;
        let info = certs::read_info(&paths.cert)?;
        say!(
            out,
            "Using the existing certificate {}",
            paths.cert.display()
        );
        say!(out, "  fingerprint: SHA256 {}", info.sha256_fingerprint);
    } else {
        let sans = certs::default_subject_alt_names(&ctx.config.tls.subject_alt_names);
        let info = certs::generate(&paths, &sans, ctx.config.tls.certificate_validity_days)?;
        say!(out, "Generated a new certificate {}", paths.cert.display());
        say!(
            out,
            "  subject alternative names: {}",
            info.subject_alt_names.join(", ")
        );
        say!(out, "  fingerprint: SHA256 {}", info.sha256_fingerprint);
    }

    pending.repository_ssl_mode = Some(mode);
    pending.postgres_major = Some(found.major);
    store.save_pending(&pending)?;
    report_staged(out, &store, &applied, mode)
}

fn managed_major(ctx: &Context) -> version::MajorVersion {
    let located = ManagedRepository::locate(&ctx.data_dir, &ctx.config);
    match located.as_ref().map(ManagedRepository::major) {
        Ok(Some(major)) => version::MajorVersion {
            major,
            source: VersionSource::Managed,
        },
        Ok(None) => version::MajorVersion {
            major: ctx.config.repository.postgres_major,
            source: VersionSource::Config {
                reason: "the managed repository's version could not be read".into(),
            },
        },
        Err(e) => version::MajorVersion {
            major: ctx.config.repository.postgres_major,
            source: VersionSource::Config {
                reason: e.to_string(),
            },
        },
    }
}

/// Stages `off`.
pub fn disable(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let mut pending = store.pending()?;
    pending.repository_ssl_mode = Some(Mode::Off);
    store.save_pending(&pending)?;
    report_staged(out, &store, &applied, Mode::Off)
}

fn report_staged(
    out: &super::Output,
    store: &crate::control::state::StateStore,
    applied: &crate::control::state::AppliedState,
    mode: Mode,
) -> Result<(), CommandError> {
    if store.pending()?.is_empty() {
        say!(
            out,
            "Repository SSL is already {mode} ({}); nothing to stage.",
            mode.description()
        );
    } else {
        say!(
            out,
            "Staged repository SSL mode {} -> {mode} ({}).",
            applied.repository_ssl.mode,
            mode.description()
        );
        apply_hint(out);
    }
    Ok(())
}

/// Prints the applied and staged mode and the certificate's details.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    let next = pending.merged_into(&applied);
    let mode = applied.repository_ssl.mode;
    say!(out, "Repository SSL");
    say!(
        out,
        "  mode:                {mode} ({})",
        mode.description()
    );
    if next.repository_ssl.mode != mode {
        let staged = next.repository_ssl.mode;
        say!(
            out,
            "  pending mode:        {staged} ({}); run 'pgssl pending-changes apply'",
            staged.description()
        );
    }
    if applied.external_ssl.is_some() {
        say!(
            out,
            "  served certificate:  external SSL (see 'pgssl security external-ssl list'); the generated one below is kept for when it is disabled"
        );
    }
    match store
        .cert_paths_of(&next)
        .or_else(|| store.cert_paths_of(&applied))
    {
        Some(paths) if paths.cert.exists() => {
            let info = certs::read_info(&paths.cert)?;
            say!(out, "  certificate:         {}", paths.cert.display());
            say!(out, "  subject:             {}", info.subject);
            say!(
                out,
                "  subject alt names:   {}",
                info.subject_alt_names.join(", ")
            );
            say!(out, "  SHA-256 fingerprint: {}", info.sha256_fingerprint);
            say!(
                out,
                "  expires:             {}",
                describe_expiry(info.not_after)
            );
        }
        _ => say!(
            out,
            "  certificate:         none (generated by 'pgssl security repository-ssl enable')"
        ),
    }
    Ok(())
}

/// Writes the public certificate to `dest`.
pub fn get_certificate_file(ctx: &Context, dest: &Path) -> Result<(), CommandError> {
    let out = &ctx.out;
    let served = served_certificate(ctx)?;
    atomic::write_file(dest, served.pem().as_bytes(), PUBLIC_MODE).map_err(|source| {
        CertError::Write {
            path: dest.to_path_buf(),
            source,
        }
    })?;
    let info = certs::describe(&served.chain[0], served.chain.len(), dest)?;
    say!(
        out,
        "Wrote the repository certificate to {}",
        dest.display()
    );
    say!(out, "  SHA-256 fingerprint: {}", info.sha256_fingerprint);
    if served.external {
        say!(
            out,
            "Note: external SSL is on, so this is your certificate and its chain (issuer {}); clients with sslmode=verify-full need your CA's root certificate as sslrootcert.",
            info.issuer
        );
    }
    if served.staged_only {
        say!(
            out,
            "Note: repository SSL is enabled but not applied yet; run 'pgssl pending-changes apply'."
        );
    }
    Ok(())
}

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
        return Err(CommandError::Invalid(
            "repository SSL is off, so there is no certificate to get (run 'pgssl security repository-ssl enable', then 'pgssl pending-changes apply')".into(),
        ));
    };
    let paths = store.served_cert_paths(state).ok_or_else(|| {
        CommandError::Invalid(
            "no certificate is recorded (run 'pgssl security repository-ssl enable')".into(),
        )
    })?;
    Ok(ServedCertificate {
        chain: certs::read_chain(&paths.cert)?,
        external: state.external_ssl.is_some(),
        staged_only,
    })
}

/// Repository SSL as the admin API and web page show it.
#[derive(Debug, Clone, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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

/// The applied and staged mode and the served certificate.
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
