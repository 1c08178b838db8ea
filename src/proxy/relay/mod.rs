//! The relay: bytes both ways between the client and the repository until either side closes.
//!
//! Nothing here changes the protocol; authentication, queries and COPY pass through untouched. Until
//! the login is decided, the repository's bytes are also shown to a [`LoginWatch`] (frames only, no
//! copy), which is dropped once it knows. A pooled session's bytes are shown to a [`SessionWatch`]
//! both ways; its relay ends when the client leaves, without closing the repository session, and
//! holds back the client's Terminate.
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

use crate::proxy::identity::guard::StreamGuard;
use crate::proxy::protocol::login_watch::{LoginOutcome, LoginWatch};
use crate::proxy::protocol::session_watch::{ClientChunk, SessionWatch};
use crate::proxy::sessions::{Entry, SessionState};

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
    relay_with(client, upstream, stop, &mut NoTap, Until::BothDone, None)
        .await
        .0
}

/// [`relay`] for a session whose login is still under way: also reports how the repository ended the
/// login (`None` when the relay ended before it said). The bytes moved are published on `live`.
pub async fn relay_login<C, U>(
    client: &mut C,
    upstream: &mut U,
    stop: &CancellationToken,
    live: &Entry,
) -> (LoginRelayEnd, Option<LoginOutcome>)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut tap = Guarded::new(
        LoginTap {
            watch: Some(Box::default()),
            outcome: None,
        },
        StreamGuard::default(),
    );
    let (end, _) = relay_with(
        client,
        upstream,
        stop,
        &mut tap,
        Until::BothDone,
        Some(live),
    )
    .await;
    let end = match tap.refused {
        true => LoginRelayEnd::Refused(end.transferred()),
        false => LoginRelayEnd::Ended(end),
    };
    (end, tap.tap.outcome)
}

/// How a relayed (passthrough) session ended.
#[derive(Debug)]
pub enum LoginRelayEnd {
    /// As [`relay`] ends.
    Ended(RelayEnd),
    /// The client sent a statement that writes `pgssl.*`: the relay stopped short of its last byte
    /// (the repository never runs it), and the client is to be told.
    Refused(Transferred),
}

/// How a pooled session's relay ended.
#[derive(Debug)]
pub enum PooledEnd {
    /// The client left (Terminate, or its end of the connection closed); the repository session is
    /// open, and `watch` says whether it is idle.
    ClientLeft(Transferred),
    /// The relay ended otherwise: the repository closed, a socket failed, or shutdown.
    Ended(RelayEnd),
    /// The client sent a statement that writes `pgssl.*` (see [`LoginRelayEnd::Refused`]).
    Refused(Transferred),
}

/// [`relay`] for a pooled session: follows both streams in `watch`, never forwards the client's
/// Terminate, and ends as soon as the client leaves, leaving the repository connection open. The
/// bytes moved and the session's state are published on `live`.
pub async fn relay_pooled<C, U>(
    client: &mut C,
    upstream: &mut U,
    stop: &CancellationToken,
    watch: &mut SessionWatch,
    guard: StreamGuard,
    live: &Entry,
) -> PooledEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut tap = Guarded::new(watch, guard);
    let ended = relay_with(
        client,
        upstream,
        stop,
        &mut tap,
        Until::ClientLeaves,
        Some(live),
    )
    .await;
    match ended {
        (end, _) if tap.refused => PooledEnd::Refused(end.transferred()),
        (RelayEnd::Closed(t), Some(Side::Client)) => PooledEnd::ClientLeft(t),
        (end, _) => PooledEnd::Ended(end),
    }
}

/// What each direction's bytes are shown to.
trait Tap {
    /// A chunk from the client; returns how much of it to forward (all of it unless the client ended
    /// its stream inside this chunk).
    fn on_client(&mut self, chunk: &[u8]) -> usize;
    /// A chunk from the repository.
    fn on_server(&mut self, chunk: &[u8]);
    /// What the session is doing, as far as the tap follows it.
    fn state(&self) -> SessionState {
        SessionState::Relayed
    }
    /// Whether the tap cut the client's stream to refuse what it sent (the relay ends there).
    fn refused(&self) -> bool {
        false
    }
}

/// A tap behind a [`StreamGuard`]: the client's bytes up to a message that writes `pgssl.*` are
/// shown to the tap and forwarded, that message's last byte never is.
struct Guarded<T> {
    tap: T,
    guard: StreamGuard,
    refused: bool,
}

impl<T: Tap> Guarded<T> {
    fn new(tap: T, guard: StreamGuard) -> Guarded<T> {
        Guarded {
            tap,
            guard,
            refused: false,
        }
    }
}

impl<T: Tap> Tap for Guarded<T> {
    fn on_client(&mut self, chunk: &[u8]) -> usize {
        match self.guard.feed(chunk) {
            None => self.tap.on_client(chunk),
            Some(n) => {
                let forwarded = self.tap.on_client(&chunk[..n]);
                // A Terminate before the refused message: the client left first.
                self.refused = forwarded == n;
                forwarded
            }
        }
    }
    fn on_server(&mut self, chunk: &[u8]) {
        self.tap.on_server(chunk)
    }
    fn state(&self) -> SessionState {
        self.tap.state()
    }
    fn refused(&self) -> bool {
        self.refused
    }
}

impl<T: Tap> Tap for &mut T {
    fn on_client(&mut self, chunk: &[u8]) -> usize {
        (**self).on_client(chunk)
    }
    fn on_server(&mut self, chunk: &[u8]) {
        (**self).on_server(chunk)
    }
    fn state(&self) -> SessionState {
        (**self).state()
    }
    fn refused(&self) -> bool {
        (**self).refused()
    }
}

struct NoTap;

impl Tap for NoTap {
    fn on_client(&mut self, chunk: &[u8]) -> usize {
        chunk.len()
    }
    fn on_server(&mut self, _: &[u8]) {}
}

struct LoginTap {
    watch: Option<Box<LoginWatch>>,
    outcome: Option<LoginOutcome>,
}

impl Tap for LoginTap {
    fn on_client(&mut self, chunk: &[u8]) -> usize {
        chunk.len()
    }
    fn on_server(&mut self, chunk: &[u8]) {
        if let Some(watch) = &mut self.watch
            && let Some(outcome) = watch.feed(chunk)
        {
            self.outcome = Some(outcome);
            self.watch = None;
        }
    }
}

impl Tap for SessionWatch {
    fn on_client(&mut self, chunk: &[u8]) -> usize {
        match SessionWatch::on_client(self, chunk) {
            ClientChunk::Forward => chunk.len(),
            ClientChunk::Terminated(n) => n,
        }
    }
    fn on_server(&mut self, chunk: &[u8]) {
        SessionWatch::on_server(self, chunk)
    }
    fn state(&self) -> SessionState {
        SessionWatch::state(self)
    }
}

/// When a relay is over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Both directions finished: each side's end is passed on to the other.
    BothDone,
    /// The client left (its Terminate or end of stream, not passed on), or the repository's side
    /// finished.
    ClientLeaves,
}

/// Which side's stream ended a [`Until::ClientLeaves`] relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Repository,
}

async fn relay_with<C, U, T>(
    client: &mut C,
    upstream: &mut U,
    stop: &CancellationToken,
    tap: &mut T,
    until: Until,
    live: Option<&Entry>,
) -> (RelayEnd, Option<Side>)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: Tap,
{
    let mut up = Direction {
        keep_writer_open: until == Until::ClientLeaves,
        ..Direction::default()
    };
    let mut down = Direction::default();
    let copy = poll_fn(|cx| {
        let a = up
            .poll(cx, &mut *client, &mut *upstream, &mut |c| tap.on_client(c))
            .map_err(|e| (Side::Client, e))?;
        if a.is_ready() && (until == Until::ClientLeaves || tap.refused()) {
            return Poll::Ready(Ok(Some(Side::Client)));
        }
        let b = down
            .poll(cx, &mut *upstream, &mut *client, &mut |c| {
                tap.on_server(c);
                c.len()
            })
            .map_err(|e| (Side::Repository, e))?;
        if b.is_ready() && until == Until::ClientLeaves {
            return Poll::Ready(Ok(Some(Side::Repository)));
        }
        if a.is_ready() && b.is_ready() {
            Poll::Ready(Ok(None))
        } else {
            // Both sides drained for now: a cheap moment to publish (relaxed stores).
            if let Some(live) = live {
                live.publish_moved(up.moved, down.moved, tap.state());
            }
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
    match result {
        Some(Ok(side)) => (RelayEnd::Closed(moved), side),
        // A client that drops TCP without TLS close_notify is how most clients leave after
        // Terminate; it is an ordinary end of session, not a failure.
        Some(Err((side, e))) if e.kind() == io::ErrorKind::UnexpectedEof => {
            (RelayEnd::Closed(moved), Some(side))
        }
        Some(Err((side, e))) => (RelayEnd::Failed(e, moved), Some(side)),
        None => (RelayEnd::Shutdown(moved), None),
    }
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
    /// The reader's end is not passed on: the writer stays open (a pooled session's repository
    /// connection, when the client leaves).
    keep_writer_open: bool,
    /// The tap asked to stop after the bytes it let through.
    cut: bool,
}

impl Direction {
    /// Moves what `reader` has to `writer`; `tap` sees each chunk and says how much of it to move
    /// (less than all of it ends this direction once that much is written).
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        tap: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.drain_spill(cx, writer))?;
            if self.cut || (self.eof && self.keep_writer_open) {
                if self.needs_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                    self.needs_flush = false;
                }
                self.done = true;
                return Poll::Ready(Ok(()));
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
            let keep = tap(data);
            let data = if keep < data.len() {
                self.cut = true;
                &data[..keep]
            } else {
                data
            };
            self.moved += data.len() as u64;
            ready!(self.write_or_spill(cx, writer, data))?;
        }
    }

    /// Writes what the writer refused earlier, before anything more is read.
    fn drain_spill<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
    ) -> Poll<io::Result<()>> {
        if let Some(spill) = &self.spill {
            while self.spill_pos < spill.len() {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &spill[self.spill_pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.spill_pos += n;
                self.needs_flush = true;
            }
            self.spill = None;
            self.spill_pos = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `data` on; what the writer cannot take now is copied to the spill buffer (Pending).
    fn write_or_spill<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        data: &[u8],
    ) -> Poll<io::Result<()>> {
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
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
