//! Failed-login limiting per (client address, user): after `max_failures` failures within `window`,
//! that address may not try that user again for `lockout`; other addresses and users are not
//! affected. Failures are password failures only — pgssl's own, or the repository's 28P01.
//!
//! A verdict is judged against the table as it is when the verdict comes, not as it was when the
//! attempt began: once a pair is locked, every attempt still in flight is answered with the lockout
//! (28000) whatever its password was, so however many guesses a client sends in parallel, at most
//! `max_failures` of them ever learn whether their password was right ([`Attempt::failed`],
//! [`Attempt::succeeded`]). Legitimate bursts (a pool opening 200 sessions at once) are not held
//! back: only failures count.
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

/// The limits (`[auth]` `max_failures`, `failure_window`, `lockout`).
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
    since: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            since: now,
            locked_until: None,
        }
    }

    /// Whether this entry still says anything at `now`.
    fn counts(&self, now: Instant, policy: &LockoutPolicy) -> bool {
        match self.locked_until {
            Some(until) => until > now,
            None => now - self.since < policy.window,
        }
    }

    /// Starts a new window when the old one (or the lockout) is over.
    fn refresh(&mut self, now: Instant, policy: &LockoutPolicy) {
        if now - self.since >= policy.window || self.locked_until.is_some_and(|u| u <= now) {
            *self = Entry::new(now);
        }
    }

    /// How long the pair stays locked out, if it is.
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until.filter(|u| *u > now).map(|u| u - now)
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

    /// Begins a login attempt of `user` from `ip`: `Err(wait)` while the pair is locked out.
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt<'_>, Duration> {
        let key = (ip, role_name(user).to_string());
        if self.policy.max_failures > 0 {
            let now = Instant::now();
            if let Some(wait) = self.table().get(&key).and_then(|e| e.locked(now)) {
                return Err(wait);
            }
        }
        Ok(Attempt { lockout: self, key })
    }

    /// Counts a failure that had no attempt of its own (a client certificate naming another
    /// user): it locks the pair out like a password failure.
    pub fn record_failure(&self, ip: IpAddr, user: &str) {
        if let Ok(attempt) = self.begin(ip, user) {
            let _ = attempt.failed();
        }
    }

    /// Judges a verdict on `key` (a failure, or a success): `Err(wait)` when the pair is locked
    /// out now — by this failure's predecessors, or while a success was in flight.
    fn verdict(&self, key: &Key, failed: bool) -> Result<(), Duration> {
        if self.policy.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let policy = self.policy;
        let mut table = self.table();
        if let Some(wait) = table.get(key).and_then(|e| e.locked(now)) {
            return Err(wait);
        }
        if !failed {
            table.remove(key);
            return Ok(());
        }
        if !table.contains_key(key) && table.len() >= self.capacity {
            table.retain(|_, e| e.counts(now, &policy));
            if table.len() >= self.capacity {
                tracing::warn!(
                    tracked = table.len(),
                    "the failed-login table is full; a new address is not tracked"
                );
                return Ok(());
            }
        }
        let entry = table.entry(key.clone()).or_insert_with(|| Entry::new(now));
        entry.refresh(now, &policy);
        entry.failures += 1;
        if entry.failures >= policy.max_failures {
            entry.locked_until = Some(now + policy.lockout);
        }
        Ok(())
    }
}

/// One login attempt of an (address, role) pair, whose verdict is judged when it comes.
#[derive(Debug)]
pub struct Attempt<'a> {
    lockout: &'a Lockout,
    key: Key,
}

impl Attempt<'_> {
    /// The password was wrong: counted. `Err(wait)` when the pair was already locked out as the
    /// verdict came: the client must get the lockout's answer, which says nothing of its password.
    #[must_use = "a failure past the limit is answered with the lockout"]
    pub fn failed(self) -> Result<(), Duration> {
        self.lockout.verdict(&self.key, true)
    }

    /// The proof failed against a cached verifier the password has since replaced: not a guess,
    /// so not counted; a pair already locked out still gets the lockout's answer.
    #[must_use = "a locked-out pair is answered with the lockout"]
    pub fn not_counted(self) -> Result<(), Duration> {
        if self.lockout.policy.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        match self
            .lockout
            .table()
            .get(&self.key)
            .and_then(|e| e.locked(now))
        {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// The password was right: the pair's failures are forgotten. `Err(wait)` when the pair was
    /// locked out while this attempt was in flight: it must be refused like any attempt then.
    #[must_use = "a success after the pair was locked out is refused"]
    pub fn succeeded(self) -> Result<(), Duration> {
        self.lockout.verdict(&self.key, false)
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
        lockout
            .begin(ip, user)
            .expect("not locked")
            .failed()
            .expect("not locked");
    }

    /// Whether a new attempt would be refused.
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
        lockout.begin(a, "readonly").unwrap().succeeded().unwrap();
        fail(&lockout, a, "readonly");
        assert!(!refused(&lockout, a, "readonly"));
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_past_the_limit_get_the_lockout_so_parallel_guesses_learn_no_more() {
        let lockout = Lockout::new(policy());
        let a = IpAddr::from([127, 0, 0, 20]);
        // Ten guesses begin at once; their verdicts come one after another.
        let in_flight: Vec<_> = (0..10)
            .map(|_| lockout.begin(a, "tableau").unwrap())
            .collect();
        let right = lockout.begin(a, "tableau").unwrap();
        let answers: Vec<_> = in_flight.into_iter().map(Attempt::failed).collect();
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 3);
        assert!(
            answers[3..]
                .iter()
                .all(|a| *a == Err(Duration::from_secs(30)))
        );
        // The right password, in flight meanwhile, is refused too.
        assert_eq!(right.succeeded(), Err(Duration::from_secs(30)));
        assert!(refused(&lockout, a, "tableau"));
        // Many successes at once from one address are not held back by anything.
        let b = IpAddr::from([127, 0, 0, 21]);
        let burst: Vec<_> = (0..200)
            .map(|_| lockout.begin(b, "tableau").unwrap())
            .collect();
        assert!(burst.into_iter().all(|a| a.succeeded().is_ok()));
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

    #[tokio::test(start_paused = true)]
    async fn a_proof_against_a_stale_verifier_is_not_counted_but_a_lock_still_answers() {
        let lockout = Lockout::new(policy());
        let a = IpAddr::from([127, 0, 0, 30]);
        for _ in 0..2 {
            fail(&lockout, a, "tableau");
        }
        for _ in 0..5 {
            let attempt = lockout.begin(a, "tableau").unwrap();
            assert!(attempt.not_counted().is_ok());
        }
        assert!(!refused(&lockout, a, "tableau"));
        // In flight while the pair is locked: the lockout's answer, as for any attempt.
        let in_flight = lockout.begin(a, "tableau").unwrap();
        fail(&lockout, a, "tableau");
        assert!(in_flight.not_counted().is_err());
    }
}
