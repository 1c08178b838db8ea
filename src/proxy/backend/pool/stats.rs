//! What `pgssl pool list` and `topology list-repository-hosts` read of the pool.

use super::Pool;

/// One key's figures for `pgssl pool list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyStats {
    /// The role.
    pub role: String,
    /// The database.
    pub database: String,
    /// Sessions serving a client (or being opened, reset).
    pub busy: usize,
    /// Warm sessions waiting for a client.
    pub idle: usize,
    /// Clients given a warm session.
    pub handouts: u64,
    /// Backends opened.
    pub opened: u64,
    /// How long its clients hold a backend (`pool.mode`, or its rule's).
    #[serde(default)]
    pub mode: super::PoolMode,
    /// Its own bound on backends (0: only `max_backends`).
    #[serde(default)]
    pub max_backends: usize,
}

impl KeyStats {
    fn empty(role: &str, database: &str) -> KeyStats {
        KeyStats {
            role: role.to_string(),
            database: database.to_string(),
            ..KeyStats::default()
        }
    }
}

impl Pool {
    /// Figures per (role, database), sorted.
    pub fn stats(&self) -> Vec<KeyStats> {
        let inner = self.lock();
        let mut by: std::collections::BTreeMap<(String, String), KeyStats> = Default::default();
        for (k, e) in &inner.keys {
            let s = by
                .entry((k.role.clone(), k.database.clone()))
                .or_insert_with(|| KeyStats::empty(&k.role, &k.database));
            s.busy += e.live - e.idle.len();
            s.idle += e.idle.len();
            s.handouts += e.handouts;
            s.opened += e.opened;
        }
        for ((role, database), (handouts, opened)) in &inner.past {
            let s = by
                .entry((role.clone(), database.clone()))
                .or_insert_with(|| KeyStats::empty(role, database));
            s.handouts += handouts;
            s.opened += opened;
        }
        let mut out: Vec<KeyStats> = by.into_values().collect();
        for s in &mut out {
            s.mode = self.options.mode_for(&s.role, &s.database);
            s.max_backends = self.options.per_key_bound(&s.role, &s.database);
        }
        out
    }

    /// Idle backends on each of `hosts` repository hosts.
    pub fn idle_per_host(&self, hosts: usize) -> Vec<usize> {
        let mut idle = vec![0; hosts];
        for (k, e) in &self.lock().keys {
            if let Some(n) = idle.get_mut(k.host) {
                *n += e.idle.len();
            }
        }
        idle
    }
}
