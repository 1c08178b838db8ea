//! The control plane's state on disk: applied and pending settings, the keystore, staged security
//! records and administrators. Certificate files are read and made by [`crate::tls::certs`]; every
//! write goes through [`crate::atomic`].
//!
//! Layout of a data directory:
//!
//! ```text
//! <data-dir>/config/applied.toml              what a running server serves
//! <data-dir>/config/pending.toml              staged changes, promoted by `pending-changes apply`
//! <data-dir>/config/pgsql<major>/security/    server.crt, server.key (0600)
//! <data-dir>/config/external-ssl/<id>/         the administrator's server.crt, server.key (0600)
//! <data-dir>/config/custom-ca/<id>.crt        the custom CA pgssl trusts for outgoing TLS
//! <data-dir>/config/extsvc/<id>.crt           the external analytics service's certificate
//! <data-dir>/config/mutual-ssl/<id>/          ca.pem, crl.pem, user-map (authentication mutual-ssl)
//! <data-dir>/config/internal-ca/ca.crt        pgssl's internal CA (its key is in the keystore)
//! <data-dir>/config/keystore, master-<id>.key secrets at rest (see [`keystore`])
//! <data-dir>/config/.lock                     serialises CLI commands
//! <data-dir>/run/control.sock                 a running server's reload socket
//! ```

pub mod admin_users;
pub mod custom_ca;
pub mod external_cert;
pub mod model;
pub mod mutual_ssl;
pub mod security;
pub mod served_ca;
pub mod store;

pub use crate::tls::certs::{CertError, CertInfo, CertPaths};
pub use store::{Access, AppliedState, PendingChanges, StateError, StateStore};
