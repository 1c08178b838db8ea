//! The authentication phase of a session, between the policy decision and the byte relay.
//!
//! - Proxy mode ([`mod@terminate`], over [`scram`]): pgssl authenticates the client itself, with
//!   SCRAM-SHA-256-PLUS bound to the certificate it served, then logs into the repository as the same
//!   role by SCRAM pass-through.
//! - Passthrough ([`mod@passthrough`]): the repository authenticates and pgssl relays the exchange
//!   message by message, changing one thing: SCRAM-SHA-256-PLUS is taken out of the repository's
//!   offer, because a channel binding cannot hold across a TLS terminator (see
//!   [`crate::proxy::protocol::auth_message`]).
//! - Both: failed logins are limited per (address, user) ([`lockout`]).

pub mod lockout;
pub mod passthrough;
pub mod scram;
pub mod terminate;

pub use passthrough::{AuthEnd, passthrough};

use std::sync::Arc;

/// How a server's sessions authenticate (`auth.mode`, decided by the composition root).
#[derive(Debug, Clone, Default)]
pub enum AuthPlan {
    /// The repository authenticates; pgssl relays the exchange ([`mod@passthrough`]).
    #[default]
    Passthrough,
    /// pgssl authenticates the client with verifiers from `lookup` — or, when that is `None`, from
    /// the settings snapshot's lookup user — then logs into the repository by SCRAM pass-through
    /// ([`mod@terminate`]).
    Proxy {
        /// The server's own verifier source (the managed repository's), if it has one.
        lookup: Option<Arc<dyn terminate::VerifierSource>>,
        /// Derives an unknown user's mock salt.
        mock_secret: [u8; 32],
        /// Whether a login with no verifier source at all is refused (`auth.mode = "proxy"`) rather
        /// than passed through (`auto`).
        required: bool,
    },
}
