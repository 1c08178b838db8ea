//! Who logs in, for the pre-flight report (`security repository-ssl report`): each successful
//! login is counted under what a mode change or mutual SSL would judge it by — role, database,
//! application, client address, TLS or not (and its version), channel binding, client certificate
//! — with when it was first and last seen.
//!
//! Bounded: at most [`MAX_CLIENTS`] distinct clients; when a new one arrives at the bound, the
//! least recently seen tenth is dropped (one pass, not one per login). Only logins that succeeded
//! are counted, so a client guessing role names cannot fill it. The control plane persists it
//! ([`Inventory::snapshot`], [`Inventory::restore`]) and forgets what is older than its window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Most distinct clients kept.
pub const MAX_CLIENTS: usize = 10_000;

/// One kind of client, as a mode change judges it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Client {
    /// The role.
    pub user: String,
    /// The database.
    pub database: String,
    /// Its start-up's `application_name`.
    pub application: String,
    /// Its address (no port: one client, however many connections).
    pub address: String,
    /// The TLS version, `None` in plaintext.
    pub tls: Option<String>,
    /// Whether it bound SCRAM to the TLS channel.
    pub channel_binding: bool,
    /// Whether it presented a client certificate.
    pub certificate: bool,
}

/// A client and how often and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Who.
    #[serde(flatten)]
    pub client: Client,
    /// Logins counted.
    pub count: u64,
    /// First seen, seconds since the Unix epoch.
    pub first_seen: u64,
    /// Last seen, seconds since the Unix epoch.
    pub last_seen: u64,
}

impl Seen {
    /// Adds `other`'s logins (the same client seen elsewhere: another node, an earlier run).
    pub fn merge(&mut self, other: &Seen) {
        self.count += other.count;
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    count: u64,
    first_seen: u64,
    last_seen: u64,
}

/// The clients one node has seen.
#[derive(Debug, Default)]
pub struct Inventory {
    seen: Mutex<HashMap<Client, Counts>>,
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Inventory {
    /// Counts a login of `client` now.
    pub fn record(&self, client: Client) {
        self.record_at(client, now());
    }

    fn record_at(&self, client: Client, at: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = seen.get_mut(&client) {
            c.count += 1;
            c.last_seen = c.last_seen.max(at);
            return;
        }
        if seen.len() >= MAX_CLIENTS {
            evict_oldest(&mut seen, MAX_CLIENTS / 10);
        }
        seen.insert(
            client,
            Counts {
                count: 1,
                first_seen: at,
                last_seen: at,
            },
        );
    }

    /// The clients last seen at or after `since` (seconds since the epoch), by role; older ones
    /// are forgotten.
    pub fn snapshot(&self, since: u64) -> Vec<Seen> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, c| c.last_seen >= since);
        let mut out: Vec<Seen> = seen
            .iter()
            .map(|(client, c)| Seen {
                client: client.clone(),
                count: c.count,
                first_seen: c.first_seen,
                last_seen: c.last_seen,
            })
            .collect();
        out.sort_by(|a, b| a.client.cmp(&b.client));
        out
    }

    /// Adds what an earlier run saw (its persisted snapshot) to what this one counts.
    pub fn restore(&self, earlier: Vec<Seen>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for s in earlier.into_iter().take(MAX_CLIENTS) {
            let c = seen.entry(s.client).or_insert(Counts {
                count: 0,
                first_seen: s.first_seen,
                last_seen: s.last_seen,
            });
            c.count += s.count;
            c.first_seen = c.first_seen.min(s.first_seen);
            c.last_seen = c.last_seen.max(s.last_seen);
        }
        if seen.len() > MAX_CLIENTS {
            let over = seen.len() - MAX_CLIENTS;
            evict_oldest(&mut seen, over);
        }
    }
}

/// Drops the `n` least recently seen clients.
fn evict_oldest(seen: &mut HashMap<Client, Counts>, n: usize) {
    let mut by_age: Vec<u64> = seen.values().map(|c| c.last_seen).collect();
    if n == 0 || by_age.is_empty() {
        return;
    }
    let i = (n - 1).min(by_age.len() - 1);
    let (_, &mut cut, _) = by_age.select_nth_unstable(i);
    let mut dropped = 0;
    seen.retain(|_, c| {
        if dropped < n && c.last_seen <= cut {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(user: &str, address: &str, tls: bool) -> Client {
        Client {
            user: user.into(),
            database: "workgroup".into(),
            application: "app".into(),
            address: address.into(),
            tls: tls.then(|| "TLSv1_3".into()),
            channel_binding: false,
            certificate: false,
        }
    }

    #[test]
    fn logins_are_counted_per_client_with_first_and_last_seen() {
        let inv = Inventory::default();
        inv.record_at(client("readonly", "10.0.0.1", false), 100);
        inv.record_at(client("readonly", "10.0.0.1", false), 200);
        inv.record_at(client("readonly", "10.0.0.1", true), 150);
        let seen = inv.snapshot(0);
        assert_eq!(seen.len(), 2);
        let plain = seen.iter().find(|s| s.client.tls.is_none()).unwrap();
        assert_eq!(
            (plain.count, plain.first_seen, plain.last_seen),
            (2, 100, 200)
        );
        // A window forgets what it no longer covers.
        assert_eq!(inv.snapshot(160).len(), 1);
        assert_eq!(inv.snapshot(0).len(), 1);
    }

    #[test]
    fn it_stays_bounded_dropping_the_least_recently_seen() {
        let inv = Inventory::default();
        for i in 0..MAX_CLIENTS as u64 {
            inv.record_at(client(&format!("u{i}"), "10.0.0.1", true), 1_000 + i);
        }
        inv.record_at(client("newcomer", "10.0.0.2", true), 1_000_000);
        let seen = inv.snapshot(0);
        assert!(seen.len() <= MAX_CLIENTS, "{}", seen.len());
        assert!(seen.len() >= MAX_CLIENTS - MAX_CLIENTS / 10);
        assert!(seen.iter().any(|s| s.client.user == "newcomer"));
        assert!(
            !seen.iter().any(|s| s.client.user == "u0"),
            "the oldest went"
        );
        let newest = format!("u{}", MAX_CLIENTS - 1);
        assert!(
            seen.iter().any(|s| s.client.user == newest),
            "the newest stayed"
        );
    }

    #[test]
    fn a_restored_snapshot_adds_to_what_is_counted() {
        let inv = Inventory::default();
        inv.record_at(client("tableau", "10.0.0.1", true), 500);
        let earlier = vec![Seen {
            client: client("tableau", "10.0.0.1", true),
            count: 7,
            first_seen: 100,
            last_seen: 400,
        }];
        inv.restore(earlier);
        let seen = inv.snapshot(0);
        assert_eq!(
            (seen[0].count, seen[0].first_seen, seen[0].last_seen),
            (8, 100, 500)
        );
        let json = serde_json::to_string(&seen).unwrap();
        assert!(json.contains("\"user\":\"tableau\""), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Seen>>(&json).unwrap(), seen);
    }
}
