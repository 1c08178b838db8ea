//! Probing the repository's hosts: each host, every `repository.probe_interval`, is asked what it is
//! (`pg_is_in_recovery()`, its timeline, system identifier and WAL position) over one kept session as
//! `repository.probe_user`, through the same TLS settings as client sessions. Each answer, or the
//! failure to get one, goes to [`Hosts::observe`], which decides the roles.
//!
//! While no host is the primary, every host is asked every [`FAST_INTERVAL`], so that a promotion is
//! seen within a fraction of a second.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::session::{Login, Session, describe};
use crate::keystore::Secret;
use crate::proxy::repository::RepositoryConnector;
use crate::proxy::repository::hosts::{Hosts, PatroniSays, Probed};
use crate::proxy::settings::SettingsCell;
use crate::repository::patroni::PatroniClient;

/// The pace while a failover may be under way.
pub const FAST_INTERVAL: Duration = Duration::from_millis(200);

/// One round trip says everything the decision needs. `pg_walfile_name` cannot run in recovery,
/// hence the CASE; `pg_stat_wal_receiver` shows its timeline only to `pg_read_all_stats` (part of
/// `pg_monitor`), else the last checkpoint's stands in.
const QUERY: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() \
      THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), \
                    (SELECT timeline_id FROM pg_control_checkpoint())) \
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
    (SELECT system_identifier FROM pg_control_system())::text, \
    ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) \
      - '0/0'::pg_lsn)::int8, \
    EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, \
    pg_postmaster_start_time()::text";

/// How the hosts are probed.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Between probes of a host whose role is settled.
    pub interval: Duration,
    /// For one probe, connecting included.
    pub timeout: Duration,
    /// The role probes log in as (`repository.probe_user`).
    pub user: String,
    /// Its database.
    pub database: String,
    /// Its password (`PGSSL_UPSTREAM_PASSWORD`).
    pub password: Option<Secret>,
    /// Patroni's REST API, one URL per host in the hosts' order (`repository.patroni`).
    pub patroni: Option<Arc<PatroniClient>>,
}

/// Probes every host until `stop`; nothing to do for a single host.
pub async fn run(
    hosts: Arc<Hosts>,
    options: ProbeOptions,
    cell: SettingsCell,
    stop: CancellationToken,
) {
    if !hosts.probed() {
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..hosts.len() {
        let (hosts, options, cell, stop) =
            (hosts.clone(), options.clone(), cell.clone(), stop.clone());
        tasks.spawn(async move { probe_host(&hosts, index, &options, &cell, &stop).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn probe_host(
    hosts: &Hosts,
    index: usize,
    options: &ProbeOptions,
    cell: &SettingsCell,
    stop: &CancellationToken,
) {
    let Some(connector) = hosts.connector(index).cloned() else {
        return;
    };
    let mut kept: Option<Session> = None;
    let mut asked = hosts.probe_requests();
    loop {
        asked.mark_unchanged();
        let attempt = probe_once(&mut kept, &*connector, options, cell);
        let mut result = match tokio::time::timeout(options.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the probe did not answer within {}",
                humantime::format_duration(options.timeout)
            )),
        };
        if let (Ok(probed), Some(client)) = (&mut result, &options.patroni) {
            probed.patroni = Some(ask_patroni(client, index).await);
        }
        if let Err(e) = &result {
            debug!(host = %connector, error = %e, "repository probe failed");
            // Whatever failed, the next probe starts from a new session.
            kept = None;
        }
        hosts.observe(index, result);
        // Fast while there is no primary (a failover may be under way); a host that is down while
        // another is primary is asked at the usual pace.
        let settled = hosts.view().primary.is_some();
        let pace = if settled {
            options.interval
        } else {
            FAST_INTERVAL.min(options.interval)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pace) => {}
            _ = asked.changed() => {}
        }
    }
}

async fn probe_once(
    kept: &mut Option<Session>,
    connector: &dyn RepositoryConnector,
    options: &ProbeOptions,
    cell: &SettingsCell,
) -> Result<Probed, String> {
    if kept.is_none() {
        let tls = cell.current().repository_tls.clone();
        let stream = connector
            .connect(options.timeout, &tls)
            .await
            .map_err(|e| e.to_string())?;
        let login = Login {
            user: &options.user,
            database: &options.database,
            application_name: "pgssl probe",
            password: options.password.as_ref(),
        };
        let session = Session::start(stream, &login)
            .await
            .map_err(|e| format!("as probe user {}: {e}", options.user))?;
        *kept = Some(session);
    }
    let Some(session) = kept.as_ref() else {
        return Err("no probe session".into());
    };
    let rows = session
        .query_typed(QUERY, &[])
        .await
        .map_err(|e| describe(&e))?;
    let row = rows.first().ok_or("the probe query returned no row")?;
    let read = |e: tokio_postgres::Error| describe(&e);
    Ok(Probed {
        in_recovery: row.try_get(0).map_err(read)?,
        timeline: row
            .try_get::<_, Option<i32>>(1)
            .map_err(read)?
            .and_then(|t| u32::try_from(t).ok()),
        system_id: row.try_get(2).map_err(read)?,
        lsn: row
            .try_get::<_, Option<i64>>(3)
            .map_err(read)?
            .and_then(|l| u64::try_from(l).ok()),
        replay_age: row.try_get(4).map_err(read)?,
        started: row.try_get(5).map_err(read)?,
        patroni: None,
    })
}

/// What Patroni says of host `index`: whether it holds the leader lock (its client bounds the call
/// by `repository.probe_timeout`).
async fn ask_patroni(client: &PatroniClient, index: usize) -> PatroniSays {
    match client.holds_leader_lock(index).await {
        Ok(true) => PatroniSays::Leader,
        Ok(false) => PatroniSays::NotLeader,
        Err(e) => PatroniSays::Silent(e.to_string()),
    }
}
