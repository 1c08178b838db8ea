//! `pgssl security custom-cert add --cert-file F | delete | list`: the one CA certificate pgssl trusts
//! for its own outgoing TLS (the repository with `server.upstream_tls`, and the external service check).

use std::path::Path;

use time::OffsetDateTime;

use super::{
    CommandError, Context, RecordListing, apply_hint, describe_expiry, file_name, list_record,
    prune,
};
use crate::control::state::custom_ca;
use crate::control::state::security::{Change, CustomCa};
use crate::control::state::store::new_id;
use crate::tls::certs;

/// Stages the CA certificate in `cert_file` (PEM or DER); refuses when one is already added.
pub fn add(ctx: &Context, cert_file: &Path) -> Result<(), CommandError> {
    let out = &ctx.out;
    let ca = custom_ca::read(cert_file, OffsetDateTime::now_utc())
        .map_err(|e| CommandError::Invalid(e.to_string()))?;
    let store = ctx.store_or_create()?;
    let _lock = store.lock()?;
    let mut pending = store.pending()?;
    if pending.merged_into(&store.applied()?).custom_ca.is_some() {
        return Err(CommandError::Invalid(
            "a custom CA certificate is already added; remove it with 'pgssl security custom-cert delete' first".into(),
        ));
    }
    let id = new_id()?;
    custom_ca::store(&ca, &store.custom_ca_path(&id))?;
    let name = file_name(cert_file);
    pending.custom_ca = Some(Change::Set(CustomCa {
        id,
        cert_file_name: name.clone(),
    }));
    store.save_pending(&pending)?;
    say!(out, "Staged the custom CA certificate from {name}:");
    print_info(out, &ca.info, "  ");
    if !ca.is_ca {
        note!(
            out,
            "warning: {name} is not marked as a CA (basicConstraints); it can only authenticate a server that presents this very certificate"
        );
    }
    apply_hint(out);
    Ok(())
}

/// Stages removing the custom CA (or drops one that is only staged).
pub fn delete(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let _lock = store.lock()?;
    let applied = store.applied()?;
    let mut pending = store.pending()?;
    if pending.merged_into(&applied).custom_ca.is_none() {
        return Err(CommandError::Invalid(
            "there is no custom CA certificate to delete".into(),
        ));
    }
    pending.custom_ca = Some(Change::Remove);
    store.save_pending(&pending)?;
    prune(&store, out);
    if applied.custom_ca.is_some() {
        say!(out, "Staged: delete the custom CA certificate.");
        apply_hint(out);
    } else {
        say!(
            out,
            "Dropped the staged custom CA certificate; none is applied."
        );
    }
    Ok(())
}

/// Shows the applied (and any staged) custom CA.
pub fn list(ctx: &Context) -> Result<(), CommandError> {
    let out = &ctx.out;
    let store = ctx.store()?;
    let applied = store.applied()?;
    let pending = store.pending()?;
    let how = RecordListing {
        title: "Custom CA certificate",
        none: "none (outgoing TLS trusts the system CA bundle)",
        staged: &|ca: &CustomCa| format!("add {}", ca.cert_file_name),
        removed: "delete",
    };
    list_record(
        out,
        how,
        applied.custom_ca.as_ref(),
        pending.custom_ca.as_ref(),
        |ca, indent| {
            say!(out, "{indent}{:<21}{}", "file:", ca.cert_file_name);
            print_info(
                out,
                &certs::read_info(&store.custom_ca_path(&ca.id))?,
                indent,
            );
            Ok(())
        },
    )
}

fn print_info(out: &super::Output, info: &crate::control::state::CertInfo, indent: &str) {
    let line = |label: &str, value: &str| say!(out, "{indent}{label:<21}{value}");
    line("subject:", &info.subject);
    line("issuer:", &info.issuer);
    line("expires:", &describe_expiry(info.not_after));
    line("SHA-256 fingerprint:", &info.sha256_fingerprint);
}
