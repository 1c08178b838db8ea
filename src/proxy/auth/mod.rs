//! The authentication phase of a session, between the forwarded start-up and the byte relay.
//!
//! Today the repository authenticates the client and pgssl relays the exchange message by message
//! ([`passthrough`]), changing one thing: SCRAM-SHA-256-PLUS is taken out of the repository's offer,
//! because a channel binding cannot hold across a TLS terminator (see
//! [`crate::proxy::protocol::auth_message`]). Without that, libpq's default `channel_binding=prefer`
//! picks PLUS whenever the repository is reached over TLS, binds to pgssl's certificate, and the
//! repository refuses it: `FATAL: SCRAM channel binding check failed`.

pub mod lockout;
pub mod passthrough;
pub mod scram;
pub mod terminate;

pub use passthrough::{AuthEnd, passthrough};

use std::sync::Arc;

/// How a server's sessions authenticate (`auth.mode`, decided by the composition root).
#[derive(Debug, Clone, Default)]
pub enum AuthPlan {
    /// The repository authenticates; pgssl relays the exchange ([`passthrough`]).
    #[default]
    Passthrough,
    /// pgssl authenticates the client with verifiers from `lookup`, then logs into the repository
    /// by SCRAM pass-through ([`terminate`]).
    Proxy {
        /// Where verifiers come from.
        lookup: Arc<dyn terminate::VerifierSource>,
        /// Derives an unknown user's mock salt.
        mock_secret: [u8; 32],
    },
}
