//! A short-lived cache in front of a verifier source (`auth.verifier_cache_ttl`: by default 1 s for
//! a lookup user's reads, none for the managed repository's; `"0s"` turns it off). Without it
//! every proxy-mode login reads the role's verifier from the repository: a query per login on the
//! repository (a SECURITY DEFINER function call, for a lookup user) and a round trip on the
//! login's path — at a high connect rate, more of the repository's CPU than the login's own work.
//! With it, a role's verifier is read at most once per TTL per node:
//!
//! - a changed password's *old* one keeps working for up to the TTL (the bound, stated and tested);
//! - a wrong proof against a kept verifier re-reads the role at once ([`VerifierSource::stale`]):
//!   the next attempt meets the new verifier, and when the verifier had changed the failure is not
//!   counted towards the lockout (the client computed its proof with the old salt, so SCRAM cannot
//!   tell a right new password from a wrong one within that exchange);
//! - only roles that exist are kept (an unknown name is always looked up, so the table cannot be
//!   filled by guesses), at most [`MAX_ENTRIES`] of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::terminate::{LookupFuture, RoleSecret, StaleFuture, VerifierSource};

/// Roles kept at most; past this the table is cleared (it refills from the lookups that follow).
pub const MAX_ENTRIES: usize = 10_000;

/// `source`, cached for `ttl` when that is not zero.
pub fn cached(source: Arc<dyn VerifierSource>, ttl: Duration) -> Arc<dyn VerifierSource> {
    if ttl.is_zero() {
        return source;
    }
    Arc::new(Cached {
        source,
        ttl,
        entries: Mutex::default(),
    })
}

struct Cached {
    source: Arc<dyn VerifierSource>,
    ttl: Duration,
    entries: Mutex<HashMap<String, (RoleSecret, Instant)>>,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("source", &self.source)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Cached {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (RoleSecret, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl VerifierSource for Cached {
    fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            if let Some((secret, at)) = self.entries().get(role)
                && at.elapsed() < self.ttl
            {
                return Ok(Some(secret.clone()));
            }
            let fresh = self.source.lookup(role).await?;
            if let Some(secret) = &fresh {
                let mut entries = self.entries();
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(role.to_string(), (secret.clone(), Instant::now()));
            }
            Ok(fresh)
        })
    }

    fn fresh<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        self.forget(role);
        self.lookup(role)
    }

    fn forget(&self, role: &str) {
        self.entries().remove(role);
        self.source.forget(role);
    }

    fn forget_all(&self) {
        self.entries().clear();
    }

    fn stale<'a>(&'a self, role: &'a str) -> StaleFuture<'a> {
        Box::pin(async move {
            let kept = self.entries().remove(role);
            self.source.forget(role);
            let Some((kept, _)) = kept else {
                return false;
            };
            // A failed read keeps nothing: the next login reads again.
            match self.lookup(role).await {
                Ok(Some(now)) => now.password != kept.password,
                Ok(None) | Err(_) => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl VerifierSource for Counting {
        fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::Relaxed);
                Ok((role != "nobody").then(|| RoleSecret {
                    password: Some(format!("v{n}")),
                    expired: false,
                    can_login: true,
                }))
            })
        }
    }

    #[tokio::test]
    async fn a_role_is_read_once_per_ttl_and_again_after_a_failed_proof() {
        let counting = Arc::new(Counting::default());
        let cache = cached(counting.clone(), Duration::from_secs(60));
        let first = cache.lookup("alice").await.unwrap().unwrap();
        let again = cache.lookup("alice").await.unwrap().unwrap();
        assert_eq!(first.password, again.password);
        assert_eq!(counting.0.load(Ordering::Relaxed), 1);
        // Unknown roles are never kept.
        assert!(cache.lookup("nobody").await.unwrap().is_none());
        assert!(cache.lookup("nobody").await.unwrap().is_none());
        assert_eq!(counting.0.load(Ordering::Relaxed), 3);
        cache.forget("alice");
        let fresh = cache.lookup("alice").await.unwrap().unwrap();
        assert_ne!(fresh.password, first.password);
        // Off: every lookup reaches the source.
        let direct = cached(counting.clone(), Duration::ZERO);
        direct.lookup("alice").await.unwrap();
        direct.lookup("alice").await.unwrap();
        assert_eq!(counting.0.load(Ordering::Relaxed), 6);
    }

    #[derive(Debug)]
    struct Same;

    impl VerifierSource for Same {
        fn lookup<'a>(&'a self, _role: &'a str) -> LookupFuture<'a> {
            Box::pin(std::future::ready(Ok(Some(RoleSecret {
                password: Some("v".into()),
                expired: false,
                can_login: true,
            }))))
        }
    }

    #[tokio::test]
    async fn a_failed_proof_is_stale_only_when_the_kept_verifier_changed() {
        // Every read of `Counting` is a new password: the kept one had changed.
        let counting = Arc::new(Counting::default());
        let cache = cached(counting.clone(), Duration::from_secs(60));
        cache.lookup("alice").await.unwrap();
        assert!(cache.stale("alice").await);
        // The re-read is kept: the next login uses it without asking again.
        let reads = counting.0.load(Ordering::Relaxed);
        cache.lookup("alice").await.unwrap();
        assert_eq!(counting.0.load(Ordering::Relaxed), reads);
        // Nothing kept (never read, or emptied by a reload): nothing stale.
        cache.forget_all();
        assert!(!cache.stale("alice").await);
        // The same verifier again: the proof was wrong.
        let same = cached(Arc::new(Same), Duration::from_secs(60));
        same.lookup("alice").await.unwrap();
        assert!(!same.stale("alice").await);
        // No cache: never stale.
        assert!(!cached(counting, Duration::ZERO).stale("alice").await);
    }
}
