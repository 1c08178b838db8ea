//! Worker affinity: a session's socket is registered with the runtime of the worker that opened it,
//! so a warm session is handed out on that worker when one is idle there (and to a waiter there,
//! see the queue), and moved to the worker that takes it otherwise.

use tokio::time::Instant;

use super::{Backend, Checkout};

/// The accepting worker this thread is, when it is one (set by the accept loops).
pub fn set_worker(worker: usize) {
    WORKER.with(|w| w.set(Some(worker)));
}

thread_local! {
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The worker of this thread, if it is one.
pub(in crate::proxy::backend) fn this_worker() -> Option<usize> {
    WORKER.with(std::cell::Cell::get)
}

/// The most recently idle session opened on this thread's worker, else the most recently idle one.
/// A session's socket is registered with the runtime of the worker that opened it; used from another
/// worker, each of its readiness events crosses threads.
pub(super) fn take_local(idle: &mut Vec<(Backend, Instant)>) -> Option<(Backend, Instant)> {
    let here = this_worker();
    let at = idle
        .iter()
        .rposition(|(b, _)| b.worker == here)
        .or_else(|| idle.len().checked_sub(1))?;
    Some(idle.remove(at))
}

impl Backend {
    /// Moves the session's socket to this thread's worker when it is registered with another one's
    /// ([`RepositoryStream::reregister`](crate::proxy::repository::RepositoryStream::reregister)).
    /// If it cannot be moved, it stays where it was and works as before.
    pub fn adopt(&mut self) {
        let here = this_worker();
        if here.is_none() || here == self.worker {
            return;
        }
        match self.stream.reregister() {
            Ok(()) => self.worker = here,
            Err(e) => tracing::debug!(error = %e, "a repository session stays on its worker"),
        }
    }
}

/// A checkout's result with a warm session moved to this worker ([`Backend::adopt`]).
pub(super) fn adopted(found: Checkout) -> Checkout {
    match found {
        Checkout::Warm(mut backend) => {
            backend.adopt();
            Checkout::Warm(backend)
        }
        fork => fork,
    }
}
