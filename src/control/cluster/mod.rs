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
//! ```

pub mod bootstrap;
pub mod follow;
pub mod members;
pub mod membership;
pub mod publish;
pub mod repo;
pub mod snapshot;

pub use membership::Membership;

/// The role the nodes use in the repository; only it (and superusers) can read the `pgssl` schema.
pub const CLUSTER_ROLE: &str = "pgssl_cluster";
/// Keystore entry of the cluster role's password (shared by every node through the snapshot).
pub const PASSWORD_ENTRY: &str = "cluster/password";
/// The password being rotated to, kept until the role has it (see `regenerate-internal-tokens`).
pub const NEXT_PASSWORD_ENTRY: &str = "cluster/password-next";
/// The channel a new state version is announced on.
pub const CHANNEL: &str = "pgssl_state";

/// Cluster coordination failures, classified once by [`ClusterError::is_user_error`] and
/// [`ClusterError::is_unreachable`].
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The repository cannot be reached or refused the cluster role.
    #[error("cannot reach the cluster's repository {repository}: {message}")]
    Unreachable {
        /// Its address.
        repository: String,
        /// Why.
        message: String,
    },
    /// The repository refused the cluster role's password (rotated since, or the node was removed).
    #[error(
        "the cluster's repository {repository} refused the cluster role: {message} (if its password was rotated while this node was away, join again with a new bootstrap file: 'pgssl topology join')"
    )]
    Refused {
        /// Its address.
        repository: String,
        /// The server's message.
        message: String,
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
    /// The request does not fit this node's membership (not a member, already one, unknown node).
    #[error("{0}")]
    Invalid(String),
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

impl ClusterError {
    /// The caller's to fix.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            ClusterError::Conflict { .. }
                | ClusterError::Invalid(_)
                | ClusterError::Bootstrap(_)
                | ClusterError::NodesBehind(_)
        )
    }

    /// This node's own files (a full or read-only disk, a file it cannot read or write): neither
    /// the caller's request nor the repository is at fault.
    pub fn is_local(&self) -> bool {
        matches!(self, ClusterError::State(_) | ClusterError::Keystore(_))
    }

    /// The repository's to fix.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClusterError::Unreachable { .. } | ClusterError::Refused { .. }
        )
    }
}

// The kind of a cluster failure, from its own classification. (Kept apart so that a merge with a
// branch that classifies ClusterError itself keeps one of the two.)
impl ClusterError {
    /// The caller's ([`ClusterError::is_user_error`]), the repository's
    /// ([`ClusterError::is_unreachable`]), else pgssl's.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        if self.is_user_error() {
            ErrorKind::User
        } else if self.is_unreachable() {
            ErrorKind::Upstream
        } else {
            ErrorKind::Server
        }
    }
}
