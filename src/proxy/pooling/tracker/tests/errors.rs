//! Errors: the server skipping to Sync, what it never ran undone, names in use, malformed bodies.

use super::*;

#[test]
fn an_error_skips_to_the_sync_and_undoes_what_the_batch_made() {
    let mut r = Rig::new(TrackOptions::default());
    let sent = r.client(&[
        msg(b'P', &parse("bad", "select nope")),
        msg(b'B', &bind("bad")),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]);
    let server = String::from_utf8(server_name_of(&sent)).unwrap();
    let error = format!("SERROR\0C42703\0Mcolumn \"nope\" in {server}\0\0");
    let got = r.server(&[msg(b'E', error.as_bytes()), ready(b'I')]);
    assert_eq!(kinds(&got), "EZ");
    let message = String::from_utf8_lossy(&got[0].1).to_string();
    assert!(message.contains("in bad\0"), "{message:?}");
    assert!(r.be.statements.is_empty());
    assert_eq!(r.t.statement_count(), 0);
    assert!(r.t.idle());
    // Preparing it again is not "already exists".
    let sent = r.client(&[msg(b'P', &parse("bad", "select 1")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "PS");
}

#[test]
fn a_name_in_use_is_refused_by_the_backend_under_the_clients_name() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("s", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    let server = String::from_utf8(r.be.statements.evict().unwrap().to_vec()).unwrap();
    r.be.statements.insert(Bytes::from(server.clone()));
    let sent = r.client(&[msg(b'P', &parse("s", "select 2")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "PS");
    assert_eq!(server_name_of(&sent), server.as_bytes());
    let error = format!("SERROR\0C42P05\0Mprepared statement \"{server}\" already exists\0\0");
    let got = r.server(&[msg(b'E', error.as_bytes()), ready(b'I')]);
    assert!(
        String::from_utf8_lossy(&got[0].1).contains("statement \"s\" already"),
        "{got:?}"
    );
    // The first statement is still the client's.
    assert_eq!(r.t.statement_count(), 1);
    assert_eq!(r.be.statements.len(), 1);
}

#[test]
fn an_eviction_the_server_skipped_leaves_the_statement_the_backends() {
    let mut r = Rig::new(TrackOptions {
        max_prepared: 1,
        ..TrackOptions::default()
    });
    r.client(&[msg(b'P', &parse("a", "select 1/$1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    // The Execute fails before the Close that evicts "a": the server skips the Close.
    let sent = r.client(&[
        msg(b'B', &bind("a")),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'P', &parse("b", "select 2")),
        msg(b'S', b""),
    ]);
    assert_eq!(kinds(&sent), "BECPS");
    r.server(&[
        msg(b'2', b""),
        msg(b'E', b"SERROR\0C22012\0\0"),
        ready(b'I'),
    ]);
    assert_eq!(r.be.statements.len(), 1, "the backend still has a");
    // So "a" is bound without a Parse that would be refused as already there.
    let sent = r.client(&[msg(b'B', &bind("a")), msg(b'S', b"")]);
    assert_eq!(kinds(&sent), "BS");
}

#[test]
fn a_query_after_an_error_in_an_unsynced_batch_is_skipped_like_the_server_does() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[
        msg(b'P', &parse("", "select nope")),
        msg(b'Q', b"select 1\0"),
        msg(b'S', b""),
    ]);
    let got = r.server(&[msg(b'E', b"SERROR\0C42703\0\0"), ready(b'I')]);
    assert_eq!(kinds(&got), "EZ");
    assert!(r.t.idle());
}

#[test]
fn a_close_in_a_failed_batch_keeps_the_clients_name() {
    let mut r = Rig::new(TrackOptions::default());
    r.client(&[msg(b'P', &parse("s", "select 1")), msg(b'S', b"")]);
    r.server(&[msg(b'1', b""), ready(b'I')]);
    r.client(&[
        msg(b'P', &parse("", "select nope")),
        msg(b'C', b"Ss\0"),
        msg(b'S', b""),
    ]);
    r.server(&[msg(b'E', b"SERROR\0\0"), ready(b'I')]);
    assert_eq!(r.t.statement_count(), 1);
}

#[test]
fn malformed_bodies_go_to_the_server_unread() {
    let mut r = Rig::new(TrackOptions::default());
    for (k, b) in [
        (b'P', &b"no nul"[..]),
        (b'B', b"\0x"),
        (b'D', b""),
        (b'C', b"S"),
    ] {
        let sent = r.client(&[msg(k, b)]);
        assert_eq!(sent, [msg(k, b)]);
    }
    r.client(&[msg(b'S', b"")]);
    r.server(&[msg(b'E', b"SERROR\0\0"), ready(b'I')]);
    assert!(r.t.idle());
}
