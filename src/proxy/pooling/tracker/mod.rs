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
//! Answers are matched to requests with a queue in send order (`Expect`), as the server answers
//! them: an error in an extended batch skips everything up to its Sync, which is how the server
//! behaves too. Nothing here reads a socket; the serve loop feeds whole client messages and server
//! messages (the large ones as a header, their bodies streamed past) and writes what comes out.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::sql::PinReason;
use super::statements::Statements;

/// The hasher of the maps keyed by the client's own names: foldhash, keyed per process (SipHash was
/// ~5 % of pgssl's instructions per pooled transaction, with the pool's and the cancel keys' maps).
type Keyed = foldhash::quality::RandomState;

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
    /// Statements it may have that pgssl does not count (an eviction the server skipped, undone
    /// past the bound): closed before they are prepared again.
    pub uncertain: Vec<Bytes>,
    /// The `pgssl.*` values SET on it (`None`: its start-up's, which are none; a client's RESET ALL
    /// or DISCARD ALL brings that back).
    pub identity: Option<std::sync::Arc<crate::proxy::identity::Identity>>,
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

/// Why a statement is replaced by one that raises an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It would pin, under `on_pin = refuse` (0A000).
    Pin(PinReason),
    /// It would write a `pgssl.*` setting (42501).
    Identity,
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
    /// Close: CloseComplete (`swallow`: pgssl sent it, evicting `evicted`, which is the backend's
    /// again when the server skips the Close).
    Close {
        swallow: bool,
        evicted: Option<Bytes>,
    },
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fake {
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// CloseComplete of a client's statement, whose name goes when it is given.
    Closed(Dealloc),
    NoData,
    /// ParameterDescription of no parameters.
    NoParameters,
    /// A simple-query DEALLOCATE: CommandComplete and ReadyForQuery; the client's statements go
    /// when it is given (after what came before it succeeded).
    Deallocated(Dealloc),
    /// The Execute of a DEALLOCATE sent through the extended protocol: CommandComplete.
    Executed(Dealloc),
}

/// Which of the client's statements a DEALLOCATE drops.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dealloc {
    One(Bytes),
    All,
}

impl Dealloc {
    fn tag(&self) -> &'static [u8] {
        match self {
            Dealloc::One(_) => b"DEALLOCATE\0",
            Dealloc::All => b"DEALLOCATE ALL\0",
        }
    }
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
    statements: HashMap<Bytes, Prepared, Keyed>,
    pending: VecDeque<Expect>,
    unsynced: bool,
    status: u8,
    pinned: Option<PinReason>,
    new_pin: Option<PinReason>,
    refused: Option<PinReason>,
    /// Reported parameters as the client was told them.
    /// Shared by the clients told the same ones until one's change copies them.
    reported: std::sync::Arc<Vec<(Bytes, Bytes)>>,
    /// Tracked unreported parameters the client SET, committed.
    sets: Vec<(String, String)>,
    /// Changes since the last ReadyForQuery, and those of the open transaction.
    since_ready: Vec<SetChange>,
    in_transaction: Vec<SetChange>,
    /// The last CommandComplete was ROLLBACK (the transaction's SETs are undone).
    rolled_back: bool,
    /// DEALLOCATEs of the client's statements prepared through the extended protocol (psycopg
    /// sends them so), answered by pgssl: statement and portal names to what they drop.
    fake_statements: HashMap<Bytes, Dealloc, Keyed>,
    fake_portals: HashMap<Bytes, Dealloc, Keyed>,
    /// The client ran SQL PREPARE (its DEALLOCATE ALL must reach the server).
    sql_prepared: bool,
    /// The client's last unnamed statement (its whole Parse), and whether the backend it holds has
    /// it: a Bind of "" on another backend would run that backend's unnamed statement.
    unnamed: Option<Bytes>,
    unnamed_here: bool,
    /// The client's `pgssl.*` values, SET on each backend it holds that lacks them.
    identity: Option<std::sync::Arc<crate::proxy::identity::Identity>>,
    /// The client ran RESET ALL or DISCARD ALL: the backend's values are gone at its next
    /// ReadyForQuery.
    identity_cleared: bool,
    /// The backend it holds has its values: nothing to look at before each message until another
    /// backend is handed over or the values are cleared.
    identity_kept: bool,
}

impl Tracker {
    /// A client told the start-up parameters `reported`.
    pub fn new(
        options: std::sync::Arc<TrackOptions>,
        reported: std::sync::Arc<Vec<(Bytes, Bytes)>>,
    ) -> Tracker {
        Tracker {
            options,
            statements: HashMap::default(),
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
            fake_statements: HashMap::default(),
            fake_portals: HashMap::default(),
            sql_prepared: false,
            unnamed: None,
            unnamed_here: false,
            identity: None,
            identity_cleared: false,
            identity_kept: false,
        }
    }

    /// The `pgssl.*` values the client's backends are to have.
    pub fn identity(&self) -> Option<&std::sync::Arc<crate::proxy::identity::Identity>> {
        self.identity.as_ref()
    }

    /// Sets the `pgssl.*` values the client's backends are to have.
    pub fn set_identity(
        &mut self,
        identity: Option<std::sync::Arc<crate::proxy::identity::Identity>>,
    ) {
        self.identity = identity;
    }

    /// Before a client message: a backend that lacks the client's `pgssl.*` values (just handed
    /// over, or cleared by the client's RESET ALL) gets them first, when nothing is in flight and
    /// no transaction is open, the answers swallowed.
    fn keep_identity(&mut self, be: &mut BackendState, out: &mut Out) {
        if self.identity_kept {
            return;
        }
        let Some(want) = &self.identity else {
            self.identity_kept = true;
            return;
        };
        let has = be
            .identity
            .as_ref()
            .is_some_and(|h| std::sync::Arc::ptr_eq(h, want) || h == want);
        if !has {
            if self.status != b'I' || !self.pending.is_empty() || self.unsynced {
                return;
            }
            let mut body = want.set_sql().into_bytes();
            body.push(0);
            put_message(&mut out.to_server, b'Q', &[&body]);
            self.pending.push_back(Expect::Injected);
        }
        be.identity = Some(want.clone());
        self.identity_kept = true;
    }

    /// Whether the backend may go: every request answered, nothing unsynced, no transaction open.
    pub fn idle(&self) -> bool {
        self.pending.is_empty() && !self.unsynced && self.status == b'I'
    }

    /// The backend went back to the pool: the next one does not have the client's unnamed
    /// statement.
    pub fn released(&mut self) {
        self.unnamed_here = false;
    }

    /// Whether an extended-protocol batch was sent without its Sync (its answers may never come).
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Whether requests still await answers (the backend must stay).
    pub fn awaiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// A reported parameter as the client was told it.
    pub fn told(&self, name: &str) -> Option<String> {
        find(&self.reported, name.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned())
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
        self.identity_kept = false;
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
                "SET {name} TO {}\n;",
                crate::proxy::backend::reset::quoted(&value)
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
                Some(v) => sql.push_str(&format!("SET {name} TO {v}\n;")),
                None => sql.push_str(&format!("RESET {name}\n;")),
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
}

mod client;
mod server;
mod wire;

use wire::find;
pub use wire::{put_message, set_shared};

#[cfg(test)]
mod tests;
