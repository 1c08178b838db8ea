//! What a client that logs in without a backend is told: the start-up parameters the last new
//! session of its key reported.

use std::sync::Arc;

use super::{Pool, PoolKey, Slot};

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
    /// What the last new session of `key` reported at start-up, if one has logged in.
    pub fn welcome(&self, key: &PoolKey) -> Option<Welcome> {
        self.welcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}
