//! The served certificate renews itself before it expires: `serve` checks at start and every hour,
//! and when the certificate the repository CA issued expires within `tls.renew_before_days`, it
//! issues a new one from the same CA (clients that trust the CA notice nothing) and serves it — in
//! a cluster through a committed change, as any command's, so every node serves it. Nodes that check
//! at once race for the cluster's lock; the ones that lose find a fresh certificate and do nothing.
//!
//! A self-signed certificate from an earlier version is not renewed behind the administrator's
//! back (its clients pinned it): the check says once to run `regenerate-internal-tokens`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::operations::model::{Operation, Said, Verb, execute};
use crate::control::operations::{CommandError, Context, lock};
use crate::control::state::served_ca;
use crate::keystore::Keystore;
use crate::tls::certs;

/// How often the served certificate's expiry is checked.
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Renews the served certificate when it is due (an operation of `serve`'s own, not a command).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Renew {}

impl Operation for Renew {
    const ACTION: &'static str = "renew the served certificate";
    const PATH: &'static str = "/internal/renew";
    const VERB: Verb = Verb::Post;
    type Report = Said;

    async fn run(self, ctx: &Context) -> Result<Said, CommandError> {
        renew_if_due(ctx).await
    }

    fn example() -> Renew {
        Renew {}
    }
}

/// The served certificate's paths, chain and time left, when pgssl serves its own and it is due
/// for renewal.
fn due(ctx: &Context) -> Result<Option<(certs::CertPaths, usize, time::Duration)>, CommandError> {
    let store = ctx.store()?;
    let applied = store.applied()?;
    let Some(paths) = store
        .cert_paths_of(&applied)
        .filter(|_| applied.repository_ssl.mode.offers_tls() && applied.external_ssl.is_none())
    else {
        return Ok(None);
    };
    let chain = certs::read_chain(&paths.cert)?;
    let info = certs::describe(&chain[0], chain.len(), &paths.cert)?;
    let left = info.not_after - time::OffsetDateTime::now_utc();
    let before = time::Duration::days(i64::from(ctx.config.tls.renew_before_days));
    Ok((left <= before).then_some((paths, chain.len(), left)))
}

async fn renew_if_due(ctx: &Context) -> Result<Said, CommandError> {
    let store = ctx.store()?;
    let _lock = lock(&store)?;
    let tls = &ctx.config.tls;
    // Again under the lock: another node's renewal may have been installed meanwhile.
    let Some((paths, chain_len, left)) = due(ctx)? else {
        return Ok(Said::one(""));
    };
    if chain_len == 1 {
        return Ok(Said::one(format!(
            "the served certificate expires in {} days and is self-signed (made by an earlier version): run 'pgssl security regenerate-internal-tokens' to have the repository CA issue it, then give clients 'get-certificate-file' once",
            left.whole_days()
        )));
    }
    let mut keystore = Keystore::open(&store.config_dir())?;
    served_ca::promote_due(&mut keystore, tls.ca_overlap_days)?;
    let renewed = served_ca::issue(
        &mut keystore,
        &paths,
        &tls.subject_alt_names,
        tls.certificate_validity_days,
    )?;
    if crate::control::cluster::Membership::read(&store.config_dir())?.is_none() {
        ctx.node.reload().await?;
    }
    Ok(Said::one(format!(
        "renewed the served certificate {} days before it expired: now SHA-256 {}, issued by {}, until {}",
        left.whole_days(),
        renewed.sha256_fingerprint,
        renewed.issuer,
        renewed.not_after
    )))
}

/// Checks at start and every hour until `stop`.
pub async fn watch(ctx: Context, stop: CancellationToken) {
    let mut said_once = None;
    loop {
        // Read without the lock first: a certificate that is not due costs no cluster change.
        let checked = match due(&ctx) {
            Ok(Some(_)) => execute(Renew {}, &ctx).await,
            Ok(None) => Ok(Said::one("")),
            Err(e) => Err(e),
        };
        match checked {
            Ok(said) => {
                let line = said.said.join(" ");
                if line.starts_with("renewed") {
                    info!("{line}");
                } else if !line.is_empty() && said_once.as_ref() != Some(&line) {
                    warn!("{line}");
                    said_once = Some(line);
                }
            }
            Err(e) => {
                warn!(error = %e, "could not renew the served certificate; trying again in an hour")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}
