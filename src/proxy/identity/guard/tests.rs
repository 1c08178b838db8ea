use super::*;

#[test]
fn set_and_reset_of_pgssl_are_refused_however_written() {
    for sql in [
        "SET pgssl.client_addr = '10.0.0.1'",
        "set session PGSSL.node to 'x'",
        "SET LOCAL pgssl.auth_method TO certificate",
        "SET \"pgssl.node\" = 'x'",
        "SET \"PGSSL\".node = 'x'",
        "SET pgssl . node = 'x'",
        "SET /* a comment */ pgssl.node = 'x'",
        "RESET pgssl.client_addr",
        "SELECT 1; SET pgssl.node = 'x'",
        "ALTER ROLE me SET pgssl.client_addr = '10.0.0.1'",
        "ALTER ROLE me IN DATABASE d RESET pgssl.node",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET pgssl.node = 'x' AS 'SELECT 1'",
        "SET U&\"\\0070gssl\".node = 'x'",
        // Inside literals: dynamic SQL, quoted twice.
        "DO $$BEGIN EXECUTE 'SET pgssl.node = ''x'''; END$$",
        "DO $body$BEGIN EXECUTE 'EXECUTE ''SET pgssl.node = 1'''; END$body$",
        "DO $$BEGIN PERFORM set_config('pgssl.node', 'x', false); END$$",
        // A comment cannot hide one either.
        "SELECT 1 -- \nSET pgssl.node = 'x'",
    ] {
        assert!(writes_pgssl(sql), "{sql}");
    }
}

#[test]
fn set_config_is_refused_unless_its_name_is_a_plain_literal_of_another_setting() {
    for sql in [
        "SELECT set_config('pgssl.node', 'x', false)",
        "select SET_CONFIG( 'PGSSL.client_addr', '1.2.3.4', true)",
        "SELECT pg_catalog.set_config('pgssl.node', 'x', false)",
        "SELECT set_config('pgs' || 'sl.node', 'x', false)",
        "SELECT set_config($1, $2, false)",
        "SELECT set_config(E'\\x70gssl.node', 'x', false)",
        "SELECT set_config(name, 'x', false) FROM t",
        "SELECT \"set_config\"('pgssl.node', 'x', false)",
        "SELECT set_config /* */ ('pgssl.node', 'x', false)",
        "UPDATE pg_settings SET setting = 'x' WHERE name = 'pgssl.node'",
    ] {
        assert!(writes_pgssl(sql), "{sql}");
    }
    assert!(!writes_pgssl(
        "SELECT set_config('search_path', 'app, public', false)"
    ));
}

#[test]
fn reading_them_and_everything_else_passes() {
    for sql in [
        "SELECT current_setting('pgssl.client_addr')",
        "SELECT current_setting('pgssl.node', true) = 'n1'",
        "SHOW pgssl.tls_version",
        "SET search_path = pgssl, public",
        "SET application_name = 'pgssl.report'",
        "UPDATE t SET pgssl = 1",
        "SELECT * FROM pgssl.questions",
        "SELECT $1::text, a$b FROM t",
        "SELECT 1",
        "",
        "'unterminated",
        "$$unterminated",
        "/* unterminated",
    ] {
        assert!(!writes_pgssl(sql), "{sql}");
    }
}

#[test]
fn literals_nested_past_the_bound_are_refused_when_they_name_pgssl() {
    let mut sql = "SET pgssl.node = 1".to_string();
    for _ in 0..=MAX_DEPTH + 1 {
        sql = format!("SELECT '{}'", sql.replace('\'', "''"));
    }
    assert!(writes_pgssl(&sql));
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[test]
fn the_stream_guard_stops_short_of_a_writing_message_split_anywhere() {
    let ok = message(b'Q', b"SELECT 1\0");
    let bad = message(b'P', b"s1\0SET pgssl.node = 'x'\0\0\0");
    let mut stream = ok.clone();
    stream.extend_from_slice(&message(b'S', b""));
    let bad_at = stream.len();
    stream.extend_from_slice(&bad);
    for split in 0..=stream.len() {
        let mut g = StreamGuard::default();
        let (a, b) = stream.split_at(split);
        let cut = match g.feed(a) {
            Some(n) => Some(n),
            None => g.feed(b).map(|n| a.len() + n),
        };
        // The last byte of the bad message is never forwarded; everything before it may be.
        assert_eq!(cut, Some(bad_at + bad.len() - 1), "split at {split}");
    }
    let mut g = StreamGuard::default();
    assert_eq!(g.feed(&ok), None);
    let mut fastpath = 2078u32.to_be_bytes().to_vec();
    fastpath.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(g.feed(&message(b'F', &fastpath)), Some(12));
}
