use std::sync::Arc;

use super::*;

fn msg(kind: u8, body: &[u8]) -> (u8, Vec<u8>) {
    (kind, body.to_vec())
}

/// The messages in `buf`, taken out of it.
fn messages(buf: &mut BytesMut) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut b = &buf[..];
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push((b[0], b[5..1 + len].to_vec()));
        b = &b[1 + len..];
    }
    assert!(b.is_empty(), "a partial message left");
    buf.clear();
    out
}

fn kinds(m: &[(u8, Vec<u8>)]) -> String {
    m.iter().map(|(k, _)| *k as char).collect()
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat()
}

fn bind(stmt: &str) -> Vec<u8> {
    [b"\0", stmt.as_bytes(), b"\0\0\0\0\0\0\0"].concat()
}

/// A client and the backend it holds, with what each side was sent.
struct Rig {
    t: Tracker,
    be: BackendState,
    params: Vec<(Bytes, Bytes)>,
    out: Out,
}

impl Rig {
    fn new(options: TrackOptions) -> Rig {
        Rig {
            t: Tracker::new(Arc::new(options), Arc::default()),
            be: BackendState::default(),
            params: Vec::new(),
            out: Out::default(),
        }
    }

    fn client(&mut self, sent: &[(u8, Vec<u8>)]) -> Vec<(u8, Vec<u8>)> {
        for (k, b) in sent {
            assert_eq!(
                self.t.client(*k, b, &mut self.be, &mut self.out),
                ClientStep::Continue
            );
        }
        self.t.drain_fakes(&mut self.out);
        messages(&mut self.out.to_server)
    }

    /// The server answers `answers`; returns what the client got.
    fn server(&mut self, answers: &[(u8, Vec<u8>)]) -> Vec<(u8, Vec<u8>)> {
        for (k, b) in answers {
            match self.t.server_begins(*k) {
                Disposition::Forward => {
                    put_message(&mut self.out.to_client, *k, &[b]);
                    self.t
                        .server_end(*k, None, &mut self.be, &mut self.params, &mut self.out);
                }
                Disposition::Drop => {
                    self.t
                        .server_end(*k, None, &mut self.be, &mut self.params, &mut self.out)
                }
                Disposition::Capture => {
                    self.t
                        .server_end(*k, Some(b), &mut self.be, &mut self.params, &mut self.out)
                }
            }
        }
        messages(&mut self.out.to_client)
    }

    fn answered(&mut self) -> Vec<(u8, Vec<u8>)> {
        messages(&mut self.out.to_client)
    }

    /// The client moves to a fresh backend.
    fn new_backend(&mut self) -> BackendState {
        std::mem::take(&mut self.be)
    }
}

fn ready(s: u8) -> (u8, Vec<u8>) {
    msg(b'Z', &[s])
}

fn server_name_of(sent: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let (_, body) = sent.iter().find(|(k, _)| *k == b'P').expect("a Parse");
    let n = body.iter().position(|&c| c == 0).unwrap();
    body[..n].to_vec()
}

#[test]
fn a_named_statement_is_prepared_under_pgssls_name_and_follows_the_client_to_another_backend() {
    let mut r = Rig::new(TrackOptions::default());
    let batch = [
        msg(b'P', &parse("s1", "select $1::int")),
        msg(b'B', &bind("s1")),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ];
    let sent = r.client(&batch);
    assert_eq!(kinds(&sent), "PBES");
    let server = server_name_of(&sent);
    assert!(server.starts_with(b"pgssl_"), "{server:?}");
    assert_eq!(sent[1].1, [b"\0", &server[..], b"\0\0\0\0\0\0\0"].concat());
    assert!(!r.t.idle());
    let got = r.server(&[
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'C', b"SELECT 1\0"),
        ready(b'I'),
    ]);
    assert_eq!(kinds(&got), "12CZ");
    assert!(r.t.idle());
    // Another backend: the Bind is preceded by the Parse, whose ParseComplete the client never sees.
    let first = r.new_backend();
    assert_eq!(first.statements.len(), 1);
    let sent = r.client(&[
        msg(b'B', &bind("s1")),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]);
    assert_eq!(kinds(&sent), "PBES");
    assert_eq!(server_name_of(&sent), server);
    let got = r.server(&[
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'C', b"SELECT 1\0"),
        ready(b'I'),
    ]);
    assert_eq!(kinds(&got), "2CZ");
    assert!(r.t.idle());
}

#[test]
fn a_statement_the_backend_has_is_answered_by_pgssl_in_its_place() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("a", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    // A second client of the same backend prepares the same text under its own name, after a query
    // still running: its ParseComplete comes after that query's answer, not before.
    let be = r.new_backend();
    let mut other = Rig::new(TrackOptions::default());
    other.be = be;
    let sent = other.client(&[
        msg(b'Q', b"select 2\0"),
        msg(b'P', &parse("b", "select 1")),
        msg(b'B', &bind("b")),
        msg(b'S', b""),
    ]);
    assert_eq!(kinds(&sent), "QBS", "no Parse: the backend has it");
    assert!(other.answered().is_empty());
    let got = other.server(&[
        msg(b'T', b"x"),
        msg(b'D', b"y"),
        msg(b'C', b"SELECT 1\0"),
        ready(b'I'),
        msg(b'2', b""),
        ready(b'I'),
    ]);
    assert_eq!(kinds(&got), "TDCZ12Z");
}

#[test]
fn close_is_the_clients_and_an_unknown_name_errs_with_the_clients_name() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("s", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    let sent = r.client(&[msg(b'C', b"Ss\0"), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "S", "the backend keeps its statement");
    let got = r.server(&[ready(b'I')]);
    assert_eq!(kinds(&got), "3Z");
    assert_eq!(r.be.statements.len(), 1);
    // The name is gone for the client: its Bind goes out with its own name, for the server to refuse.
    let sent = r.client(&[msg(b'B', &bind("s")), msg(b'S', b"")]);
    assert_eq!(sent[0].1, bind("s"));
}

#[test]
fn past_the_bound_the_least_recently_used_is_closed_and_its_answer_swallowed() {
    let mut r = Rig::new(TrackOptions {
        max_prepared: 1,
        ..TrackOptions::default()
    });
    r.client(&[msg(b'P', &parse("a", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    let sent = r.client(&[msg(b'P', &parse("b", "select 2")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "CPS");
    assert_eq!(sent[0].1[0], b'S');
    let got = r.server(&[msg(b'3', b""), msg(b'1', b""), ready(b'I')]);
    assert_eq!(kinds(&got), "1Z");
    assert_eq!(r.be.statements.len(), 1);
    // "a" is still the client's, and comes back on use (evicting "b").
    let sent = r.client(&[msg(b'B', &bind("a")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "CPBS");
    let got = r.server(&[msg(b'3', b""), msg(b'1', b""), msg(b'2', b""), ready(b'I')]);
    assert_eq!(kinds(&got), "2Z");
}

#[test]
fn pins_are_counted_once_and_refusals_are_raised_by_the_server() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'Q', b"LISTEN x\0")]);
    assert_eq!(r.t.pinned(), Some(PinReason::Listen));
    assert_eq!(r.t.take_new_pin(), Some(PinReason::Listen));
    r.client(&[msg(b'Q', b"CREATE TEMP TABLE t (a int)\0")]);
    assert_eq!(r.t.take_new_pin(), None);
    assert_eq!(r.t.pinned(), Some(PinReason::Listen));

    let mut r = Rig::new(TrackOptions {
        on_pin: OnPin::Refuse,
        ..TrackOptions::default()
    });
    let sent = r.client(&[msg(b'Q', b"select pg_advisory_lock(1)\0")]);
    let text = String::from_utf8_lossy(&sent[0].1).to_string();
    assert!(text.starts_with("DO $pgssl$"), "{text}");
    assert!(text.contains("feature_not_supported") && text.contains("advisory"));
    assert_eq!(r.t.pinned(), None);
    assert_eq!(r.t.take_refused(), Some(PinReason::AdvisoryLock));
    // Through the extended protocol too, keeping the parameter types.
    let sent = r.client(&[msg(b'P', &parse("", "SET ROLE x")), msg(b'S', b"")]);
    assert!(String::from_utf8_lossy(&sent[0].1).contains("DO $pgssl$"));
    assert!(sent[0].1.ends_with(b"\0\0\0"));
    // An unknown SET pins; a tracked one does not.
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'Q', b"SET search_path TO a\0")]);
    assert_eq!(r.t.pinned(), None);
    r.client(&[msg(b'Q', b"SET work_mem TO '8MB'\0")]);
    assert_eq!(r.t.pinned(), Some(PinReason::UnknownSet));
}

#[test]
fn tracked_sets_follow_the_client_when_committed_and_not_when_rolled_back() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'Q', b"SET search_path TO app\0")]);
    r.server(&[msg(b'C', b"SET\0"), ready(b'I')]);
    assert_eq!(r.be.sets, [("search_path".to_string(), "app".to_string())]);
    // Rolled back: not carried.
    r.client(&[msg(b'Q', b"BEGIN\0")]);
    r.server(&[msg(b'C', b"BEGIN\0"), ready(b'T')]);
    r.client(&[msg(b'Q', b"SET statement_timeout = 5\0")]);
    r.server(&[msg(b'C', b"SET\0"), ready(b'T')]);
    r.client(&[msg(b'Q', b"ROLLBACK\0")]);
    r.server(&[msg(b'C', b"ROLLBACK\0"), ready(b'I')]);
    // A fresh backend gets the committed SET, and its answers never reach the client.
    r.new_backend();
    let params = Vec::new();
    r.t.hand_over(&mut r.be, &params, &mut r.out);
    let sent = messages(&mut r.out.to_server);
    assert_eq!(kinds(&sent), "Q");
    assert_eq!(sent[0].1, b"SET search_path TO app\n;\0");
    let got = r.server(&[msg(b'C', b"SET\0"), ready(b'I')]);
    assert!(got.is_empty(), "{got:?}");
    assert!(r.t.idle());
    // A backend that carries another client's SET is reset for this one.
    let mut clean = Rig::new(TrackOptions::default());
    clean.be = r.new_backend();
    clean.t.hand_over(&mut clean.be, &params, &mut clean.out);
    let sent = messages(&mut clean.out.to_server);
    assert_eq!(sent[0].1, b"RESET search_path\n;\0");
}

#[test]
fn reported_parameters_are_what_the_client_was_told() {
    let told = vec![(Bytes::from("TimeZone"), Bytes::from("UTC"))];
    let mut r = Rig {
        t: Tracker::new(Arc::new(TrackOptions::default()), Arc::new(told)),
        be: BackendState::default(),
        params: vec![(Bytes::from("TimeZone"), Bytes::from("UTC"))],
        out: Out::default(),
    };
    r.client(&[msg(b'Q', b"SET TimeZone = 'Asia/Tokyo'\0")]);
    assert_eq!(r.t.pinned(), None);
    let got = r.server(&[
        msg(b'C', b"SET\0"),
        msg(b'S', b"TimeZone\0Asia/Tokyo\0"),
        ready(b'I'),
    ]);
    assert_eq!(kinds(&got), "CSZ");
    // A backend still on UTC is set to Tokyo before the client's next message.
    let mut params = vec![(Bytes::from("TimeZone"), Bytes::from("UTC"))];
    let mut be = BackendState::default();
    r.t.hand_over(&mut be, &params, &mut r.out);
    let sent = messages(&mut r.out.to_server);
    assert_eq!(sent[0].1, b"SET TimeZone TO 'Asia/Tokyo'\n;\0");
    r.be = be;
    r.params = std::mem::take(&mut params);
    let got = r.server(&[
        msg(b'S', b"TimeZone\0Asia/Tokyo\0"),
        msg(b'C', b"SET\0"),
        ready(b'I'),
    ]);
    assert!(got.is_empty());
    assert_eq!(find(&r.params, b"TimeZone"), Some(&b"Asia/Tokyo"[..]));
}

#[test]
fn deallocate_of_a_protocol_statement_is_answered_by_pgssl() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("_pg3_0", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    let sent = r.client(&[msg(b'Q', b"DEALLOCATE _pg3_0\0")]);
    assert!(sent.is_empty());
    let got = r.answered();
    assert_eq!(kinds(&got), "CZ");
    assert_eq!(got[0].1, b"DEALLOCATE\0");
    assert_eq!(r.t.statement_count(), 0);
    assert!(r.t.idle());
    // Not the client's: the server answers.
    let sent = r.client(&[msg(b'Q', b"DEALLOCATE other\0")]);
    assert_eq!(kinds(&sent), "Q");
}

#[test]
fn a_transaction_or_an_unsynced_batch_holds_the_backend() {
    let mut r = Rig::new(TrackOptions::default());
    assert!(r.t.idle());
    r.client(&[msg(b'Q', b"BEGIN\0")]);
    assert!(!r.t.idle());
    r.server(&[msg(b'C', b"BEGIN\0"), ready(b'T')]);
    assert!(!r.t.idle(), "inside a transaction");
    r.client(&[msg(b'Q', b"COMMIT\0")]);
    r.server(&[msg(b'C', b"COMMIT\0"), ready(b'I')]);
    assert!(r.t.idle());
    // Parse, Bind, Execute answered but not synced: the implicit transaction is still open.
    r.client(&[
        msg(b'P', &parse("", "select 1")),
        msg(b'B', &bind("")),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'H', b""),
    ]);
    r.server(&[msg(b'1', b""), msg(b'2', b""), msg(b'C', b"SELECT 1\0")]);
    assert!(!r.t.idle());
    r.client(&[msg(b'S', b"")]);
    r.server(&[ready(b'I')]);
    assert!(r.t.idle());
    // Terminate is the client's leaving, never sent.
    assert_eq!(
        r.t.client(b'X', b"", &mut r.be, &mut r.out),
        ClientStep::Terminate
    );
}

#[test]
fn deallocate_through_the_extended_protocol_is_answered_by_pgssl_too() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("_pg3_0", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    // psycopg's DEALLOCATE ALL after a rollback: Parse, Bind, Describe, Execute, Sync.
    let sent = r.client(&[
        msg(b'P', &parse("", "DEALLOCATE ALL")),
        msg(b'B', &bind("")),
        msg(b'D', b"P\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]);
    assert_eq!(kinds(&sent), "S", "only the Sync reaches the server");
    let got = r.server(&[ready(b'I')]);
    assert_eq!(kinds(&got), "12nCZ");
    assert_eq!(got[3].1, b"DEALLOCATE ALL\0");
    assert_eq!(r.t.statement_count(), 0);
    assert_eq!(r.be.statements.len(), 1, "the backend keeps its statement");
    // Prepared again under the same name: the backend has it, pgssl answers.
    let sent = r.client(&[msg(b'P', &parse("_pg3_0", "select 1")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "S");
    // An unnamed statement that is not a DEALLOCATE goes to the server again.
    let sent = r.client(&[msg(b'P', &parse("", "select 2")), msg(b'B', &bind(""))]);
    assert_eq!(kinds(&sent), "PB");
}

#[test]
fn a_discard_all_the_server_ran_drops_every_statement() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("s", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    r.client(&[msg(b'Q', b"DISCARD ALL\0")]);
    assert_eq!(r.be.statements.len(), 1, "not before it ran");
    r.server(&[msg(b'C', b"DISCARD ALL\0"), ready(b'I')]);
    assert!(r.be.statements.is_empty());
    assert_eq!(r.t.statement_count(), 0);
}

#[test]
fn the_unnamed_statement_follows_the_client_to_another_backend() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[
        msg(b'P', &parse("", "delete from t where id = $1")),
        msg(b'S', b""),
    ]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    r.t.released();
    r.new_backend();
    // Another backend may hold another client's unnamed statement: the client's goes first.
    let sent = r.client(&[
        msg(b'B', &bind("")),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]);
    assert_eq!(kinds(&sent), "PBES");
    assert!(String::from_utf8_lossy(&sent[0].1).contains("delete from t"));
    let got = r.server(&[
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'C', b"DELETE 1\0"),
        ready(b'I'),
    ]);
    assert_eq!(kinds(&got), "2CZ");
    // On the same backend it is not sent again.
    let sent = r.client(&[msg(b'B', &bind("")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "BS");
}

#[test]
fn sets_pgssl_does_not_carry_pin() {
    for sql in [
        "SET default_transaction_read_only = on",
        "SET session_authorization = 'x'",
        "SET work_mem = '8MB'",
    ] {
        let mut r = Rig::new(TrackOptions::default());
        r.client(&[msg(b'Q', &[sql.as_bytes(), b"\0"].concat())]);
        assert_eq!(r.t.pinned(), Some(PinReason::UnknownSet), "{sql}");
    }
    // A tracked SET prepared under a name runs whenever it is executed: it pins too.
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("_pg3_0", "SET search_path TO a"))]);
    assert_eq!(r.t.pinned(), Some(PinReason::UnknownSet));
    // The reported ones pgssl carries do not pin.
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'Q', b"SET DateStyle = 'German'\0")]);
    assert_eq!(r.t.pinned(), None);
}

mod errors;
mod identity;
