//! Talking to the repository as a client: a minimal PostgreSQL frontend and the version probe.
//!
//! The control plane uses it to learn the upstream's major version (for `config/pgsql<major>`); tests
//! use it as a Rust client over whatever stream they open (plain, TLS via SSLRequest, direct TLS).

pub mod access;
pub mod client;
pub mod host;
pub mod lookup;
pub mod managed;
pub mod roles;
pub mod sql;
pub mod supervise;
pub mod version;

pub use client::{ClientError, ServerError, Session};
