//! Whether a client's statement would write a `pgssl.*` setting.
//!
//! The check reads the statement's tokens the way the server's lexer splits them (words, quoted
//! identifiers, string and dollar-quoted literals, comments), and then reads the *content* of every
//! literal, quoted identifier and comment as statements too, to a bounded depth: `EXECUTE 'SET
//! pgssl.node = …'` inside a DO block is found, and so is one a misread quote would have hidden.
//! What it refuses:
//! - `SET`/`RESET` (with `SESSION`/`LOCAL`) of a name `pgssl.…` or `pgssl . …`, in any case or
//!   quoting, or of a Unicode-escaped identifier (`U&"…"`) — which also covers `ALTER ROLE … SET`,
//!   `ALTER DATABASE … SET` and a function's `SET` clause;
//! - `set_config` unless its first argument is a plain string literal that does not name `pgssl.…`
//!   (a name built at run time cannot be judged);
//! - an `UPDATE` of `pg_settings`, which is `set_config` by another name.
//!
//! A name a PL function builds at run time (`EXECUTE 'SE' || 'T …'`) is out of any proxy's sight;
//! the README shows the grants that close that door.

use crate::proxy::pooling::sql::{dollar_tag, find, word_end};

/// How deep literals inside literals are read; deeper text is refused.
const MAX_DEPTH: usize = 4;

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword or identifier, lowercased.
    Word(String),
    /// A double-quoted identifier's content, lowercased (GUC names compare without case).
    Quoted(String),
    /// A string literal; `plain` when it is `'…'` with no prefix and no backslash in it.
    Literal { content: String, plain: bool },
    /// Any other character (punctuation), spaces skipped.
    Punct(u8),
}

/// Whether `sql` would write a `pgssl.*` setting (see the module's rules).
pub fn writes_pgssl(sql: &str) -> bool {
    may_write(sql.as_bytes()) && check(sql, 0)
}

/// Whether the text names anything the rules look for: `pgssl`, `set_config`, `pg_settings` or a
/// Unicode escape (`U&`), in any case. Each of them has a `g` or a `&`, which a vectorised search
/// finds; most statements name none and are passed without lexing (this runs on every Query and
/// Parse a pooled client sends).
fn may_write(b: &[u8]) -> bool {
    let at = |i: usize, needle: &[u8]| {
        b.get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    };
    memchr::memchr3_iter(b'g', b'G', b'&', b).any(|j| match b[j] {
        b'&' => j >= 1 && b[j - 1] | 0x20 == b'u',
        _ => {
            (j >= 1 && (at(j - 1, b"pgssl") || at(j - 1, b"pg_settings")))
                || (j >= 9 && at(j - 9, b"set_config"))
        }
    })
}

fn check(sql: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    let mut inner = Vec::new();
    let tokens = lex(sql, &mut inner);
    if inner.iter().any(|text| check(text, depth + 1)) {
        return true;
    }
    let updates_settings = tokens.iter().any(|t| word(t) == Some("update"))
        && tokens.iter().any(|t| word(t) == Some("pg_settings"));
    if updates_settings {
        return true;
    }
    tokens.iter().enumerate().any(|(i, t)| match word(t) {
        Some("set" | "reset") => sets_pgssl(&tokens[i + 1..]),
        Some("set_config") => !plain_first_argument(&tokens[i + 1..]),
        _ => false,
    })
}

fn word(t: &Token) -> Option<&str> {
    match t {
        Token::Word(w) | Token::Quoted(w) => Some(w),
        _ => None,
    }
}

/// After `SET`/`RESET`: whether the name set is `pgssl.…`.
fn sets_pgssl(after: &[Token]) -> bool {
    let mut rest = after;
    if let Some(Token::Word(w)) = rest.first()
        && (w == "session" || w == "local")
    {
        rest = &rest[1..];
    }
    match rest {
        [Token::Word(w), Token::Punct(b'&'), ..] if w == "u" => true,
        [Token::Word(w) | Token::Quoted(w), Token::Punct(b'.'), ..] if w == "pgssl" => true,
        [Token::Quoted(w), ..] => w.starts_with(super::PREFIX),
        _ => false,
    }
}

/// After `set_config`: whether the call's first argument is a plain literal not naming `pgssl.…`.
fn plain_first_argument(after: &[Token]) -> bool {
    match after {
        [
            Token::Punct(b'('),
            Token::Literal {
                content,
                plain: true,
            },
            Token::Punct(b','),
            ..,
        ] => !content
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("pgssl"),
        _ => false,
    }
}

/// The tokens of `sql`; the content of each literal, quoted identifier and comment is pushed to
/// `inner`, to be read as statements too.
fn lex(sql: &str, inner: &mut Vec<String>) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = find(b, i + 2, b"\n").unwrap_or(b.len());
                inner.push(sql[i + 2..end].to_string());
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Nested, as PostgreSQL's are.
                let (mut j, mut level) = (i + 2, 1);
                while j < b.len() && level > 0 {
                    if b[j..].starts_with(b"/*") {
                        level += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        level -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                inner.push(String::from_utf8_lossy(&b[i + 2..j]).into_owned());
                i = j;
            }
            b'\'' => {
                let prefixed = matches!(out.last(), Some(Token::Word(w)) if adjacent(b, i) && (w == "e" || w == "u" || w == "b" || w == "x" || w == "n"));
                let (content, end) = quoted(b, i, b'\'');
                let plain = !prefixed && !content.contains('\\');
                if prefixed {
                    out.pop();
                }
                inner.push(content.clone());
                out.push(Token::Literal { content, plain });
                i = end;
            }
            b'"' => {
                let (content, end) = quoted(b, i, b'"');
                inner.push(content.clone());
                out.push(Token::Quoted(content.to_ascii_lowercase()));
                i = end;
            }
            b'$' if !in_word(b, i) && dollar_tag(b, i).is_some() => {
                let body = dollar_tag(b, i).unwrap_or(i + 1);
                let tag = &b[i..body];
                let end = find(b, body, tag).unwrap_or(b.len());
                let content = String::from_utf8_lossy(&b[body..end]).into_owned();
                inner.push(content.clone());
                out.push(Token::Literal {
                    content,
                    plain: false,
                });
                i = (end + tag.len()).min(b.len());
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                i = word_end(b, i);
                out.push(Token::Word(
                    String::from_utf8_lossy(&b[start..i]).to_ascii_lowercase(),
                ));
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                out.push(Token::Punct(c));
                i += 1;
            }
        }
    }
    out
}

/// Whether the byte before `i` ends a word (a literal's prefix, `E'…'`).
fn adjacent(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'&')
}

/// Whether `$` at `i` continues a word (`a$b`): then it starts no dollar quote.
fn in_word(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] >= 0x80)
}

/// A quoted run starting at `i` (a doubled quote is one quote); returns its content and where it
/// ends (past the closing quote, or the end of the text).
fn quoted(b: &[u8], i: usize, q: u8) -> (String, usize) {
    let mut content = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                content.push(q);
                j += 2;
                continue;
            }
            return (String::from_utf8_lossy(&content).into_owned(), j + 1);
        }
        content.push(b[j]);
        j += 1;
    }
    (String::from_utf8_lossy(&content).into_owned(), b.len())
}

/// The fast-path function call (`F`) of `set_config`, by its fixed OID in pg_proc.
pub const SET_CONFIG_OID: u32 = 2078;

/// Whether a client message would write a `pgssl.*` setting: a simple Query or a Parse whose text
/// does, or a fast-path call of `set_config`.
pub fn message_writes_pgssl(kind: u8, body: &[u8]) -> bool {
    match kind {
        b'Q' => writes_pgssl(&String::from_utf8_lossy(cstr(body))),
        b'P' => {
            // Parse: the statement's name, then its text.
            let name = cstr(body).len();
            let rest = body.get(name + 1..).unwrap_or_default();
            writes_pgssl(&String::from_utf8_lossy(cstr(rest)))
        }
        b'F' => body.get(..4) == Some(&SET_CONFIG_OID.to_be_bytes()[..]),
        _ => false,
    }
}

fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// Follows a client's message stream for [`message_writes_pgssl`], for a relay that forwards bytes
/// as they come: a Query, Parse or FunctionCall is gathered whole (the server too runs none before
/// it has all of it), nothing else is kept.
#[derive(Debug, Default)]
pub struct StreamGuard {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    kind: u8,
    /// The body of a message that is read, while it comes.
    body: Option<Vec<u8>>,
}

impl StreamGuard {
    /// Reads a chunk; `Some(n)` when a message in it writes `pgssl.*`: forward only `n` bytes, which
    /// stop short of that message's last byte, so the server never has it whole.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(chunk.len() - i);
                if let Some(body) = &mut self.body {
                    body.extend_from_slice(&chunk[i..i + take]);
                }
                self.remaining -= take;
                i += take;
                if self.remaining == 0
                    && let Some(body) = self.body.take()
                    && message_writes_pgssl(self.kind, &body)
                {
                    return Some(i - 1);
                }
                continue;
            }
            let take = (5 - self.header_len).min(chunk.len() - i);
            self.header[self.header_len..self.header_len + take]
                .copy_from_slice(&chunk[i..i + take]);
            self.header_len += take;
            i += take;
            if self.header_len < 5 {
                break;
            }
            self.header_len = 0;
            let h = self.header;
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            // A broken length: the server ends the session itself.
            let len = len.saturating_sub(4);
            self.kind = h[0];
            if !matches!(h[0], b'Q' | b'P' | b'F') {
                self.remaining = len;
                continue;
            }
            // A message all in this chunk (most) is read where it is; one split across chunks is
            // gathered.
            if len <= chunk.len() - i {
                let body = &chunk[i..i + len];
                i += len;
                if message_writes_pgssl(self.kind, body) {
                    return Some(i - 1);
                }
                continue;
            }
            self.remaining = len;
            self.body = Some(Vec::with_capacity(len.min(64 * 1024)));
        }
        None
    }
}

#[cfg(test)]
mod tests;
