//! How a probe's report changes the hosts: the roles decided again, the epochs of a host that
//! stopped being what its sessions were routed to cancelled, the change logged and measured.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::{error, info, warn};

use super::decide::{self, PatroniSays, Probed, Role};
use super::status::{self, HostStatus};
use super::{Hosts, View, lock};
use crate::telemetry::names;

impl Hosts {
    /// Records one probe of host `index` (`Err`: it did not answer, and why) and decides the roles
    /// again, ending the sessions of a host that stopped being what they were routed to.
    pub fn observe(&self, index: usize, probe: Result<Probed, String>) {
        let mut o = lock(&self.observed);
        let now = SystemTime::now();
        match probe {
            Ok(p) => {
                o.probes[index] = Some(p);
                o.errors[index] = None;
                o.last_ok[index] = Some(now);
            }
            Err(e) => {
                o.probes[index] = None;
                o.errors[index] = Some(e);
            }
        }
        o.seen[index] = true;
        let probes = o.probes.clone();
        let d = decide::decide(&probes, &mut o.memory);
        // Read and replaced under the lock: two reports never publish out of order.
        let old = self.view();
        let mut epochs = old.epochs.clone();
        let mut ended = Vec::new();
        for (i, role) in d.roles.iter().enumerate() {
            let was = &old.roles[i];
            let reachable = probes[i].is_some();
            if role != was || reachable != old.reachable[i] {
                o.last_change[i] = now;
            }
            if role != was {
                self.log_change(i, was, role, probes[i].as_ref(), o.errors[i].as_deref());
            }
            // Positive evidence only: an unreachable host keeps its sessions, which end with
            // their sockets if it is really gone. A host seen as standby or refused — whatever it
            // was seen as before, an unreachable spell included — ends its primary-bound sessions.
            let not_primary = matches!(role, Role::Standby | Role::Refused(_)) && role != was;
            let superseded = d.primary.is_some_and(|p| p != i) && o.last_primary == Some(i);
            if not_primary || superseded {
                ended.push(std::mem::replace(
                    &mut epochs[i].primary,
                    self.closing.child_token(),
                ));
            }
            if matches!(role, Role::Refused(_)) && !matches!(was, Role::Refused(_)) {
                ended.push(std::mem::replace(
                    &mut epochs[i].standby,
                    self.closing.child_token(),
                ));
            }
        }
        if let Some(p) = d.primary
            && o.last_primary != Some(p)
        {
            if let Some(before) = o.last_primary {
                metrics::counter!(names::REPOSITORY_FAILOVERS).increment(1);
                warn!(from = %self.hosts[before].label, to = %self.hosts[p].label,
                      timeline = o.memory.timeline, "the repository failed over: a new host is the primary");
            }
            o.last_primary = Some(p);
        }
        let view = View {
            reachable: probes.iter().map(Option::is_some).collect(),
            roles: d.roles,
            primary: d.primary,
            lag_bytes: d.lag_bytes,
            lag_seconds: d.lag_seconds,
            all_probed: o.seen.iter().all(|s| *s),
            epochs,
        };
        self.record_metrics(&view, d.split_brain);
        // Published before the old epochs end: a session routed from the old view holds an old
        // token, which is cancelled now; one routed from the new view holds a new one.
        self.view.send_replace(Arc::new(view));
        drop(o);
        for token in ended {
            token.cancel();
        }
    }

    fn log_change(
        &self,
        i: usize,
        was: &Role,
        now: &Role,
        probe: Option<&Probed>,
        error: Option<&str>,
    ) {
        let host = &self.hosts[i].label;
        let timeline = probe.and_then(|p| p.timeline);
        match now {
            Role::Refused(reason) => {
                error!(%host, from = was.name(), ?timeline, %reason, "a repository host is refused")
            }
            Role::Unknown => {
                let error = error.unwrap_or("no answer");
                warn!(%host, from = was.name(), %error, "a repository host stopped answering its probe")
            }
            _ => info!(%host, from = was.name(), to = now.name(), ?timeline,
                       "a repository host changed role"),
        }
    }

    fn record_metrics(&self, view: &View, split_brain: bool) {
        for (i, host) in self.hosts.iter().enumerate() {
            let label = host.label.clone();
            metrics::gauge!(names::REPOSITORY_HOST_UP, "host" => label.clone())
                .set(f64::from(u8::from(view.reachable[i])));
            for role in ["primary", "standby", "unknown", "refused"] {
                metrics::gauge!(names::REPOSITORY_HOST_ROLE, "host" => label.clone(), "role" => role)
                    .set(f64::from(u8::from(view.roles[i].name() == role)));
            }
            if let Some(lag) = view.lag_bytes[i] {
                metrics::gauge!(names::REPOSITORY_STANDBY_LAG_BYTES, "host" => label)
                    .set(lag as f64);
            }
        }
        metrics::gauge!(names::REPOSITORY_SPLIT_BRAIN).set(f64::from(u8::from(split_brain)));
    }

    /// Every host as `topology list-repository-hosts` shows it; `warm` counts the pool's idle
    /// backends per host.
    pub fn status(&self, warm: &[usize]) -> Vec<HostStatus> {
        let o = lock(&self.observed);
        let view = self.view();
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostStatus {
                address: h.label.clone(),
                role: view.roles[i].name().to_string(),
                reason: match &view.roles[i] {
                    Role::Refused(r) => Some(r.clone()),
                    _ => None,
                },
                reachable: view.reachable[i],
                probed: self.probed(),
                timeline: o.probes[i].as_ref().and_then(|p| p.timeline),
                lag_bytes: view.lag_bytes[i],
                lag_seconds: view.lag_seconds[i],
                sessions: h.sessions.load(Ordering::Relaxed),
                warm: warm.get(i).copied().unwrap_or(0),
                last_ok: o.last_ok[i].map(status::rfc3339),
                last_change: status::rfc3339(o.last_change[i]),
                error: o.errors[i].clone(),
                patroni: o.probes[i].as_ref().and_then(|p| p.patroni.as_ref()).map(
                    |says| match says {
                        PatroniSays::Leader => "leader".to_string(),
                        PatroniSays::NotLeader => "not leader".to_string(),
                        PatroniSays::Silent(e) => format!("no answer: {e}"),
                    },
                ),
            })
            .collect()
    }
}
