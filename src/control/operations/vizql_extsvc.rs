//! `pgssl security vizql-extsvc-ssl enable --connection-type T --extsvc-host H [--extsvc-port P] ...
//! | disable | list`: the external analytics service (Rserve or TabPy) connection.
//!
//! For the `-secure` types `enable` proves the service answers TLS with a certificate it can verify
//! (with `--cert-file`, else the custom CA, else the system CA bundle) before staging anything.

use std::time::Duration;

use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::model::{
    Bounded, Operation, Port, Report, Staged, Upload, Verb, no_arguments, secret_arg, yes,
};
use super::{
    CommandError, Context, ErrorKind, Output, RecordList, RecordListing, RecordSlot, Removal,
    Staging, apply_hint, check_secret, list_record, stage_removal,
};
use crate::control::state::custom_ca::{self, CustomCaError};
use crate::control::state::security::{self, Change, ConnectionType, ExternalService};
use crate::control::state::store::new_id;
use crate::keystore::{Keystore, Secret};
use crate::tls::client::{self, HandshakeCheckError, Verification};

/// The model's default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Longest connect timeout accepted, in milliseconds.
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;

/// `--connect-timeout-ms`: 1 to [`MAX_CONNECT_TIMEOUT_MS`], default [`DEFAULT_CONNECT_TIMEOUT_MS`].
pub type ConnectTimeoutMs = Bounded<1, MAX_CONNECT_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT_MS>;

/// Where the external service connection is in the state.
const SLOT: RecordSlot<ExternalService> = record_slot!(extsvc);

/// Why `vizql-extsvc-ssl enable` refused; nothing was staged.
#[derive(Debug, thiserror::Error)]
pub enum ExtsvcError {
    /// `--extsvc-host` is not a host.
    #[error("--extsvc-host '{0}' is not a host name or IP address")]
    BadHost(String),
    /// `--cert-file` with a type that uses no TLS.
    #[error("--cert-file applies only to rserve-secure and tabpy-secure, not {0}")]
    CertFileNotSecure(ConnectionType),
    /// A password without a user name.
    #[error("--extsvc-password needs --extsvc-username")]
    PasswordWithoutUser,
    /// `--cert-file` is not a usable certificate.
    #[error(transparent)]
    CertFile(CustomCaError),
    /// A connection is configured already.
    #[error(
        "an external service connection is already configured; run 'pgssl security vizql-extsvc-ssl disable' first"
    )]
    AlreadyConfigured,
    /// `--cert-file` cannot be a trust anchor.
    #[error("cannot trust --cert-file: {0}")]
    Untrusted(rustls::Error),
    /// The live check failed.
    #[error(
        "{0}; nothing was staged (fix the service or --cert-file, or use --skip-check to stage anyway)"
    )]
    Handshake(HandshakeCheckError),
}

impl ExtsvcError {
    /// Each is the caller's to fix: the request, the file, or the service it names.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// `vizql-extsvc-ssl enable`: checks (TLS types with a live handshake) and stages the external
/// service connection.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enable {
    /// rserve, rserve-secure, tabpy or tabpy-secure.
    #[arg(long, value_name = "TYPE")]
    pub connection_type: ConnectionType,
    /// Host name or IP address of the service.
    #[arg(long, value_name = "HOST")]
    pub extsvc_host: String,
    /// Port [default: 6311 for Rserve, 9004 for TabPy].
    #[arg(long, value_name = "PORT")]
    #[serde(default)]
    pub extsvc_port: Option<Port>,
    /// The service's certificate or its CA (PEM or DER), for the -secure types.
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    #[serde(default)]
    pub cert_file: Option<Upload>,
    /// User name for the service.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub extsvc_username: Option<String>,
    /// Password for the service, or '-' to read it from standard input.
    #[arg(long, value_name = "PW|-", value_parser = secret_arg)]
    #[serde(default)]
    pub extsvc_password: Option<Secret>,
    /// Connect timeout in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = ConnectTimeoutMs::default())]
    #[serde(default)]
    pub connect_timeout_ms: ConnectTimeoutMs,
    /// Whether scripts are disabled.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, default_value_t = true)]
    #[serde(default = "yes")]
    pub script_disabled: bool,
    /// Stage a -secure configuration without the live TLS check.
    #[arg(long)]
    #[serde(default)]
    pub skip_check: bool,
}

/// What `enable` checked and staged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enabled {
    /// The TLS version of the live check, when one ran.
    pub checked_tls_version: Option<String>,
    /// The staged connection.
    pub record: ExternalService,
    /// Warnings (stderr).
    pub warnings: Vec<String>,
}

impl Operation for Enable {
    const ACTION: &'static str = "vizql-extsvc-ssl enable";
    const PATH: &'static str = "/vizql-extsvc-ssl/enable";
    const VERB: Verb = Verb::Post;
    type Report = Enabled;

    async fn run(self, ctx: &Context) -> Result<Enabled, CommandError> {
        enable(ctx, self).await
    }

    fn example() -> Enable {
        Enable {
            connection_type: ConnectionType::TabpySecure,
            extsvc_host: "tabpy.example".into(),
            extsvc_port: Port::new(9004),
            cert_file: Some(Upload {
                name: Some("tabpy.crt".into()),
                contents: b"-----BEGIN CERTIFICATE-----".to_vec().into(),
            }),
            extsvc_username: Some("user".into()),
            extsvc_password: Some(Secret::new("password".into())),
            connect_timeout_ms: ConnectTimeoutMs::default(),
            script_disabled: true,
            skip_check: true,
        }
    }
}

/// What a request names once its fields are checked against each other.
struct Checked {
    host: String,
    port: u16,
    cert: Option<custom_ca::CustomCaCert>,
}

fn check(args: &Enable) -> Result<Checked, CommandError> {
    let host = args.extsvc_host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(ExtsvcError::BadHost(args.extsvc_host.clone()).into());
    }
    if args.cert_file.is_some() && !args.connection_type.is_secure() {
        return Err(ExtsvcError::CertFileNotSecure(args.connection_type).into());
    }
    if args.extsvc_password.is_some() && args.extsvc_username.is_none() {
        return Err(ExtsvcError::PasswordWithoutUser.into());
    }
    if let Some(p) = &args.extsvc_password {
        check_secret(p, "--extsvc-password")?;
    }
    let cert = args
        .cert_file
        .as_ref()
        .map(|f| {
            let path = std::path::PathBuf::from(f.name_or("extsvc.crt"));
            custom_ca::parse(&path, f.contents.to_vec(), OffsetDateTime::now_utc())
        })
        .transpose()
        .map_err(ExtsvcError::CertFile)?;
    Ok(Checked {
        host: host.to_string(),
        port: args
            .extsvc_port
            .map_or(args.connection_type.default_port(), Port::get),
        cert,
    })
}

async fn enable(ctx: &Context, args: Enable) -> Result<Enabled, CommandError> {
    let Checked { host, port, cert } = check(&args)?;
    let (host, password) = (host.as_str(), args.extsvc_password.as_ref());
    let mut staging = Staging::begin(ctx.store_or_create()?)?;
    let next = staging.next();
    if next.extsvc.is_some() {
        return Err(ExtsvcError::AlreadyConfigured.into());
    }

    let mut warnings = Vec::new();
    let mut checked_tls_version = None;
    if args.connection_type.is_secure() {
        if args.skip_check {
            warnings.push(format!(
                "warning: --skip-check: staged without checking that {host}:{port} answers TLS with a trusted certificate"
            ));
        } else {
            let anchor = match (&cert, &next.custom_ca) {
                (Some(cert), _) => Some(cert.der.clone()),
                (None, Some(ca)) => Some(custom_ca::load(&staging.store.custom_ca_path(&ca.id))?),
                (None, None) => None,
            };
            let timeout = Duration::from_millis(args.connect_timeout_ms.0);
            checked_tls_version = Some(check_service(host, port, anchor, timeout).await?);
        }
    }

    let id = new_id()?;
    if let Some(cert) = &cert {
        custom_ca::store(cert, &staging.store.extsvc_cert_path(&id))?;
    }
    if let Some(password) = password {
        let mut keystore = Keystore::open(&staging.store.config_dir())?;
        keystore.set(&security::extsvc_password_name(&id), password)?;
    }
    let record = ExternalService {
        id,
        connection_type: args.connection_type,
        host: host.to_string(),
        port,
        cert_file_name: args.cert_file.as_ref().map(|f| f.file_name("extsvc.crt")),
        username: args.extsvc_username.clone(),
        has_password: password.is_some(),
        connect_timeout_ms: args.connect_timeout_ms.0,
        script_disabled: args.script_disabled,
    };
    staging.pending.extsvc = Some(Change::Set(record.clone()));
    staging.save()?;
    Ok(Enabled {
        checked_tls_version,
        record,
        warnings,
    })
}

/// Proves that `host:port` completes a TLS handshake with a certificate that `anchor` (else the system
/// CA bundle) vouches for; returns the TLS version.
async fn check_service(
    host: &str,
    port: u16,
    anchor: Option<rustls::pki_types::CertificateDer<'static>>,
    timeout: Duration,
) -> Result<String, ExtsvcError> {
    let roots = match anchor {
        Some(der) => {
            let mut roots = RootCertStore::empty();
            roots.add(der).map_err(ExtsvcError::Untrusted)?;
            roots
        }
        None => client::system_roots(),
    };
    client::check_handshake(host, port, Verification::Full(roots), timeout)
        .await
        .map_err(ExtsvcError::Handshake)
}

impl Report for Enabled {
    fn render(&self, out: &Output) {
        let (host, port) = (&self.record.host, self.record.port);
        for warning in &self.warnings {
            note!(out, "{warning}");
        }
        if let Some(version) = &self.checked_tls_version {
            say!(
                out,
                "Checked: {host}:{port} completed a {version} handshake with a trusted certificate."
            );
        }
        say!(out, "Staged the external service connection:");
        print_record(out, &self.record, "  ");
        apply_hint(out);
    }
}

no_arguments!(
    /// `vizql-extsvc-ssl disable`: stages removing the connection (or drops one that is only staged).
    Disable
);

impl Operation for Disable {
    const ACTION: &'static str = "vizql-extsvc-ssl disable";
    const PATH: &'static str = "/vizql-extsvc-ssl/disable";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        Ok(match stage_removal(ctx, &SLOT)? {
            Removal::Absent => {
                Staged::nothing("No external service connection is configured; nothing to stage.")
            }
            Removal::DroppedStaged => {
                Staged::nothing("Dropped the staged external service connection; none is applied.")
            }
            Removal::Staged => Staged::change("Staged: disable the external service connection."),
        })
    }

    fn example() -> Disable {
        Disable {}
    }
}

no_arguments!(
    /// `vizql-extsvc-ssl list`: the applied (and any staged) connection; never the password.
    List
);

impl Operation for List {
    const ACTION: &'static str = "vizql-extsvc-ssl list";
    const PATH: &'static str = "/vizql-extsvc-ssl";
    const VERB: Verb = Verb::Get;
    type Report = RecordList<ExternalService>;

    async fn run(self, ctx: &Context) -> Result<RecordList<ExternalService>, CommandError> {
        SLOT.list(ctx, |_, r| Ok(r.clone()))
    }

    fn example() -> List {
        List {}
    }
}

impl Report for RecordList<ExternalService> {
    fn render(&self, out: &Output) {
        let how = RecordListing {
            title: "External service (vizql-extsvc-ssl)",
            none: "enabled:             no",
            staged: &|_: &ExternalService| "enable".to_string(),
            removed: "disable",
        };
        list_record(out, how, self, print_record);
    }
}

fn print_record(out: &Output, record: &ExternalService, indent: &str) {
    let line = |label: &str, value: &str| say!(out, "{indent}{label:<21}{value}");
    line("enabled:", "yes");
    line("connection type:", &record.connection_type.to_string());
    line("host:", &record.host);
    line("port:", &record.port.to_string());
    line(
        "certificate file:",
        record.cert_file_name.as_deref().unwrap_or("none"),
    );
    line("username:", record.username.as_deref().unwrap_or("none"));
    line(
        "password:",
        if record.has_password {
            "set (encrypted at rest)"
        } else {
            "not set"
        },
    );
    line(
        "connect timeout:",
        &format!("{} ms", record.connect_timeout_ms),
    );
    line("scripts disabled:", &record.script_disabled.to_string());
}
