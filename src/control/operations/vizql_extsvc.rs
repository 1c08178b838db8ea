//! `pgssl security vizql-extsvc-ssl enable --connection-type T --extsvc-host H [--extsvc-port P] ...
//! | disable | list`: the external analytics service (Rserve or TabPy) connection.
//!
//! For the `-secure` types `enable` proves the service answers TLS with a certificate it can verify
//! (with `--cert-file`, else the custom CA, else the system CA bundle) before staging anything.

use std::path::PathBuf;
use std::time::Duration;

use rustls::RootCertStore;
use time::OffsetDateTime;

use super::{
    CommandError, Context, RecordListing, apply_hint, block_on, check_secret, file_name,
    list_record, prune,
};
use crate::control::state::custom_ca;
use crate::control::state::security::{self, Change, ConnectionType, ExternalService};
use crate::control::state::store::new_id;
use crate::keystore::{Keystore, Secret};
use crate::tls::client::{self, Verification};

/// The model's default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Longest connect timeout accepted, in milliseconds.
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;

/// The flags of `enable`.
#[derive(Debug, Clone)]
pub struct EnableArgs {
    /// `--connection-type`.
    pub connection_type: ConnectionType,
    /// `--extsvc-host`.
    pub host: String,
    /// `--extsvc-port` (default by type).
    pub port: Option<u16>,
    /// `--cert-file` (secure types only).
    pub cert_file: Option<PathBuf>,
    /// `--extsvc-username`.
    pub username: Option<String>,
    /// `--extsvc-password`.
    pub password: Option<Secret>,
    /// `--connect-timeout-ms`.
    pub connect_timeout_ms: u64,
    /// `--script-disabled`.
    pub script_disabled: bool,
    /// `--skip-check`: stage a secure configuration without the live handshake.
    pub skip_check: bool,
}

/// Checks and stages a new external service connection.
pub fn enable(ctx: &Context, args: &EnableArgs) -> Result<(), CommandError> {
    let out = &ctx.out;
    let refuse = |m: String| Err(CommandError::Invalid(m));
    let host = args.host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return refuse(format!(
            "--extsvc-host '{}' is not a host name or IP address",
            args.host
        ));
    }
    if args.cert_file.is_some() && !args.connection_type.is_secure() {
        return refuse(format!(
            "--cert-file applies only to rserve-secure and tabpy-secure, not {}",
            args.connection_type
        ));
    }
    if args.password.is_some() && args.username.is_none() {
        return refuse("--extsvc-password needs --extsvc-username".into());
    }
    let port = args.port.unwrap_or(args.connection_type.default_port());
    let password = args.password.as_ref();
    if let Some(p) = password {
        check_secret(p, "--extsvc-password")?;
    }
    let cert = args
        .cert_file
        .as_deref()
        .map(|f| custom_ca::read(f, OffsetDateTime::now_utc()))
        .transpose()
        .map_err(|e| CommandError::Invalid(e.to_string()))?;

    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let mut pending = store.pending()?;
    let next = pending.merged_into(&store.applied()?);
    if next.extsvc.is_some() {
        return refuse(
            "an external service connection is already configured; run 'pgssl security vizql-extsvc-ssl disable' first".into(),
        );
    }

    if args.connection_type.is_secure() {
        if args.skip_check {
            note!(
                out,
                "warning: --skip-check: staged without checking that {host}:{port} answers TLS with a trusted certificate"
            );
        } else {
            let anchor = match (&cert, &next.custom_ca) {
                (Some(cert), _) => Some(cert.der.clone()),
                (None, Some(ca)) => Some(custom_ca::load(&store.custom_ca_path(&ca.id))?),
                (None, None) => None,
            };
            let roots = match anchor {
                Some(der) => {
                    let mut roots = RootCertStore::empty();
                    roots.add(der).map_err(|e| {
                        CommandError::Invalid(format!("cannot trust --cert-file: {e}"))
                    })?;
                    roots
                }
                None => client::system_roots(),
            };
            let timeout = Duration::from_millis(args.connect_timeout_ms);
            let version = block_on(client::check_handshake(
                host,
                port,
                Verification::Full(roots),
                timeout,
            ))?
            .map_err(|e| {
                CommandError::Invalid(format!(
                    "{e}; nothing was staged (fix the service or --cert-file, or use --skip-check to stage anyway)"
                ))
            })?;
            say!(
                out,
                "Checked: {host}:{port} completed a {version} handshake with a trusted certificate."
            );
        }
    }

    let id = new_id()?;
    if let Some(cert) = &cert {
        custom_ca::store(cert, &store.extsvc_cert_path(&id))?;
    }
    if let Some(password) = password {
        let mut keystore = Keystore::open(&store.config_dir())?;
        keystore.set(&security::extsvc_password_name(&id), password)?;
    }
    let record = ExternalService {
        id,
        connection_type: args.connection_type,
        host: host.to_string(),
        port,
        cert_file_name: args.cert_file.as_deref().map(file_name),
        username: args.username.clone(),
        has_password: password.is_some(),
        connect_timeout_ms: args.connect_timeout_ms,
        script_disabled: args.script_disabled,
    };
    say!(out, "Staged the external service connection:");
    print_record(out, &record, "  ");
    pending.extsvc = Some(Change::Set(record));
    store.save_pending(&pending)?;
    apply_hint(out);
    Ok(())
}

/// Stages removing the connection (or drops one that is only staged).
pub fn disable(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let mut pending = store.pending()?;
    let staged_only = applied.extsvc.is_none();
    if pending.merged_into(&applied).extsvc.is_none() {
        say!(
            out,
            "No external service connection is configured; nothing to stage."
        );
        return Ok(());
    }
    pending.extsvc = Some(Change::Remove);
    store.save_pending(&pending)?;
    prune(&store, out);
    if staged_only {
        say!(
            out,
            "Dropped the staged external service connection; none is applied."
        );
    } else {
        say!(out, "Staged: disable the external service connection.");
        apply_hint(out);
    }
    Ok(())
}

/// Shows the applied (and any staged) connection; never the password.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    let how = RecordListing {
        title: "External service (vizql-extsvc-ssl)",
        none: "enabled:             no",
        staged: &|_: &ExternalService| "enable".to_string(),
        removed: "disable",
    };
    list_record(
        out,
        how,
        applied.extsvc.as_ref(),
        pending.extsvc.as_ref(),
        |record, indent| {
            print_record(out, record, indent);
            Ok(())
        },
    )
}

fn print_record(out: &super::Output, record: &ExternalService, indent: &str) {
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
