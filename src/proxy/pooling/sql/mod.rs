//! What a statement's text means for transaction pooling, read from its first words the way the
//! server's grammar begins: whether it leaves state on the session that cannot move to another
//! backend (a pin), sets or resets a parameter pgssl carries from backend to backend, or drops
//! prepared statements pgssl keeps for the client.
//!
//! This is not a parser of SQL, and need not be one: every rule here is decided by a statement's
//! leading keywords (or, for advisory locks, by a function's name anywhere in it). The lexer skips
//! what can hide a keyword or a `;` — string and identifier quotes, dollar quotes, comments — so
//! `SELECT 'listen'` is not LISTEN and `SELECT 1; LISTEN x` is. A statement it misreads costs a pin
//! too many or a state pgssl did not carry; the server still runs every statement as sent.

use std::fmt;

/// Why a client's backend stays with it for the rest of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// `LISTEN`: notifications arrive on the session that listens.
    Listen,
    /// A session-level advisory lock (`pg_advisory_lock` and kin).
    AdvisoryLock,
    /// `CREATE TEMP TABLE` (or view, sequence): temporary objects live in the session.
    TempTable,
    /// `DECLARE ... WITH HOLD`: the cursor outlives its transaction.
    HoldCursor,
    /// SQL `PREPARE`: pgssl tracks protocol-level statements, not SQL ones.
    SqlPrepare,
    /// `SET ROLE` / `SET SESSION AUTHORIZATION`: the session acts as another role.
    SetRole,
    /// `SET` of a parameter pgssl does not carry from backend to backend.
    UnknownSet,
}

impl PinReason {
    /// Every reason, for metrics.
    pub const ALL: [PinReason; 7] = [
        PinReason::Listen,
        PinReason::AdvisoryLock,
        PinReason::TempTable,
        PinReason::HoldCursor,
        PinReason::SqlPrepare,
        PinReason::SetRole,
        PinReason::UnknownSet,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            PinReason::Listen => "listen",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::TempTable => "temp_table",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::SetRole => "set_role",
            PinReason::UnknownSet => "unknown_set",
        }
    }
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PinReason::Listen => "LISTEN",
            PinReason::AdvisoryLock => "a session advisory lock",
            PinReason::TempTable => "a temporary object",
            PinReason::HoldCursor => "a cursor WITH HOLD",
            PinReason::SqlPrepare => "SQL PREPARE",
            PinReason::SetRole => "SET ROLE or SET SESSION AUTHORIZATION",
            PinReason::UnknownSet => "SET of a parameter pgssl does not carry between backends",
        })
    }
}

/// What one statement does that pooling must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// It pins the backend.
    Pin(PinReason),
    /// `SET [SESSION] name TO value`: the parameter (lowercase) and the value's text as written.
    Set(String, String),
    /// `RESET name`: the parameter (lowercase).
    Reset(String),
    /// `RESET ALL`.
    ResetAll,
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate(String),
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// `DISCARD ALL`: every prepared statement and parameter back to its start.
    DiscardAll,
}

/// One lexical token: a word (lowercased unless quoted) with where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    start: usize,
}

/// One statement's words, and where the statement ends.
#[derive(Debug, Default)]
struct Statement {
    /// Its words, when its first one is one the rules read ([`HEADS`]); else none are kept.
    words: Vec<Word>,
    /// Whether it has a word at all (kept or not).
    any_word: bool,
    end: usize,
}

/// The first words of the statements [`effect`] looks into. Any other statement (a SELECT, most
/// of what a pooled client sends) has no effect, and its words are not copied.
const HEADS: [&str; 8] = [
    "listen",
    "create",
    "declare",
    "prepare",
    "deallocate",
    "discard",
    "reset",
    "set",
];

/// The session advisory lock functions: found anywhere, they pin.
const ADVISORY: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// The statements of `sql`, each with its words (only the first `KEEP` of them, which the rules read;
/// function names are looked for while lexing).
fn statements(sql: &str, advisory: &mut bool) -> Vec<Statement> {
    const KEEP: usize = 12;
    let b = sql.as_bytes();
    let mut out = vec![Statement::default()];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b';' => {
                if let Some(last) = out.last_mut() {
                    last.end = i;
                }
                out.push(Statement::default());
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            // E'...' takes backslash escapes: \' does not end it.
            b'\'' if escaped_string(b, i) => i = skip_escaped(b, i),
            b'\'' => i = skip_quoted(b, i, b'\''),
            b'"' => {
                let end = skip_quoted(b, i, b'"');
                let inner = sql.get(i + 1..end.saturating_sub(1)).unwrap_or_default();
                push_word(&mut out, inner, i, KEEP, true);
                i = end;
            }
            b'$' => match dollar_tag(b, i) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    i = find(b, tag_end, tag).map_or(b.len(), |at| at + tag.len());
                }
                None => i += 1,
            },
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                i = word_end(b, i);
                let word = &sql[start..i];
                if ADVISORY.iter().any(|f| f.eq_ignore_ascii_case(word)) {
                    *advisory = true;
                }
                push_word(&mut out, word, start, KEEP, false);
            }
            _ => i += 1,
        }
    }
    if let Some(last) = out.last_mut() {
        last.end = b.len();
    }
    out
}

/// Adds a word to the statement being read: kept (lowercased, or as written when `quoted`) while
/// the statement starts with one of [`HEADS`] and has fewer than `keep`.
fn push_word(out: &mut [Statement], word: &str, start: usize, keep: usize, quoted: bool) {
    let Some(last) = out.last_mut() else {
        return;
    };
    let read = if last.any_word {
        !last.words.is_empty()
    } else {
        HEADS.iter().any(|h| {
            if quoted {
                word == *h
            } else {
                word.eq_ignore_ascii_case(h)
            }
        })
    };
    last.any_word = true;
    if read && last.words.len() < keep {
        last.words.push(Word {
            text: if quoted {
                word.to_string()
            } else {
                word.to_ascii_lowercase()
            },
            start,
        });
    }
}

/// Whether the quote at `i` opens an E'' string (an `E` or `e` just before it, itself not the end
/// of a longer word).
fn escaped_string(b: &[u8], i: usize) -> bool {
    let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    i >= 1 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !word_char(b[i - 2]))
}

/// The index just past the E'' string whose quote is at `i`.
fn skip_escaped(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// The index just past the quoted run that starts at `i` (a doubled quote stays inside).
fn skip_quoted(b: &[u8], mut i: usize, quote: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The end of the word (keyword or unquoted identifier) that starts at `i`: letters, digits, `_`,
/// `$` and any non-ASCII byte, as PostgreSQL's lexer reads one.
pub(crate) fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len()
        && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
    {
        i += 1;
    }
    i
}

/// The end of a dollar-quote tag (`$$` or `$tag$`) starting at `i`, if one starts there.
pub(crate) fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    // `$1` is a parameter, not a tag.
    if j > i + 1 && b[i + 1].is_ascii_digit() {
        return None;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

pub(crate) fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at)
}

/// What the statements of `sql` do, in order.
pub fn effects(sql: &str) -> Vec<Effect> {
    let mut advisory = false;
    let parsed = statements(sql, &mut advisory);
    let mut out = Vec::new();
    for s in &parsed {
        if let Some(e) = effect(sql, s) {
            out.push(e);
        }
    }
    if advisory {
        out.push(Effect::Pin(PinReason::AdvisoryLock));
    }
    out
}

/// How many statements `sql` holds (empty ones between semicolons aside).
pub fn statement_count(sql: &str) -> usize {
    let mut advisory = false;
    statements(sql, &mut advisory)
        .iter()
        .filter(|s| s.any_word)
        .count()
}

fn effect(sql: &str, s: &Statement) -> Option<Effect> {
    let w: Vec<&str> = s.words.iter().map(|w| w.text.as_str()).collect();
    match w.as_slice() {
        ["listen", ..] => Some(Effect::Pin(PinReason::Listen)),
        ["create", rest @ ..] => {
            let rest = match rest {
                ["or", "replace", rest @ ..] => rest,
                rest => rest,
            };
            let rest = match rest {
                ["global" | "local", rest @ ..] => rest,
                rest => rest,
            };
            matches!(rest.first(), Some(&"temp" | &"temporary"))
                .then_some(Effect::Pin(PinReason::TempTable))
        }
        ["declare", rest @ ..] => {
            let before_for = rest.iter().take_while(|w| **w != "for");
            let words: Vec<&&str> = before_for.collect();
            words
                .windows(2)
                .any(|p| *p[0] == "with" && *p[1] == "hold")
                .then_some(Effect::Pin(PinReason::HoldCursor))
        }
        ["prepare", "transaction", ..] => None,
        ["prepare", ..] => Some(Effect::Pin(PinReason::SqlPrepare)),
        ["deallocate", rest @ ..] => {
            let rest = match rest {
                ["prepare", rest @ ..] => rest,
                rest => rest,
            };
            match rest {
                ["all"] => Some(Effect::DeallocateAll),
                [_] => Some(Effect::Deallocate(s.words.last()?.text.clone())),
                _ => None,
            }
        }
        ["discard", "all"] => Some(Effect::DiscardAll),
        ["reset", "all"] => Some(Effect::ResetAll),
        ["reset", "role" | "session", ..] => None,
        ["reset", name] => Some(Effect::Reset(name.to_string())),
        ["set", "local", ..] | ["set", "transaction", ..] | ["set", "constraints", ..] => None,
        ["set", "role", ..] | ["set", "session", "role" | "authorization", ..] => {
            Some(Effect::Pin(PinReason::SetRole))
        }
        ["set", "session", "characteristics", ..] => Some(Effect::Pin(PinReason::UnknownSet)),
        ["set", "time", "zone", ..] | ["set", "session", "time", "zone", ..] => {
            // Reported (TimeZone): followed by its ParameterStatus, not by the text.
            Some(Effect::Set("timezone".into(), String::new()))
        }
        ["set", "names", ..] | ["set", "session", "names", ..] => {
            Some(Effect::Set("client_encoding".into(), String::new()))
        }
        ["set", "schema", ..] | ["set", "session", "schema", ..] => {
            let schema = s.words.iter().find(|w| w.text == "schema")?;
            let start = schema.start + schema.text.len();
            Some(Effect::Set(
                "search_path".into(),
                value_text(sql, start, s.end),
            ))
        }
        ["set", rest @ ..] => {
            let offset = usize::from(rest.first() == Some(&"session"));
            let name = s.words.get(1 + offset)?;
            if sql.as_bytes().get(name.start) == Some(&b'"') {
                return Some(Effect::Pin(PinReason::UnknownSet));
            }
            // The value starts after TO or =, whichever follows the name.
            let after_name = name.start + name.text.len();
            let tail = sql.get(after_name..s.end)?;
            let trimmed = tail.trim_start();
            let value_from = if let Some(v) = trimmed.strip_prefix('=') {
                s.end - v.len()
            } else if trimmed
                .get(..2)
                .is_some_and(|to| to.eq_ignore_ascii_case("to"))
            {
                s.end - trimmed.len() + 2
            } else {
                // A SET pgssl cannot read (SET XML OPTION, a quoted name): it cannot be carried.
                return Some(Effect::Pin(PinReason::UnknownSet));
            };
            Some(Effect::Set(
                name.text.clone(),
                value_text(sql, value_from, s.end),
            ))
        }
        _ => None,
    }
}

/// A SET's value as written, trimmed.
fn value_text(sql: &str, from: usize, to: usize) -> String {
    sql.get(from..to).unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests;
