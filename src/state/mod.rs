//! The control plane's state on disk: applied and pending settings, certificates, and the file
//! primitives that keep them consistent.
//!
//! Layout of a data directory:
//!
//! ```text
//! <data-dir>/config/applied.toml              what a running server serves
//! <data-dir>/config/pending.toml              staged changes, promoted by `pending-changes apply`
//! <data-dir>/config/pgsql<major>/security/    server.crt, server.key (0600)
//! <data-dir>/config/.lock                     serialises CLI commands
//! <data-dir>/run/control.sock                 a running server's reload socket
//! ```

pub mod atomic;
pub mod certs;
pub mod keystore;
pub mod store;

pub use certs::{CertError, CertInfo, CertPaths};
pub use store::{Access, AppliedState, PendingChanges, StateError, StateStore};
