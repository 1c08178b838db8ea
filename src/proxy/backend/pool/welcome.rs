//! What a client that logs in without a backend is told: the start-up parameters the last new
//! session of its key reported.

use std::sync::Arc;

use super::{Pool, PoolKey, Slot};
use crate::proxy::pooling::tracker::set_shared;

/// The parameters a session reported at start-up.
pub type Welcome = Arc<Vec<(bytes::Bytes, bytes::Bytes)>>;

impl Slot {
    /// Records the parameters a new session of this key reported at start-up: what a client of
    /// the key is told when it logs in without a backend.
    pub fn remember_params(&self, params: &[(bytes::Bytes, bytes::Bytes)]) {
        let mut welcomes = self.pool.welcomes.lock().unwrap_or_else(|p| p.into_inner());
        // Start-up options can make many keys: the map is bounded, and refilled by the next logins.
        if welcomes.len() >= 10_000 && !welcomes.contains_key(&self.key) {
            welcomes.clear();
        }
        welcomes.insert(self.key.clone(), Arc::new(params.to_vec()));
    }
}

impl Pool {
    /// What a client of `key` whose start-up named `application_name` is told: what the last new
    /// session of the key reported at start-up, with the client's own `application_name`; `None`
    /// before a session of the key has logged in. Idle clients of a key share one list: a list
    /// made for another name replaces the kept one, so the next client of that name shares it.
    pub fn welcome(&self, key: &PoolKey, application_name: &str) -> Option<Welcome> {
        let mut welcomes = self.welcomes.lock().unwrap_or_else(|p| p.into_inner());
        let kept = welcomes.get_mut(key)?;
        set_shared(kept, b"application_name", application_name.as_bytes());
        Some(kept.clone())
    }
}
