//! The Repository hosts page: the running server's repository hosts, one table row each, read-only.
//! It runs `topology list-repository-hosts` ([`ListRepositoryHosts`]) like the CLI and the API do
//! and lays its report out as a table (maud escapes every value: addresses, refusal reasons and probe
//! errors come from configuration and from the hosts' answers).

use axum::response::Response;
use maud::{Markup, html};

use super::{Shared, report};
use crate::admin::auth::Admin;
use crate::control::operations::model::Operation;
// The page says what the CLI's report says of a single, unprobed host.
use crate::control::operations::repository_hosts::{ListRepositoryHosts, UNPROBED};
use crate::proxy::repository::hosts::HostStatus;

/// What stands in an empty cell (nothing known yet, or nothing to say).
const NONE: &str = "–";

/// The page's content: the table, or why there is none (as the Warm backends page says it, e.g.
/// that no server runs on this data directory).
pub(super) async fn content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    let hosts = report(&state, &admin, ListRepositoryHosts {}).await;
    Ok(page(
        hosts
            .as_ref()
            .map(|r| r.hosts.as_slice())
            .map_err(String::as_str),
    ))
}

/// The table of `hosts` (or the failure to list them), then where else the same listing is.
fn page(hosts: Result<&[HostStatus], &str>) -> Markup {
    html! {
        @match hosts {
            Ok([]) => p { "The running server lists no repository hosts." },
            Ok(hosts) => (table(hosts)),
            Err(failed) => pre { (failed) },
        }
        p {
            "The same listing: " code { "pgssl " (ListRepositoryHosts::ACTION) }
            " (locally, or remotely with " code { "-s" } ") or " code { "GET /api/v1" (ListRepositoryHosts::PATH) } "."
        }
    }
}

fn table(hosts: &[HostStatus]) -> Markup {
    // A single host is never probed: its role and reachability are not news, say why once.
    let unprobed = matches!(hosts, [only] if !only.probed);
    html! {
        @if unprobed { p id="unprobed" { (UNPROBED) } }
        div.scroll {
            table id="repository-hosts" {
                thead {
                    tr {
                        th scope="col" { "Host" }
                        th scope="col" { "Role" }
                        th scope="col" { "Reachable" }
                        th scope="col" { "Timeline" }
                        th scope="col" { "Lag (bytes)" }
                        th scope="col" { "Lag (seconds)" }
                        th scope="col" { "Sessions" }
                        th scope="col" { "Warm backends" }
                        th scope="col" { "Last change" }
                        th scope="col" { "Last probe error" }
                    }
                }
                tbody { @for host in hosts { (row(host)) } }
            }
        }
    }
}

fn row(h: &HostStatus) -> Markup {
    let or_none = |value: Option<String>| value.unwrap_or_else(|| NONE.into());
    html! {
        tr data-host=(h.address) {
            th scope="row" { (h.address) }
            td.role {
                (h.role)
                @if let Some(reason) = &h.reason { br; span.reason { (reason) } }
            }
            td { (if h.reachable { "yes" } else { "no" }) }
            td { (or_none(h.timeline.map(|t| t.to_string()))) }
            td { (or_none(h.lag_bytes.map(|b| b.to_string()))) }
            td { (or_none(h.lag_seconds.map(|s| format!("{s:.1}")))) }
            td { (h.sessions) }
            td { (h.warm) }
            td { time datetime=(h.last_change) { (h.last_change) } }
            td.error-text {
                (h.error.as_deref().unwrap_or(NONE))
                @if let Some(says) = &h.patroni { br; "Patroni: " (says) }
            }
        }
    }
}

#[cfg(test)]
pub(in crate::admin::pages) mod tests {
    use super::*;

    /// A reachable host on timeline 1: what the page's tests vary.
    pub(in crate::admin::pages) fn host(address: &str, role: &str) -> HostStatus {
        HostStatus {
            address: address.into(),
            role: role.into(),
            reason: None,
            reachable: true,
            probed: true,
            timeline: Some(1),
            lag_bytes: None,
            lag_seconds: None,
            sessions: 0,
            warm: 0,
            last_ok: None,
            last_change: "2026-12-07T06:00:00Z".into(),
            error: None,
            patroni: None,
        }
    }

    /// The HTML of the row for `address`.
    fn row_of<'a>(html: &'a str, address: &str) -> &'a str {
        let start = html
            .find(&format!("<tr data-host=\"{address}\">"))
            .unwrap_or_else(|| panic!("no row for {address}: {html}"));
        let rest = &html[start..];
        &rest[..rest.find("</tr>").expect("the row ends")]
    }

    #[test]
    fn each_host_has_its_row_with_role_lag_counts_and_refusal() {
        let primary = HostStatus {
            sessions: 3,
            warm: 2,
            ..host("10.0.0.1:5432", "primary")
        };
        let standby = HostStatus {
            lag_bytes: Some(8192),
            lag_seconds: Some(1.5),
            timeline: Some(2),
            ..host("10.0.0.2:5432", "standby")
        };
        let refused = HostStatus {
            reason: Some("another cluster (system identifier 7)".into()),
            ..host("10.0.0.3:5432", "refused")
        };
        let down = HostStatus {
            reachable: false,
            timeline: None,
            error: Some("connection refused".into()),
            ..host("10.0.0.4:5432", "unknown")
        };
        let hosts = [primary, standby, refused, down];
        let html = page(Ok(&hosts)).into_string();
        assert_eq!(html.matches("<tr data-host=").count(), 4, "{html}");
        assert!(!html.contains(UNPROBED), "several hosts are probed: {html}");

        let row = row_of(&html, "10.0.0.1:5432");
        assert!(row.contains("<td class=\"role\">primary</td>"), "{row}");
        assert!(row.contains("<td>3</td><td>2</td>"), "{row}");
        let row = row_of(&html, "10.0.0.2:5432");
        assert!(row.contains("<td class=\"role\">standby</td>"), "{row}");
        assert!(row.contains("<td>2</td><td>8192</td><td>1.5</td>"), "{row}");
        let row = row_of(&html, "10.0.0.3:5432");
        assert!(
            row.contains("<td class=\"role\">refused<br><span class=\"reason\">another cluster (system identifier 7)</span></td>"),
            "{row}"
        );
        let row = row_of(&html, "10.0.0.4:5432");
        assert!(
            row.contains("<td class=\"role\">unknown</td><td>no</td>"),
            "{row}"
        );
        assert!(row.contains("connection refused"), "{row}");
        assert!(row.contains("datetime=\"2026-12-07T06:00:00Z\""), "{row}");
        assert!(
            html.contains("pgssl topology list-repository-hosts"),
            "{html}"
        );
    }

    #[test]
    fn a_single_unprobed_host_is_explained_once() {
        let only = HostStatus {
            probed: false,
            timeline: None,
            ..host("unix:/run/postgresql", "unknown")
        };
        let html = page(Ok(&[only])).into_string();
        assert_eq!(html.matches(UNPROBED).count(), 1, "{html}");
        assert_eq!(html.matches("<tr data-host=").count(), 1, "{html}");
    }

    #[test]
    fn what_hosts_and_probes_said_is_escaped() {
        let hostile = HostStatus {
            reason: Some("<script>alert(1)</script>".into()),
            error: Some("FATAL: \"<b>&".into()),
            ..host("<img src=x>:5432", "refused")
        };
        let html = page(Ok(&[hostile])).into_string();
        assert!(
            !html.contains("<script>alert") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("FATAL: &quot;&lt;b&gt;&amp;"), "{html}");
        assert!(
            html.contains("data-host=\"&lt;img src=x&gt;:5432\""),
            "{html}"
        );
    }

    #[test]
    fn a_failure_to_list_is_shown_instead_of_a_table() {
        let html = page(Err(
            "error: no pgssl server is running on this data directory",
        ))
        .into_string();
        assert!(
            html.contains("<pre>error: no pgssl server is running"),
            "{html}"
        );
        assert!(!html.contains("<table"), "{html}");
    }
}
