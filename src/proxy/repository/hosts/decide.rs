//! Which host is the primary: a pure function of the latest probe of each host and of what was seen
//! before (the cluster's system identifier, the highest primary timeline). pgssl never elects a
//! primary; it reads what PostgreSQL says of itself (`pg_is_in_recovery()`, the timeline of its WAL)
//! and, when two hosts both say they are primary, believes the one on the later timeline, which is
//! the one promoted last.

use serde::Serialize;

/// What one probe of a host found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// The live timeline: from the WAL file name on a primary, the received (or last checkpoint's)
    /// one on a standby.
    pub timeline: Option<u32>,
    /// `pg_control_system().system_identifier`: hosts of one replicated cluster share it.
    pub system_id: Option<String>,
    /// The current WAL location on a primary, the replayed one on a standby, in bytes.
    pub lsn: Option<u64>,
    /// Seconds since the last replayed transaction committed on the primary (standby only).
    pub replay_age: Option<f64>,
    /// `pg_postmaster_start_time()`: with the system identifier, tells one server listed twice.
    pub started: Option<String>,
    /// What Patroni says of the host, where `repository.patroni` is configured.
    pub patroni: Option<PatroniSays>,
}

/// What Patroni's REST API (`GET /leader`) says of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatroniSays {
    /// It holds the leader lock.
    Leader,
    /// It does not.
    NotLeader,
    /// Patroni did not answer: PostgreSQL's own word stands.
    Silent(String),
}

/// A host's role as pgssl routes by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "role", content = "reason")]
pub enum Role {
    /// Not probed successfully yet, or unreachable at the last probe.
    Unknown,
    /// The one host primary-bound sessions go to.
    Primary,
    /// In recovery (a hot standby).
    Standby,
    /// Never used: another cluster's host, or a primary that lost to another one.
    Refused(String),
}

impl Role {
    /// The role's name in listings and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Refused(_) => "refused",
        }
    }
}

/// What the decision carries from one round to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The system identifier of the first primary seen: the cluster pgssl fronts.
    pub system_id: Option<String>,
    /// The highest timeline a primary was seen on: a host on a lower one is a demoted primary that
    /// does not know it yet, and is never primary again.
    pub timeline: u32,
}

/// Every host's role, and the lag of each standby.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// One per host, in the configured order.
    pub roles: Vec<Role>,
    /// The index of the primary, if there is exactly one.
    pub primary: Option<usize>,
    /// Bytes of WAL each standby has still to replay (known while a primary is).
    pub lag_bytes: Vec<Option<u64>>,
    /// Seconds each standby is behind (0 when it has replayed everything the primary has).
    pub lag_seconds: Vec<Option<f64>>,
    /// Whether more than one host claimed to be primary.
    pub split_brain: bool,
}

/// Whether two probes came from one server: one cluster, one postmaster start.
fn same_server(a: &Probed, b: &Probed) -> bool {
    a.system_id.is_some()
        && a.system_id == b.system_id
        && a.started.is_some()
        && a.started == b.started
}

/// Decides every host's role from its latest probe (`None`: unreachable), updating `memory`.
pub fn decide(probes: &[Option<Probed>], memory: &mut Memory) -> Decision {
    let mut roles = vec![Role::Unknown; probes.len()];
    // The cluster is the one the first primary seen belongs to.
    if memory.system_id.is_none() {
        memory.system_id = probes
            .iter()
            .flatten()
            .find(|p| !p.in_recovery)
            .and_then(|p| p.system_id.clone());
    }
    // One server listed under two names (a VIP beside the host, `localhost` beside 127.0.0.1)
    // would look like two primaries: the later listing is refused.
    for (i, probe) in probes.iter().enumerate() {
        let Some(p) = probe else { continue };
        if let Some(j) = (0..i).find(|&j| probes[j].as_ref().is_some_and(|q| same_server(p, q))) {
            roles[i] = Role::Refused(format!(
                "the same server as host {} of repository.address, listed twice",
                j + 1
            ));
        }
    }
    let mut candidates = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let Some(p) = probe.as_ref().filter(|_| roles[i] == Role::Unknown) else {
            continue;
        };
        if let (Some(ours), Some(theirs)) = (&memory.system_id, &p.system_id)
            && ours != theirs
        {
            roles[i] = Role::Refused(format!(
                "belongs to another cluster (system identifier {theirs}, not {ours})"
            ));
            continue;
        }
        if p.in_recovery {
            roles[i] = Role::Standby;
            continue;
        }
        let timeline = p.timeline.unwrap_or(0);
        match &p.patroni {
            // Patroni decided: its leader even below a timeline seen before (a host promoted by
            // hand beside Patroni and then rewound), and never a writable host without the lock.
            Some(PatroniSays::Leader) => {
                candidates.push((i, timeline, true));
                continue;
            }
            Some(PatroniSays::NotLeader) => {
                roles[i] = Role::Refused(
                    "writable, but Patroni does not give it the leader lock (it is being demoted or was promoted outside Patroni)".into(),
                );
                continue;
            }
            Some(PatroniSays::Silent(_)) | None => {}
        }
        if timeline < memory.timeline {
            roles[i] = Role::Refused(format!(
                "claims to be primary on timeline {timeline}, but a primary was seen on timeline {}",
                memory.timeline
            ));
            continue;
        }
        candidates.push((i, timeline, false));
    }
    let split_brain = candidates.len() > 1;
    // Patroni's leader, where it names one, wins over a host it says nothing of.
    if candidates.iter().any(|c| c.2) {
        for (i, _, _) in candidates.iter().filter(|c| !c.2) {
            roles[*i] = Role::Refused(
                "split brain: claims to be primary, but Patroni gives another host the leader lock"
                    .into(),
            );
        }
        candidates.retain(|c| c.2);
    }
    let patroni_leader = candidates.first().is_some_and(|c| c.2);
    let candidates: Vec<(usize, u32)> = candidates.into_iter().map(|(i, t, _)| (i, t)).collect();
    let best = candidates.iter().map(|(_, t)| *t).max();
    let on_best: Vec<usize> = candidates
        .iter()
        .filter(|(_, t)| Some(*t) == best)
        .map(|(i, _)| *i)
        .collect();
    let primary = match on_best[..] {
        [one] => Some(one),
        _ => None,
    };
    for (i, timeline) in &candidates {
        roles[*i] = match primary {
            Some(p) if p == *i => Role::Primary,
            Some(_) => Role::Refused(format!(
                "split brain: claims to be primary on timeline {timeline}, but another host is primary on the later timeline {}",
                best.unwrap_or(0)
            )),
            None => Role::Refused(format!(
                "split brain: {} hosts claim to be primary on timeline {timeline}; none is used until only one does",
                on_best.len()
            )),
        };
    }
    if let (Some(_), Some(t)) = (primary, best) {
        memory.timeline = match patroni_leader {
            true => t,
            false => memory.timeline.max(t),
        };
    }
    let primary_lsn = primary.and_then(|p| probes[p].as_ref()).and_then(|p| p.lsn);
    let mut lag_bytes = vec![None; probes.len()];
    let mut lag_seconds = vec![None; probes.len()];
    for (i, probe) in probes.iter().enumerate() {
        let Some(p) = probe.as_ref().filter(|_| roles[i] == Role::Standby) else {
            continue;
        };
        if let (Some(head), Some(replayed)) = (primary_lsn, p.lsn) {
            let behind = head.saturating_sub(replayed);
            lag_bytes[i] = Some(behind);
            // Caught up means no lag however long ago the last write was (PgDog's rule).
            lag_seconds[i] = if behind == 0 { Some(0.0) } else { p.replay_age };
        }
    }
    Decision {
        roles,
        primary,
        lag_bytes,
        lag_seconds,
        split_brain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(timeline: u32, lsn: u64) -> Option<Probed> {
        Some(Probed {
            in_recovery: false,
            timeline: Some(timeline),
            system_id: Some("7".into()),
            lsn: Some(lsn),
            replay_age: None,
            started: Some(format!("t{timeline}-{lsn}")),
            patroni: None,
        })
    }

    fn standby(lsn: u64, age: f64) -> Option<Probed> {
        Some(Probed {
            in_recovery: true,
            timeline: Some(1),
            system_id: Some("7".into()),
            lsn: Some(lsn),
            replay_age: Some(age),
            started: Some(format!("s{lsn}-{age}")),
            patroni: None,
        })
    }

    #[test]
    fn one_primary_and_a_lagging_standby() {
        let mut memory = Memory::default();
        let d = decide(&[primary(1, 1000), standby(400, 3.5), None], &mut memory);
        assert_eq!(d.roles, [Role::Primary, Role::Standby, Role::Unknown]);
        assert_eq!(d.primary, Some(0));
        assert_eq!(d.lag_bytes, [None, Some(600), None]);
        assert_eq!(d.lag_seconds, [None, Some(3.5), None]);
        assert_eq!(memory.system_id.as_deref(), Some("7"));
        assert_eq!(memory.timeline, 1);
        // Caught up: no lag in seconds, however old the last transaction.
        let d = decide(&[primary(1, 1000), standby(1000, 99.0)], &mut memory);
        assert_eq!(d.lag_seconds[1], Some(0.0));
    }

    #[test]
    fn the_later_timeline_wins_a_split_brain_and_the_loser_never_comes_back() {
        let mut memory = Memory::default();
        decide(&[primary(1, 10), standby(10, 0.0)], &mut memory);
        // The standby was promoted while the old primary still runs.
        let d = decide(&[primary(1, 20), primary(2, 30)], &mut memory);
        assert!(d.split_brain);
        assert_eq!(d.primary, Some(1));
        assert!(matches!(&d.roles[0], Role::Refused(r) if r.contains("split brain")));
        assert_eq!(memory.timeline, 2);
        // The new primary goes away: the old one is still refused, not taken back.
        let d = decide(&[primary(1, 20), None], &mut memory);
        assert_eq!(d.primary, None);
        assert!(matches!(&d.roles[0], Role::Refused(r) if r.contains("timeline 2")));
    }

    #[test]
    fn patroni_s_leader_wins_and_a_host_it_demotes_is_never_primary() {
        let says = |p: Option<Probed>, s: PatroniSays| {
            p.map(|mut p| {
                p.patroni = Some(s);
                p
            })
        };
        let mut memory = Memory::default();
        // Patroni's leader wins even on the earlier timeline; a silent Patroni leaves it to PostgreSQL.
        let d = decide(
            &[
                says(primary(1, 10), PatroniSays::Leader),
                says(primary(2, 10), PatroniSays::Silent("timed out".into())),
            ],
            &mut memory,
        );
        assert_eq!(d.primary, Some(0));
        assert!(d.split_brain);
        assert!(
            matches!(&d.roles[1], Role::Refused(r) if r.contains("another host the leader lock"))
        );
        // Writable without the lock: refused, and no primary until the other is promoted.
        let mut memory = Memory::default();
        let d = decide(
            &[
                says(primary(1, 10), PatroniSays::NotLeader),
                standby(10, 0.0),
            ],
            &mut memory,
        );
        assert_eq!(d.primary, None);
        assert!(matches!(&d.roles[0], Role::Refused(r) if r.contains("leader lock")));
        // A host promoted by hand beside Patroni reached timeline 3; Patroni's leader on timeline 2
        // is still taken once Patroni says so, and the timeline memory follows it.
        let mut memory = Memory::default();
        decide(&[primary(3, 10), standby(10, 0.0)], &mut memory);
        assert_eq!(memory.timeline, 3);
        let d = decide(
            &[
                says(standby(10, 0.0), PatroniSays::NotLeader),
                says(primary(2, 20), PatroniSays::Leader),
            ],
            &mut memory,
        );
        assert_eq!(d.primary, Some(1));
        assert_eq!(memory.timeline, 2);
    }

    #[test]
    fn one_server_listed_under_two_names_is_used_once() {
        let mut memory = Memory::default();
        let d = decide(
            &[primary(1, 10), primary(1, 10), standby(5, 0.0)],
            &mut memory,
        );
        assert_eq!(d.primary, Some(0));
        assert!(!d.split_brain);
        assert!(matches!(&d.roles[1], Role::Refused(r) if r.contains("listed twice")));
        // Two servers that only look alike (another start time) are still two primaries.
        let mut other = primary(1, 10).unwrap();
        other.started = Some("another start".into());
        let d = decide(&[primary(1, 10), Some(other)], &mut Memory::default());
        assert!(d.split_brain && d.primary.is_none());
    }

    #[test]
    fn two_primaries_on_one_timeline_leave_no_primary() {
        let mut memory = Memory::default();
        let d = decide(&[primary(3, 1), primary(3, 2)], &mut memory);
        assert_eq!(d.primary, None);
        assert!(
            d.roles
                .iter()
                .all(|r| matches!(r, Role::Refused(r) if r.contains("none is used")))
        );
    }

    #[test]
    fn a_host_of_another_cluster_is_refused() {
        let mut memory = Memory::default();
        let mut stranger = primary(9, 1).unwrap();
        stranger.system_id = Some("8".into());
        let d = decide(&[primary(1, 1), Some(stranger.clone())], &mut memory);
        assert_eq!(d.primary, Some(0));
        assert!(!d.split_brain);
        assert!(matches!(&d.roles[1], Role::Refused(r) if r.contains("another cluster")));
        stranger.in_recovery = true;
        let d = decide(&[primary(1, 1), Some(stranger)], &mut memory);
        assert!(matches!(&d.roles[1], Role::Refused(_)));
    }

    #[test]
    fn standbys_alone_have_no_primary_and_no_known_lag() {
        let mut memory = Memory::default();
        let d = decide(&[None, standby(5, 1.0)], &mut memory);
        assert_eq!(d.primary, None);
        assert_eq!(d.roles, [Role::Unknown, Role::Standby]);
        assert_eq!(d.lag_bytes, [None, None]);
    }
}
