//! The `--protocols` grammar of `external-ssl enable`, as in the model (Apache's `SSLProtocol`):
//! a list such as `"all, -SSLv2, -SSLv3"` or `"all -TLSv1 -TLSv1.1"`, read left to right.
//!
//! `all` and a bare or `+`-prefixed name enable, a `-`-prefixed name disables. pgssl speaks TLSv1.2 and
//! TLSv1.3 only: `all` means those two, disabling a protocol pgssl never offers is accepted and noted,
//! and asking to enable one is refused, as is a list that leaves nothing enabled.

use std::fmt;

/// The model's default list.
pub const DEFAULT_PROTOCOLS: &str = "all, -SSLv2, -SSLv3";

/// Names the grammar knows, in the model's spelling.
const LEGACY: [&str; 4] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1"];

/// The TLS versions a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSet {
    /// TLS 1.2 is offered.
    pub tls12: bool,
    /// TLS 1.3 is offered.
    pub tls13: bool,
}

impl ProtocolSet {
    /// TLSv1.2 and TLSv1.3.
    pub const ALL: ProtocolSet = ProtocolSet {
        tls12: true,
        tls13: true,
    };
}

impl fmt::Display for ProtocolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.tls12, self.tls13) {
            (true, true) => f.write_str("TLSv1.2, TLSv1.3"),
            (true, false) => f.write_str("TLSv1.2"),
            (false, true) => f.write_str("TLSv1.3"),
            (false, false) => f.write_str("none"),
        }
    }
}

/// A parsed list: what is enabled, plus notes on entries that changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedProtocols {
    /// The enabled versions.
    pub set: ProtocolSet,
    /// One line per accepted entry that has no effect.
    pub notes: Vec<String>,
}

/// A protocol list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A token is not a protocol name.
    #[error(
        "--protocols: unknown entry '{0}' (expected all, SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3, each optionally prefixed with + or -)"
    )]
    Unknown(String),
    /// A legacy protocol was asked for.
    #[error(
        "--protocols: {0} cannot be enabled: pgssl offers only TLSv1.2 and TLSv1.3 (write -{0} or leave it out)"
    )]
    Legacy(String),
    /// Nothing is left enabled.
    #[error(
        "--protocols '{0}' leaves no protocol enabled; enable TLSv1.2 or TLSv1.3 (e.g. \"all\")"
    )]
    Empty(String),
}

/// Parses a protocol list.
pub fn parse(list: &str) -> Result<ParsedProtocols, ProtocolError> {
    let mut set = ProtocolSet {
        tls12: false,
        tls13: false,
    };
    let mut notes = Vec::new();
    for token in list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        let (enable, name) = match token.as_bytes()[0] {
            b'-' => (false, &token[1..]),
            b'+' => (true, &token[1..]),
            _ => (true, token),
        };
        if name.eq_ignore_ascii_case("all") {
            set.tls12 = enable;
            set.tls13 = enable;
        } else if name.eq_ignore_ascii_case("TLSv1.2") {
            set.tls12 = enable;
        } else if name.eq_ignore_ascii_case("TLSv1.3") {
            set.tls13 = enable;
        } else if let Some(legacy) = LEGACY.iter().find(|l| l.eq_ignore_ascii_case(name)) {
            if enable {
                return Err(ProtocolError::Legacy((*legacy).to_string()));
            }
            notes.push(format!(
                "-{legacy}: pgssl never offers {legacy}, so this changes nothing"
            ));
        } else {
            return Err(ProtocolError::Unknown(token.to_string()));
        }
    }
    if !set.tls12 && !set.tls13 {
        return Err(ProtocolError::Empty(list.to_string()));
    }
    Ok(ParsedProtocols { set, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_spellings_mean_tls12_and_tls13() {
        for list in [
            DEFAULT_PROTOCOLS,
            "all -TLSv1 -TLSv1.1",
            "all",
            "ALL,-sslv3",
        ] {
            assert_eq!(parse(list).unwrap().set, ProtocolSet::ALL, "{list}");
        }
        let parsed = parse("all, -SSLv2, -SSLv3").unwrap();
        assert_eq!(parsed.notes.len(), 2);
        assert!(parsed.notes[0].contains("SSLv2"));
    }

    #[test]
    fn entries_apply_left_to_right() {
        let only13 = parse("all -TLSv1.2").unwrap().set;
        assert_eq!(
            only13,
            ProtocolSet {
                tls12: false,
                tls13: true
            }
        );
        assert_eq!(only13.to_string(), "TLSv1.3");
        assert_eq!(parse("TLSv1.2").unwrap().set.to_string(), "TLSv1.2");
        assert_eq!(parse("-all +TLSv1.3").unwrap().set.to_string(), "TLSv1.3");
        assert_eq!(
            parse("all -TLSv1.2 +TLSv1.2").unwrap().set,
            ProtocolSet::ALL
        );
    }

    #[test]
    fn legacy_unknown_and_empty_lists_are_refused() {
        assert_eq!(
            parse("all +TLSv1.1"),
            Err(ProtocolError::Legacy("TLSv1.1".into()))
        );
        assert_eq!(parse("SSLv3"), Err(ProtocolError::Legacy("SSLv3".into())));
        assert!(matches!(
            parse("all -TLSv1.4"),
            Err(ProtocolError::Unknown(_))
        ));
        assert!(matches!(parse("all -"), Err(ProtocolError::Unknown(_))));
        assert!(matches!(
            parse("all -TLSv1.2 -TLSv1.3"),
            Err(ProtocolError::Empty(_))
        ));
        assert!(matches!(parse(""), Err(ProtocolError::Empty(_))));
        assert!(matches!(parse(" , "), Err(ProtocolError::Empty(_))));
    }
}
