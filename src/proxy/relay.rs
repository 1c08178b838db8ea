//! The relay: bytes both ways between the client and the repository until either side closes.
//!
//! Nothing here changes the protocol; authentication, queries and COPY pass through untouched. Until
//! the login is decided, the repository's bytes are also shown to a [`LoginWatch`] (frames only, no
//! copy), which is dropped once it knows.
//!
//! An idle session must cost as little memory as possible (a proxy may hold thousands), so the relay
//! owns no copy buffers while nothing flows: each read lands in a buffer on the stack of the poll
//! call and is written on at once; only bytes the destination cannot take yet are moved to the heap,
//! and that spill buffer is freed as soon as it drains.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::proxy::protocol::login_watch::{LoginOutcome, LoginWatch};

/// Size of the per-poll stack buffer: one TLS record's worth of plaintext.
const CHUNK: usize = 16 * 1024;

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
    relay_with(client, upstream, stop, Direction::default())
        .await
        .0
}

/// [`relay`] for a session whose login is still under way: also reports how the repository ended the
/// login (`None` when the relay ended before it said).
pub async fn relay_login<C, U>(
    client: &mut C,
    upstream: &mut U,
    stop: &CancellationToken,
) -> (RelayEnd, Option<LoginOutcome>)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let down = Direction {
        login: Some(Box::default()),
        ..Direction::default()
    };
    relay_with(client, upstream, stop, down).await
}

async fn relay_with<C, U>(
    client: &mut C,
    upstream: &mut U,
    stop: &CancellationToken,
    mut down: Direction,
) -> (RelayEnd, Option<LoginOutcome>)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Direction::default();
    let copy = poll_fn(|cx| {
        let a = up.poll(cx, &mut *client, &mut *upstream)?;
        let b = down.poll(cx, &mut *upstream, &mut *client)?;
        if a.is_ready() && b.is_ready() {
            Poll::Ready(Ok::<(), io::Error>(()))
        } else {
            Poll::Pending
        }
    });
    let result = tokio::select! {
        result = copy => Some(result),
        () = stop.cancelled() => None,
    };
    let moved = Transferred {
        to_upstream: up.moved,
        to_client: down.moved,
    };
    let end = match result {
        Some(Ok(())) => RelayEnd::Closed(moved),
        // A client that drops TCP without TLS close_notify is how most clients leave after
        // Terminate; it is an ordinary end of session, not a failure.
        Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => RelayEnd::Closed(moved),
        Some(Err(e)) => RelayEnd::Failed(e, moved),
        None => RelayEnd::Shutdown(moved),
    };
    (end, down.login_outcome)
}

/// One direction of the copy.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet written; allocated only while the writer pushes back.
    spill: Option<Vec<u8>>,
    /// Position of the first unwritten byte in `spill`.
    spill_pos: usize,
    /// Whether written bytes await a flush.
    needs_flush: bool,
    /// The reader hit EOF; the writer is being shut down.
    eof: bool,
    /// Everything is done.
    done: bool,
    /// Bytes moved.
    moved: u64,
    /// Watches the login until it is decided (repository-to-client direction only).
    login: Option<Box<LoginWatch>>,
    /// What the watch found.
    login_outcome: Option<LoginOutcome>,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Drain what the writer refused earlier before reading more.
            if let Some(spill) = &self.spill {
                while self.spill_pos < spill.len() {
                    let n =
                        ready!(Pin::new(&mut *writer).poll_write(cx, &spill[self.spill_pos..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.spill_pos += n;
                    self.needs_flush = true;
                }
                self.spill = None;
                self.spill_pos = 0;
            }
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // Uninitialised: zeroing 16 KiB on every poll showed up in profiles as a few percent of
            // the proxy's CPU. ReadBuf tracks which bytes the reader initialised.
            let mut stack = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut stack);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    // Idle: push out what was written, then wait owning no buffer.
                    if self.needs_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.needs_flush = false;
                    }
                    return Poll::Pending;
                }
            }
            let data = buf.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            self.moved += data.len() as u64;
            if let Some(watch) = &mut self.login
                && let Some(outcome) = watch.feed(data)
            {
                self.login_outcome = Some(outcome);
                self.login = None;
            }
            let mut written = 0;
            while written < data.len() {
                match Pin::new(&mut *writer).poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        self.needs_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.spill = Some(data[written..].to_vec());
                        self.spill_pos = 0;
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn relays_both_ways_through_a_slow_writer_and_propagates_eof() {
        // Tiny duplex buffers force partial writes, exercising the spill path.
        let (mut client_far, mut client_near) = duplex(64);
        let (mut upstream_near, mut upstream_far) = duplex(64);
        let stop = CancellationToken::new();
        let relay =
            tokio::spawn(async move { relay(&mut client_near, &mut upstream_near, &stop).await });
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client_far.write_all(&sent).await.unwrap();
            client_far.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_far.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut received = Vec::new();
        upstream_far.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, payload);
        upstream_far.write_all(b"reply").await.unwrap();
        upstream_far.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply");
        match relay.await.unwrap() {
            RelayEnd::Closed(t) => assert_eq!((t.to_upstream, t.to_client), (200_000, 5)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let (_a, mut b) = duplex(64);
        let (mut c, _d) = duplex(64);
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(matches!(
            relay(&mut b, &mut c, &stop).await,
            RelayEnd::Shutdown(_)
        ));
    }
}
