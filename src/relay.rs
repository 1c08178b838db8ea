//! The relay: bytes both ways between the client and the repository until either side closes.
//!
//! Nothing here parses the protocol; authentication, queries and COPY pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Bytes moved by a relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Client to repository.
    pub to_upstream: u64,
    /// Repository to client.
    pub to_client: u64,
}

/// How a relay ended, with what it moved until then.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished (one side closed and the other followed).
    Closed(Transferred),
    /// A socket error ended the session.
    Failed(io::Error, Transferred),
    /// The proxy's shutdown grace period ran out.
    Shutdown(Transferred),
}

impl RelayEnd {
    /// The bytes moved, however the relay ended.
    pub fn transferred(&self) -> Transferred {
        match self {
            RelayEnd::Closed(t) | RelayEnd::Failed(_, t) | RelayEnd::Shutdown(t) => *t,
        }
    }
}

/// Copies both ways until both directions are done, an error occurs, or `stop` is cancelled.
pub async fn relay<C, U>(client: &mut C, upstream: &mut U, stop: &CancellationToken) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // Counting the reads on each side keeps the totals even when the copy ends in an error.
    let mut client = Counting {
        inner: client,
        read: 0,
    };
    let mut upstream = Counting {
        inner: upstream,
        read: 0,
    };
    let result = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => Some(result),
        () = stop.cancelled() => None,
    };
    let moved = Transferred {
        to_upstream: client.read,
        to_client: upstream.read,
    };
    match result {
        Some(Ok(_)) => RelayEnd::Closed(moved),
        // A client that drops TCP without TLS close_notify is how most clients leave after
        // Terminate; it is an ordinary end of session, not a failure.
        Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => RelayEnd::Closed(moved),
        Some(Err(e)) => RelayEnd::Failed(e, moved),
        None => RelayEnd::Shutdown(moved),
    }
}

/// A stream that counts the bytes read from it.
struct Counting<'a, S: ?Sized> {
    inner: &'a mut S,
    read: u64,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Counting<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        poll
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counting<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
