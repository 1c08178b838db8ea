//! Failed-login limiting per (client address, user): after `max_failures` failures within `window`,
//! that address may not try that user again for `lockout`; other addresses and users are not
//! affected. Failures are password failures only — pgssl's own, or the repository's 28P01.
//!
//! An attempt counts from the moment it arrives, not when its verdict is known: [`Lockout::begin`]
//! reserves a place among the pair's `max_failures`, so however many guesses a client sends in
//! parallel, at most `max_failures` of them are ever evaluated. A reservation becomes a failure
//! ([`Attempt::failed`]), forgets the pair ([`Attempt::succeeded`]) or, dropped without a verdict
//! (the client left, the repository failed), is given back.
//!
//! The user is keyed as PostgreSQL will name the role — truncated to 63 bytes (NAMEDATALEN - 1) at
//! a character boundary — so a longer spelling of a locked role is the same pair.
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
    /// Failures within the window.
    failures: u32,
    /// Attempts begun and not yet decided: they count against the limit already.
    in_flight: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            in_flight: 0,
            since: now,
            locked_until: None,
        }
    }

    /// Whether this entry still says anything at `now`.
    fn counts(&self, now: Instant, policy: &LockoutPolicy) -> bool {
        self.in_flight > 0
            || match self.locked_until {
                Some(until) => until > now,
                None => now - self.since < policy.window,
            }
    }

    /// Starts a new window when the old one (or the lockout) is over; attempts in flight stay.
    fn refresh(&mut self, now: Instant, policy: &LockoutPolicy) {
        if now - self.since >= policy.window || self.locked_until.is_some_and(|u| u <= now) {
            let in_flight = self.in_flight;
            *self = Entry::new(now);
            self.in_flight = in_flight;
        }
    }
}

/// The longest role name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

/// `user` as PostgreSQL names the role: cut to 63 bytes at a character boundary, as it clips an
/// identifier in a UTF-8 database.
pub fn role_name(user: &str) -> &str {
    if user.len() <= MAX_NAME_BYTES {
        return user;
    }
    let mut end = MAX_NAME_BYTES;
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    &user[..end]
}

type Key = (IpAddr, String);

/// The failure table.
#[derive(Debug)]
pub struct Lockout {
    policy: LockoutPolicy,
    capacity: usize,
    table: Mutex<HashMap<Key, Entry>>,
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

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Begins a login attempt of `user` from `ip`: `Err(wait)` while the pair is locked out, or
    /// while as many attempts as it has failures left are still undecided (the wait is then a
    /// second: they may yet succeed).
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt<'_>, Duration> {
        let key = (ip, role_name(user).to_string());
        if self.policy.max_failures == 0 {
            return Ok(Attempt {
                lockout: self,
                key: None,
            });
        }
        let now = Instant::now();
        let policy = self.policy;
        let mut table = self.table();
        if !table.contains_key(&key) && table.len() >= self.capacity {
            table.retain(|_, e| e.counts(now, &policy));
            if table.len() >= self.capacity {
                tracing::warn!(
                    tracked = table.len(),
                    "the failed-login table is full; a new address is not tracked"
                );
                return Ok(Attempt {
                    lockout: self,
                    key: None,
                });
            }
        }
        let entry = table.entry(key.clone()).or_insert_with(|| Entry::new(now));
        entry.refresh(now, &policy);
        if let Some(until) = entry.locked_until {
            return Err(until - now);
        }
        if entry.failures + entry.in_flight >= policy.max_failures {
            return Err(Duration::from_secs(1));
        }
        entry.in_flight += 1;
        Ok(Attempt {
            lockout: self,
            key: Some(key),
        })
    }

    /// Counts a failure that had no attempt of its own (a client certificate naming another
    /// user): it locks the pair out like a password failure, but never refuses anything itself.
    pub fn record_failure(&self, ip: IpAddr, user: &str) {
        if let Ok(attempt) = self.begin(ip, user) {
            attempt.failed();
        }
    }

    /// Settles one attempt of `key`: a failure counts (and may lock the pair), a success forgets
    /// the pair, neither gives the place back.
    fn settle(&self, key: &Key, verdict: Option<bool>) {
        let now = Instant::now();
        let policy = self.policy;
        let mut table = self.table();
        let Some(entry) = table.get_mut(key) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match verdict {
            Some(true) => {
                table.remove(key);
            }
            Some(false) => {
                entry.refresh(now, &policy);
                entry.failures += 1;
                if entry.failures >= policy.max_failures {
                    entry.locked_until = Some(now + policy.lockout);
                }
            }
            None if entry.failures == 0 && entry.in_flight == 0 => {
                table.remove(key);
            }
            None => {}
        }
    }
}

/// One login attempt, counted against its pair's limit from [`Lockout::begin`] on.
#[derive(Debug)]
#[must_use = "an attempt dropped without a verdict is given back"]
pub struct Attempt<'a> {
    lockout: &'a Lockout,
    /// `None` when the pair is not tracked (limiting off, or the table full).
    key: Option<Key>,
}

impl Attempt<'_> {
    /// The password was wrong.
    pub fn failed(mut self) {
        if let Some(key) = self.key.take() {
            self.lockout.settle(&key, Some(false));
        }
    }

    /// The client logged in: the pair's failures are forgotten.
    pub fn succeeded(mut self) {
        if let Some(key) = self.key.take() {
            self.lockout.settle(&key, Some(true));
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.lockout.settle(&key, None);
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

    fn fail(lockout: &Lockout, ip: IpAddr, user: &str) {
        lockout.begin(ip, user).expect("not locked").failed();
    }

    /// Whether a new attempt would be refused (the probe's own place is given back).
    fn refused(lockout: &Lockout, ip: IpAddr, user: &str) -> bool {
        lockout.begin(ip, user).is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_is_locked_after_the_limit_and_released_after_the_lockout() {
        let lockout = Lockout::new(policy());
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        for _ in 0..2 {
            fail(&lockout, a, "tableau");
        }
        assert!(!refused(&lockout, a, "tableau"));
        fail(&lockout, a, "tableau");
        assert!(refused(&lockout, a, "tableau"));
        // Other addresses and users are not affected.
        assert!(!refused(&lockout, b, "tableau") && !refused(&lockout, a, "readonly"));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!refused(&lockout, a, "tableau"));
        // Failures older than the window no longer count; a success forgets them.
        fail(&lockout, a, "readonly");
        fail(&lockout, a, "readonly");
        tokio::time::advance(Duration::from_secs(61)).await;
        fail(&lockout, a, "readonly");
        assert!(!refused(&lockout, a, "readonly"));
        fail(&lockout, a, "readonly");
        lockout.begin(a, "readonly").unwrap().succeeded();
        fail(&lockout, a, "readonly");
        assert!(!refused(&lockout, a, "readonly"));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_count_on_arrival_so_parallel_guesses_get_no_more_than_the_limit() {
        let lockout = Lockout::new(policy());
        let a = IpAddr::from([127, 0, 0, 20]);
        // Three guesses in flight at once take every place; the fourth is refused before its
        // password is looked at, and so is the right password sent now.
        let in_flight: Vec<_> = (0..3)
            .map(|_| lockout.begin(a, "tableau").unwrap())
            .collect();
        assert_eq!(
            lockout.begin(a, "tableau").unwrap_err(),
            Duration::from_secs(1)
        );
        // All three fail: locked for the lockout's length.
        for attempt in in_flight {
            attempt.failed();
        }
        let wait = lockout.begin(a, "tableau").unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        // An attempt that ends without a verdict gives its place back.
        let b = IpAddr::from([127, 0, 0, 21]);
        for _ in 0..10 {
            drop(lockout.begin(b, "tableau").unwrap());
        }
        fail(&lockout, b, "tableau");
        fail(&lockout, b, "tableau");
        assert!(!refused(&lockout, b, "tableau"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_past_63_bytes_is_the_role_postgresql_will_use() {
        let lockout = Lockout::new(policy());
        let a = IpAddr::from([127, 0, 0, 1]);
        let role = "a".repeat(63);
        for _ in 0..3 {
            fail(&lockout, a, &role);
        }
        assert!(refused(&lockout, a, &format!("{role}suffix")));
        assert!(refused(&lockout, a, &format!("{role}x")));
        // Cut at a character boundary: 62 ASCII bytes then a two-byte character becomes 62 bytes.
        let long = format!("{}é", "b".repeat(62));
        assert_eq!(role_name(&long), "b".repeat(62));
        assert_eq!(role_name("tableau"), "tableau");
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_stale_entries_go_first() {
        let lockout = Lockout::with_capacity(policy(), 4);
        for i in 0..4u8 {
            fail(&lockout, IpAddr::from([10, 0, 0, i]), "u");
        }
        // Full: a new address is not tracked, so it cannot be locked out by the flood.
        fail(&lockout, IpAddr::from([10, 0, 1, 0]), "u");
        assert_eq!(lockout.table().len(), 4);
        tokio::time::advance(Duration::from_secs(61)).await;
        fail(&lockout, IpAddr::from([10, 0, 1, 0]), "u");
        assert_eq!(lockout.table().len(), 1);
    }
}
