//! The pre-flight report: who a repository SSL mode (or mutual SSL) would refuse, judged on the
//! clients seen logging in ([`crate::proxy::inventory`]) by the very function that refuses them
//! at the door ([`policy::decide`]), before the change is applied.
//!
//! `security repository-ssl report [--mode M] [--since 24h]` lists them; `pending-changes list`
//! and `apply` warn with the same judgement of the staged change, and `apply
//! --refuse-if-breaking` stops instead (Tableau applies regardless: so does pgssl by default).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Verb};
use super::{CommandError, Context, ErrorKind, Output};
use crate::control::cluster::questions::{self, Answer, Question};
use crate::control::state::AppliedState;
use crate::control::state::security::MutualSsl;
use crate::proxy::inventory::{Seen, now};
use crate::proxy::policy::{self, Mode, Transport, UserClassifier, Verdict};

/// `security repository-ssl report`: the clients seen that a mode would refuse.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhoWouldBeRefused {
    /// The mode to judge [default: the staged one, else the applied one].
    #[arg(long, value_name = "required|optional|off")]
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Only clients seen this recently (`24h`, `30m`, `7d`) [default: the whole window, 7 days].
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    #[serde(default, with = "humantime_serde")]
    pub since: Option<Duration>,
}

fn parse_since(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("'{text}' is not a duration like 24h: {e}"))
}

/// One kind of client a change would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Who, how often, when.
    #[serde(flatten)]
    pub seen: Seen,
    /// Why it would be refused.
    pub why: String,
    /// Whether it may still get in (a TLS client under `off` gets in if its `sslmode` allows
    /// plaintext).
    pub maybe: bool,
}

/// What the report says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreflightReport {
    /// The mode judged.
    pub mode: Mode,
    /// Where it came from: `asked`, `staged` or `applied`.
    pub mode_source: String,
    /// Whether mutual SSL without fallback was judged too (staged or applied).
    pub mutual_ssl_required: bool,
    /// Clients seen since this time (seconds since the epoch).
    pub since: u64,
    /// Distinct clients seen since then.
    pub clients_seen: usize,
    /// Those that would be refused.
    pub refused: Vec<Refused>,
    /// Nodes that did not give their inventory (their clients are not judged).
    #[serde(default)]
    pub unanswered: Vec<String>,
}

impl Report for PreflightReport {
    fn render(&self, out: &Output) {
        for missing in &self.unanswered {
            out.warning(format!("warning: not judged: {missing}"));
        }
        let when = date(self.since);
        let mutual = if self.mutual_ssl_required {
            " and mutual SSL without fallback"
        } else {
            ""
        };
        say!(
            out,
            "Repository SSL {} ({}){mutual}: {} distinct clients seen since {when}; {} would be refused.",
            self.mode,
            self.mode_source,
            self.clients_seen,
            self.refused.iter().filter(|r| !r.maybe).count()
        );
        for line in refusal_lines(&self.refused) {
            say!(out, "{line}");
        }
    }
}

/// Seconds since the epoch in RFC 3339; empty for a time out of range (the seconds come from other
/// nodes and files, so a wild value must not panic as `SystemTime` arithmetic would).
fn date(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The refused clients, one line each (the report's table, and `pending-changes`' warnings).
pub fn refusal_lines(refused: &[Refused]) -> Vec<String> {
    refused
        .iter()
        .map(|r| {
            let c = &r.seen.client;
            let last = date(r.seen.last_seen);
            format!(
                "  {} user {} database {} application '{}' from {} over {}: {} logins, last {last}: {}",
                if r.maybe { "may be refused:" } else { "refused:" },
                c.user,
                c.database,
                c.application,
                c.address,
                c.tls.as_deref().unwrap_or("plaintext"),
                r.seen.count,
                r.why
            )
        })
        .collect()
}

/// Why the pre-flight report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// `apply --refuse-if-breaking` and the staged change refuses clients seen.
    #[error(
        "the staged change would refuse {0} kind(s) of client seen in the last {days} days (see 'pgssl security repository-ssl report'); nothing was applied", days = crate::control::inventory::WINDOW_DAYS
    )]
    WouldRefuse(usize),
    /// `apply --refuse-if-breaking`, and not every node's clients could be judged.
    #[error(
        "cannot tell whether the staged change refuses clients: not judged: {0}; nothing was applied (apply without --refuse-if-breaking to apply anyway)"
    )]
    Unjudged(String),
}

impl PreflightError {
    /// The caller's: they asked to stop.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

impl Operation for WhoWouldBeRefused {
    const ACTION: &'static str = "repository-ssl report";
    const PATH: &'static str = "/repository-ssl/report";
    const VERB: Verb = Verb::Get;
    type Report = PreflightReport;

    async fn run(self, ctx: &Context) -> Result<PreflightReport, CommandError> {
        let store = ctx.store()?;
        let applied = store.applied()?;
        let next = store.pending()?.merged_into(&applied);
        let (mode, mode_source) = match self.mode {
            Some(mode) => (mode, "asked"),
            None if next.repository_ssl.mode != applied.repository_ssl.mode => {
                (next.repository_ssl.mode, "staged")
            }
            None => (applied.repository_ssl.mode, "applied"),
        };
        let since = match self.since {
            Some(d) => now().saturating_sub(d.as_secs()),
            None => crate::control::inventory::window_start(),
        };
        let (seen, unanswered) = clients_seen(ctx, since).await?;
        let mutual = next.mutual_ssl.as_ref().filter(|m| requires_certificate(m));
        let refused = judge(&seen, mode, mutual, &ctx.config.classifier());
        Ok(PreflightReport {
            mode,
            mode_source: mode_source.into(),
            mutual_ssl_required: mutual.is_some(),
            since,
            clients_seen: seen.len(),
            refused,
            unanswered,
        })
    }

    fn example() -> WhoWouldBeRefused {
        WhoWouldBeRefused {
            mode: Some(Mode::Required),
            since: Some(Duration::from_secs(86_400)),
        }
    }
}

/// Whether mutual SSL refuses a client without a certificate.
fn requires_certificate(m: &MutualSsl) -> bool {
    m.enabled && !m.fallback
}

/// The clients `seen` that `mode` (and `mutual`, when it requires a certificate) would refuse, as
/// the door decides: [`policy::decide`] with the class the configuration gives the role.
pub fn judge(
    seen: &[Seen],
    mode: Mode,
    mutual: Option<&MutualSsl>,
    classifier: &UserClassifier,
) -> Vec<Refused> {
    let mut out = Vec::new();
    for s in seen {
        let c = &s.client;
        let transport = match c.tls {
            Some(_) => Transport::Tls,
            None => Transport::Plaintext,
        };
        let class = classifier.classify(&c.user);
        let refusal = match policy::decide(mode, class, transport, &c.user) {
            Verdict::Reject(err) => Some((err.message.to_string(), false)),
            // With SSL off, the SSLRequest is answered N: a client that used TLS gets in only if
            // its sslmode accepts plaintext (prefer, allow), which the inventory cannot tell.
            Verdict::Allow if mode == Mode::Off && transport == Transport::Tls => Some((
                "it used TLS, which is not offered with SSL off: it gets in only if its sslmode is prefer or allow".into(),
                true,
            )),
            Verdict::Allow if mutual.is_some() && !c.certificate => Some((
                "no client certificate, and mutual SSL's fallback is off".into(),
                false,
            )),
            Verdict::Allow => None,
        };
        if let Some((why, maybe)) = refusal {
            out.push(Refused {
                seen: s.clone(),
                why,
                maybe,
            });
        }
    }
    out
}

/// What the staged change (`next`, over `applied`) would refuse of the clients seen in the window,
/// and the nodes whose clients could not be judged; nothing when it changes neither the mode nor
/// mutual SSL. For `pending-changes list` and `apply`.
pub async fn staged_refusals(
    ctx: &Context,
    applied: &AppliedState,
    next: &AppliedState,
) -> Result<(Vec<Refused>, Vec<String>), CommandError> {
    let mutual_before = applied
        .mutual_ssl
        .as_ref()
        .filter(|m| requires_certificate(m));
    let mutual = next.mutual_ssl.as_ref().filter(|m| requires_certificate(m));
    if next.repository_ssl.mode == applied.repository_ssl.mode && mutual_before == mutual {
        return Ok((Vec::new(), Vec::new()));
    }
    let (seen, unjudged) = clients_seen(ctx, crate::control::inventory::window_start()).await?;
    let classifier = ctx.config.classifier();
    let before = judge(
        &seen,
        applied.repository_ssl.mode,
        mutual_before,
        &classifier,
    );
    // Only what the change refuses that is not refused already.
    let refused = judge(&seen, next.repository_ssl.mode, mutual, &classifier)
        .into_iter()
        .filter(|r| {
            !before
                .iter()
                .any(|b| b.seen.client == r.seen.client && b.maybe == r.maybe)
        })
        .collect();
    Ok((refused, unjudged))
}

/// The clients seen since `since`: every node's, in a cluster (merged), else the running
/// server's, else what the data directory's file kept; and the nodes that did not answer.
async fn clients_seen(ctx: &Context, since: u64) -> Result<(Vec<Seen>, Vec<String>), CommandError> {
    let config_dir = ctx.data_dir.join("config");
    let asked = questions::ask(&config_dir, &Question::Inventory).await;
    // Out of reach, the cluster's other nodes are not judged: said, never silently skipped.
    let unreachable = asked
        .as_ref()
        .err()
        .map(|e| format!("the other nodes (the cluster's repository: {e})"));
    let (lists, mut unanswered) = match asked {
        Ok(Some(answers)) => {
            let mut unanswered: Vec<String> = answers
                .silent
                .iter()
                .map(|n| format!("node {n} did not answer"))
                .collect();
            let mut lists = Vec::new();
            for (node, answer) in answers.answered {
                match answer {
                    Answer::Inventory(seen) => lists.push(seen),
                    Answer::Failed(why) => unanswered.push(format!("node {node}: {why}")),
                    _ => {}
                }
            }
            (lists, unanswered)
        }
        Ok(None) | Err(_) => {
            let local = match ctx.node.inventory().await {
                Ok(Some(seen)) => seen,
                // No server runs: what it kept when it last ran.
                _ => {
                    crate::control::inventory::load(&crate::control::inventory::path(&ctx.data_dir))
                }
            };
            (vec![local], Vec::new())
        }
    };
    unanswered.extend(unreachable);
    let mut merged: BTreeMap<_, Seen> = BTreeMap::new();
    for s in lists.into_iter().flatten().filter(|s| s.last_seen >= since) {
        match merged.get_mut(&s.client) {
            Some(m) => m.merge(&s),
            None => {
                merged.insert(s.client.clone(), s);
            }
        }
    }
    Ok((merged.into_values().collect(), unanswered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::inventory::Client;

    fn seen(user: &str, tls: bool, certificate: bool) -> Seen {
        Seen {
            client: Client {
                user: user.into(),
                database: "workgroup".into(),
                application: "app".into(),
                address: "10.0.0.9".into(),
                tls: tls.then(|| "TLSv1_3".into()),
                channel_binding: false,
                certificate,
            },
            count: 3,
            first_seen: 1,
            last_seen: 2,
        }
    }

    fn mutual(fallback: bool) -> MutualSsl {
        MutualSsl {
            id: "m".into(),
            ca_file_name: "ca.pem".into(),
            fallback,
            user_name_map: Default::default(),
            map_file_name: None,
            revocation_file_name: None,
            enabled: true,
        }
    }

    #[test]
    fn each_mode_refuses_whom_the_door_refuses() {
        let classifier = UserClassifier::new(vec!["tableau".into(), "readonly".into()]);
        let all = [
            seen("readonly", false, false),
            seen("tableau", true, false),
            seen("internal_svc", false, false),
            seen("internal_svc", true, true),
        ];
        let users = |r: Vec<Refused>| -> Vec<(String, bool, bool)> {
            r.into_iter()
                .map(|r| (r.seen.client.user, r.seen.client.tls.is_some(), r.maybe))
                .collect()
        };
        // Required: every plaintext client.
        assert_eq!(
            users(judge(&all, Mode::Required, None, &classifier)),
            [
                ("readonly".into(), false, false),
                ("internal_svc".into(), false, false)
            ]
        );
        // Optional: plaintext internal users only.
        assert_eq!(
            users(judge(&all, Mode::Optional, None, &classifier)),
            [("internal_svc".into(), false, false)]
        );
        // Off: TLS clients may be refused, depending on their sslmode.
        assert_eq!(
            users(judge(&all, Mode::Off, None, &classifier)),
            [
                ("tableau".into(), true, true),
                ("internal_svc".into(), true, true)
            ]
        );
        // Mutual SSL without fallback: every client without a certificate.
        let m = mutual(false);
        assert_eq!(
            users(judge(&all[1..2], Mode::Required, Some(&m), &classifier)),
            [("tableau".into(), true, false)]
        );
        assert!(judge(&all[3..], Mode::Required, Some(&m), &classifier).is_empty());
        assert!(!requires_certificate(&mutual(true)));
    }

    #[test]
    fn since_reads_human_durations_and_refuses_garbage() {
        assert_eq!(parse_since("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_since("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(
            parse_since("yesterday")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
