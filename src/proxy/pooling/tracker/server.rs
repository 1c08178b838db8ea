//! The backend's side: each answer matched to its request, swallowed or passed on; pgssl's own
//! answers given in their place.

use bytes::Bytes;

use super::wire::*;
use super::*;

impl Tracker {
    /// What to do with a server message of `kind`, decided at its header.
    pub fn server_begins(&self, kind: u8) -> Disposition {
        if matches!(kind, b'S' | b'Z' | b'E' | b'C') {
            return Disposition::Capture;
        }
        match (self.pending.front(), kind) {
            (Some(Expect::Injected), _) => Disposition::Drop,
            (Some(Expect::Parse { swallow: true, .. }), b'1') => Disposition::Drop,
            (Some(Expect::Close { swallow: true, .. }), b'3') => Disposition::Drop,
            _ => Disposition::Forward,
        }
    }

    /// A server message has gone by (`body` is its body when it was captured): updates the
    /// tracking, and writes a captured message (as the client gets it) and pgssl's own answers
    /// now due to `out.to_client`. `params` is the backend's reported parameters.
    pub fn server_end(
        &mut self,
        kind: u8,
        body: Option<&[u8]>,
        be: &mut BackendState,
        params: &mut Vec<(Bytes, Bytes)>,
        out: &mut Out,
    ) {
        let injected = matches!(self.pending.front(), Some(Expect::Injected));
        match kind {
            b'1' => self.complete(|e| matches!(e, Expect::Parse { .. })),
            b'2' => self.complete(|e| matches!(e, Expect::Bind { .. })),
            b'3' => self.complete(|e| matches!(e, Expect::Close { .. })),
            b'n' | b'T' => self.complete(|e| matches!(e, Expect::Describe { .. })),
            b'I' | b's' => self.complete(|e| matches!(e, Expect::Execute)),
            // A captured message is written here; one too large to capture went by as it was.
            b'C' => {
                if !injected && let Some(body) = body {
                    self.rolled_back = body.starts_with(b"ROLLBACK");
                    // The server dropped every prepared statement, pgssl's on this backend
                    // included (with SQL PREPAREs pinned, DEALLOCATE ALL reaches it).
                    let discard = body.starts_with(b"DISCARD ALL\0");
                    if discard || body.starts_with(b"DEALLOCATE ALL\0") {
                        be.statements.clear();
                        be.uncertain.clear();
                        self.statements.clear();
                    }
                    if discard {
                        self.since_ready.push(SetChange::ResetAll);
                    }
                    put_message(&mut out.to_client, b'C', &[body]);
                }
                self.complete(|e| matches!(e, Expect::Execute));
            }
            b'S' => {
                if let Some(body) = body {
                    if let Some((name, value)) = param(body) {
                        set(params, name, value);
                        if !injected {
                            set_shared(&mut self.reported, name, value);
                        }
                    }
                    if !injected {
                        put_message(&mut out.to_client, b'S', &[body]);
                    }
                }
            }
            b'E' => self.error(body, be, out, injected),
            b'Z' => {
                if !injected && std::mem::take(&mut self.identity_cleared) {
                    be.identity = None;
                    self.identity_kept = false;
                }
                self.ready(body.unwrap_or(b"I"), be, out, injected)
            }
            _ => {}
        }
        self.drain_fakes(out);
    }

    /// Pops the head when `is` says the message answers it.
    pub(super) fn complete(&mut self, is: impl Fn(&Expect) -> bool) {
        if self.pending.front().is_some_and(is) {
            self.pending.pop_front();
        }
    }

    pub(super) fn error(
        &mut self,
        body: Option<&[u8]>,
        be: &mut BackendState,
        out: &mut Out,
        injected: bool,
    ) {
        self.since_ready.clear();
        if injected {
            // A SET pgssl sent failed: the client never sent it and never hears of it.
            return;
        }
        // A transaction that fails (a COMMIT included) keeps none of its SETs.
        self.rolled_back = true;
        let rename = match self.pending.front() {
            Some(
                Expect::Parse { rename, .. }
                | Expect::Bind { rename }
                | Expect::Describe { rename },
            ) => rename.clone(),
            _ => None,
        };
        match (body, rename) {
            (Some(body), Some((server, client))) => {
                put_message(
                    &mut out.to_client,
                    b'E',
                    &[&renamed(body, &server, &client)],
                );
            }
            (Some(body), None) => put_message(&mut out.to_client, b'E', &[body]),
            (None, _) => {}
        }
        // In a simple query the error ends nothing but itself; in an extended batch the server skips
        // to the Sync, and so does the queue.
        if matches!(self.pending.front(), Some(Expect::Query) | None) {
            return;
        }
        // Everything up to the Sync is discarded by the server, a Query or FunctionCall included;
        // undone last first, so that the backend's statements are what they were before.
        let mut skipped = Vec::new();
        while let Some(e) = self.pending.front() {
            if matches!(e, Expect::Sync | Expect::Injected) {
                break;
            }
            skipped.extend(self.pending.pop_front());
        }
        for e in skipped.into_iter().rev() {
            self.undo(e, be);
        }
    }

    /// What a request the server never carried out had done to the tracking.
    pub(super) fn undo(&mut self, e: Expect, be: &mut BackendState) {
        match e {
            Expect::Parse { added, created, .. } => {
                if let Some(server) = added {
                    be.statements.remove(&server);
                }
                if let Some(client) = created {
                    self.statements.remove(&client);
                }
            }
            Expect::Fake {
                created: Some(client),
                ..
            } => {
                self.statements.remove(&client);
            }
            // The server kept it: within the bound it is known again; past it, its next Parse is
            // preceded by a Close.
            Expect::Close {
                evicted: Some(server),
                ..
            } => {
                if be.statements.len() < self.options.max_prepared.max(1) {
                    be.statements.insert(server)
                } else if be.uncertain.len() < 64 {
                    be.uncertain.push(server)
                }
            }
            _ => {}
        }
    }

    pub(super) fn ready(
        &mut self,
        body: &[u8],
        be: &mut BackendState,
        out: &mut Out,
        injected: bool,
    ) {
        // Whatever the head was waiting for, this ReadyForQuery ends it (a confused stream is not
        // left waiting forever).
        let mut skipped = Vec::new();
        while let Some(e) = self.pending.pop_front() {
            if matches!(e, Expect::Sync | Expect::Query | Expect::Injected) {
                break;
            }
            skipped.push(e);
        }
        for e in skipped.into_iter().rev() {
            self.undo(e, be);
        }
        let status = body.first().copied().unwrap_or(b'I');
        self.status = status;
        if injected {
            return;
        }
        put_message(&mut out.to_client, b'Z', &[body]);
        self.in_transaction.append(&mut self.since_ready);
        if status == b'I' {
            let changes = std::mem::take(&mut self.in_transaction);
            if !self.rolled_back {
                for c in changes {
                    apply(&mut self.sets, c);
                }
                be.sets = self.sets.clone();
            }
        }
    }

    /// Gives pgssl's own answers that have reached the head of the queue. The serve loop calls it
    /// after client messages only between server messages (an answer must not land inside one).
    pub fn drain_fakes(&mut self, out: &mut Out) {
        while let Some(Expect::Fake { answer, .. }) = self.pending.front() {
            let answer = answer.clone();
            self.pending.pop_front();
            match answer {
                Fake::ParseComplete => put_message(&mut out.to_client, b'1', &[]),
                Fake::BindComplete => put_message(&mut out.to_client, b'2', &[]),
                Fake::CloseComplete => put_message(&mut out.to_client, b'3', &[]),
                Fake::Closed(d) => {
                    put_message(&mut out.to_client, b'3', &[]);
                    self.deallocate(d);
                }
                Fake::NoData => put_message(&mut out.to_client, b'n', &[]),
                Fake::NoParameters => put_message(&mut out.to_client, b't', &[&[0, 0]]),
                Fake::Deallocated(d) => {
                    put_message(&mut out.to_client, b'C', &[d.tag()]);
                    put_message(&mut out.to_client, b'Z', &[&[self.status]]);
                    self.deallocate(d);
                }
                Fake::Executed(d) => {
                    put_message(&mut out.to_client, b'C', &[d.tag()]);
                    self.deallocate(d);
                }
            }
        }
    }

    pub(super) fn deallocate(&mut self, d: Dealloc) {
        match d {
            Dealloc::One(name) => {
                self.statements.remove(&name);
            }
            Dealloc::All => self.statements.clear(),
        }
    }
}
