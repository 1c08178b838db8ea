//! How long the certificates pgssl serves or trusts have left: the one clients see (generated or the
//! administrator's own), the custom CA of its outgoing TLS, the CAs client certificates must chain to,
//! and the external analytics service's certificate. Each is published as
//! `pgssl_certificate_expiry_seconds{certificate, subject}` (seconds left, negative once expired) and
//! warned about from 30 days before, so that an expiry is an alert rather than an outage.

use std::path::PathBuf;

use tracing::warn;

use crate::control::state::StateStore;
use crate::tls::certs;

/// Warned about from this many days before expiry.
pub const WARN_DAYS: i64 = 30;

/// One certificate and its time left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// What pgssl does with it: `served`, `custom_ca`, `client_ca`, `extsvc`.
    pub certificate: &'static str,
    /// Its subject.
    pub subject: String,
    /// Its file.
    pub path: PathBuf,
    /// Seconds until its notAfter (negative: expired).
    pub seconds_left: i64,
}

/// Every certificate the applied state serves or trusts, read from its files (an unreadable one is
/// left out: loading the state reports it).
pub fn certificates(store: &StateStore) -> Vec<Expiry> {
    let Ok(applied) = store.applied() else {
        return Vec::new();
    };
    let mut files: Vec<(&'static str, PathBuf)> = Vec::new();
    if let Some(paths) = store.serving_cert_paths(&applied) {
        files.push(("served", paths.cert));
    }
    if let Some(ca) = &applied.custom_ca {
        files.push(("custom_ca", store.custom_ca_path(&ca.id)));
    }
    if let Some(extsvc) = applied
        .extsvc
        .as_ref()
        .filter(|e| e.cert_file_name.is_some())
    {
        files.push(("extsvc", store.extsvc_cert_path(&extsvc.id)));
    }
    let mut out: Vec<Expiry> = files
        .into_iter()
        .filter_map(|(certificate, path)| {
            let chain = certs::read_chain(&path).ok()?;
            let info = certs::describe(&chain[0], chain.len(), &path).ok()?;
            Some(expiry(certificate, &info, path))
        })
        .collect();
    if let Some(m) = &applied.mutual_ssl {
        let path = store.mutual_ssl_dir(&m.id).join("ca.pem");
        for ca in certs::read_chain(&path).unwrap_or_default() {
            if let Ok(info) = certs::describe(&ca, 1, &path) {
                out.push(expiry("client_ca", &info, path.clone()));
            }
        }
    }
    out
}

fn expiry(certificate: &'static str, info: &certs::CertInfo, path: PathBuf) -> Expiry {
    Expiry {
        certificate,
        subject: info.subject.clone(),
        path,
        seconds_left: (info.not_after - time::OffsetDateTime::now_utc()).whole_seconds(),
    }
}

/// Publishes the gauges and, with `warn`, warns about each certificate within [`WARN_DAYS`] of
/// expiry; returns them.
pub fn publish(store: &StateStore, warn: bool) -> Vec<Expiry> {
    let all = certificates(store);
    for e in &all {
        metrics::gauge!(
            crate::telemetry::names::CERTIFICATE_EXPIRY,
            "certificate" => e.certificate,
            "subject" => e.subject.clone()
        )
        .set(e.seconds_left as f64);
        let days_left = e.seconds_left.div_euclid(86_400);
        if warn && days_left < WARN_DAYS {
            warn!(certificate = e.certificate, subject = %e.subject, file = %e.path.display(), days_left,
                  "a certificate pgssl serves or trusts expires soon (or has expired); renew it");
        }
    }
    all
}

/// Publishes every minute until `stop` (a reload's change shows within a minute), warning at start and
/// then once a day.
pub async fn watch(store: StateStore, stop: tokio_util::sync::CancellationToken) {
    const TICK: std::time::Duration = std::time::Duration::from_secs(60);
    const WARN_EVERY: u32 = 24 * 60;
    let mut ticks: u32 = 0;
    loop {
        let s = store.clone();
        let warn = ticks.is_multiple_of(WARN_EVERY);
        let _ = tokio::task::spawn_blocking(move || publish(&s, warn)).await;
        ticks = ticks.wrapping_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}
