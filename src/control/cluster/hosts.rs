//! The repository's hosts as the cluster reaches them.
//!
//! A membership or a bootstrap file names the repository as `repository.address` does: one
//! `host:port`, or the hosts of one replicated PostgreSQL cluster written libpq's way
//! (`h1:5432,h2:5432`). The cluster's state lives on whichever host is the primary, so every
//! cluster session (a node's follower, a command's commit, `list-nodes`, the session that makes the
//! cluster) goes there the way libpq's `target_session_attrs=read-write` does ([`primary`]): the
//! hosts in the order given, each logged in to and asked `pg_is_in_recovery()`, a standby passed
//! over. Nothing of pgssl's is written to a host in recovery — not the schema's migration, not a
//! commit, not a heartbeat — and a session that breaks (the primary died) is opened again the same
//! way, which finds the promoted host. tokio-postgres's own host list cannot do this: pgssl opens
//! the stream itself (its TLS, its pins) and hands tokio-postgres one connection.
//!
//! Each host of a TLS repository has its own certificate: the cluster pins every one
//! ([`fingerprints`], when the cluster is made), so that a failover does not turn into a refused
//! certificate. The pins are written as one string when there is one, so a single-host membership
//! or bootstrap file reads and writes as it did before there could be several ([`pins_format`]).

use std::time::Duration;

use super::ClusterError;
use super::repo::Conn;
use crate::config::RepositoryAddress;
use crate::proxy::repository::tls::{RepositoryTls, RepositoryTlsFailure, RepositoryTlsMode};
use crate::proxy::repository::{RepositoryAddr, RepositoryConnectError};
use crate::repository::SessionError;

/// The hosts `repository` names, in order; `socket_port` names the socket of a bare Unix socket
/// directory.
pub fn parse(repository: &str, socket_port: u16) -> Result<Vec<RepositoryAddr>, ClusterError> {
    repository
        .parse::<RepositoryAddress>()
        .map(|a| a.upstreams(socket_port))
        .map_err(|e| ClusterError::Unreachable {
            repository: repository.to_string(),
            message: e.to_string(),
        })
}

/// Whether the session's host is in recovery (a standby, or a primary still replaying its WAL).
/// `None` when the host is in recovery, else the timeline it writes on (as the data plane's probe
/// reads it: from its current WAL file's name).
async fn writable_timeline(conn: &Conn) -> Result<Option<i32>, SessionError> {
    let row = conn
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// How a session on one host is opened: as the cluster role, or as an administrator who makes the
/// cluster.
pub trait LogIn: Sync {
    /// A logged-in session on `host`.
    fn log_in(
        &self,
        host: &RepositoryAddr,
    ) -> impl Future<Output = Result<Conn, ClusterError>> + Send;
}

/// Logs in to each of `hosts` (what `repository` names) with `login` and keeps the one not in
/// recovery: that session and its host; of several (a split brain), the one on the later timeline,
/// as the data plane decides. Each host has `limit` for its login and the question.
///
/// When none is the primary: one host's own failure when there is one host (as before there could
/// be several); a refusal of the password when a host refused it (every host of one cluster has
/// the same roles, so it is the password, and the one being rotated to is worth trying); else
/// [`ClusterError::NoPrimary`], naming every host and why it was passed over.
pub async fn primary(
    repository: &str,
    hosts: &[RepositoryAddr],
    limit: Duration,
    login: &impl LogIn,
) -> Result<(Conn, String), ClusterError> {
    let mut tried = Vec::new();
    // Every writable host, with its timeline: in a split brain (an old primary not yet fenced) the
    // state goes where the data plane sends primary-bound sessions, the later timeline.
    let mut writable: Vec<(Conn, String, i32)> = Vec::new();
    for host in hosts {
        let label = host.to_string();
        let attempt = async {
            let conn = login.log_in(host).await?;
            match writable_timeline(&conn).await {
                Ok(Some(timeline)) => Ok((conn, timeline)),
                Ok(None) => {
                    let _ = conn.terminate().await;
                    Err(ClusterError::InRecovery {
                        repository: label.clone(),
                    })
                }
                Err(source) => Err(ClusterError::Repository {
                    repository: label.clone(),
                    source,
                }),
            }
        };
        let error = match tokio::time::timeout(limit, attempt).await {
            Ok(Ok((conn, timeline))) => {
                writable.push((conn, label, timeline));
                continue;
            }
            Ok(Err(e)) => e,
            Err(_) => ClusterError::Unreachable {
                repository: label.clone(),
                message: format!("no answer within {limit:?}"),
            },
        };
        tracing::debug!(host = %label, error = %error, "passing over a repository host for the cluster's state");
        tried.push(error);
    }
    // The latest timeline; the first listed among equals.
    let best = writable
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, _, timeline))| (*timeline, std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    if let Some(best) = best {
        let (conn, label, _) = writable.swap_remove(best);
        for (other, host, _) in writable {
            tracing::error!(%host, chosen = %label, "two repository hosts are writable (split brain): the cluster's state goes to the later timeline");
            let _ = other.terminate().await;
        }
        return Ok((conn, label));
    }
    Err(no_primary(repository, tried))
}

/// What [`primary`] fails with when every host was passed over, `tried` saying why, in order.
fn no_primary(repository: &str, mut tried: Vec<ClusterError>) -> ClusterError {
    if tried.len() == 1 {
        return tried.remove(0);
    }
    if let Some(at) = tried
        .iter()
        .position(|e| matches!(e, ClusterError::Refused { .. }))
    {
        return tried.swap_remove(at);
    }
    ClusterError::NoPrimary {
        repository: repository.to_string(),
        tried,
    }
}

/// `host`'s certificate fingerprint, learnt over a TLS session that checks what `tls` checks
/// (TLS is asked for even when `tls` is off: the cluster pins what the host offers); `None` when
/// the host offers no TLS.
async fn fingerprint(
    host: &RepositoryAddr,
    tls: &RepositoryTls,
    limit: Duration,
) -> Result<Option<String>, ClusterError> {
    let unreachable = |e: &dyn std::fmt::Display| ClusterError::Unreachable {
        repository: host.to_string(),
        message: format!("reading its certificate, which the cluster pins: {e}"),
    };
    let required;
    let tls = if tls.mode() == RepositoryTlsMode::Disable {
        required =
            RepositoryTls::new(RepositoryTlsMode::Require, None).map_err(|e| unreachable(&e))?;
        &required
    } else {
        tls
    };
    match host.connect_with(limit, tls).await {
        Ok(stream) => Ok(stream
            .peer_certificate()
            .map(crate::tls::certs::sha256_fingerprint)),
        Err(RepositoryConnectError::Tls(RepositoryTlsFailure::Refused(_))) => Ok(None),
        Err(e) => Err(unreachable(&e)),
    }
}

/// The certificate fingerprints of every host of `hosts` (what `repository` names), each once:
/// what the cluster pins. Empty when no host offers TLS (the cluster's traffic is then plaintext);
/// [`ClusterError::MixedTls`] when some do and some do not, since a pinned cluster could not reach
/// the others; a host that cannot be reached fails it all, since its certificate would be refused
/// after a failover to it.
pub async fn fingerprints(
    hosts: &[RepositoryAddr],
    tls: &RepositoryTls,
    limit: Duration,
) -> Result<Vec<String>, ClusterError> {
    let (mut pins, mut with_tls, mut without) = (Vec::new(), Vec::new(), Vec::new());
    for host in hosts {
        match fingerprint(host, tls, limit).await? {
            Some(pin) => {
                with_tls.push(host.to_string());
                if !pins.contains(&pin) {
                    pins.push(pin);
                }
            }
            None => without.push(host.to_string()),
        }
    }
    if !with_tls.is_empty() && !without.is_empty() {
        return Err(ClusterError::MixedTls { with_tls, without });
    }
    Ok(pins)
}

/// How membership and bootstrap files write the pinned fingerprints (`repository_fingerprint`):
/// nothing for a plaintext repository, one string for one certificate — the form versions that
/// knew one host wrote, and still read — and a list for several.
pub mod pins_format {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `pins` (a field that skips an empty list never gets here with one).
    pub fn serialize<S: Serializer>(pins: &[String], s: S) -> Result<S::Ok, S::Error> {
        match pins {
            [] => s.serialize_none(),
            [one] => s.serialize_some(one),
            many => many.serialize(s),
        }
    }

    /// Reads what [`serialize`] writes; `null` (a plaintext repository in an older file) reads as
    /// no pin.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a certificate fingerprint, or a list of them")]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Option::<Written>::deserialize(d)? {
            None => Vec::new(),
            Some(Written::One(pin)) => vec![pin],
            Some(Written::Many(pins)) => pins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_names_one_host_or_several_libpq_style() {
        let one = parse("db:5432", 5432).unwrap();
        assert_eq!(one, [RepositoryAddr::Tcp("db:5432".into())]);
        let two = parse("h1:5432,h2:6432", 5432).unwrap();
        assert_eq!(
            two,
            [
                RepositoryAddr::Tcp("h1:5432".into()),
                RepositoryAddr::Tcp("h2:6432".into())
            ]
        );
        let socket = parse("unix:/run/pg", 6000).unwrap();
        assert_eq!(
            socket,
            [RepositoryAddr::Unix {
                dir: "/run/pg".into(),
                port: 6000
            }]
        );
        for bad in ["", "h1:5432,", "nowhere", "h1:5432,h1:5432"] {
            let e = parse(bad, 5432).unwrap_err();
            assert!(e.is_unreachable(), "{bad}: {e}");
            assert!(matches!(e, ClusterError::Unreachable { .. }), "{bad}: {e}");
        }
    }

    fn unreachable(host: &str) -> ClusterError {
        ClusterError::Unreachable {
            repository: host.into(),
            message: "Connection refused (os error 111)".into(),
        }
    }

    fn standby(host: &str) -> ClusterError {
        ClusterError::InRecovery {
            repository: host.into(),
        }
    }

    #[test]
    fn with_no_primary_every_host_is_named_with_why_it_was_passed_over() {
        let e = no_primary(
            "h1:5432,h2:5432",
            vec![unreachable("h1:5432"), standby("h2:5432")],
        );
        assert!(matches!(&e, ClusterError::NoPrimary { tried, .. } if tried.len() == 2));
        assert!(e.is_unreachable() && !e.is_user_error(), "{e}");
        let text = e.to_string();
        for said in [
            "no host of the cluster's repository h1:5432,h2:5432 is a primary",
            "h1:5432: Connection refused",
            "h2:5432 is in recovery (a standby)",
        ] {
            assert!(text.contains(said), "{said}: {text}");
        }
        // One host: its own failure, as before there could be several; a standby is never used.
        let one = no_primary("h2:5432", vec![standby("h2:5432")]);
        assert!(matches!(&one, ClusterError::InRecovery { repository } if repository == "h2:5432"));
        assert!(one.is_unreachable(), "{one}");
        let down = no_primary("h1:5432", vec![unreachable("h1:5432")]);
        assert!(matches!(down, ClusterError::Unreachable { .. }));
        // A refused password is the password, whichever host said it: the rotation's next one is
        // then tried.
        let refused = ClusterError::Refused {
            repository: "h2:5432".into(),
            source: SessionError::Closed,
        };
        let e = no_primary("h1:5432,h2:5432", vec![unreachable("h1:5432"), refused]);
        assert!(matches!(&e, ClusterError::Refused { repository, .. } if repository == "h2:5432"));
    }

    #[test]
    fn hosts_that_disagree_about_tls_are_the_callers_to_fix() {
        let e = ClusterError::MixedTls {
            with_tls: vec!["h1:5432".into()],
            without: vec!["h2:5432".into()],
        };
        assert!(e.is_user_error(), "{e}");
        assert!(
            e.to_string().contains("h1:5432 offer it, h2:5432 do not"),
            "{e}"
        );
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Pinned {
        #[serde(default, with = "pins_format", skip_serializing_if = "Vec::is_empty")]
        repository_fingerprint: Vec<String>,
    }

    #[test]
    fn one_pin_is_written_as_the_one_string_older_files_hold_and_several_as_a_list() {
        let pins = |p: &[&str]| Pinned {
            repository_fingerprint: p.iter().map(|s| s.to_string()).collect(),
        };
        // TOML (membership files).
        assert_eq!(toml::to_string(&pins(&[])).unwrap(), "");
        assert_eq!(
            toml::to_string(&pins(&["AB"])).unwrap(),
            "repository_fingerprint = \"AB\"\n"
        );
        let two = toml::to_string(&pins(&["AB", "CD"])).unwrap();
        assert_eq!(toml::from_str::<Pinned>(&two).unwrap(), pins(&["AB", "CD"]));
        assert_eq!(toml::from_str::<Pinned>("").unwrap(), pins(&[]));
        // JSON (bootstrap files): what older versions wrote, `null` included.
        for (text, want) in [
            ("{}", pins(&[])),
            ("{\"repository_fingerprint\":null}", pins(&[])),
            ("{\"repository_fingerprint\":\"AB\"}", pins(&["AB"])),
            (
                "{\"repository_fingerprint\":[\"AB\",\"CD\"]}",
                pins(&["AB", "CD"]),
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<Pinned>(text).unwrap(),
                want,
                "{text}"
            );
        }
        assert_eq!(
            serde_json::to_string(&pins(&["AB"])).unwrap(),
            "{\"repository_fingerprint\":\"AB\"}"
        );
        assert!(serde_json::from_str::<Pinned>("{\"repository_fingerprint\":5}").is_err());
    }
}
