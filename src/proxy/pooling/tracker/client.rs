//! The client's side: each message it sends, rewritten for the backend it holds.

use bytes::{Bytes, BytesMut};

use super::wire::*;
use super::*;
use crate::proxy::pooling::sql::{self, Effect, PinReason};

impl Tracker {
    /// Follows one whole client message (`kind`, `body`), writing what the backend and the client
    /// get to `out`. `be` is the backend the client holds now.
    pub fn client(
        &mut self,
        kind: u8,
        body: &[u8],
        be: &mut BackendState,
        out: &mut Out,
    ) -> ClientStep {
        if kind != b'X' {
            self.keep_identity(be, out);
        }
        match kind {
            b'X' => return ClientStep::Terminate,
            b'Q' => self.query(body, out),
            b'P' => self.parse(body, be, out),
            b'B' => self.bind(body, be, out),
            b'D' => self.describe(body, be, out),
            b'C' => self.close(body, be, out),
            b'E' => {
                self.unsynced = true;
                let portal = cstr(body).unwrap_or_default();
                match self.fake_portals.get(portal).cloned() {
                    Some(dealloc) => self.fake(Fake::Executed(dealloc), None),
                    None => {
                        self.forward(kind, body, out);
                        self.pending.push_back(Expect::Execute);
                    }
                }
            }
            b'S' => {
                self.forward(kind, body, out);
                self.pending.push_back(Expect::Sync);
                self.unsynced = false;
            }
            b'F' if crate::proxy::identity::guard::message_writes_pgssl(kind, body) => {
                // A fast-path call of set_config: the refusal runs in its place.
                let mut sql = refusal_sql(Refusal::Identity).into_bytes();
                sql.push(0);
                put_message(&mut out.to_server, b'Q', &[&sql]);
                self.pending.push_back(Expect::Query);
                self.unsynced = false;
            }
            b'F' => {
                self.forward(kind, body, out);
                self.pending.push_back(Expect::Query);
                self.unsynced = false;
            }
            // Flush, COPY data, done and fail: answered as part of what is running.
            _ => self.forward(kind, body, out),
        }
        ClientStep::Continue
    }

    pub(super) fn forward(&self, kind: u8, body: &[u8], out: &mut Out) {
        put_message(&mut out.to_server, kind, &[body]);
    }

    pub(super) fn pin(&mut self, reason: PinReason) {
        if reason == PinReason::SqlPrepare {
            self.sql_prepared = true;
        }
        if self.pinned.is_none() {
            self.pinned = Some(reason);
            self.new_pin = Some(reason);
        }
    }

    /// The effects of a statement text: pins (or the refusal to send instead), and tracked SETs.
    /// Returns the reason to refuse it for, under `on_pin = refuse`.
    pub(super) fn statement_effects(&mut self, sql: &str) -> (Option<Refusal>, Vec<Effect>) {
        if crate::proxy::identity::guard::writes_pgssl(sql) {
            return (Some(Refusal::Identity), Vec::new());
        }
        let mut effects = sql::effects(sql);
        let mut pins = Vec::new();
        for e in &mut effects {
            match e {
                Effect::Pin(r) => pins.push(*r),
                Effect::Set(name, value) => {
                    // Tracked ones are carried by their text; reported ones pgssl carries follow
                    // their ParameterStatus; any other (default_transaction_read_only,
                    // session_authorization, one not listed) pins.
                    if self.options.tracked.iter().any(|t| t == name) {
                        self.since_ready
                            .push(SetChange::Set(name.clone(), std::mem::take(value)));
                    } else if !REPORTED_SETTABLE
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(name))
                    {
                        pins.push(PinReason::UnknownSet);
                    }
                }
                Effect::Reset(name) => {
                    if self.options.tracked.iter().any(|t| t == name) {
                        self.since_ready.push(SetChange::Reset(name.clone()));
                    }
                }
                Effect::ResetAll => {
                    self.since_ready.push(SetChange::ResetAll);
                    self.identity_cleared = true;
                }
                Effect::DiscardAll => self.identity_cleared = true,
                // Their effect is taken from the server's CommandComplete, once they ran.
                Effect::Deallocate(_) | Effect::DeallocateAll => {}
            }
        }
        if let Some(&first) = pins.first() {
            if self.options.on_pin == OnPin::Refuse {
                self.refused = Some(first);
                return (Some(Refusal::Pin(first)), effects);
            }
            for r in pins {
                self.pin(r);
            }
        }
        (None, effects)
    }

    pub(super) fn query(&mut self, body: &[u8], out: &mut Out) {
        self.unsynced = false;
        let text = cstr(body).map(String::from_utf8_lossy).unwrap_or_default();
        let (refuse, effects) = self.statement_effects(&text);
        if let Some(reason) = refuse {
            self.since_ready.clear();
            let mut sql = refusal_sql(reason).into_bytes();
            sql.push(0);
            put_message(&mut out.to_server, b'Q', &[&sql]);
            self.pending.push_back(Expect::Query);
            return;
        }
        if let Some(dealloc) = self.deallocation(&text, &effects) {
            self.fake(Fake::Deallocated(dealloc), None);
            return;
        }
        self.forward(b'Q', body, out);
        self.pending.push_back(Expect::Query);
    }

    /// A DEALLOCATE of statements the client prepared through the protocol is pgssl's to answer:
    /// the backend's statements may be shared, and this backend may not have them. (With SQL
    /// PREPAREs pinned, DEALLOCATE ALL goes to the server, which drops both kinds.)
    pub(super) fn deallocation(&self, text: &str, effects: &[Effect]) -> Option<Dealloc> {
        if effects.len() != 1 || sql::statement_count(text) != 1 {
            return None;
        }
        match &effects[0] {
            Effect::Deallocate(name) if self.statements.contains_key(name.as_bytes()) => {
                Some(Dealloc::One(Bytes::copy_from_slice(name.as_bytes())))
            }
            Effect::DeallocateAll if !self.sql_prepared => Some(Dealloc::All),
            _ => None,
        }
    }

    pub(super) fn fake(&mut self, answer: Fake, created: Option<Bytes>) {
        self.pending.push_back(Expect::Fake { answer, created });
    }

    pub(super) fn parse(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        let Some((name, rest)) = split_cstr(body) else {
            return self.opaque(b'P', body, out);
        };
        let query = cstr(rest).map(String::from_utf8_lossy).unwrap_or_default();
        let before = self.since_ready.len();
        let (refuse, effects) = self.statement_effects(&query);
        if !name.is_empty() && self.since_ready.len() > before {
            // A named statement's SET runs whenever it is executed, which pgssl does not follow:
            // the session stays with the client instead.
            self.since_ready.truncate(before);
            self.pin(PinReason::UnknownSet);
        }
        self.fake_statements.remove(name);
        if refuse.is_none()
            && !self.statements.contains_key(name)
            && let Some(dealloc) = self.deallocation(&query, &effects)
        {
            self.fake_statements
                .insert(Bytes::copy_from_slice(name), dealloc);
            self.fake(Fake::ParseComplete, None);
            return;
        }
        let refused_body;
        let rest = match refuse {
            Some(reason) => {
                self.since_ready.clear();
                let after_query = rest
                    .get(cstr(rest).map_or(0, |q| q.len() + 1)..)
                    .unwrap_or_default();
                let mut b = refusal_sql(reason).into_bytes();
                b.push(0);
                b.extend_from_slice(after_query);
                refused_body = b;
                &refused_body[..]
            }
            None => rest,
        };
        if name.is_empty() {
            let mut parse = BytesMut::new();
            put_message(&mut parse, b'P', &[b"\0", rest]);
            out.to_server.extend_from_slice(&parse);
            self.unnamed = Some(parse.freeze());
            self.unnamed_here = true;
            self.pending.push_back(Expect::Parse {
                swallow: false,
                added: None,
                created: None,
                rename: None,
            });
            return;
        }
        let client = Bytes::copy_from_slice(name);
        if let Some(existing) = self.statements.get(name).cloned() {
            // PostgreSQL refuses a name in use (42P05): so does the backend, asked to prepare under
            // the name it has for it, and the error is given the client's name.
            self.ensure(&existing, &client, be, out);
            put_message(&mut out.to_server, b'P', &[&existing.server, b"\0", rest]);
            self.pending.push_back(Expect::Parse {
                swallow: false,
                added: None,
                created: None,
                rename: Some((existing.server.clone(), client)),
            });
            return;
        }
        // Statements of the same text under another search_path are other statements (a shared
        // one would fail with "cached plan must not change result type").
        let search_path = self
            .sets
            .iter()
            .find(|(n, _)| n == "search_path")
            .map(|(_, v)| v.as_bytes())
            .or_else(|| find(&self.reported, b"search_path"))
            .unwrap_or_default();
        let server = server_name(rest, search_path);
        let mut parse = BytesMut::new();
        put_message(&mut parse, b'P', &[&server, b"\0", rest]);
        let prepared = Prepared {
            server: server.clone(),
            parse: parse.freeze(),
        };
        self.statements.insert(client.clone(), prepared.clone());
        if be.statements.touch(&server) {
            self.fake(Fake::ParseComplete, Some(client));
            return;
        }
        self.evict_for_one(be, out);
        self.close_first(&prepared.server, be, out);
        out.to_server.extend_from_slice(&prepared.parse);
        be.statements.insert(server.clone());
        self.pending.push_back(Expect::Parse {
            swallow: false,
            added: Some(server.clone()),
            created: Some(client.clone()),
            rename: Some((server, client)),
        });
    }

    /// A message pgssl cannot read: sent on as it is, for the server to refuse.
    pub(super) fn opaque(&mut self, kind: u8, body: &[u8], out: &mut Out) {
        self.forward(kind, body, out);
        let expect = match kind {
            b'P' => Expect::Parse {
                swallow: false,
                added: None,
                created: None,
                rename: None,
            },
            b'B' => Expect::Bind { rename: None },
            b'D' => Expect::Describe { rename: None },
            _ => Expect::Close {
                swallow: false,
                evicted: None,
            },
        };
        self.pending.push_back(expect);
    }

    /// Makes sure the backend has the client's statement, preparing it first (its ParseComplete
    /// swallowed) when it has not.
    pub(super) fn ensure(
        &mut self,
        prepared: &Prepared,
        client: &Bytes,
        be: &mut BackendState,
        out: &mut Out,
    ) {
        if be.statements.touch(&prepared.server) {
            return;
        }
        self.evict_for_one(be, out);
        self.close_first(&prepared.server, be, out);
        out.to_server.extend_from_slice(&prepared.parse);
        be.statements.insert(prepared.server.clone());
        self.pending.push_back(Expect::Parse {
            swallow: true,
            added: Some(prepared.server.clone()),
            created: None,
            rename: Some((prepared.server.clone(), client.clone())),
        });
    }

    /// A Close of `server` ahead of its Parse when pgssl lost track of whether the backend has it
    /// (its eviction was skipped by the server past the bound), its answer swallowed: closing a
    /// statement the backend has not got is no error, and the Parse would otherwise fail as
    /// "already exists".
    pub(super) fn close_first(&mut self, server: &Bytes, be: &mut BackendState, out: &mut Out) {
        let Some(at) = be.uncertain.iter().position(|u| u == server) else {
            return;
        };
        be.uncertain.swap_remove(at);
        put_message(&mut out.to_server, b'C', &[b"S", server, b"\0"]);
        self.pending.push_back(Expect::Close {
            swallow: true,
            evicted: None,
        });
    }

    /// Closes the backend's least recently used statement when one more would pass the bound.
    pub(super) fn evict_for_one(&mut self, be: &mut BackendState, out: &mut Out) {
        while be.statements.len() >= self.options.max_prepared.max(1) {
            let Some(old) = be.statements.evict() else {
                return;
            };
            put_message(&mut out.to_server, b'C', &[b"S", &old, b"\0"]);
            self.pending.push_back(Expect::Close {
                swallow: true,
                evicted: Some(old),
            });
        }
    }

    /// The client's statement `name` in a Bind or Describe, named as the backend has it.
    /// A Bind or Describe of the unnamed statement on a backend that has not got the client's:
    /// its Parse goes first, its ParseComplete swallowed.
    pub(super) fn ensure_unnamed(&mut self, out: &mut Out) {
        if self.unnamed_here {
            return;
        }
        if let Some(parse) = &self.unnamed {
            out.to_server.extend_from_slice(parse);
            self.unnamed_here = true;
            self.pending.push_back(Expect::Parse {
                swallow: true,
                added: None,
                created: None,
                rename: None,
            });
        }
    }

    pub(super) fn rename_for(
        &mut self,
        name: &[u8],
        be: &mut BackendState,
        out: &mut Out,
    ) -> Option<(Bytes, Bytes)> {
        if name.is_empty() {
            self.ensure_unnamed(out);
            return None;
        }
        let prepared = self.statements.get(name)?.clone();
        let client = Bytes::copy_from_slice(name);
        self.ensure(&prepared, &client, be, out);
        Some((prepared.server, client))
    }

    pub(super) fn bind(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        let Some((portal, rest)) = split_cstr(body) else {
            return self.opaque(b'B', body, out);
        };
        let Some((name, params)) = split_cstr(rest) else {
            return self.opaque(b'B', body, out);
        };
        if let Some(dealloc) = self.fake_statements.get(name).cloned() {
            self.fake_portals
                .insert(Bytes::copy_from_slice(portal), dealloc);
            self.fake(Fake::BindComplete, None);
            return;
        }
        self.fake_portals.remove(portal);
        let rename = self.rename_for(name, be, out);
        match &rename {
            Some((server, _)) => put_message(
                &mut out.to_server,
                b'B',
                &[portal, b"\0", server, b"\0", params],
            ),
            None => self.forward(b'B', body, out),
        }
        self.pending.push_back(Expect::Bind { rename });
    }

    pub(super) fn describe(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        if let (Some(&which), Some(name)) = (body.first(), body.get(1..).and_then(cstr)) {
            if which == b'S' && self.fake_statements.contains_key(name) {
                self.fake(Fake::NoParameters, None);
                self.fake(Fake::NoData, None);
                return;
            }
            if which == b'P' && self.fake_portals.contains_key(name) {
                self.fake(Fake::NoData, None);
                return;
            }
        }
        let rename = match (body.first(), body.get(1..).and_then(cstr)) {
            (Some(b'S'), Some(name)) => self.rename_for(name, be, out),
            _ => None,
        };
        match &rename {
            Some((server, _)) => put_message(&mut out.to_server, b'D', &[b"S", server, b"\0"]),
            None => self.forward(b'D', body, out),
        }
        self.pending.push_back(Expect::Describe { rename });
    }

    pub(super) fn close(&mut self, body: &[u8], _be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        if let (Some(&which), Some(name)) = (body.first(), body.get(1..).and_then(cstr)) {
            let fakes = match which {
                b'S' => &mut self.fake_statements,
                _ => &mut self.fake_portals,
            };
            if fakes.remove(name).is_some() {
                self.fake(Fake::CloseComplete, None);
                return;
            }
        }
        if let (Some(b'S'), Some(name)) = (body.first(), body.get(1..).and_then(cstr))
            && !name.is_empty()
            && self.statements.contains_key(name)
        {
            // The backend's statement may serve other clients: it stays until evicted. The client's
            // name goes when the answer is given (not if the batch fails before it).
            let name = Bytes::copy_from_slice(name);
            self.fake(Fake::Closed(Dealloc::One(name)), None);
            return;
        }
        self.forward(b'C', body, out);
        self.pending.push_back(Expect::Close {
            swallow: false,
            evicted: None,
        });
    }
}
