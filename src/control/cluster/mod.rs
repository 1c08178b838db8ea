//! A cluster: several pgssl nodes serving one state, coordinated through the repository itself.
//!
//! The repository is already there, durable and replicated wherever its owner replicates PostgreSQL,
//! so it is the coordination store: no consensus or gossip of pgssl's own. The shared state is the
//! data directory's `config/` folder less what belongs to one node ([`snapshot`]), sealed under the
//! master key (which is never stored in the repository) and kept as one versioned row of the
//! `pgssl` schema ([`repo`]). A change commits a new version with an optimistic check and NOTIFYs;
//! every node LISTENs, polls as a fallback, installs the new version into its own `config/` (its
//! local cache: a node that cannot reach the repository serves from it) and reloads ([`follow`]).
//!
//! ```text
//! <data-dir>/config/cluster.toml    this node's membership: name, repository, version it holds
//! pgssl.state                       one row: version, generation, sealed snapshot, who applied it
//! pgssl.nodes                       one row per node: id, address, version served, fingerprint, heartbeat
//! pgssl.questions, pgssl.answers    what a command asks every node, and each node's answer
//! ```

pub mod bootstrap;
pub mod follow;
pub mod hosts;
pub mod members;
pub mod membership;
#[cfg(test)]
mod memory;
pub mod publish;
pub mod questions;
pub mod repo;
pub mod schema;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod tests;

pub use membership::Membership;

use crate::error::ErrorKind;
use crate::repository::SessionError;

/// The role the nodes use in the repository; only it (and superusers) can read the `pgssl` schema.
pub const CLUSTER_ROLE: &str = "pgssl_cluster";
/// Keystore entry of the cluster role's password (shared by every node through the snapshot).
pub const PASSWORD_ENTRY: &str = "cluster/password";
/// The password being rotated to, kept until the role has it (see `regenerate-internal-tokens`).
pub const NEXT_PASSWORD_ENTRY: &str = "cluster/password-next";
/// The channel a new state version is announced on.
pub const CHANNEL: &str = "pgssl_state";

/// Cluster coordination failures, each deciding its own [`ErrorKind`] ([`ClusterError::kind`]).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The repository cannot be reached (its address, TLS to it, no answer in time).
    #[error("cannot reach the cluster's repository {repository}: {message}")]
    Unreachable {
        /// Its address.
        repository: String,
        /// Why.
        message: String,
    },
    /// A session on the repository failed: the repository answered an error or went away.
    #[error("cannot reach the cluster's repository {repository}: {source}")]
    Repository {
        /// Its address.
        repository: String,
        /// The session's failure, with the SQLSTATE the repository answered.
        source: SessionError,
    },
    /// An administrator's session for making a cluster failed.
    #[error("cannot reach the cluster's repository {repository}: as {user}: {source}")]
    Admin {
        /// Its address.
        repository: String,
        /// The administrator's role.
        user: String,
        /// Why.
        source: SessionError,
    },
    /// The repository refused the cluster role's password (rotated since, or the node was removed).
    #[error(
        "the cluster's repository {repository} refused the cluster role: {source} (if its password was rotated while this node was away, join again with a new bootstrap file: 'pgssl topology join')"
    )]
    Refused {
        /// Its address.
        repository: String,
        /// The repository's refusal (SQLSTATE 28P01 or 28000).
        source: SessionError,
    },
    /// A host of the repository is in recovery (a standby): the cluster's state is written only
    /// on the primary.
    #[error(
        "the cluster's repository host {repository} is in recovery (a standby): the cluster's state is written only on the primary"
    )]
    InRecovery {
        /// The host.
        repository: String,
    },
    /// No host of the repository is a primary this node can use: each is down, a standby, or
    /// refused the session.
    #[error(
        "no host of the cluster's repository {repository} is a primary this node can use (a failover under way?): {}",
        tried_hosts(.tried)
    )]
    NoPrimary {
        /// The hosts, as written.
        repository: String,
        /// Why each host was passed over, in order.
        tried: Vec<ClusterError>,
    },
    /// Some hosts of the repository offer TLS and others do not: a cluster that pins the
    /// certificates could not reach the others after a failover.
    #[error(
        "the hosts of the cluster's repository disagree about TLS: {} offer it, {} do not; turn on ssl on every host (the cluster pins each host's certificate)",
        .with_tls.join(", "),
        .without.join(", ")
    )]
    MixedTls {
        /// The hosts that offer TLS.
        with_tls: Vec<String>,
        /// The hosts that do not.
        without: Vec<String>,
    },
    /// Another node committed a version first.
    #[error(
        "another node applied a change first (the cluster is at version {current}, this change was made on version {base}); nothing was applied: review with 'pgssl pending-changes list' and apply again"
    )]
    Conflict {
        /// The version this change was based on.
        base: u64,
        /// The cluster's version now.
        current: u64,
    },
    /// A command that needs a cluster node ran on a data directory that is none.
    #[error(
        "this data directory is not a cluster node (make a cluster with 'pgssl topology get-bootstrap-file', or join one with 'pgssl topology join')"
    )]
    NotANode,
    /// A following node's membership went away under it.
    #[error("this node left the cluster")]
    LeftCluster,
    /// A join on a data directory that is a node already.
    #[error("this data directory is already node '{node}' of the cluster at {repository}")]
    AlreadyANode {
        /// Its node name.
        node: String,
        /// Its cluster's repository.
        repository: String,
    },
    /// A node name outside the allowed characters or length.
    #[error("'{0}' is not a node name: use 1 to 63 letters, digits, '-', '_' or '.'")]
    BadNodeName(String),
    /// A join under a name a live node has.
    #[error("a live node is named '{0}' already: give this one another name with --node-name")]
    NameTaken(String),
    /// A node registering under a name the cluster has removed.
    #[error("node {0} is removed")]
    NodeRemoved(String),
    /// Every node id is held by a row of `pgssl.nodes`.
    #[error(
        "every one of the cluster's {max} node ids is taken: remove nodes that are gone ('pgssl topology remove-node NAME'), then join this one again"
    )]
    IdsExhausted {
        /// How many ids there are.
        max: u32,
    },
    /// Making a cluster on a repository that holds one already.
    #[error(
        "the repository already holds a pgssl cluster's state (version {version}): join that cluster with a bootstrap file from one of its nodes instead"
    )]
    AlreadyHoldsACluster {
        /// The version it holds.
        version: u64,
    },
    /// The keystore holds no cluster role password.
    #[error("the keystore holds no cluster password")]
    NoPassword,
    /// A rotation found no password to rotate to.
    #[error("no cluster password to rotate to")]
    NoNextPassword,
    /// A bootstrap file for a managed first node, whose listener serves no certificate yet.
    #[error(
        "other nodes reach this node's managed repository through its listener over TLS: enable repository SSL and apply it first"
    )]
    ListenerWithoutTls,
    /// A bootstrap passphrase shorter than the minimum.
    #[error("the passphrase must have at least {min} characters")]
    ShortPassphrase {
        /// The minimum.
        min: usize,
    },
    /// A bootstrap file that cannot be used.
    #[error("{0}")]
    Bootstrap(String),
    /// A live node does not serve the version a step depends on (see its log for why).
    #[error("{0}")]
    NodesBehind(String),
    /// The repository holds something pgssl cannot read.
    #[error("the cluster state in the repository is unusable: {0}")]
    Corrupt(String),
    /// A local file.
    #[error(transparent)]
    State(#[from] crate::control::state::StateError),
    /// The keystore.
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
}

/// Why each host was passed over, one after the other.
fn tried_hosts(tried: &[ClusterError]) -> String {
    tried
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClusterError {
    /// Who has to act: the caller for a request that does not fit the cluster, the repository's
    /// owner when it is out of reach or refuses, pgssl's own for what it cannot read or write.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::Repository { source, .. }
            | ClusterError::Admin { source, .. }
            | ClusterError::Refused { source, .. } => source.kind(),
            ClusterError::Unreachable { .. }
            | ClusterError::InRecovery { .. }
            | ClusterError::NoPrimary { .. } => ErrorKind::Upstream,
            ClusterError::Conflict { .. }
            | ClusterError::NotANode
            | ClusterError::LeftCluster
            | ClusterError::AlreadyANode { .. }
            | ClusterError::BadNodeName(_)
            | ClusterError::NameTaken(_)
            | ClusterError::NodeRemoved(_)
            | ClusterError::IdsExhausted { .. }
            | ClusterError::AlreadyHoldsACluster { .. }
            | ClusterError::NoPassword
            | ClusterError::NoNextPassword
            | ClusterError::ListenerWithoutTls
            | ClusterError::MixedTls { .. }
            | ClusterError::ShortPassphrase { .. }
            | ClusterError::Bootstrap(_)
            | ClusterError::NodesBehind(_) => ErrorKind::User,
            ClusterError::Corrupt(_) | ClusterError::State(_) | ClusterError::Keystore(_) => {
                ErrorKind::Server
            }
        }
    }

    /// The caller's to fix ([`ErrorKind::User`]).
    pub fn is_user_error(&self) -> bool {
        self.kind() == ErrorKind::User
    }

    /// This node's own files (a full or read-only disk, a file it cannot read or write): neither
    /// the caller's request nor the repository is at fault.
    pub fn is_local(&self) -> bool {
        matches!(self, ClusterError::State(_) | ClusterError::Keystore(_))
    }

    /// The repository's to fix ([`ErrorKind::Upstream`]).
    pub fn is_unreachable(&self) -> bool {
        self.kind() == ErrorKind::Upstream
    }
}
