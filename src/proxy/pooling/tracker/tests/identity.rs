//! `pgssl.*` on transaction-pooled backends: SET before the first message a backend gets from a
//! client whose values it lacks, again after the client's RESET ALL, and never writable.

use std::sync::Arc;

use super::*;
use crate::proxy::identity::Identity;
use crate::proxy::metrics::AuthMechanism;

fn identity(addr: &str) -> Arc<Identity> {
    Arc::new(Identity::new(
        addr.parse().unwrap(),
        None,
        AuthMechanism::Scram,
        "n1",
    ))
}

fn query(sql: &str) -> (u8, Vec<u8>) {
    msg(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

fn text(m: &(u8, Vec<u8>)) -> String {
    String::from_utf8_lossy(&m.1)
        .trim_end_matches('\0')
        .to_string()
}

/// The answer to the injected SETs: seven CommandCompletes and a ReadyForQuery.
fn set_answers() -> Vec<(u8, Vec<u8>)> {
    let mut a = vec![msg(b'C', b"SET\0"); 7];
    a.push(ready(b'I'));
    a
}

#[test]
fn a_backend_gets_the_clients_values_once_and_a_backend_of_another_client_gets_its_own() {
    let mut r = Rig::new(TrackOptions::default());
    r.t.set_identity(Some(identity("10.0.0.1")));
    let sent = r.client(&[query("select 1")]);
    assert_eq!(kinds(&sent), "QQ");
    assert!(text(&sent[0]).starts_with("SET pgssl.client_addr TO '10.0.0.1'"));
    assert_eq!(text(&sent[1]), "select 1");
    let mut answers = set_answers();
    answers.extend([msg(b'C', b"SELECT 1\0"), ready(b'I')]);
    // The client sees only its own query's answer.
    assert_eq!(kinds(&r.server(&answers)), "CZ");
    // The same backend, the same client: nothing more.
    assert_eq!(kinds(&r.client(&[query("select 2")])), "Q");
    r.server(&[msg(b'C', b"SELECT 1\0"), ready(b'I')]);

    // Another client with other values on this backend.
    let be = r.new_backend();
    let mut other = Rig::new(TrackOptions::default());
    other.be = be;
    other.t.set_identity(Some(identity("10.0.0.2")));
    let sent = other.client(&[query("select 3")]);
    assert_eq!(kinds(&sent), "QQ");
    assert!(text(&sent[0]).starts_with("SET pgssl.client_addr TO '10.0.0.2'"));
}

#[test]
fn reset_all_clears_the_values_and_the_next_message_sets_them_again() {
    let mut r = Rig::new(TrackOptions::default());
    r.t.set_identity(Some(identity("10.0.0.1")));
    r.client(&[query("select 1")]);
    let mut answers = set_answers();
    answers.extend([msg(b'C', b"SELECT 1\0"), ready(b'I')]);
    r.server(&answers);
    assert_eq!(kinds(&r.client(&[query("RESET ALL")])), "Q");
    r.server(&[msg(b'C', b"RESET\0"), ready(b'I')]);
    assert!(r.be.identity.is_none());
    let sent = r.client(&[query("select current_setting('pgssl.client_addr')")]);
    assert_eq!(kinds(&sent), "QQ");
    assert!(text(&sent[0]).starts_with("SET pgssl.client_addr"));
}

#[test]
fn a_statement_or_a_fast_path_call_that_writes_pgssl_is_replaced_by_a_42501_refusal() {
    let mut r = Rig::new(TrackOptions::default());
    let sent = r.client(&[query("SET pgssl.client_addr = '10.9.9.9'")]);
    assert_eq!(kinds(&sent), "Q");
    assert!(
        text(&sent[0]).contains("insufficient_privilege"),
        "{}",
        text(&sent[0])
    );
    assert!(!text(&sent[0]).contains("10.9.9.9"));
    let sent = r.client(&[msg(
        b'P',
        &parse("s", "select set_config('pgssl.node', 'x', false)"),
    )]);
    assert_eq!(kinds(&sent), "P");
    assert!(text(&sent[0]).contains("insufficient_privilege"));
    let mut call = 2078u32.to_be_bytes().to_vec();
    call.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    let sent = r.client(&[msg(b'F', &call)]);
    assert_eq!(kinds(&sent), "Q");
    assert!(text(&sent[0]).contains("insufficient_privilege"));
}
