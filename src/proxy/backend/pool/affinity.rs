//! Worker affinity: a session's socket is registered with the runtime of the worker that opened it,
//! so a warm session is handed out on that worker when one is idle there (and to a waiter there,
//! see the queue), and moved to the worker that takes it otherwise.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Backend, Checkout, Exhausted, Pool, PoolKey};
use crate::proxy::auth::scram::Verifier;

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
    /// The session with its socket on this thread's worker, when it was registered with another
    /// worker's runtime ([`RepositoryStream::reregistered`]); `None` when it could not be moved (it
    /// is closed, and its slot released).
    pub fn adopt(self: Box<Self>) -> Option<Box<Backend>> {
        let here = this_worker();
        if here.is_none() || here == self.worker || !self.stream.movable() {
            return Some(self);
        }
        let Backend {
            stream,
            params,
            key,
            minor,
            verifier,
            born,
            generation,
            served,
            worker: _,
            slot,
            epoch,
            pooling,
        } = *self;
        match stream.reregistered() {
            Ok(stream) => Some(Box::new(Backend {
                stream,
                params,
                key,
                minor,
                verifier,
                born,
                generation,
                served,
                worker: here,
                slot,
                epoch,
                pooling,
            })),
            Err(e) => {
                tracing::warn!(error = %e, "a repository session could not be moved to this worker; closed");
                None
            }
        }
    }

}

impl Pool {
    /// A backend for a client who proved `verifier` for `key`: a warm session (when `reuse`), or a
    /// slot to open one in. `can_login` false (a NOLOGIN role) never gets a warm session, and its
    /// idle ones are closed: the repository must see the login and refuse it. Waits until `deadline`
    /// when the bounds are reached.
    ///
    /// A warm session registered with another worker's runtime is moved to this one's
    /// ([`Backend::adopt`]).
    pub async fn checkout(
        self: &Arc<Self>,
        key: &Arc<PoolKey>,
        verifier: &Verifier,
        can_login: bool,
        reuse: bool,
        deadline: Instant,
    ) -> Result<Checkout, Exhausted> {
        loop {
            match self
                .checkout_once(key, verifier, can_login, reuse, deadline)
                .await?
            {
                Checkout::Warm(backend) => {
                    if let Some(backend) = backend.adopt() {
                        return Ok(Checkout::Warm(backend));
                    }
                }
                fork => return Ok(fork),
            }
        }
    }

}
