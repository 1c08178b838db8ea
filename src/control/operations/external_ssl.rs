//! `pgssl security external-ssl enable --cert-file F --key-file F [--chain-file F] [--passphrase P|-]
//! [--protocols LIST] | disable | list`: serve the administrator's own certificate on the client
//! listener instead of the generated one.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::{
    CommandError, Context, RecordListing, apply_hint, check_secret, describe_expiry, file_name,
    list_record, prune,
};
use crate::control::state::StateStore;
use crate::control::state::external_cert::{self, SuppliedFiles};
use crate::control::state::security::{self, Change, ExternalSsl};
use crate::control::state::store::new_id;
use crate::keystore::{Keystore, Secret};
use crate::tls::certs;
use crate::tls::protocols::{self, DEFAULT_PROTOCOLS};

/// The flags of `enable`.
#[derive(Debug, Clone)]
pub struct EnableArgs {
    /// `--cert-file`.
    pub cert_file: PathBuf,
    /// `--key-file`.
    pub key_file: PathBuf,
    /// `--chain-file`.
    pub chain_file: Option<PathBuf>,
    /// `--passphrase`.
    pub passphrase: Option<Secret>,
    /// `--protocols`.
    pub protocols: Option<String>,
}

/// Validates the files and stages them.
pub fn enable(ctx: &Context, args: &EnableArgs) -> Result<(), CommandError> {
    let out = &ctx.out;
    let protocol_list = args.protocols.as_deref().unwrap_or(DEFAULT_PROTOCOLS);
    let parsed =
        protocols::parse(protocol_list).map_err(|e| CommandError::Invalid(e.to_string()))?;
    for note in &parsed.notes {
        say!(out, "note: {note}");
    }
    let passphrase = args.passphrase.as_ref();
    if let Some(p) = passphrase {
        check_secret(p, "--passphrase")?;
    }
    let files = SuppliedFiles {
        cert: &args.cert_file,
        key: &args.key_file,
        chain: args.chain_file.as_deref(),
    };
    let validated = external_cert::validate(files, passphrase, OffsetDateTime::now_utc())
        .map_err(|e| CommandError::Invalid(e.to_string()))?;
    for warning in &validated.warnings {
        note!(out, "warning: {warning}");
    }

    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let id = new_id()?;
    validated.store(&store.external_ssl_dir(&id))?;
    if let Some(passphrase) = passphrase {
        let mut keystore = Keystore::open(&store.config_dir())?;
        keystore.set(&security::passphrase_name(&id), passphrase)?;
    }
    let mut pending = store.pending()?;
    pending.external_ssl = Some(Change::Set(ExternalSsl {
        id,
        cert_file_name: file_name(&args.cert_file),
        key_file_name: file_name(&args.key_file),
        chain_file_name: args.chain_file.as_deref().map(file_name),
        protocols: protocol_list.to_string(),
        encrypted_key: validated.encrypted,
    }));
    store.save_pending(&pending)?;
    prune(&store, out);

    let info = &validated.info;
    say!(
        out,
        "Staged external SSL with the certificate from {}:",
        file_name(&args.cert_file)
    );
    say!(out, "  subject:             {}", info.subject);
    say!(out, "  issuer:              {}", info.issuer);
    say!(
        out,
        "  subject alt names:   {}",
        info.subject_alt_names.join(", ")
    );
    say!(
        out,
        "  expires:             {}",
        describe_expiry(info.not_after)
    );
    say!(out, "  chain length:        {}", info.chain_len);
    say!(out, "  protocols:           {}", parsed.set);
    if !pending
        .merged_into(&store.applied()?)
        .repository_ssl
        .mode
        .offers_tls()
    {
        say!(
            out,
            "note: repository SSL is off, so no certificate is served until 'pgssl security repository-ssl enable' is applied too"
        );
    }
    apply_hint(out);
    Ok(())
}

/// Stages serving the generated certificate again.
pub fn disable(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let mut pending = store.pending()?;
    pending.external_ssl = Some(Change::Remove);
    store.save_pending(&pending)?;
    prune(&store, out);
    if applied.external_ssl.is_none() {
        say!(out, "External SSL is not enabled; nothing to stage.");
    } else {
        say!(
            out,
            "Staged: disable external SSL and serve the generated repository certificate again."
        );
        apply_hint(out);
    }
    Ok(())
}

/// Shows the applied (and any staged) external certificate, without file locations.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    let how = RecordListing {
        title: "External SSL",
        none: "enabled:             no (the generated repository certificate is served)",
        staged: &|_: &ExternalSsl| "enable with a new certificate".to_string(),
        removed: "disable",
    };
    list_record(
        out,
        how,
        applied.external_ssl.as_ref(),
        pending.external_ssl.as_ref(),
        |record, indent| print_record(out, &store, record, indent),
    )
}

fn print_record(
    out: &super::Output,
    store: &StateStore,
    external: &ExternalSsl,
    indent: &str,
) -> Result<(), CommandError> {
    let info = certs::read_info(&store.external_ssl_paths(&external.id).cert)?;
    let protocols = protocols::parse(&external.protocols)
        .map(|p| p.set.to_string())
        .unwrap_or_else(|e| e.to_string());
    let line = |label: &str, value: &str| say!(out, "{indent}{label:<21}{value}");
    line("enabled:", "yes");
    line("certificate file:", &external.cert_file_name);
    line(
        "key file:",
        &format!(
            "{}{}",
            external.key_file_name,
            if external.encrypted_key {
                " (encrypted; passphrase in the keystore)"
            } else {
                ""
            }
        ),
    );
    line(
        "chain file:",
        external.chain_file_name.as_deref().unwrap_or("none"),
    );
    line("subject:", &info.subject);
    line("issuer:", &info.issuer);
    line("subject alt names:", &info.subject_alt_names.join(", "));
    line("expires:", &describe_expiry(info.not_after));
    line("chain length:", &info.chain_len.to_string());
    line(
        "protocols:",
        &format!("{} ({protocols})", external.protocols),
    );
    line("SHA-256 fingerprint:", &info.sha256_fingerprint);
    Ok(())
}
