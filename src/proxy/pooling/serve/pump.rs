//! The poll loop over both sockets, and the server stream's framing.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::proxy::backend::Backend;
use crate::proxy::pooling::tracker::{ClientStep, Disposition, Out, Tracker};
use crate::proxy::relay::{RelayEnd, Transferred};
use crate::proxy::sessions::{Entry, SessionState};
use crate::proxy::stream::NegotiatedStream;

/// Bytes a direction buffers for a lagging destination before it stops reading.
pub(super) const HIGH: usize = 64 * 1024;
/// A server message whose body is read whole (ParameterStatus, ReadyForQuery, ErrorResponse,
/// CommandComplete) is passed through unread past this size.
pub(super) const CAPTURE_MAX: usize = 1 << 20;
/// PostgreSQL's bound on a client message (`PQ_LARGE_MESSAGE_LIMIT`).
pub(super) const MAX_CLIENT_MESSAGE: usize = (1 << 30) - 1;
/// The buffers of one client's loop; empty ones hold no memory.
#[derive(Default)]
pub(super) struct Io {
    /// Client bytes not yet taken as whole messages.
    pub(super) from_client: BytesMut,
    pub(super) out: Out,
    pub(super) server: ServerFrames,
    pub(super) moved: Transferred,
    /// The client sent Terminate.
    pub(super) terminated: bool,
    /// Written bytes await a flush, to the backend and to the client.
    pub(super) flush_server: bool,
    pub(super) flush_client: bool,
}

impl Io {
    /// Frees the buffers that are empty (a waiting client should hold nothing).
    pub(super) fn shrink(&mut self) {
        for b in [
            &mut self.from_client,
            &mut self.out.to_client,
            &mut self.out.to_server,
        ] {
            if b.is_empty() && b.capacity() > 0 {
                *b = BytesMut::new();
            }
        }
        if self.server.capture.is_empty() && self.server.capture.capacity() > 0 {
            self.server.capture = Vec::new();
        }
    }

    /// The first whole message's type, if one is buffered; an error for a length PostgreSQL
    /// refuses too.
    fn whole_message(&self) -> Result<Option<u8>, io::Error> {
        let b = &self.from_client;
        if b.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if !(4..=MAX_CLIENT_MESSAGE).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid message length {len}"),
            ));
        }
        Ok((b.len() > len).then_some(b[0]))
    }
}

/// The server stream's message framing: what the current message is and what is done with it.
#[derive(Default)]
pub(super) struct ServerFrames {
    header: [u8; 5],
    have: usize,
    kind: u8,
    remaining: usize,
    within: bool,
    disposition: Option<Disposition>,
    pub(super) capture: Vec<u8>,
}

impl ServerFrames {
    pub(super) fn at_boundary(&self) -> bool {
        !self.within && self.have == 0
    }

    /// Follows a chunk of the server's bytes, writing what the client gets.
    fn feed(
        &mut self,
        mut data: &[u8],
        tracker: &mut Tracker,
        backend: &mut Backend,
        out: &mut Out,
    ) -> io::Result<()> {
        let (_, be, params) = backend.pooling_parts();
        loop {
            if !self.within {
                if data.is_empty() {
                    return Ok(());
                }
                let take = (5 - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < 5 {
                    return Ok(());
                }
                self.have = 0;
                let h = self.header;
                let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                if len < 4 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the repository sent a message length below 4",
                    ));
                }
                self.kind = h[0];
                self.remaining = len - 4;
                let mut d = tracker.server_begins(self.kind);
                if d == Disposition::Capture && self.remaining > CAPTURE_MAX {
                    d = Disposition::Forward;
                }
                if d == Disposition::Forward {
                    out.to_client.extend_from_slice(&h);
                }
                self.disposition = Some(d);
                self.within = true;
            }
            let take = self.remaining.min(data.len());
            match self.disposition {
                Some(Disposition::Forward) => out.to_client.extend_from_slice(&data[..take]),
                Some(Disposition::Capture) => self.capture.extend_from_slice(&data[..take]),
                _ => {}
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining > 0 {
                return Ok(());
            }
            self.within = false;
            let captured =
                (self.disposition == Some(Disposition::Capture)).then_some(self.capture.as_slice());
            tracker.server_end(self.kind, captured, be, params, out);
            self.capture.clear();
        }
    }
}

/// How holding a backend ended.
pub(super) enum Pumped {
    /// The transaction ended: the backend may go.
    Released,
    /// The client left (Terminate or end of stream).
    ClientLeft,
    /// The repository closed, a socket failed, or pgssl is shutting down (`RelayEnd` says which).
    Ended(RelayEnd),
}

/// Waits for the client's next whole message while it holds no backend, writing what it is still
/// owed. `Ok(true)`: a message (not Terminate) is buffered; `Ok(false)`: the client left.
pub(super) async fn wait_message(
    stream: &mut NegotiatedStream,
    io: &mut Io,
    stop: &CancellationToken,
    epoch: &CancellationToken,
) -> Result<bool, RelayEnd> {
    let waited = poll_fn(|cx| {
        loop {
            let (buf, moved) = (&mut io.out.to_client, &mut io.moved.to_client);
            if let Err(e) = poll_write_all(cx, stream, buf, moved, &mut io.flush_client) {
                return Poll::Ready(Err(e));
            }
            match io.whole_message() {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Some(b'X')) => return Poll::Ready(Ok(false)),
                Ok(Some(_)) => return Poll::Ready(Ok(true)),
                Ok(None) => {}
            }
            match poll_read_into(cx, stream, &mut io.from_client) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(false)),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    let result = tokio::select! {
        r = waited => r,
        () = stop.cancelled() => return Err(RelayEnd::Shutdown(io.moved)),
        () = epoch.cancelled() => return Err(RelayEnd::Shutdown(io.moved)),
    };
    match result {
        Ok(more) => Ok(more),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(RelayEnd::Failed(e, io.moved)),
    }
}

/// Relays between the client and the backend it holds until its transaction ends (and nothing
/// more of it is buffered), it leaves, or the session ends.
pub(super) async fn pump(
    stream: &mut NegotiatedStream,
    backend: &mut Backend,
    tracker: &mut Tracker,
    io: &mut Io,
    stop: &CancellationToken,
    live: &Entry,
    mut counted: impl FnMut(&mut Tracker),
) -> Pumped {
    let epoch = backend.epoch().clone();
    let pumping = poll_fn(|cx| {
        let pumped = pump_once(cx, stream, backend, tracker, io, &mut counted);
        if pumped.is_pending() {
            // Nothing can move for now: a cheap moment to say what moved and what the client is
            // doing (relaxed stores, read only by `sessions list`).
            live.publish(
                io.moved,
                SessionState::of(tracker.awaiting(), tracker.status()),
            );
        }
        pumped
    });
    let result = tokio::select! {
        r = pumping => r,
        () = stop.cancelled() => return Pumped::Ended(RelayEnd::Shutdown(io.moved)),
        () = epoch.cancelled() => return Pumped::Ended(RelayEnd::Shutdown(io.moved)),
    };
    match result {
        Ok(p) => p,
        Err((Side::Client, e)) if e.kind() == io::ErrorKind::UnexpectedEof => Pumped::ClientLeft,
        Err((Side::Repository, e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Pumped::Ended(RelayEnd::Closed(io.moved))
        }
        Err((_, e)) => Pumped::Ended(RelayEnd::Failed(e, io.moved)),
    }
}

#[derive(Clone, Copy)]
pub(super) enum Side {
    Client,
    Repository,
}

/// One pass of [`pump`]: until nothing can move without waiting, or the holding ends.
pub(super) fn pump_once(
    cx: &mut Context<'_>,
    stream: &mut NegotiatedStream,
    backend: &mut Backend,
    tracker: &mut Tracker,
    io: &mut Io,
    counted: &mut dyn FnMut(&mut Tracker),
) -> Poll<Result<Pumped, (Side, io::Error)>> {
    loop {
        let mut progressed = false;
        // The client's whole messages, while the backend keeps up.
        // (pgssl's own answers go to the client: a client that does not read stops being read.)
        while !io.terminated && io.out.to_server.len() < HIGH && io.out.to_client.len() < HIGH {
            match io.whole_message().map_err(|e| (Side::Client, e))? {
                None => break,
                Some(_) => {
                    let len = u32::from_be_bytes([
                        io.from_client[1],
                        io.from_client[2],
                        io.from_client[3],
                        io.from_client[4],
                    ]) as usize;
                    let message = io.from_client.split_to(1 + len);
                    let (_, be, _) = backend.pooling_parts();
                    let step = tracker.client(message[0], &message[5..], be, &mut io.out);
                    if step == ClientStep::Terminate {
                        io.terminated = true;
                        io.from_client.clear();
                    }
                    counted(tracker);
                    progressed = true;
                }
            }
        }
        if io.server.at_boundary() {
            tracker.drain_fakes(&mut io.out);
        }
        // To the backend.
        let (upstream, _, _) = backend.pooling_parts();
        let before = (io.out.to_server.len(), io.flush_server);
        let (buf, moved) = (&mut io.out.to_server, &mut io.moved.to_upstream);
        poll_write_all(cx, upstream, buf, moved, &mut io.flush_server)
            .map_err(|e| (Side::Repository, e))?;
        progressed |= (io.out.to_server.len(), io.flush_server) != before;
        // To the client.
        let before = (io.out.to_client.len(), io.flush_client);
        let (buf, moved) = (&mut io.out.to_client, &mut io.moved.to_client);
        poll_write_all(cx, stream, buf, moved, &mut io.flush_client)
            .map_err(|e| (Side::Client, e))?;
        progressed |= (io.out.to_client.len(), io.flush_client) != before;
        // The transaction is over and nothing of the client's waits: the backend may go.
        let whole_waiting = io.whole_message().ok().flatten().is_some();
        if tracker.idle()
            && tracker.pinned().is_none()
            && !whole_waiting
            && io.out.to_server.is_empty()
            && !io.flush_server
            && io.server.at_boundary()
            && !io.terminated
        {
            return Poll::Ready(Ok(Pumped::Released));
        }
        // Gone once what it sent is on its way. Answers still owed are not waited for (a batch it
        // never synced is never answered): a backend left so is closed, never held.
        if io.terminated && io.out.to_server.is_empty() {
            return Poll::Ready(Ok(Pumped::ClientLeft));
        }
        // From the backend, while the client keeps up.
        if io.out.to_client.len() < HIGH {
            let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
            let mut read = ReadBuf::uninit(&mut buf);
            let (upstream, _, _) = backend.pooling_parts();
            match Pin::new(upstream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    return Poll::Ready(Err((
                        Side::Repository,
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the repository closed"),
                    )));
                }
                Poll::Ready(Ok(())) => {
                    let data = read.filled();
                    io.server
                        .feed(data, tracker, backend, &mut io.out)
                        .map_err(|e| (Side::Repository, e))?;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Repository, e))),
                Poll::Pending => {}
            }
        }
        // From the client, while the backend keeps up (a message larger than the bound is read
        // whole: it cannot be sent on before it is).
        let whole = io.whole_message().ok().flatten().is_some();
        if !io.terminated && !whole {
            match poll_read_into(cx, stream, &mut io.from_client) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((
                        Side::Client,
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed"),
                    )));
                }
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Client, e))),
                Poll::Pending => {}
            }
        }
        if !progressed {
            return Poll::Pending;
        }
    }
}

/// Reads what is there into `into` through a buffer on this call's stack.
pub(super) fn poll_read_into<R: AsyncRead + Unpin + ?Sized>(
    cx: &mut Context<'_>,
    reader: &mut R,
    into: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut read = ReadBuf::uninit(&mut buf);
    match Pin::new(reader).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            into.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Writes as much of `buf` as the writer takes now, and flushes once it is empty (`needs_flush`
/// says a flush is owed); `Err` on a failed socket. What is left stays in `buf`.
pub(super) fn poll_write_all<W: AsyncWrite + Unpin + ?Sized>(
    cx: &mut Context<'_>,
    writer: &mut W,
    buf: &mut BytesMut,
    moved: &mut u64,
    needs_flush: &mut bool,
) -> io::Result<()> {
    while !buf.is_empty() {
        match Pin::new(&mut *writer).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *moved += n as u64;
                *needs_flush = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(()),
        }
    }
    if *needs_flush {
        match Pin::new(&mut *writer).poll_flush(cx) {
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) => *needs_flush = false,
            Poll::Pending => {}
        }
    }
    Ok(())
}

/// Writes what the client is still owed before its connection closes.
pub(super) async fn flush_client(stream: &mut NegotiatedStream, io: &mut Io) -> io::Result<()> {
    if !io.out.to_client.is_empty() {
        stream.write_all(&io.out.to_client).await?;
        io.moved.to_client += io.out.to_client.len() as u64;
        io.out.to_client.clear();
    }
    stream.flush().await
}
