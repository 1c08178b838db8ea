//! Quoting for the SQL pgssl builds itself. Values are bound parameters everywhere a statement takes
//! them; what SQL cannot bind goes through here, PostgreSQL's own rules as implemented by
//! `postgres_protocol::escape`: every name (role, database, channel) through [`ident`], so a role
//! called `Svc "Odd" Name` is one name and never SQL, and the one value in DDL (`ALTER ROLE …
//! PASSWORD`, which takes no parameters) through [`literal`].

/// A quoted identifier: `"name"`, with `"` doubled.
pub fn ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// A quoted literal: `'value'`, with `'` doubled (and `E'…'` when it holds a backslash).
pub fn literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_quoted_as_postgresql_reads_them() {
        assert_eq!(ident("tableau"), "\"tableau\"");
        assert_eq!(ident("Svc \"Odd\" x"), "\"Svc \"\"Odd\"\" x\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), " E'a\\\\b'");
    }
}
