//! Failed-login limiting per (client address, user): after `max_failures` failures within `window`,
//! that address may not try that user again for `lockout`; other addresses and users are not
//! affected. Failures are password failures only — pgssl's own, or the repository's 28P01.
//!
//! The table is bounded: when it is full, entries that no longer count are dropped first; if it is
//! still full, a new pair is not tracked (and this is logged), so a flood of addresses can neither
//! exhaust memory nor lock out users it has never tried.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The limits (`[auth]` `max_failures`, `failure_window_secs`, `lockout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures that lock a pair out; 0 turns limiting off.
    pub max_failures: u32,
    /// How long failures count.
    pub window: Duration,
    /// How long a locked pair waits.
    pub lockout: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 5,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
        }
    }
}

/// Pairs tracked at most (a few MB).
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
struct Entry {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// The failure table.
#[derive(Debug)]
pub struct Lockout {
    policy: LockoutPolicy,
    capacity: usize,
    table: Mutex<HashMap<(IpAddr, String), Entry>>,
}

impl Lockout {
    /// An empty table for `policy`.
    pub fn new(policy: LockoutPolicy) -> Lockout {
        Lockout::with_capacity(policy, MAX_TRACKED)
    }

    fn with_capacity(policy: LockoutPolicy, capacity: usize) -> Lockout {
        Lockout {
            policy,
            capacity,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, String), Entry>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(wait)` while `user` from `ip` is locked out.
    pub fn check(&self, ip: IpAddr, user: &str) -> Result<(), Duration> {
        if self.policy.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        match self.table().get(&(ip, user.to_string())) {
            Some(Entry {
                locked_until: Some(until),
                ..
            }) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Counts a password failure; locks the pair out when it reaches the limit.
    pub fn failed(&self, ip: IpAddr, user: &str) {
        if self.policy.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let policy = self.policy;
        let mut table = self.table();
        let key = (ip, user.to_string());
        if !table.contains_key(&key) && table.len() >= self.capacity {
            table.retain(|_, e| match e.locked_until {
                Some(until) => until > now,
                None => now - e.since < policy.window,
            });
            if table.len() >= self.capacity {
                tracing::warn!(
                    tracked = table.len(),
                    "the failed-login table is full; a new address is not tracked"
                );
                return;
            }
        }
        let entry = table.entry(key).or_insert(Entry {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if now - entry.since >= policy.window || entry.locked_until.is_some_and(|u| u <= now) {
            *entry = Entry {
                failures: 0,
                since: now,
                locked_until: None,
            };
        }
        entry.failures += 1;
        if entry.failures >= policy.max_failures {
            entry.locked_until = Some(now + policy.lockout);
        }
    }

    /// A successful login forgets the pair's failures.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        if self.policy.max_failures > 0 {
            self.table().remove(&(ip, user.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_is_locked_after_the_limit_and_released_after_the_lockout() {
        let lockout = Lockout::new(policy());
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        for _ in 0..2 {
            lockout.failed(a, "tableau");
        }
        assert!(lockout.check(a, "tableau").is_ok());
        lockout.failed(a, "tableau");
        assert!(lockout.check(a, "tableau").is_err());
        // Other addresses and users are not affected.
        assert!(lockout.check(b, "tableau").is_ok() && lockout.check(a, "readonly").is_ok());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(lockout.check(a, "tableau").is_ok());
        // Failures older than the window no longer count; a success forgets them.
        lockout.failed(a, "readonly");
        lockout.failed(a, "readonly");
        tokio::time::advance(Duration::from_secs(61)).await;
        lockout.failed(a, "readonly");
        assert!(lockout.check(a, "readonly").is_ok());
        lockout.failed(a, "readonly");
        lockout.succeeded(a, "readonly");
        lockout.failed(a, "readonly");
        assert!(lockout.check(a, "readonly").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_stale_entries_go_first() {
        let lockout = Lockout::with_capacity(policy(), 4);
        for i in 0..4u8 {
            lockout.failed(IpAddr::from([10, 0, 0, i]), "u");
        }
        // Full: a new address is not tracked, so it cannot be locked out by the flood.
        lockout.failed(IpAddr::from([10, 0, 1, 0]), "u");
        assert_eq!(lockout.table().len(), 4);
        tokio::time::advance(Duration::from_secs(61)).await;
        lockout.failed(IpAddr::from([10, 0, 1, 0]), "u");
        assert_eq!(lockout.table().len(), 1);
    }
}
