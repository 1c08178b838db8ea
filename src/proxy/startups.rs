//! The connections still negotiating (`server.max_startups`), and the deadline each negotiates by.
//!
//! When every place is taken, a new connection takes the place of the one that has been negotiating
//! longest, which is answered 53300 and closed. Refusing the newcomer instead (as pgssl did, and as
//! OpenSSH's `MaxStartups` does) lets a few thousand sockets that never finish their start-up lock
//! every legitimate client out for the whole handshake timeout: measured, 5,000 stalled sockets
//! left 0 of 474,910 TLS logins through. A legitimate client finishes in milliseconds, so to push one
//! out a flood has to open `max_startups` connections within that time; the flood's own sockets are
//! the oldest and go first. The same idea as Envoy's overload manager cutting timeouts short under
//! pressure, without a threshold to tune.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The places of the connections still negotiating, oldest first.
#[derive(Debug)]
pub struct Startups {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first; places already given up stay until they reach the front or the queue is
    /// compacted.
    queue: VecDeque<Arc<Place>>,
    /// Places held now.
    held: usize,
}

#[derive(Debug)]
struct Place {
    /// Given up: finished, dropped or evicted.
    done: AtomicBool,
    evicted: CancellationToken,
}

/// One connection's place; given back when dropped.
#[derive(Debug)]
pub struct StartupPlace {
    place: Arc<Place>,
    startups: Arc<Startups>,
}

impl Startups {
    /// Room for `max` connections negotiating at once (at least one).
    pub fn new(max: usize) -> Arc<Startups> {
        Arc::new(Startups {
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// A place for a new connection; `true` when the oldest connection was evicted to make it.
    pub fn admit(self: &Arc<Self>) -> (StartupPlace, bool) {
        let place = Arc::new(Place {
            done: AtomicBool::new(false),
            evicted: CancellationToken::new(),
        });
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        if inner.held >= self.max {
            while let Some(oldest) = inner.queue.pop_front() {
                if !oldest.done.swap(true, Ordering::AcqRel) {
                    oldest.evicted.cancel();
                    inner.held -= 1;
                    evicted = true;
                    break;
                }
            }
        }
        inner.held += 1;
        inner.queue.push_back(place.clone());
        // Places given up behind a long-lived one would pile up: compact once they outnumber the
        // live ones (amortised constant time per admission).
        if inner.queue.len() > 2 * self.max + 16 {
            inner.queue.retain(|p| !p.done.load(Ordering::Acquire));
        }
        drop(inner);
        (
            StartupPlace {
                place,
                startups: self.clone(),
            },
            evicted,
        )
    }

    /// Places held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).held
    }
}

impl StartupPlace {
    /// A negotiation's deadline: `at`, or earlier when this place is given to a newer connection.
    pub fn deadline(&self, at: Instant) -> Deadline {
        Deadline {
            at,
            evicted: self.place.evicted.clone(),
        }
    }
}

impl Drop for StartupPlace {
    fn drop(&mut self) {
        if !self.place.done.swap(true, Ordering::AcqRel) {
            let mut inner = self
                .startups
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            inner.held -= 1;
            while inner
                .queue
                .front()
                .is_some_and(|p| p.done.load(Ordering::Acquire))
            {
                inner.queue.pop_front();
            }
        }
    }
}

/// Why a negotiation's deadline ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// `handshake_timeout` passed.
    Timeout,
    /// Its place went to a newer connection (`server.max_startups`).
    Evicted,
}

/// When a negotiation must end: at an instant, or earlier when evicted.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: Instant,
    evicted: CancellationToken,
}

impl Deadline {
    /// A deadline that only time ends (tests, and work outside `max_startups`).
    pub fn at(at: Instant) -> Deadline {
        Deadline {
            at,
            evicted: CancellationToken::new(),
        }
    }

    /// Runs `work` until it finishes or the deadline ends it.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Expired> {
        tokio::select! {
            biased;
            out = work => Ok(out),
            () = self.evicted.cancelled() => Err(Expired::Evicted),
            () = tokio::time::sleep_until(self.at) => Err(Expired::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_place_goes_to_a_newcomer_when_all_are_taken() {
        let s = Startups::new(2);
        let (a, ea) = s.admit();
        let (b, eb) = s.admit();
        assert!(!ea && !eb);
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        let (da, db) = (a.deadline(far), b.deadline(far));
        let (c, ec) = s.admit();
        assert!(ec, "a third connection evicts one");
        assert_eq!(s.held(), 2);
        assert_eq!(
            da.run(std::future::pending::<()>()).await,
            Err(Expired::Evicted)
        );
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_millis(20), db.run(async {})).await,
            Ok(Ok(())),
            "the second one keeps its place"
        );
        // A place given up frees room: the next one evicts nobody.
        drop(b);
        let (_d, ed) = s.admit();
        assert!(!ed);
        drop(a);
        assert_eq!(s.held(), 2, "an evicted place is not given back twice");
        drop(c);
        assert_eq!(s.held(), 1);
    }

    #[test]
    fn finished_places_do_not_pile_up_behind_a_long_lived_one() {
        let s = Startups::new(4);
        let (_old, _) = s.admit();
        for _ in 0..10_000 {
            let (p, evicted) = s.admit();
            assert!(!evicted);
            drop(p);
        }
        assert!(s.inner.lock().unwrap().queue.len() <= 2 * 4 + 17);
        assert_eq!(s.held(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn time_ends_a_deadline_too() {
        let d = Deadline::at(Instant::now() + std::time::Duration::from_secs(1));
        assert_eq!(
            d.run(std::future::pending::<()>()).await,
            Err(Expired::Timeout)
        );
    }
}
