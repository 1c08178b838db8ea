//! Admin sign-in state: sessions with an idle timeout and a CSRF token each, and a per-address limit on
//! failed sign-ins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

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

/// Counts failed sign-ins per source address.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: HashMap<IpAddr, Vec<Instant>>,
}

impl SignInLimiter {
    /// `Some(wait)` when `addr` must wait before trying again.
    pub fn blocked(&mut self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let list = self.failures.get_mut(&addr)?;
        list.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        if list.len() < MAX_FAILURES {
            return None;
        }
        let oldest = list.first().copied()?;
        Some(FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)))
    }

    /// Records a failure.
    pub fn failed(&mut self, addr: IpAddr) {
        if self.failures.len() > 10_000 {
            // Bounded memory under a spray of addresses: forget the least useful entries.
            let now = Instant::now();
            self.failures
                .retain(|_, l| l.iter().any(|t| now.duration_since(*t) < FAILURE_WINDOW));
        }
        self.failures.entry(addr).or_default().push(Instant::now());
    }

    /// Forgets the failures of an address that signed in.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.failures.remove(&addr);
    }
}

fn random_token() -> Option<String> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut raw).ok()?;
    Some(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle() {
        let mut sessions = Sessions::new(Duration::from_millis(50));
        let (token, session) = sessions.create("admin").unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(sessions.touch(&token).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.touch(&token).is_none());
    }

    #[test]
    fn the_limiter_blocks_after_five_failures() {
        let mut limiter = SignInLimiter::default();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.blocked(addr).is_none());
            limiter.failed(addr);
        }
        assert!(limiter.blocked(addr).is_some());
        assert!(limiter.blocked("127.0.0.2".parse().unwrap()).is_none());
        limiter.succeeded(addr);
        assert!(limiter.blocked(addr).is_none());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
