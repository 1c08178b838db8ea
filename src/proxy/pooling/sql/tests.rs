//! The statement reader's rules, each on the SQL that triggers it.

use super::*;

fn pins(sql: &str) -> Vec<PinReason> {
    effects(sql)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Pin(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn each_reason_is_read_from_its_statement() {
    assert_eq!(pins("LISTEN chan"), [PinReason::Listen]);
    assert_eq!(pins("  /* x */ listen \"Chan\""), [PinReason::Listen]);
    assert_eq!(
        pins("select pg_advisory_lock(1)"),
        [PinReason::AdvisoryLock]
    );
    assert_eq!(
        pins("SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)"),
        [PinReason::AdvisoryLock]
    );
    assert!(pins("select pg_advisory_xact_lock(1)").is_empty());
    assert_eq!(pins("CREATE TEMP TABLE t (a int)"), [PinReason::TempTable]);
    assert_eq!(
        pins("create global temporary table t (a int)"),
        [PinReason::TempTable]
    );
    assert_eq!(
        pins("CREATE OR REPLACE TEMP VIEW v AS SELECT 1"),
        [PinReason::TempTable]
    );
    assert!(pins("CREATE TABLE temp (a int)").is_empty());
    assert_eq!(
        pins("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1"),
        [PinReason::HoldCursor]
    );
    assert!(pins("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 'with hold'").is_empty());
    assert!(pins("DECLARE c CURSOR FOR SELECT 1 AS with, 2 AS hold").is_empty());
    assert_eq!(pins("PREPARE p AS SELECT 1"), [PinReason::SqlPrepare]);
    assert!(pins("PREPARE TRANSACTION 'x'").is_empty());
    assert_eq!(pins("SET ROLE other"), [PinReason::SetRole]);
    assert_eq!(
        pins("set session authorization other"),
        [PinReason::SetRole]
    );
    assert_eq!(pins("SET SESSION ROLE other"), [PinReason::SetRole]);
}

#[test]
fn quotes_comments_and_dollars_hide_keywords_and_semicolons() {
    assert!(pins("SELECT 'listen; LISTEN x'").is_empty());
    assert!(pins("SELECT $$; LISTEN x$$").is_empty());
    assert!(pins("SELECT $q$; LISTEN x $q$").is_empty());
    assert!(pins("-- LISTEN x\nSELECT 1").is_empty());
    assert!(pins("/* /* nested */ LISTEN x */ SELECT 1").is_empty());
    assert!(pins("SELECT \"pg_advisory_lock\" FROM t").is_empty());
    assert_eq!(pins("SELECT $1; LISTEN x"), [PinReason::Listen]);
    assert_eq!(pins("select 1; listen x;"), [PinReason::Listen]);
    assert!(pins("SELECT E'it\\'s; LISTEN x'").is_empty());
    assert_eq!(pins("SELECT e'\\\\'; LISTEN x"), [PinReason::Listen]);
    // What pgssl cannot read of a SET pins rather than going unseen.
    assert_eq!(pins("SET XML OPTION DOCUMENT"), [PinReason::UnknownSet]);
    assert_eq!(pins("SET \"search_path\" TO x"), [PinReason::UnknownSet]);
    assert_eq!(pins("SET x 'é'"), [PinReason::UnknownSet]);
    assert_eq!(pins("SET x *é"), [PinReason::UnknownSet]);
    // Unterminated quotes and comments end the text, without a panic.
    for sql in ["'", "\"", "/*", "$a$", "$", "--", "e'\\'"] {
        let _ = effects(sql);
    }
}

#[test]
fn sets_resets_and_deallocations() {
    assert_eq!(
        effects("SET search_path TO app, public"),
        [Effect::Set("search_path".into(), "app, public".into())]
    );
    assert_eq!(
        effects("set session Search_Path='a b'; "),
        [Effect::Set("search_path".into(), "'a b'".into())]
    );
    assert_eq!(
        effects("SET SCHEMA 'app'"),
        [Effect::Set("search_path".into(), "'app'".into())]
    );
    assert_eq!(
        effects("SET TIME ZONE 'UTC'"),
        [Effect::Set("timezone".into(), String::new())]
    );
    assert!(effects("SET LOCAL search_path TO x").is_empty());
    assert!(effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
    assert_eq!(
        effects("RESET search_path"),
        [Effect::Reset("search_path".into())]
    );
    assert_eq!(effects("reset all"), [Effect::ResetAll]);
    assert_eq!(effects("DEALLOCATE p1"), [Effect::Deallocate("p1".into())]);
    assert_eq!(
        effects("deallocate prepare \"P1\""),
        [Effect::Deallocate("P1".into())]
    );
    assert_eq!(effects("DEALLOCATE ALL"), [Effect::DeallocateAll]);
    assert_eq!(effects("DISCARD ALL"), [Effect::DiscardAll]);
    assert!(effects("DISCARD PLANS").is_empty());
    assert!(effects("SELECT 1").is_empty());
    assert!(effects("").is_empty());
}

#[test]
fn only_statements_the_rules_read_keep_their_words() {
    let mut advisory = false;
    let parsed = statements(
        "SELECT abalance FROM t WHERE aid = $1; Set TimeZone = 'UTC'; select pg_Advisory_Lock(1)",
        &mut advisory,
    );
    assert!(advisory);
    assert_eq!(parsed.len(), 3);
    assert!(parsed[0].any_word && parsed[0].words.is_empty());
    let words: Vec<&str> = parsed[1].words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(words, ["set", "timezone"]);
    assert_eq!(
        effects("select 1; Set TimeZone = 'UTC'; SELECT pg_advisory_lock(1)"),
        [
            Effect::Set("timezone".into(), "'UTC'".into()),
            Effect::Pin(PinReason::AdvisoryLock)
        ]
    );
    assert_eq!(statement_count("select 1; ; SELECT 2;"), 2);
}
