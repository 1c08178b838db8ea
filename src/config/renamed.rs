//! Keys that were renamed. A file written for an older pgssl still loads: before the file is read
//! into [`Config`](super::Config), each old key found is moved to its new place (seconds becoming a
//! duration) and reported, so that the caller warns once per key; a file that gives both the old and
//! the new name is refused, since one of the two values would be silently ignored.

use std::fmt;

use toml::{Table, Value};

/// How an old key's value becomes the new key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// The same value.
    Same,
    /// A whole number of seconds becomes a duration with its unit.
    Seconds,
}

/// One renamed key: dotted paths, `table.key`.
#[derive(Debug, Clone, Copy)]
struct Rename {
    old: &'static str,
    new: &'static str,
    conversion: Conversion,
}

const fn same(old: &'static str, new: &'static str) -> Rename {
    Rename {
        old,
        new,
        conversion: Conversion::Same,
    }
}

const fn seconds(old: &'static str, new: &'static str) -> Rename {
    Rename {
        old,
        new,
        conversion: Conversion::Seconds,
    }
}

/// Every renamed key.
const RENAMES: &[Rename] = &[
    // The server behind pgssl has one name: the repository.
    same("server.upstream", "repository.address"),
    same("server.upstream_tls", "repository.tls"),
    // Durations carry their unit.
    seconds("server.handshake_timeout_secs", "server.handshake_timeout"),
    seconds("server.connect_timeout_secs", "server.connect_timeout"),
    seconds("server.shutdown_grace_secs", "server.shutdown_grace"),
    seconds(
        "admin.session_idle_timeout_secs",
        "admin.session_idle_timeout",
    ),
    seconds("admin.request_timeout_secs", "admin.request_timeout"),
    seconds("auth.failure_window_secs", "auth.failure_window"),
    seconds("auth.lockout_secs", "auth.lockout"),
    seconds("auth.verifier_cache_secs", "auth.verifier_cache_ttl"),
    seconds("pool.idle_timeout_secs", "pool.idle_timeout"),
    seconds("pool.max_lifetime_secs", "pool.max_lifetime"),
    seconds("pool.checkout_timeout_secs", "pool.checkout_timeout"),
    seconds("pool.recheck_secs", "pool.recheck_interval"),
];

/// An old key a file used: worth one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldKey {
    /// The old name, e.g. `server.handshake_timeout_secs`.
    pub old: &'static str,
    /// The name that replaces it, e.g. `server.handshake_timeout`.
    pub new: &'static str,
    seconds: bool,
}

impl fmt::Display for OldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is the old name of {}", self.old, self.new)?;
        if self.seconds {
            f.write_str(", which takes a duration with its unit (e.g. \"30s\", \"5m\")")?;
        }
        write!(f, "; rename it: the old name will stop working")
    }
}

/// Moves every old key in `file` to its new name, converting its value, and returns the old keys
/// found, in [`RENAMES`] order. A key given under both names is refused.
pub(super) fn rename_old_keys(file: &mut Table) -> Result<Vec<OldKey>, RenameError> {
    let mut found = Vec::new();
    for rename in RENAMES {
        let (old_table, old_key) = split(rename.old);
        let (new_table, new_key) = split(rename.new);
        let Some(Value::Table(table)) = file.get(old_table) else {
            continue;
        };
        if !table.contains_key(old_key) {
            continue;
        }
        match file.get(new_table) {
            Some(Value::Table(target)) if target.contains_key(new_key) => {
                return Err(RenameError::Both {
                    old: rename.old,
                    new: rename.new,
                });
            }
            // Not a table: left as it is, for the schema to refuse naming the key.
            Some(target) if !target.is_table() => continue,
            _ => {}
        }
        let Some(Value::Table(table)) = file.get_mut(old_table) else {
            continue;
        };
        let Some(value) = table.remove(old_key) else {
            continue;
        };
        let value = match rename.conversion {
            Conversion::Same => value,
            Conversion::Seconds => match value.as_integer().filter(|n| *n >= 0) {
                Some(secs) => Value::String(format!("{secs}s")),
                None => {
                    return Err(RenameError::NotSeconds {
                        old: rename.old,
                        new: rename.new,
                    });
                }
            },
        };
        // The old key's table stays even when this was its last key: `[server]` alone is valid.
        if let Value::Table(target) = file
            .entry(new_table)
            .or_insert_with(|| Value::Table(Table::new()))
        {
            target.insert(new_key.to_string(), value);
        }
        found.push(OldKey {
            old: rename.old,
            new: rename.new,
            seconds: rename.conversion == Conversion::Seconds,
        });
    }
    Ok(found)
}

fn split(path: &'static str) -> (&'static str, &'static str) {
    path.split_once('.').unwrap_or(("", path))
}

/// Why an old key cannot be carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    /// The old and the new name are both given.
    #[error("{old} and {new} are both set; {old} is the old name of {new}: keep only {new}")]
    Both {
        /// The old name.
        old: &'static str,
        /// The new name.
        new: &'static str,
    },
    /// An old `_secs` key does not hold a whole number of seconds.
    #[error("{old} must be a whole number of seconds (or write {new} with its unit, e.g. \"30s\")")]
    NotSeconds {
        /// The old name.
        old: &'static str,
        /// The new name.
        new: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(text: &str) -> Result<(Table, Vec<OldKey>), RenameError> {
        let mut table: Table = toml::from_str(text).unwrap();
        let old = rename_old_keys(&mut table)?;
        Ok((table, old))
    }

    #[test]
    fn old_keys_move_to_their_new_names_once_each_and_seconds_gain_a_unit() {
        let (table, old) = renamed(
            "[server]\nupstream = \"db:5432\"\nhandshake_timeout_secs = 7\nlisten = \"127.0.0.1:1\"\n[pool]\nrecheck_secs = 0\n",
        )
        .unwrap();
        let expected: Table = toml::from_str(
            "[server]\nlisten = \"127.0.0.1:1\"\nhandshake_timeout = \"7s\"\n[repository]\naddress = \"db:5432\"\n[pool]\nrecheck_interval = \"0s\"\n",
        )
        .unwrap();
        assert_eq!(table, expected);
        let names: Vec<_> = old.iter().map(|o| (o.old, o.new)).collect();
        assert_eq!(
            names,
            [
                ("server.upstream", "repository.address"),
                ("server.handshake_timeout_secs", "server.handshake_timeout"),
                ("pool.recheck_secs", "pool.recheck_interval"),
            ]
        );
        assert!(old[1].to_string().contains("\"30s\""), "{}", old[1]);
        let (untouched, none) = renamed("[server]\nhandshake_timeout = \"7s\"\n").unwrap();
        assert!(none.is_empty());
        assert_eq!(
            untouched["server"]["handshake_timeout"].as_str(),
            Some("7s")
        );
    }

    #[test]
    fn both_names_or_a_non_integer_old_value_are_refused_naming_the_keys() {
        let both =
            renamed("[server]\nupstream_tls = \"require\"\n[repository]\ntls = \"disable\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            both.contains("server.upstream_tls and repository.tls are both set")
                && both.contains("keep only repository.tls"),
            "{both}"
        );
        for value in ["\"10s\"", "-1", "1.5"] {
            let err = renamed(&format!("[auth]\nlockout_secs = {value}\n")).unwrap_err();
            assert!(
                matches!(
                    err,
                    RenameError::NotSeconds {
                        new: "auth.lockout",
                        ..
                    }
                ),
                "{value}: {err}"
            );
        }
    }
}
