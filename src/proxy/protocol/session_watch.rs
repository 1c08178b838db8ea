//! Following a pooled session's messages at the relay, so that when the client leaves pgssl knows
//! whether the repository session can be reset and handed to the next client, or must be closed.
//!
//! The relay shows it every chunk in both directions. It walks message frames (type byte, length)
//! without copying or buffering them — the only byte it reads inside a message is ReadyForQuery's
//! transaction status — and it never changes a relayed byte; what it does decide is where the
//! client's stream stops: a Terminate (`X`) is not forwarded, because the repository session outlives
//! the client.
//!
//! A session is *idle* when every request that expects a ReadyForQuery (a simple Query, a Sync, a
//! FunctionCall) has had it, the client sent nothing after the last of those but Terminate, and both
//! streams are between messages. Only an idle session is reused; one the client left mid-query, mid-COPY,
//! mid-message or with an extended-protocol batch it never synced is closed (PgBouncer does the same in
//! session mode). Message layout: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

/// Walks message frames across chunk boundaries: the 5-byte header (type, length), then the body.
#[derive(Debug, Default, Clone)]
struct Frames {
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
}

/// One step of [`Frames::next`].
enum Step {
    /// A message begins: its type and body length.
    Begins(u8, usize),
    /// The input ended (inside a header or a body, or between messages).
    End,
    /// A length below 4: the stream is not messages any more.
    Broken,
}

impl Frames {
    /// Skips body bytes and assembles the next header from `data`, which is advanced past what was
    /// consumed; the body of a message that has begun is left in `data` for the caller.
    fn next(&mut self, data: &mut &[u8]) -> Step {
        let skip = self.remaining.min(data.len());
        self.remaining -= skip;
        *data = &data[skip..];
        if self.remaining > 0 || data.is_empty() {
            return Step::End;
        }
        let take = (5 - self.header_len).min(data.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
        self.header_len += take;
        *data = &data[take..];
        if self.header_len < 5 {
            return Step::End;
        }
        self.header_len = 0;
        let h = self.header;
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len < 4 {
            return Step::Broken;
        }
        self.remaining = len - 4;
        Step::Begins(h[0], len - 4)
    }

    /// Between messages: no header half read, no body left.
    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }
}

/// What the client's chunk means for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientChunk {
    /// Forward it all.
    Forward,
    /// The client sent Terminate: forward the first `n` bytes (the messages before it) and stop.
    Terminated(usize),
}

/// Both directions of one pooled session.
#[derive(Debug, Clone)]
pub struct SessionWatch {
    client: Frames,
    server: Frames,
    /// Requests sent that still await their ReadyForQuery.
    awaiting: u64,
    /// The client sent a message since the last ReadyForQuery that asks for none (an unsynced
    /// extended-protocol batch, or a message in a state pgssl does not follow).
    unsynced: bool,
    /// A ReadyForQuery has begun and its status byte is the next body byte.
    status_next: bool,
    /// The transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    status: u8,
    /// A stream stopped being messages.
    broken: bool,
}

impl Default for SessionWatch {
    /// A session just handed out: pgssl sent its ReadyForQuery (idle) itself.
    fn default() -> SessionWatch {
        SessionWatch {
            client: Frames::default(),
            server: Frames::default(),
            awaiting: 0,
            unsynced: false,
            status_next: false,
            status: b'I',
            broken: false,
        }
    }
}

/// The transaction status of an idle session, for the reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// No transaction is open.
    OutsideTransaction,
    /// A transaction is open or failed: it needs a ROLLBACK before the reset.
    InTransaction,
}

impl SessionWatch {
    /// What the session is doing: running a request, inside a transaction between requests, or
    /// idle.
    pub fn state(&self) -> crate::proxy::sessions::SessionState {
        crate::proxy::sessions::SessionState::of(self.awaiting > 0 || self.unsynced, self.status)
    }

    /// Whether the repository's stream is between messages (what the client has is whole).
    pub fn server_between_messages(&self) -> bool {
        self.server.at_boundary()
    }

    /// Follows a chunk the client sent.
    pub fn on_client(&mut self, chunk: &[u8]) -> ClientChunk {
        let mut data = chunk;
        loop {
            if self.broken {
                return ClientChunk::Forward;
            }
            match self.client.next(&mut data) {
                Step::End => return ClientChunk::Forward,
                Step::Broken => self.broken = true,
                // Nothing from Terminate on is forwarded. A Terminate header split across chunks has
                // had its first bytes forwarded already: that session cannot be reused.
                Step::Begins(b'X', _) => {
                    let consumed = chunk.len() - data.len();
                    return match consumed.checked_sub(5) {
                        Some(start) => ClientChunk::Terminated(start),
                        None => {
                            self.broken = true;
                            ClientChunk::Terminated(0)
                        }
                    };
                }
                Step::Begins(kind, _) => match kind {
                    // Each of these is answered with one ReadyForQuery.
                    b'Q' | b'S' | b'F' => {
                        self.awaiting += 1;
                        self.unsynced = false;
                    }
                    // COPY data and its end are answered by the ReadyForQuery of the Query that
                    // began the COPY.
                    b'd' | b'c' | b'f' => {}
                    _ => self.unsynced = true,
                },
            }
        }
    }

    /// Follows a chunk the repository sent.
    pub fn on_server(&mut self, chunk: &[u8]) {
        let mut data = chunk;
        loop {
            if self.broken {
                return;
            }
            if self.status_next {
                let Some(&status) = data.first() else { return };
                self.status = status;
                self.status_next = false;
            }
            match self.server.next(&mut data) {
                Step::End => return,
                Step::Broken => self.broken = true,
                Step::Begins(b'Z', len) => {
                    self.awaiting = self.awaiting.saturating_sub(1);
                    self.status_next = len >= 1;
                }
                Step::Begins(..) => {}
            }
        }
    }

    /// Whether the session is idle (see the module's documentation), and how.
    pub fn idle(&self) -> Option<Idle> {
        let quiet = !self.broken
            && !self.unsynced
            && !self.status_next
            && self.awaiting == 0
            && self.client.at_boundary()
            && self.server.at_boundary();
        match (quiet, self.status) {
            (false, _) => None,
            (true, b'I') => Some(Idle::OutsideTransaction),
            (true, b'T' | b'E') => Some(Idle::InTransaction),
            (true, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn ready(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }

    /// Feeds `bytes` one byte at a time, as the worst chunking would.
    fn server_bytewise(w: &mut SessionWatch, bytes: &[u8]) {
        for b in bytes {
            w.on_server(std::slice::from_ref(b));
        }
    }

    #[test]
    fn a_query_answered_is_idle_and_terminate_is_not_forwarded() {
        let mut w = SessionWatch::default();
        assert_eq!(w.idle(), Some(Idle::OutsideTransaction));
        let q = msg(b'Q', b"select 1\0");
        assert_eq!(w.on_client(&q), ClientChunk::Forward);
        assert_eq!(w.idle(), None);
        let answer = [msg(b'T', b"..."), msg(b'C', b"SELECT 1\0"), ready(b'I')].concat();
        server_bytewise(&mut w, &answer);
        assert_eq!(w.idle(), Some(Idle::OutsideTransaction));
        let tail = [q.clone(), msg(b'X', b""), b"junk".to_vec()].concat();
        // The query before Terminate is forwarded; Terminate and anything after it are not.
        assert_eq!(w.on_client(&tail), ClientChunk::Terminated(q.len()));
    }

    #[test]
    fn an_open_transaction_needs_a_rollback() {
        let mut w = SessionWatch::default();
        w.on_client(&msg(b'Q', b"begin\0"));
        w.on_server(&[msg(b'C', b"BEGIN\0"), ready(b'T')].concat());
        assert_eq!(w.idle(), Some(Idle::InTransaction));
        w.on_client(&msg(b'Q', b"select x\0"));
        w.on_server(&[msg(b'E', b"SERROR\0\0"), ready(b'E')].concat());
        assert_eq!(w.idle(), Some(Idle::InTransaction));
    }

    #[test]
    fn unanswered_unsynced_or_cut_sessions_are_not_idle() {
        // A query still running.
        let mut w = SessionWatch::default();
        w.on_client(&msg(b'Q', b"select pg_sleep(10)\0"));
        assert_eq!(w.idle(), None);
        // An extended batch without Sync, though answered as far as it goes.
        let mut w = SessionWatch::default();
        w.on_client(&[msg(b'P', b"\0select 1\0\0\0"), msg(b'B', b"")].concat());
        w.on_server(&msg(b'1', b""));
        assert_eq!(w.idle(), None);
        // A Sync makes the batch whole again.
        w.on_client(&msg(b'S', b""));
        w.on_server(&ready(b'I'));
        assert_eq!(w.idle(), Some(Idle::OutsideTransaction));
        // Half a message from the client.
        let mut w = SessionWatch::default();
        w.on_client(&msg(b'Q', b"select 1\0")[..3]);
        assert_eq!(w.idle(), None);
        // Half a message from the server.
        let mut w = SessionWatch::default();
        w.on_server(&msg(b'N', b"SNOTICE\0\0")[..7]);
        assert_eq!(w.idle(), None);
        // A length below 4.
        let mut w = SessionWatch::default();
        w.on_client(&[b'Q', 0, 0, 0, 1]);
        assert_eq!(w.idle(), None);
        assert_eq!(w.on_client(&msg(b'X', b"")), ClientChunk::Forward);
        // A Terminate whose header is split across chunks.
        let mut w = SessionWatch::default();
        assert_eq!(w.on_client(&[b'X', 0]), ClientChunk::Forward);
        assert_eq!(w.on_client(&[0, 0, 4]), ClientChunk::Terminated(0));
        assert_eq!(w.idle(), None);
        // A Terminate after a message whose body began in the previous chunk.
        let mut w = SessionWatch::default();
        let q = msg(b'Q', b"select 1\0");
        w.on_client(&q[..7]);
        let rest = [&q[7..], &msg(b'X', b"")[..]].concat();
        assert_eq!(w.on_client(&rest), ClientChunk::Terminated(q.len() - 7));
    }

    #[test]
    fn copy_in_is_answered_by_the_query_that_began_it() {
        let mut w = SessionWatch::default();
        w.on_client(&msg(b'Q', b"copy t from stdin\0"));
        w.on_server(&msg(b'G', &[0, 0, 0]));
        w.on_client(&[msg(b'd', b"1\n"), msg(b'c', b"")].concat());
        assert_eq!(w.idle(), None);
        w.on_server(&[msg(b'C', b"COPY 1\0"), ready(b'I')].concat());
        assert_eq!(w.idle(), Some(Idle::OutsideTransaction));
    }

    #[test]
    fn pipelined_queries_wait_for_every_answer() {
        let mut w = SessionWatch::default();
        let two = [msg(b'Q', b"select 1\0"), msg(b'Q', b"select 2\0")].concat();
        w.on_client(&two);
        w.on_server(&ready(b'I'));
        assert_eq!(w.idle(), None);
        w.on_server(&ready(b'I'));
        assert_eq!(w.idle(), Some(Idle::OutsideTransaction));
    }
}
