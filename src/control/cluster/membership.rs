//! `config/cluster.toml`: what makes a data directory a cluster node. It belongs to this node alone
//! and is never part of the shared snapshot.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::atomic::{self, PRIVATE_MODE};
use crate::control::state::StateError;

const FILE: &str = "cluster.toml";

/// This node's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// This node's name (unique in the cluster).
    pub node_name: String,
    /// The repository: `host:port`, the hosts of one replicated cluster written libpq's way
    /// (`h1:5432,h2:5432`: the state is on whichever is the primary), or `unix:/dir` on the first
    /// node of a cluster whose store is its managed repository (the other nodes reach that through
    /// this node's listener).
    pub repository: String,
    /// The socket's port when `repository` is a Unix socket folder (`.s.PGSQL.<port>`).
    #[serde(default = "default_socket_port")]
    pub socket_port: u16,
    /// What bootstrap files name as the repository when it is not `repository`: this (first)
    /// node's listener in front of its managed repository.
    #[serde(default)]
    pub bootstrap_repository: Option<String>,
    /// SHA-256 fingerprints of the repository's TLS certificates, one per host (written as one
    /// string when there is one, as before there could be several); none when it offers no TLS
    /// (the cluster's traffic is then plaintext, which `topology` warns about).
    #[serde(
        rename = "repository_fingerprint",
        default,
        with = "super::hosts::pins_format",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub repository_fingerprints: Vec<String>,
    /// The database holding the `pgssl` schema.
    pub database: String,
    /// The state version this node's `config/` holds.
    pub version: u64,
    /// SHA-256 of that version's snapshot, to tell whether a command changed anything.
    pub digest: String,
    /// Whether `repository` is the first node's listener in front of its managed repository: this
    /// node then authenticates its clients as that node does, with the managed repository's
    /// superuser (whose password the shared keystore holds) reading verifiers through it.
    #[serde(default)]
    pub through_node: bool,
}

fn default_socket_port() -> u16 {
    5432
}

impl Membership {
    /// The membership file of `config_dir`.
    pub fn path(config_dir: &Path) -> PathBuf {
        config_dir.join(FILE)
    }

    /// The membership of a node that joined a cluster (not the first node of a managed store, which
    /// runs the repository itself), whose repository is the cluster's; `None` for any other data
    /// directory, or one whose membership file cannot be read (the commands that need it say why).
    pub fn joined(config_dir: &Path) -> Option<Membership> {
        Membership::read(config_dir)
            .ok()
            .flatten()
            .filter(|m| m.bootstrap_repository.is_none())
    }

    /// Whether this data directory joined a cluster whose repository is the first node's listener
    /// in front of its managed repository.
    pub fn joined_through_node(config_dir: &Path) -> bool {
        Membership::joined(config_dir).is_some_and(|m| m.through_node)
    }

    /// The membership of the data directory whose config folder is `config_dir`, if it is a node.
    pub fn read(config_dir: &Path) -> Result<Option<Membership>, ClusterError> {
        let path = Membership::path(config_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }.into()),
        };
        toml::from_str(&text).map(Some).map_err(|e| {
            StateError::Corrupt {
                path,
                message: e.message().to_string(),
            }
            .into()
        })
    }

    /// Writes it atomically (0600: it names the repository).
    pub fn write(&self, config_dir: &Path) -> Result<(), ClusterError> {
        let path = Membership::path(config_dir);
        let text = toml::to_string(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let body = format!(
            "# pgssl cluster membership of this node (written by 'pgssl topology'; do not copy it to another node).\n{text}"
        );
        atomic::write_file(&path, body.as_bytes(), PRIVATE_MODE)
            .map_err(|source| StateError::Io { path, source }.into())
    }

    /// The SHA-256 fingerprints the repository's certificates may have: those pinned when the node
    /// joined (one per host) and, when the repository is the first node's listener (a managed store), the
    /// certificate this node's state serves, which is that node's too after a rotation.
    pub fn pins(&self, config_dir: &Path) -> Vec<String> {
        let mut pins = self.repository_fingerprints.clone();
        if let Some(served) = served_fingerprint(config_dir)
            && !pins.is_empty()
            && !pins.contains(&served)
        {
            pins.push(served);
        }
        pins
    }

    /// Leaves the cluster: removes the file (the node keeps its state and serves it alone).
    pub fn remove(config_dir: &Path) -> Result<bool, ClusterError> {
        let path = Membership::path(config_dir);
        atomic::remove_file(&path).map_err(|source| StateError::Io { path, source }.into())
    }
}

/// A node name: 1–63 letters, digits, '-', '_' or '.'.
pub fn check_node_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadNodeName(name.to_string()))
    }
}

/// The default node name: this machine's host name.
pub fn default_node_name() -> String {
    let name = crate::tls::certs::hostname().unwrap_or_default();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}

/// The fingerprint of the certificate the applied state of `config_dir` serves, if any.
pub fn served_fingerprint(config_dir: &Path) -> Option<String> {
    let store = crate::control::state::StateStore::open_existing(config_dir.parent()?).ok()?;
    let paths = store.serving_cert_paths(&store.applied().ok()?)?;
    Some(
        crate::tls::certs::read_info(&paths.cert)
            .ok()?
            .sha256_fingerprint,
    )
}

/// A listener as other nodes reach it: the bound address, or this host's name with its port when it
/// listens on every address (0.0.0.0 in a container).
pub fn advertised(addr: std::net::SocketAddr) -> String {
    match (addr.ip().is_unspecified(), crate::tls::certs::hostname()) {
        (true, Some(host)) => format!("{host}:{}", addr.port()),
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Membership {
        Membership {
            node_name: "node-1".into(),
            repository: "db.example:5432".into(),
            socket_port: 5432,
            bootstrap_repository: None,
            repository_fingerprints: vec!["AB:CD".into()],
            database: "postgres".into(),
            version: 7,
            digest: "d".repeat(64),
            through_node: false,
        }
    }

    #[test]
    fn a_folder_without_cluster_toml_is_no_node() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Membership::read(dir.path()).unwrap(), None);
        assert_eq!(Membership::joined(dir.path()), None);
        assert!(!Membership::joined_through_node(dir.path()));
        assert!(!Membership::remove(dir.path()).unwrap());
    }

    #[test]
    fn a_membership_round_trips_through_its_private_file_and_leaves_with_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        member().write(dir.path()).unwrap();
        assert_eq!(Membership::read(dir.path()).unwrap(), Some(member()));
        let path = Membership::path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("# pgssl cluster membership")
        );
        assert!(Membership::remove(dir.path()).unwrap());
        assert_eq!(Membership::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn an_unknown_field_or_a_bad_value_makes_cluster_toml_a_local_error() {
        let dir = tempfile::tempdir().unwrap();
        member().write(dir.path()).unwrap();
        let path = Membership::path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        for bent in [
            format!("{text}surprise = 1\n"),
            text.replace("version = 7", "version = -1"),
            text.replace("node_name = \"node-1\"\n", ""),
            "not toml at all".to_string(),
        ] {
            std::fs::write(&path, &bent).unwrap();
            let e = Membership::read(dir.path()).unwrap_err();
            assert!(
                matches!(&e, ClusterError::State(StateError::Corrupt { .. })),
                "{bent}: {e:?}"
            );
            assert!(e.is_local() && !e.is_user_error() && !e.is_unreachable());
            // The membership of a node whose file is unreadable is not guessed.
            assert_eq!(Membership::joined(dir.path()), None);
        }
    }

    #[test]
    fn a_file_written_before_socket_port_and_through_node_reads_with_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            Membership::path(dir.path()),
            "node_name = \"node-1\"\nrepository = \"db.example:5432\"\nrepository_fingerprint = \"AB:CD\"\ndatabase = \"postgres\"\nversion = 7\ndigest = \"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"\n",
        )
        .unwrap();
        assert_eq!(Membership::read(dir.path()).unwrap(), Some(member()));
    }

    #[test]
    fn only_a_node_that_joined_is_joined_and_through_a_node_when_its_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let first = Membership {
            repository: "unix:/data/run".into(),
            bootstrap_repository: Some("node-1.example:6432".into()),
            ..member()
        };
        first.write(dir.path()).unwrap();
        assert_eq!(Membership::joined(dir.path()), None);
        assert!(!Membership::joined_through_node(dir.path()));
        let second = Membership {
            through_node: true,
            ..member()
        };
        second.write(dir.path()).unwrap();
        assert_eq!(Membership::joined(dir.path()), Some(second));
        assert!(Membership::joined_through_node(dir.path()));
    }

    #[test]
    fn node_names_are_1_to_63_letters_digits_dashes_underscores_or_dots() {
        for good in ["a", "node-1", "eu_west.2", &"x".repeat(63)] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", &"x".repeat(64), "a b", "a/b", "é", "a;b", "-\n"] {
            let e = check_node_name(bad).unwrap_err();
            assert!(e.is_user_error(), "{bad}");
            assert!(e.to_string().contains("not a node name"), "{e}");
        }
        let default = default_node_name();
        assert!(check_node_name(&default).is_ok(), "{default}");
    }

    #[test]
    fn pins_are_the_fingerprint_pinned_at_join_and_none_for_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(member().pins(dir.path()), ["AB:CD"]);
        let plaintext = Membership {
            repository_fingerprints: Vec::new(),
            ..member()
        };
        assert!(plaintext.pins(dir.path()).is_empty());
    }

    #[test]
    fn a_membership_of_several_hosts_keeps_their_list_and_every_hosts_pin() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = Membership {
            repository: "h1.example:5432,h2.example:5432".into(),
            repository_fingerprints: vec!["AB:CD".into(), "EF:01".into()],
            ..member()
        };
        hosts.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(Membership::path(dir.path())).unwrap();
        assert!(
            text.contains("repository = \"h1.example:5432,h2.example:5432\""),
            "{text}"
        );
        assert_eq!(Membership::read(dir.path()).unwrap(), Some(hosts.clone()));
        assert_eq!(hosts.pins(dir.path()), ["AB:CD", "EF:01"]);
        // One host's file is written as before there could be several.
        member().write(dir.path()).unwrap();
        let text = std::fs::read_to_string(Membership::path(dir.path())).unwrap();
        assert!(
            text.contains("repository_fingerprint = \"AB:CD\"\n"),
            "{text}"
        );
    }

    #[test]
    fn a_listener_is_advertised_by_its_address_or_by_host_name_when_it_listens_everywhere() {
        let bound: std::net::SocketAddr = "192.0.2.7:6432".parse().unwrap();
        assert_eq!(advertised(bound), "192.0.2.7:6432");
        let everywhere: std::net::SocketAddr = "0.0.0.0:6432".parse().unwrap();
        let expected = crate::tls::certs::hostname()
            .map_or_else(|| "0.0.0.0:6432".to_string(), |h| format!("{h}:6432"));
        assert_eq!(advertised(everywhere), expected);
    }
}
