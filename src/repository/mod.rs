//! Talking to the repository as a client: sessions through tokio-postgres, the managed cluster, its
//! roles and grants, the verifier lookups and the version probe.
//!
//! Every session goes over a stream pgssl opened itself (so the repository's TLS settings are the
//! ones the data plane uses), and every value in a statement is a bound parameter; only names that
//! SQL cannot bind (roles, databases, channels) are quoted, by [`sql`].

pub mod access;
pub mod host;
pub mod lookup;
pub mod managed;
pub mod patroni;
pub mod probe;
pub mod roles;
pub mod session;
pub mod sql;
pub mod supervise;
pub mod version;

pub use session::{Login, Session, SessionError};
