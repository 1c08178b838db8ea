//! Admin sign-in state: sessions with an idle timeout and a CSRF token each, and a per-address limit on
//! failed sign-ins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SecureRandom;

/// Failed sign-ins allowed per address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The window over which failures are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// One signed-in administrator.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user: String,
    /// Must accompany every change request (header `X-CSRF-Token` or form field `csrf_token`).
    pub csrf: String,
    /// A one-time message for the next page (the result of a form post).
    pub flash: Option<Flash>,
    last_seen: Instant,
}

/// The result of a form post, shown once on the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// Whether the operation failed.
    pub failed: bool,
    /// What it reported, one line per line.
    pub text: String,
}

/// All sessions, by token.
#[derive(Debug)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
    idle_timeout: Duration,
}

impl Sessions {
    /// No sessions; each expires after `idle_timeout` without requests.
    pub fn new(idle_timeout: Duration) -> Sessions {
        Sessions {
            by_token: HashMap::new(),
            idle_timeout,
        }
    }

    /// Starts a session for `user`; returns its token.
    pub fn create(&mut self, user: &str) -> Option<(String, Session)> {
        let now = Instant::now();
        let timeout = self.idle_timeout;
        self.by_token
            .retain(|_, s| now.duration_since(s.last_seen) < timeout);
        let token = random_token()?;
        let session = Session {
            user: user.to_string(),
            csrf: random_token()?,
            flash: None,
            last_seen: now,
        };
        self.by_token.insert(token.clone(), session.clone());
        Some((token, session))
    }

    /// The live session for `token`, touched; an idle one is ended.
    pub fn touch(&mut self, token: &str) -> Option<&mut Session> {
        let now = Instant::now();
        let expired = self
            .by_token
            .get(token)
            .is_some_and(|s| now.duration_since(s.last_seen) >= self.idle_timeout);
        if expired {
            self.by_token.remove(token);
            return None;
        }
        let session = self.by_token.get_mut(token)?;
        session.last_seen = now;
        Some(session)
    }

    /// Ends a session.
    pub fn end(&mut self, token: &str) {
        self.by_token.remove(token);
    }
}

/// Counts sign-in attempts per source address.
///
/// An attempt is counted when it starts, before its password is checked ([`SignInLimiter::reserve`]),
/// and forgotten only if it succeeds: so parallel guesses from one address are refused once
/// [`MAX_FAILURES`] are in flight or failed, instead of all being checked before any is counted.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    attempts: HashMap<IpAddr, Vec<Instant>>,
}

impl SignInLimiter {
    /// Counts an attempt from `addr`, or says how long it must wait when [`MAX_FAILURES`] attempts
    /// within [`FAILURE_WINDOW`] failed or are still being checked.
    pub fn reserve(&mut self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        if self.attempts.len() >= MAX_TRACKED_ADDRESSES {
            // Bounded memory under a spray of addresses: forget addresses with nothing recent.
            self.attempts
                .retain(|_, l| l.iter().any(|t| now.duration_since(*t) < FAILURE_WINDOW));
        }
        let list = self.attempts.entry(addr).or_default();
        list.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        if list.len() >= MAX_FAILURES {
            let oldest = list.first().copied().unwrap_or(now);
            return Err(FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        list.push(now);
        Ok(())
    }

    /// Gives back an attempt that was never checked (the server was busy or failed).
    pub fn release(&mut self, addr: IpAddr) {
        if let Some(list) = self.attempts.get_mut(&addr) {
            list.pop();
        }
    }

    /// Forgets the attempts of an address that signed in.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.attempts.remove(&addr);
    }
}

/// Addresses tracked before idle ones are dropped.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

fn random_token() -> Option<String> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut raw).ok()?;
    Some(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares secrets in time independent of where they differ (`subtle`); only the length, which is
/// not secret, can end the comparison early.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle() {
        // Long enough that a loaded machine still touches it in time; the sleep is the idle time.
        let mut sessions = Sessions::new(Duration::from_millis(500));
        let (token, session) = sessions.create("admin").unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(sessions.touch(&token).is_some());
        std::thread::sleep(Duration::from_millis(600));
        assert!(sessions.touch(&token).is_none());
    }

    #[test]
    fn the_limiter_counts_attempts_before_they_are_checked() {
        let mut limiter = SignInLimiter::default();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        // Five attempts in flight at once use up the allowance: the sixth waits.
        for _ in 0..MAX_FAILURES {
            assert!(limiter.reserve(addr).is_ok());
        }
        let wait = limiter.reserve(addr).unwrap_err();
        assert!(wait > Duration::from_secs(290) && wait <= FAILURE_WINDOW);
        assert!(limiter.reserve("127.0.0.2".parse().unwrap()).is_ok());
        // An attempt that was never checked is given back; a success forgets them all.
        limiter.release(addr);
        assert!(limiter.reserve(addr).is_ok());
        assert!(limiter.reserve(addr).is_err());
        limiter.succeeded(addr);
        assert!(limiter.reserve(addr).is_ok());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
