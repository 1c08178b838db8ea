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

pub mod cache;
pub mod cert;
pub mod lockout;
pub mod passthrough;
pub(crate) mod password_login;
pub mod scram;
pub mod terminate;

pub use passthrough::{AuthEnd, passthrough, passthrough_gated};

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::protocol::auth_message::{self, AuthMessageError, Frame};

/// Why an authentication-phase frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Its length was malformed or too large (nothing was allocated for it).
    #[error(transparent)]
    Malformed(#[from] AuthMessageError),
    /// The socket failed or the other side closed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads exactly one frame, its length checked before its body is read.
pub async fn read_frame<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<Frame, FrameError> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = auth_message::body_len(header)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Frame {
        kind: header[0],
        body: body.into(),
    })
}

/// Writes and flushes one frame.
pub async fn write_frame<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    frame: &Frame,
) -> std::io::Result<()> {
    stream.write_all(&frame.encode()).await?;
    stream.flush().await
}

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

impl AuthPlan {
    /// Whether a session accepted with `settings` may be a passthrough one (its cancel key is then the
    /// repository's own, not one pgssl minted).
    pub fn may_pass_through(&self, settings: &crate::proxy::settings::LiveSettings) -> bool {
        match self {
            AuthPlan::Passthrough => true,
            AuthPlan::Proxy {
                lookup, required, ..
            } => {
                // A certificate-authenticated session gets the repository's own cancel key.
                (!*required && lookup.is_none() && settings.lookup.is_none())
                    || settings.cert_login.is_some()
            }
        }
    }
}
