//! The message tracker of a transaction-pooled client: what it sends and what its backends answer,
//! message by message, so that the client can move from backend to backend between transactions
//! and never notice.
//!
//! - **When a backend is free again**: every request is answered, no extended-protocol batch is
//!   left unsynced, and the last ReadyForQuery said the session is outside a transaction (`I`).
//! - **Prepared statements**: a client's named statement is prepared on a backend under a name pgssl
//!   owns (`pgssl_` and a digest of its text and parameter types), so that clients preparing the
//!   same text share it and a backend keeps at most `max_prepared` (least recently used closed
//!   first). Bind and Describe name the backend's statement; when the backend the client has now
//!   lacks it, its Parse goes first and its ParseComplete is swallowed. A Parse of a statement the
//!   backend has, and a Close of the client's name, are answered by pgssl at their place in the
//!   answer stream. An error names the client's statement, not pgssl's.
//! - **Session state**: the reported parameters (ParameterStatus) as the client was told them,
//!   and the tracked ones it SET; a backend handed to it gets `SET`s first, their answers swallowed.
//! - **Pins**: what cannot move between backends ([`PinReason`]) ties the backend to the client, or
//!   is refused by the server itself (`on_pin = refuse`: the statement is replaced by one that
//!   raises the error, so the transaction state stays the server's).
//!
//! Answers are matched to requests with a queue in send order ([`Expect`]), as the server answers
//! them: an error in an extended batch skips everything up to its Sync, which is how the server
//! behaves too. Nothing here reads a socket; the serve loop feeds whole client messages and server
//! messages (the large ones as a header, their bodies streamed past) and writes what comes out.

use std::collections::{HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use super::sql::{self, Effect, PinReason};
use super::statements::Statements;

/// Parameters the server reports (ParameterStatus) that a client may SET: carried to each backend.
const REPORTED_SETTABLE: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "search_path",
];

/// Reported parameters, lowercase, as SET names them (their changes arrive as ParameterStatus).
const REPORTED_LOWER: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
    "integer_datetimes",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "default_transaction_read_only",
    "in_hot_standby",
    "scram_iterations",
];

/// What to do with a statement that would pin a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPin {
    /// Pin the backend to the client for the rest of its session.
    #[default]
    Pin,
    /// Refuse the statement with 0A000.
    Refuse,
}

/// How a client is tracked.
#[derive(Debug, Clone)]
pub struct TrackOptions {
    /// Prepared statements kept per backend at most.
    pub max_prepared: usize,
    /// Pin or refuse.
    pub on_pin: OnPin,
    /// Unreported parameters carried from backend to backend when SET outside a transaction
    /// (lowercase); a SET of any other unreported parameter pins.
    pub tracked: Vec<String>,
}

impl Default for TrackOptions {
    fn default() -> TrackOptions {
        TrackOptions {
            max_prepared: 100,
            on_pin: OnPin::Pin,
            tracked: DEFAULT_TRACKED.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Unreported parameters drivers set that pgssl carries by default.
pub const DEFAULT_TRACKED: &[&str] = &[
    "search_path",
    "extra_float_digits",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "bytea_output",
    "xmloption",
    "row_security",
    "timezone_abbreviations",
];

/// A backend's side of the tracking: what it has prepared and SET, and what it reported.
#[derive(Debug, Default)]
pub struct BackendState {
    /// pgssl's statements prepared on it.
    pub statements: Statements,
    /// Tracked unreported parameters SET on it, with their text.
    pub sets: Vec<(String, String)>,
}

/// A client's named statement: the backend's name for it and the Parse that prepares it there.
#[derive(Debug, Clone)]
struct Prepared {
    server: Bytes,
    /// The whole Parse message under the backend's name.
    parse: Bytes,
}

/// A change to a tracked parameter, applied once its transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SetChange {
    Set(String, String),
    Reset(String),
    ResetAll,
}

/// A request sent (or answered by pgssl), awaiting its answer.
#[derive(Debug)]
enum Expect {
    /// A Parse: ParseComplete. `swallow`: pgssl sent it; `added`: the backend statement it makes;
    /// `created`: the client name it made; `rename`: (backend name, client name) for its errors.
    Parse {
        swallow: bool,
        added: Option<Bytes>,
        created: Option<Bytes>,
        rename: Option<(Bytes, Bytes)>,
    },
    /// Bind: BindComplete.
    Bind { rename: Option<(Bytes, Bytes)> },
    /// Describe: RowDescription or NoData.
    Describe { rename: Option<(Bytes, Bytes)> },
    /// Execute: CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Close: CloseComplete (`swallow`: pgssl sent it, evicting a statement).
    Close { swallow: bool },
    /// Sync: ReadyForQuery.
    Sync,
    /// A simple Query or a FunctionCall: everything up to its ReadyForQuery.
    Query,
    /// pgssl's own SETs for a backend just handed out: every answer swallowed.
    Injected,
    /// An answer pgssl gives itself when it reaches the head of the queue; `created` is the client
    /// name a faked ParseComplete made (undone if the batch fails before it).
    Fake {
        answer: Fake,
        created: Option<Bytes>,
    },
}

/// Answers pgssl gives itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fake {
    ParseComplete,
    CloseComplete,
    /// `DEALLOCATE` of a client's statement: CommandComplete and ReadyForQuery.
    Deallocate,
}

/// What to do with a server message, decided at its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Pass it to the client as it streams by; [`Tracker::server_end`] when it has.
    Forward,
    /// Pass nothing of it; [`Tracker::server_end`] when it has gone by.
    Drop,
    /// Collect its body and hand it to [`Tracker::server_end`], which writes what the client gets.
    Capture,
}

/// Where a client's bytes and pgssl's answers go.
#[derive(Debug, Default)]
pub struct Out {
    /// To the backend.
    pub to_server: BytesMut,
    /// To the client.
    pub to_client: BytesMut,
}

/// A client message's meaning for the serve loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStep {
    /// Carry on.
    Continue,
    /// Terminate: the client is leaving (nothing was sent).
    Terminate,
}

/// One client's tracking. See the module's documentation.
#[derive(Debug)]
pub struct Tracker {
    options: std::sync::Arc<TrackOptions>,
    statements: HashMap<Bytes, Prepared>,
    pending: VecDeque<Expect>,
    unsynced: bool,
    status: u8,
    pinned: Option<PinReason>,
    new_pin: Option<PinReason>,
    refused: Option<PinReason>,
    /// Reported parameters as the client was told them.
    reported: Vec<(Bytes, Bytes)>,
    /// Tracked unreported parameters the client SET, committed.
    sets: Vec<(String, String)>,
    /// Changes since the last ReadyForQuery, and those of the open transaction.
    since_ready: Vec<SetChange>,
    in_transaction: Vec<SetChange>,
    /// The last CommandComplete was ROLLBACK (the transaction's SETs are undone).
    rolled_back: bool,
}

impl Tracker {
    /// A client told the start-up parameters `reported`.
    pub fn new(options: std::sync::Arc<TrackOptions>, reported: Vec<(Bytes, Bytes)>) -> Tracker {
        Tracker {
            options,
            statements: HashMap::new(),
            pending: VecDeque::new(),
            unsynced: false,
            status: b'I',
            pinned: None,
            new_pin: None,
            refused: None,
            reported,
            sets: Vec::new(),
            since_ready: Vec::new(),
            in_transaction: Vec::new(),
            rolled_back: false,
        }
    }

    /// Whether the backend may go: every request answered, nothing unsynced, no transaction open.
    pub fn idle(&self) -> bool {
        self.pending.is_empty() && !self.unsynced && self.status == b'I'
    }

    /// Whether requests still await answers (the backend must stay).
    pub fn awaiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Why the backend is pinned, if it is.
    pub fn pinned(&self) -> Option<PinReason> {
        self.pinned
    }

    /// A pin that happened since the last call (to count and log once).
    pub fn take_new_pin(&mut self) -> Option<PinReason> {
        self.new_pin.take()
    }

    /// A statement refused since the last call (`on_pin = refuse`).
    pub fn take_refused(&mut self) -> Option<PinReason> {
        self.refused.take()
    }

    /// Named statements the client has.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }

    /// Prepares a backend just handed to the client: `SET`s of what differs from what the client
    /// was told and set, sent ahead of the client's messages, their answers swallowed. `params` is
    /// what the backend reported.
    pub fn hand_over(&mut self, be: &mut BackendState, params: &[(Bytes, Bytes)], out: &mut Out) {
        let mut sql = String::new();
        for name in REPORTED_SETTABLE {
            let Some(want) = find(&self.reported, name.as_bytes()) else {
                continue;
            };
            if find(params, name.as_bytes()) == Some(want) {
                continue;
            }
            let value = String::from_utf8_lossy(want);
            sql.push_str(&format!(
                "SET {name} TO {};",
                postgres_protocol::escape::escape_literal(&value)
            ));
        }
        let mut names: Vec<&String> = self.sets.iter().map(|(n, _)| n).collect();
        names.extend(be.sets.iter().map(|(n, _)| n));
        names.sort();
        names.dedup();
        for name in names {
            let want = self.sets.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let have = be.sets.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            if want == have {
                continue;
            }
            match want {
                Some(v) => sql.push_str(&format!("SET {name} TO {v};")),
                None => sql.push_str(&format!("RESET {name};")),
            }
        }
        be.sets = self.sets.clone();
        if sql.is_empty() {
            return;
        }
        let mut body = sql.into_bytes();
        body.push(0);
        put_message(&mut out.to_server, b'Q', &[&body]);
        self.pending.push_back(Expect::Injected);
    }

    /// Follows one whole client message (`kind`, `body`), writing what the backend and the client
    /// get to `out`. `be` is the backend the client holds now.
    pub fn client(
        &mut self,
        kind: u8,
        body: &[u8],
        be: &mut BackendState,
        out: &mut Out,
    ) -> ClientStep {
        match kind {
            b'X' => return ClientStep::Terminate,
            b'Q' => self.query(body, be, out),
            b'P' => self.parse(body, be, out),
            b'B' => self.bind(body, be, out),
            b'D' => self.describe(body, be, out),
            b'C' => self.close(body, be, out),
            b'E' => {
                self.forward(kind, body, out);
                self.pending.push_back(Expect::Execute);
                self.unsynced = true;
            }
            b'S' => {
                self.forward(kind, body, out);
                self.pending.push_back(Expect::Sync);
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

    fn forward(&self, kind: u8, body: &[u8], out: &mut Out) {
        put_message(&mut out.to_server, kind, &[body]);
    }

    fn pin(&mut self, reason: PinReason) {
        if self.pinned.is_none() {
            self.pinned = Some(reason);
            self.new_pin = Some(reason);
        }
    }

    /// The effects of a statement text: pins (or the refusal to send instead), and tracked SETs.
    /// Returns the reason to refuse it for, under `on_pin = refuse`.
    fn statement_effects(
        &mut self,
        sql: &str,
        be: &mut BackendState,
    ) -> (Option<PinReason>, Vec<Effect>) {
        let mut effects = sql::effects(sql);
        let mut pins = Vec::new();
        for e in &mut effects {
            match e {
                Effect::Pin(r) => pins.push(*r),
                Effect::Set(name, value) => {
                    if REPORTED_LOWER.contains(&name.as_str()) {
                        continue;
                    }
                    if self.options.tracked.iter().any(|t| t == name) {
                        self.since_ready
                            .push(SetChange::Set(name.clone(), std::mem::take(value)));
                    } else {
                        pins.push(PinReason::UnknownSet);
                    }
                }
                Effect::Reset(name) => {
                    if self.options.tracked.iter().any(|t| t == name) {
                        self.since_ready.push(SetChange::Reset(name.clone()));
                    }
                }
                Effect::ResetAll => self.since_ready.push(SetChange::ResetAll),
                Effect::DiscardAll => {
                    self.since_ready.push(SetChange::ResetAll);
                    self.statements.clear();
                    be.statements.clear();
                }
                Effect::Deallocate(_) | Effect::DeallocateAll => {}
            }
        }
        if let Some(&first) = pins.first() {
            if self.options.on_pin == OnPin::Refuse {
                self.refused = Some(first);
                return (Some(first), effects);
            }
            for r in pins {
                self.pin(r);
            }
        }
        (None, effects)
    }

    fn query(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = false;
        let text = cstr(body).map(String::from_utf8_lossy).unwrap_or_default();
        let (refuse, effects) = self.statement_effects(&text, be);
        if let Some(reason) = refuse {
            self.since_ready.clear();
            let mut sql = refusal_sql(reason).into_bytes();
            sql.push(0);
            put_message(&mut out.to_server, b'Q', &[&sql]);
            self.pending.push_back(Expect::Query);
            return;
        }
        // A DEALLOCATE of a statement the client prepared by protocol is pgssl's to answer: the
        // backend's statement may be shared, and this backend may not have it.
        let single = effects.len() == 1 && sql::statement_count(&text) == 1;
        match effects.first() {
            Some(Effect::Deallocate(name))
                if single && self.statements.contains_key(name.as_bytes()) =>
            {
                self.statements.remove(name.as_bytes());
                self.fake(Fake::Deallocate, None);
                return;
            }
            Some(Effect::DeallocateAll) if single && self.pinned != Some(PinReason::SqlPrepare) => {
                self.statements.clear();
                self.fake(Fake::Deallocate, None);
                return;
            }
            _ => {}
        }
        if effects.contains(&Effect::DeallocateAll) {
            // SQL statements are pinned: the backend drops pgssl's too.
            self.statements.clear();
            be.statements.clear();
        }
        self.forward(b'Q', body, out);
        self.pending.push_back(Expect::Query);
    }

    fn fake(&mut self, answer: Fake, created: Option<Bytes>) {
        self.pending.push_back(Expect::Fake { answer, created });
    }

    fn parse(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        let Some((name, rest)) = split_cstr(body) else {
            return self.opaque(b'P', body, out);
        };
        let query = cstr(rest).map(String::from_utf8_lossy).unwrap_or_default();
        let (refuse, _) = self.statement_effects(&query, be);
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
            put_message(&mut out.to_server, b'P', &[b"\0", rest]);
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
        let server = server_name(rest);
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
    fn opaque(&mut self, kind: u8, body: &[u8], out: &mut Out) {
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
            _ => Expect::Close { swallow: false },
        };
        self.pending.push_back(expect);
    }

    /// Makes sure the backend has the client's statement, preparing it first (its ParseComplete
    /// swallowed) when it has not.
    fn ensure(
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
        out.to_server.extend_from_slice(&prepared.parse);
        be.statements.insert(prepared.server.clone());
        self.pending.push_back(Expect::Parse {
            swallow: true,
            added: Some(prepared.server.clone()),
            created: None,
            rename: Some((prepared.server.clone(), client.clone())),
        });
    }

    /// Closes the backend's least recently used statement when one more would pass the bound.
    fn evict_for_one(&mut self, be: &mut BackendState, out: &mut Out) {
        while be.statements.len() >= self.options.max_prepared.max(1) {
            let Some(old) = be.statements.evict() else {
                return;
            };
            put_message(&mut out.to_server, b'C', &[b"S", &old, b"\0"]);
            self.pending.push_back(Expect::Close { swallow: true });
        }
    }

    /// The client's statement `name` in a Bind or Describe, named as the backend has it.
    fn rename_for(
        &mut self,
        name: &[u8],
        be: &mut BackendState,
        out: &mut Out,
    ) -> Option<(Bytes, Bytes)> {
        if name.is_empty() {
            return None;
        }
        let prepared = self.statements.get(name)?.clone();
        let client = Bytes::copy_from_slice(name);
        self.ensure(&prepared, &client, be, out);
        Some((prepared.server, client))
    }

    fn bind(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        let Some((portal, rest)) = split_cstr(body) else {
            return self.opaque(b'B', body, out);
        };
        let Some((name, params)) = split_cstr(rest) else {
            return self.opaque(b'B', body, out);
        };
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

    fn describe(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
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

    fn close(&mut self, body: &[u8], _be: &mut BackendState, out: &mut Out) {
        self.unsynced = true;
        if let (Some(b'S'), Some(name)) = (body.first(), body.get(1..).and_then(cstr))
            && !name.is_empty()
            && self.statements.remove(name).is_some()
        {
            // The backend's statement may serve other clients: it stays until evicted.
            self.fake(Fake::CloseComplete, None);
            return;
        }
        self.forward(b'C', body, out);
        self.pending.push_back(Expect::Close { swallow: false });
    }

    /// What to do with a server message of `kind`, decided at its header.
    pub fn server_begins(&self, kind: u8) -> Disposition {
        if matches!(kind, b'S' | b'Z' | b'E' | b'C') {
            return Disposition::Capture;
        }
        match (self.pending.front(), kind) {
            (Some(Expect::Injected), _) => Disposition::Drop,
            (Some(Expect::Parse { swallow: true, .. }), b'1') => Disposition::Drop,
            (Some(Expect::Close { swallow: true }), b'3') => Disposition::Drop,
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
            b'C' => {
                let body = body.unwrap_or_default();
                if !injected {
                    self.rolled_back = body.starts_with(b"ROLLBACK");
                    put_message(&mut out.to_client, b'C', &[body]);
                }
                self.complete(|e| matches!(e, Expect::Execute));
            }
            b'S' => {
                let body = body.unwrap_or_default();
                if let Some((name, value)) = param(body) {
                    set(params, name, value);
                    if !injected {
                        set(&mut self.reported, name, value);
                        put_message(&mut out.to_client, b'S', &[body]);
                    }
                }
            }
            b'E' => self.error(body.unwrap_or_default(), be, out, injected),
            b'Z' => self.ready(body.unwrap_or_default(), be, out, injected),
            _ => {}
        }
        self.drain_fakes(out);
    }

    /// Pops the head when `is` says the message answers it.
    fn complete(&mut self, is: impl Fn(&Expect) -> bool) {
        if self.pending.front().is_some_and(is) {
            self.pending.pop_front();
        }
    }

    fn error(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out, injected: bool) {
        self.since_ready.clear();
        if injected {
            // A SET pgssl sent failed: the client never sent it and never hears of it.
            return;
        }
        let rename = match self.pending.front() {
            Some(
                Expect::Parse { rename, .. }
                | Expect::Bind { rename }
                | Expect::Describe { rename },
            ) => rename.clone(),
            _ => None,
        };
        match rename {
            Some((server, client)) => {
                put_message(
                    &mut out.to_client,
                    b'E',
                    &[&renamed(body, &server, &client)],
                );
            }
            None => put_message(&mut out.to_client, b'E', &[body]),
        }
        // In a simple query the error ends nothing but itself; in an extended batch the server skips
        // to the Sync, and so does the queue.
        if matches!(self.pending.front(), Some(Expect::Query) | None) {
            return;
        }
        while let Some(e) = self.pending.front() {
            if matches!(e, Expect::Sync | Expect::Query | Expect::Injected) {
                break;
            }
            if let Some(e) = self.pending.pop_front() {
                self.undo(e, be);
            }
        }
    }

    /// What a request the server never carried out had done to the tracking.
    fn undo(&mut self, e: Expect, be: &mut BackendState) {
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
            _ => {}
        }
    }

    fn ready(&mut self, body: &[u8], be: &mut BackendState, out: &mut Out, injected: bool) {
        // Whatever the head was waiting for, this ReadyForQuery ends it (a confused stream is not
        // left waiting forever).
        while let Some(e) = self.pending.pop_front() {
            if matches!(e, Expect::Sync | Expect::Query | Expect::Injected) {
                break;
            }
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
            match answer {
                Fake::ParseComplete => put_message(&mut out.to_client, b'1', &[]),
                Fake::CloseComplete => put_message(&mut out.to_client, b'3', &[]),
                Fake::Deallocate => {
                    put_message(&mut out.to_client, b'C', &[b"DEALLOCATE\0"]);
                    put_message(&mut out.to_client, b'Z', &[&[self.status]]);
                }
            }
            self.pending.pop_front();
        }
    }
}

/// The SQL that raises a refusal in the server itself (so that the transaction state stays the
/// server's: the error aborts an open transaction as any other would).
fn refusal_sql(reason: PinReason) -> String {
    let message = format!(
        "pgssl transaction pooling (pool.on_pin = refuse) does not run {reason}: it would tie this session to one repository connection"
    );
    format!(
        "DO $pgssl$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = {}; END$pgssl$",
        postgres_protocol::escape::escape_literal(&message)
    )
}

fn apply(sets: &mut Vec<(String, String)>, change: SetChange) {
    match change {
        SetChange::Set(name, value) => match sets.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => sets.push((name, value)),
        },
        SetChange::Reset(name) => sets.retain(|(n, _)| *n != name),
        SetChange::ResetAll => sets.clear(),
    }
}

/// The backend's name for a statement of this text and parameter types (`rest`: the Parse body
/// after the name): equal texts share it, different ones never do (128 bits of SHA-256).
fn server_name(rest: &[u8]) -> Bytes {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, rest);
    let mut name = String::with_capacity(6 + 32);
    name.push_str("pgssl_");
    for b in &digest.as_ref()[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    Bytes::from(name)
}

/// An ErrorResponse body with the backend's statement name replaced by the client's in its
/// message, detail and hint.
fn renamed(body: &[u8], server: &[u8], client: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some(value) = cstr(tail) else { break };
        out.push(field);
        if matches!(field, b'M' | b'D' | b'H') {
            out.extend_from_slice(&replace(value, server, client));
        } else {
            out.extend_from_slice(value);
        }
        out.push(0);
        rest = &tail[value.len() + 1..];
    }
    out.push(0);
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if !from.is_empty() && hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Appends one message: type, length, the parts.
pub fn put_message(out: &mut BytesMut, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(5 + len);
    out.put_u8(kind);
    out.put_u32((4 + len) as u32);
    for p in parts {
        out.put_slice(p);
    }
}

/// The NUL-terminated string at the start of `b`, without its NUL.
fn cstr(b: &[u8]) -> Option<&[u8]> {
    b.iter().position(|&c| c == 0).map(|n| &b[..n])
}

/// A NUL-terminated string and what follows it.
fn split_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = b.iter().position(|&c| c == 0)?;
    Some((&b[..n], &b[n + 1..]))
}

/// A ParameterStatus body's name and value.
fn param(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = split_cstr(body)?;
    Some((name, cstr(rest)?))
}

fn find<'a>(params: &'a [(Bytes, Bytes)], name: &[u8]) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(n, _)| n.as_ref() == name)
        .map(|(_, v)| v.as_ref())
}

fn set(params: &mut Vec<(Bytes, Bytes)>, name: &[u8], value: &[u8]) {
    match params.iter_mut().find(|(n, _)| n.as_ref() == name) {
        Some((_, v)) => *v = Bytes::copy_from_slice(value),
        None => params.push((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value))),
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
