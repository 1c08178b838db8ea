//! The inventory of who logs in ([`crate::proxy::inventory`]) kept across restarts: `serve` loads
//! `<data-dir>/clients-seen.json` when it starts, writes it (atomically, 0600: it names roles and
//! addresses) every minute ([`keep`]) and once more when it stops ([`save`]), and forgets what is
//! older than [`WINDOW_DAYS`]. The file is this node's own: in a cluster, the report asks every
//! node for its inventory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::proxy::inventory::{Inventory, Seen, now};

/// How long a client is remembered after its last login.
pub const WINDOW_DAYS: u64 = 7;

/// How often the inventory is written.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// The inventory's file in a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("clients-seen.json")
}

/// The oldest last login the window keeps.
pub fn window_start() -> u64 {
    now().saturating_sub(WINDOW_DAYS * 86_400)
}

/// What the file holds; nothing when there is none or it does not read (said once, as a warning:
/// the inventory then starts afresh, losing only history).
pub fn load(path: &Path) -> Vec<Seen> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the inventory of clients seen; starting a new one");
            return Vec::new();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        warn!(path = %path.display(), error = %e, "the inventory of clients seen does not read; starting a new one");
        Vec::new()
    })
}

/// Writes what `inventory` holds within the window.
pub fn save(inventory: &Inventory, path: &Path) {
    let seen = inventory.snapshot(window_start());
    let written = serde_json::to_vec(&seen)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::atomic::write_file(path, &bytes, 0o600));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "cannot write the inventory of clients seen");
    }
}

/// Restores the inventory from `path`, then writes it every minute until `stop` (the server writes
/// it a last time once it has stopped serving).
pub async fn keep(inventory: Arc<Inventory>, path: PathBuf, stop: CancellationToken) {
    let earlier = load(&path);
    inventory.restore(earlier);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SAVE_EVERY) => {}
        }
        let (inv, p) = (inventory.clone(), path.clone());
        let _ = tokio::task::spawn_blocking(move || save(&inv, &p)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::inventory::Client;

    #[test]
    fn a_saved_inventory_loads_back_and_a_broken_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert!(load(&file).is_empty());
        let inv = Inventory::default();
        inv.record(Client {
            user: "readonly".into(),
            database: "workgroup".into(),
            application: "psql".into(),
            address: "10.0.0.7".into(),
            tls: None,
            channel_binding: false,
            certificate: false,
        });
        save(&inv, &file);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&file);
        assert_eq!(back, inv.snapshot(0));
        std::fs::write(&file, b"{not json").unwrap();
        assert!(load(&file).is_empty());
    }
}
