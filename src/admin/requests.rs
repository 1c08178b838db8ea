//! Reading the JSON API's request bodies.
//!
//! Every body is read into its operation's request type (`crate::control::operations`) with unknown
//! fields refused and each field's type enforced, so `{"internal_only": "true"}` is a 400 naming
//! `internal_only` rather than a silently staged `required`.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::control::operations::model::{self, Operation, Visit};

/// Reads `body` as `T`; an empty body reads as `{}`. The error names the offending field.
///
/// Only a JSON object is a request: serde's derive would also read a struct from an array of its
/// fields in order (`[true]` as `{"internal_only": true}`), which no documented request is.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body: &[u8] = match body.trim_ascii_start().first() {
        None => b"{}",
        Some(b'{') => body,
        Some(_) => return Err("invalid request body: expected a JSON object".to_string()),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body: field '{path}': {inner}")
        }
    })?;
    de.end().map_err(|e| format!("invalid request body: {e}"))?;
    Ok(value)
}

/// A `GET`'s request from its query string (`user=tableau&database=workgroup`); an empty one is the
/// request without arguments, and a parameter the request does not have is refused.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    serde_urlencoded::from_str(query).map_err(|e| format!("invalid query: {e}"))
}

/// `POST /api/v1/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The administrator.
    pub username: String,
    /// The password.
    pub password: String,
}

/// Reads `body` as every operation's request in turn, and as a sign-in (the fuzz target's entry).
pub fn parse_as_every_request(body: &[u8]) {
    struct Each<'a>(&'a [u8]);
    impl Visit for Each<'_> {
        fn operation<T: Operation>(&mut self) {
            let _ = parse::<T>(self.0);
            // A `GET`'s query string, as the API reads it.
            if let Ok(query) = std::str::from_utf8(self.0) {
                let _ = parse_query::<T>(query);
            }
        }
    }
    let _ = parse::<SignIn>(body);
    model::each_remote(&mut Each(body));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::operations::{regenerate_tokens, repository_ssl, vizql_extsvc};

    #[test]
    fn a_gets_query_string_is_its_request_and_unknown_parameters_are_refused() {
        use crate::control::operations::{preflight, sessions};
        let report: preflight::WhoWouldBeRefused = parse_query("mode=required&since=24h").unwrap();
        assert_eq!(report.mode, Some(crate::proxy::policy::Mode::Required));
        assert_eq!(report.since, Some(std::time::Duration::from_secs(86_400)));
        let everything: preflight::WhoWouldBeRefused = parse_query("").unwrap();
        assert_eq!((everything.mode, everything.since), (None, None));
        let listed: sessions::List = parse_query("user=tableau").unwrap();
        assert_eq!(listed.user.as_deref(), Some("tableau"));
        assert!(parse_query::<sessions::List>("user=tableau&rm=1").is_err());
        assert!(parse_query::<preflight::WhoWouldBeRefused>("mode=sometimes").is_err());
        // The remote CLI's side: a request's query string reads back as the request.
        let query = serde_urlencoded::to_string(&report).unwrap();
        let back: preflight::WhoWouldBeRefused = parse_query(&query).unwrap();
        assert_eq!((back.mode, back.since), (report.mode, report.since));
    }

    #[test]
    fn wrong_types_unknown_and_missing_fields_are_named() {
        for (body, field) in [
            (&br#"{"internal_only": "true"}"#[..], "internal_only"),
            (br#"{"internal_only": 1}"#, "internal_only"),
            (br#"{"internal_only": null}"#, "internal_only"),
            (br#"{"internalOnly": true}"#, "internalOnly"),
            (b"", "internal_only"),
            (br#"{"internal_only": true} x"#, "trailing"),
            (b"[true]", "expected a JSON object"),
            (b"[]", "expected a JSON object"),
            (b"true", "expected a JSON object"),
            (b"\"x\"", "expected a JSON object"),
        ] {
            let e = parse::<repository_ssl::Enable>(body).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        assert!(
            parse::<repository_ssl::Enable>(br#"{"internal_only": true}"#)
                .unwrap()
                .internal_only
        );
        let e = parse::<vizql_extsvc::Enable>(
            br#"{"connection_type": "tabpy", "extsvc_host": "h", "extsvc_port": "1234"}"#,
        )
        .unwrap_err();
        assert!(e.contains("field 'extsvc_port'"), "{e}");
        for bad in [
            &br#"{"request_timeout_secs": -1}"#[..],
            br#"{"request_timeout_secs": "1"}"#,
            br#"{"request_timeout_secs": 0}"#,
        ] {
            let e = parse::<regenerate_tokens::Regenerate>(bad).unwrap_err();
            assert!(e.contains("field 'request_timeout_secs'"), "{e}");
        }
        assert_eq!(
            parse::<regenerate_tokens::Regenerate>(b"{}")
                .unwrap()
                .request_timeout
                .0,
            1800
        );
        assert!(
            parse::<repository_ssl::Disable>(b" ").is_ok()
                && parse::<repository_ssl::Disable>(br#"{"x":1}"#).is_err()
        );
    }

    /// What the remote CLI sends is what the API reads: every operation's example survives the trip.
    #[test]
    fn every_request_reads_back_what_it_writes() {
        struct RoundTrip;
        impl Visit for RoundTrip {
            fn operation<T: Operation>(&mut self) {
                let sent = serde_json::to_vec(&T::example()).unwrap();
                let read: T = parse(&sent).unwrap_or_else(|e| panic!("{}: {e}", T::ACTION));
                assert_eq!(
                    serde_json::to_value(&read).unwrap(),
                    serde_json::from_slice::<serde_json::Value>(&sent).unwrap(),
                    "{}",
                    T::ACTION
                );
            }
        }
        model::each_remote(&mut RoundTrip);
    }
}
