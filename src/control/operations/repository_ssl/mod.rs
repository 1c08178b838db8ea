//! `pgssl security repository-ssl enable [--internal-only] | disable | list | get-certificate-file`.

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, ReportFile, Verb, no_arguments};
use super::{CommandError, Context, ErrorKind, Output, Staging, apply_hint, describe_expiry};
use crate::proxy::policy::Mode;

use crate::proxy::repository::tls::RepositoryTls;
use crate::repository::managed::ManagedRepository;
use crate::repository::version::{self, VersionSource};
use crate::tls::certs::{self, CertInfo};

mod served;
pub use served::{CertificateStatus, ServedCertificate, Status, served_certificate, status};

/// Why a `repository-ssl` command refused.
#[derive(Debug, thiserror::Error)]
pub enum RepositorySslError {
    /// `enable` found a certificate it cannot serve, and never overwrites one silently.
    #[error(
        "the existing certificate cannot be used: {source}; move {} and {} aside and run enable again to generate new ones",
        paths.cert.display(),
        paths.key.display()
    )]
    ExistingUnusable {
        /// Why it cannot be served.
        source: crate::tls::certs::CertError,
        /// The certificate and key files (boxed: a command's error stays small).
        paths: Box<certs::CertPaths>,
    },
    /// SSL is off in the applied and the staged state.
    #[error(
        "repository SSL is off, so there is no certificate to get (run 'pgssl security repository-ssl enable', then 'pgssl pending-changes apply')"
    )]
    Off,
    /// The state records no certificate.
    #[error("no certificate is recorded (run 'pgssl security repository-ssl enable')")]
    NoCertificate,
}

impl RepositorySslError {
    /// Each is the administrator's to fix, as the message says.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// `repository-ssl enable`: stages `required`, or `optional` with `--internal-only`, generating the
/// certificate if there is none.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enable {
    /// Require SSL of internal users only; direct-connection users may choose.
    // Required in JSON (no serde default): staging `required` by default would lock out the direct
    // users of an administrator who meant `optional`.
    #[arg(long)]
    pub internal_only: bool,
}

/// What `enable` found and staged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnableReport {
    /// The repository's major version, which names the certificate's folder.
    pub postgres_major: u32,
    /// Where the version came from, as a sentence fragment.
    pub version_source: String,
    /// Whether a new certificate was generated (else the existing one is used).
    pub generated: bool,
    /// The certificate's path on the server.
    pub certificate_path: String,
    /// Its details.
    pub certificate: CertInfo,
    /// The mode change.
    #[serde(flatten)]
    pub change: ModeChange,
}

/// A staged mode, next to the applied one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeChange {
    /// The applied mode.
    pub applied_mode: Mode,
    /// The mode asked for.
    pub mode: Mode,
    /// Whether anything is staged now (`false`: the mode is already in force and nothing is pending).
    pub staged: bool,
}

impl Operation for Enable {
    const ACTION: &'static str = "repository-ssl enable";
    const PATH: &'static str = "/repository-ssl/enable";
    const VERB: Verb = Verb::Post;
    type Report = EnableReport;

    async fn run(self, ctx: &Context) -> Result<EnableReport, CommandError> {
        enable(ctx, self.internal_only).await
    }

    fn example() -> Enable {
        Enable {
            internal_only: true,
        }
    }
}

async fn enable(ctx: &Context, internal_only: bool) -> Result<EnableReport, CommandError> {
    let mode = if internal_only {
        Mode::Optional
    } else {
        Mode::Required
    };
    let mut staging = Staging::begin(ctx.store_or_create()?)?;
    let (store, applied) = (&staging.store, &staging.applied);

    let served = crate::control::operations::served_repository(ctx, store)
        .await
        .map(|u| u.parse::<crate::config::RepositoryAddress>())
        .transpose()
        .map_err(crate::config::ConfigError::from)?;
    let found = match served {
        Some(address) => {
            // Reach the upstream the way the proxy will, with the TLS settings in force.
            let tls = crate::control::settings::repository_tls_for(
                store,
                applied,
                ctx.config.repository.tls,
            )
            .unwrap_or_else(|_| RepositoryTls::disabled());
            // The hosts of one replicated cluster run one major version: the first that answers
            // tells it (the first listed may be the one that is down).
            let port = ctx.config.repository.port;
            let mut found =
                version::probe(&ctx.config, &address.first().upstream(port), &tls).await;
            for host in &address.endpoints()[1..] {
                if matches!(found.source, VersionSource::Upstream { .. }) {
                    break;
                }
                found = version::probe(&ctx.config, &host.upstream(port), &tls).await;
            }
            found
        }
        None => managed_major(ctx),
    };
    let version_source = match &found.source {
        VersionSource::Upstream { server_version } => {
            format!("from the upstream's server_version '{server_version}'")
        }
        VersionSource::Managed => "from the managed repository".to_string(),
        VersionSource::Config { reason } => format!(
            "from config repository.postgres_major; could not read the upstream's server_version: {reason}"
        ),
    };

    let paths = store.cert_paths(found.major);
    let generated = !paths.exist();
    let certificate = if generated {
        // Issued by the repository CA (made the first time), which clients trust: renewals then
        // need no new file on the clients.
        let mut keystore = crate::keystore::Keystore::open(&store.config_dir())?;
        let tls = &ctx.config.tls;
        let (names, days) = (&tls.subject_alt_names, tls.certificate_validity_days);
        crate::control::state::served_ca::issue(&mut keystore, &paths, names, days)?
    } else {
        // An existing pair is reused only if it can be served; never overwrite it silently.
        crate::tls::server_config(&paths).map_err(|source| {
            RepositorySslError::ExistingUnusable {
                source,
                paths: Box::new(paths.clone()),
            }
        })?;
        certs::read_info(&paths.cert)?
    };

    staging.pending.repository_ssl_mode = Some(mode);
    staging.pending.postgres_major = Some(found.major);
    staging.save()?;
    Ok(EnableReport {
        postgres_major: found.major,
        version_source,
        generated,
        certificate_path: paths.cert.display().to_string(),
        certificate,
        change: mode_change(&staging, mode)?,
    })
}

impl Report for EnableReport {
    fn render(&self, out: &Output) {
        say!(
            out,
            "PostgreSQL major version {} ({})",
            self.postgres_major,
            self.version_source
        );
        let cert = &self.certificate;
        if self.generated {
            say!(out, "Generated a new certificate {}", self.certificate_path);
            say!(
                out,
                "  subject alternative names: {}",
                cert.subject_alt_names.join(", ")
            );
        } else {
            say!(
                out,
                "Using the existing certificate {}",
                self.certificate_path
            );
        }
        say!(out, "  fingerprint: SHA256 {}", cert.sha256_fingerprint);
        self.change.render(out);
    }
}

fn managed_major(ctx: &Context) -> version::MajorVersion {
    // Locating runs `pg_config`: off the runtime's one worker.
    let located = crate::control::operations::blocking(|| {
        ManagedRepository::locate(&ctx.data_dir, &ctx.config)
    });
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

no_arguments!(
    /// `repository-ssl disable`: stages `off`.
    Disable
);

impl Operation for Disable {
    const ACTION: &'static str = "repository-ssl disable";
    const PATH: &'static str = "/repository-ssl/disable";
    const VERB: Verb = Verb::Post;
    type Report = ModeChange;

    async fn run(self, ctx: &Context) -> Result<ModeChange, CommandError> {
        let mut staging = Staging::begin(ctx.store_or_create()?)?;
        staging.pending.repository_ssl_mode = Some(Mode::Off);
        staging.save()?;
        mode_change(&staging, Mode::Off)
    }

    fn example() -> Disable {
        Disable {}
    }
}

/// The mode change `staging` saved: whether anything is staged once its changes are normalised
/// against the applied state (staging the applied mode stages nothing).
fn mode_change(staging: &Staging, mode: Mode) -> Result<ModeChange, CommandError> {
    Ok(ModeChange {
        applied_mode: staging.applied.repository_ssl.mode,
        mode,
        staged: !staging.store.pending()?.is_empty(),
    })
}

impl Report for ModeChange {
    fn render(&self, out: &Output) {
        let mode = self.mode;
        if self.staged {
            say!(
                out,
                "Staged repository SSL mode {} -> {mode} ({}).",
                self.applied_mode,
                mode.description()
            );
            apply_hint(out);
        } else {
            say!(
                out,
                "Repository SSL is already {mode} ({}); nothing to stage.",
                mode.description()
            );
        }
    }
}

no_arguments!(
    /// `repository-ssl list`: the applied and staged mode and the certificate.
    List
);

/// Repository SSL as `list`, the API and the web page show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    /// Mode and served certificate.
    pub status: Status,
    /// The generated certificate (kept while external SSL is served), and where it is.
    pub generated: Option<GeneratedCertificate>,
    /// A setting that refuses clients as they usually connect, and its cure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The certificate pgssl generated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratedCertificate {
    /// Its path on the server.
    pub path: String,
    /// Its details.
    pub info: CertInfo,
}

impl Operation for List {
    const ACTION: &'static str = "repository-ssl list";
    const PATH: &'static str = "/repository-ssl";
    const VERB: Verb = Verb::Get;
    type Report = Listing;

    async fn run(self, ctx: &Context) -> Result<Listing, CommandError> {
        let store = ctx.store()?;
        let applied = store.applied()?;
        let next = store.pending()?.merged_into(&applied);
        let generated = match store
            .cert_paths_of(&next)
            .or_else(|| store.cert_paths_of(&applied))
        {
            Some(paths) if paths.cert.exists() => Some(GeneratedCertificate {
                info: certs::read_info(&paths.cert)?,
                path: paths.cert.display().to_string(),
            }),
            _ => None,
        };
        let external = crate::control::operations::served_repository(ctx, &store)
            .await
            .is_some();
        // A joined node behind a managed first node authenticates with that node's credentials.
        let lookup_applied = applied.lookup_user.is_some()
            || crate::control::settings::node_lookup_credentials(&store)
                .ok()
                .flatten()
                .is_some();
        Ok(Listing {
            status: status(ctx)?,
            generated,
            warning: crate::control::operations::authentication::passthrough_over_tls_warning(
                &ctx.config,
                external,
                lookup_applied,
            ),
        })
    }

    fn example() -> List {
        List {}
    }
}

impl Report for Listing {
    fn render(&self, out: &Output) {
        let mode = self.status.mode;
        say!(out, "Repository SSL");
        say!(
            out,
            "  mode:                {mode} ({})",
            mode.description()
        );
        if let Some(staged) = self.status.pending_mode {
            say!(
                out,
                "  pending mode:        {staged} ({}); run 'pgssl pending-changes apply'",
                staged.description()
            );
        }
        if self.status.external_ssl {
            say!(
                out,
                "  served certificate:  external SSL (see 'pgssl security external-ssl list'); the generated one below is kept for when it is disabled"
            );
        }
        match &self.generated {
            Some(GeneratedCertificate { path, info }) => {
                say!(out, "  certificate:         {path}");
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
            None => say!(
                out,
                "  certificate:         none (generated by 'pgssl security repository-ssl enable')"
            ),
        }
        for line in self.status.ca_lines() {
            say!(out, "{line}");
        }
        if let Some(warning) = &self.warning {
            out.warning(format!("warning: {warning}"));
        }
    }
}

no_arguments!(
    /// `repository-ssl get-certificate-file` as an operation: the public certificate clients should
    /// trust (the CLI writes it to `-f FILE`; the API answers it as a file).
    Certificate
);

/// The served public certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateFile {
    /// Leaf first, then any chain, PEM.
    pub pem: String,
    /// The leaf's details.
    pub info: CertInfo,
    /// Whether it is the external-ssl certificate.
    pub external: bool,
    /// Whether repository SSL is only staged, not applied.
    pub staged_only: bool,
}

impl Operation for Certificate {
    const ACTION: &'static str = "repository-ssl get-certificate-file";
    const PATH: &'static str = "/repository-ssl/certificate";
    const VERB: Verb = Verb::Get;
    type Report = CertificateFile;

    async fn run(self, ctx: &Context) -> Result<CertificateFile, CommandError> {
        let served = served_certificate(ctx)?;
        Ok(CertificateFile {
            pem: served.pem(),
            info: certs::describe(
                &served.chain[0],
                served.chain.len(),
                std::path::Path::new("server.crt"),
            )?,
            external: served.external,
            staged_only: served.staged_only,
        })
    }

    fn example() -> Certificate {
        Certificate {}
    }
}

impl Report for CertificateFile {
    fn file(&self) -> Option<ReportFile<'_>> {
        Some(ReportFile {
            content_type: "application/x-pem-file",
            name: "server.crt",
            contents: self.pem.as_bytes(),
        })
    }

    fn render(&self, out: &Output) {
        say!(
            out,
            "  SHA-256 fingerprint: {}",
            self.info.sha256_fingerprint
        );
        if self.external {
            say!(
                out,
                "Note: external SSL is on, so this is your certificate and its chain (issuer {}); clients with sslmode=verify-full need your CA's root certificate as sslrootcert.",
                self.info.issuer
            );
        }
        if let Some(note) = served::file_note(self.external, self.info.chain_len) {
            say!(out, "{note}");
        }
        if self.staged_only {
            say!(
                out,
                "Note: repository SSL is enabled but not applied yet; run 'pgssl pending-changes apply'."
            );
        }
    }
}
