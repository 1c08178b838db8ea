//! The relay: bytes both ways between the client and the repository until either side closes.
//!
//! Nothing here parses the protocol; authentication, queries and COPY pass through untouched.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Client to repository.
    pub to_upstream: u64,
    /// Repository to client.
    pub to_client: u64,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished (one side closed and the other followed).
    Closed(Transferred),
    /// A socket error ended the session.
    Failed(io::Error),
    /// The proxy's shutdown grace period ran out.
    Shutdown,
}

/// Copies both ways until both directions are done, an error occurs, or `stop` is cancelled.
pub async fn relay<C, U>(client: &mut C, upstream: &mut U, stop: &CancellationToken) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::select! {
        result = tokio::io::copy_bidirectional(client, upstream) => match result {
            Ok((to_upstream, to_client)) => RelayEnd::Closed(Transferred { to_upstream, to_client }),
            // A client that drops TCP without TLS close_notify is how most clients leave after
            // Terminate; it is an ordinary end of session, not a failure.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => RelayEnd::Closed(Transferred::default()),
            Err(e) => RelayEnd::Failed(e),
        },
        () = stop.cancelled() => RelayEnd::Shutdown,
    }
}
