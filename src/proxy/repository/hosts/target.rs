//! What a user's sessions may run on (`repository.targets`), with libpq's `target_session_attrs`
//! names, and how far behind a standby may be before it is skipped (`repository.max_standby_lag`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The hosts a user's sessions may go to, as libpq's `target_session_attrs` of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetRole {
    /// The primary only; while there is none, logins wait for a failover (`repository.failover_wait`).
    #[default]
    Primary,
    /// A standby within `max_standby_lag` if there is one, else the primary.
    PreferStandby,
    /// A standby within `max_standby_lag`, or the login is refused.
    Standby,
    /// The first usable host in the configured order.
    Any,
}

impl fmt::Display for TargetRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetRole::Primary => "primary",
            TargetRole::PreferStandby => "prefer-standby",
            TargetRole::Standby => "standby",
            TargetRole::Any => "any",
        })
    }
}

/// Each user's [`TargetRole`] (`repository.targets`): by role name, else by user class (`client`,
/// `internal`), else `primary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets(BTreeMap<String, TargetRole>);

impl Targets {
    /// From the configured map.
    pub fn new(by_name: BTreeMap<String, TargetRole>) -> Targets {
        Targets(by_name)
    }

    /// Where `user`'s sessions go.
    pub fn of(&self, user: &str, class: crate::proxy::policy::UserClass) -> TargetRole {
        self.0
            .get(user)
            .or_else(|| self.0.get(class.as_str()))
            .copied()
            .unwrap_or_default()
    }
}

/// How far a standby may be behind the primary and still take sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StandbyLag {
    /// WAL bytes not yet replayed.
    Bytes(u64),
    /// Time since the last replayed transaction committed on the primary.
    Time(Duration),
}

impl StandbyLag {
    /// Whether a standby `bytes` and `seconds` behind is within the bound. A lag pgssl cannot know
    /// (no primary to compare with) is within it: during a failover the standby is the freshest copy
    /// there is.
    pub fn allows(&self, bytes: Option<u64>, seconds: Option<f64>) -> bool {
        match self {
            StandbyLag::Bytes(max) => bytes.is_none_or(|b| b <= *max),
            StandbyLag::Time(max) => seconds.is_none_or(|s| s <= max.as_secs_f64()),
        }
    }
}

/// `max_standby_lag` is neither a size nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a lag: give bytes (\"16MB\", \"512kB\", \"1048576\") or a time (\"10s\", \"500ms\")"
)]
pub struct BadLag(String);

impl FromStr for StandbyLag {
    type Err = BadLag;

    /// Sizes as PostgreSQL writes them (`kB`, `MB`, `GB`, `TB`, powers of 1024; a bare number is
    /// bytes), or a duration with its unit.
    fn from_str(text: &str) -> Result<StandbyLag, BadLag> {
        let bad = || BadLag(text.to_string());
        let t = text.trim();
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" => 1 << 10,
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            "TB" => 1 << 40,
            _ => {
                return humantime::parse_duration(t)
                    .map(StandbyLag::Time)
                    .map_err(|_| bad());
            }
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        n.checked_mul(scale).map(StandbyLag::Bytes).ok_or_else(bad)
    }
}

impl fmt::Display for StandbyLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StandbyLag::Bytes(b) => write!(f, "{b} bytes"),
            StandbyLag::Time(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for StandbyLag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a lag such as \"16MB\" or \"10s\"")]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Bytes(b) => Ok(StandbyLag::Bytes(b)),
            Written::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_s_own_target_wins_over_its_class_s() {
        use crate::proxy::policy::UserClass;
        let targets = Targets::new(BTreeMap::from([
            ("readonly".to_string(), TargetRole::PreferStandby),
            ("client".to_string(), TargetRole::Any),
        ]));
        assert_eq!(
            targets.of("readonly", UserClass::Client),
            TargetRole::PreferStandby
        );
        assert_eq!(targets.of("tableau", UserClass::Client), TargetRole::Any);
        assert_eq!(targets.of("svc", UserClass::Internal), TargetRole::Primary);
        assert_eq!(
            Targets::default().of("readonly", UserClass::Client),
            TargetRole::Primary
        );
    }

    #[test]
    fn lags_are_sizes_or_durations() {
        assert_eq!("16MB".parse(), Ok(StandbyLag::Bytes(16 << 20)));
        assert_eq!("512 kB".parse(), Ok(StandbyLag::Bytes(512 << 10)));
        assert_eq!("4096".parse(), Ok(StandbyLag::Bytes(4096)));
        assert_eq!("10s".parse(), Ok(StandbyLag::Time(Duration::from_secs(10))));
        assert_eq!(
            "500ms".parse(),
            Ok(StandbyLag::Time(Duration::from_millis(500)))
        );
        for bad in ["", "16mb", "MB", "99999999999TB", "ten seconds"] {
            assert!(bad.parse::<StandbyLag>().is_err(), "{bad}");
        }
        let max = StandbyLag::Bytes(100);
        assert!(max.allows(Some(100), None) && !max.allows(Some(101), Some(0.0)));
        assert!(max.allows(None, None));
        let max = StandbyLag::Time(Duration::from_secs(2));
        assert!(max.allows(Some(1 << 30), Some(1.5)) && !max.allows(Some(0), Some(2.5)));
    }
}
