//! The Status page, where a signed-in administrator lands: `pgssl status` as tables — this node and
//! the cluster's nodes, the repository's hosts, client sessions by user and TLS, the warm
//! backends, the certificates with their expiry, the changes waiting for apply. maud escapes every
//! value (user names are the clients' own words).

use axum::response::Response;
use maud::{Markup, html};

use super::{Shared, report};
use crate::admin::auth::Admin;
use crate::control::operations::model::Operation;
use crate::control::operations::status::{Status, StatusReport};

/// The page's content: the report's tables, or why there is none.
pub(super) async fn content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    Ok(match report(&state, &admin, Status {}).await {
        Ok(status) => page(&status),
        Err(failed) => html! { pre { (failed) } },
    })
}

fn page(s: &StatusReport) -> Markup {
    let n = &s.node;
    html! {
        @for problem in &s.problems { p.error-text role="status" { "Could not read " (problem) "." } }
        h2 { "This node" }
        table id="status-node" {
            tbody {
                tr { th scope="row" { "pgssl version" } td { (n.version) } }
                tr { th scope="row" { "Server" } td { (if n.running { "running" } else { "not running" }) } }
                @if let Some(listen) = &n.listen { tr { th scope="row" { "Listens on" } td { (listen) } } }
                @if let Some(repository) = &n.repository { tr { th scope="row" { "Repository" } td { (repository) } } }
                tr { th scope="row" { "Repository SSL" } td id="status-mode" { (n.mode) } }
                @if let Some(name) = &n.cluster_name { tr { th scope="row" { "Cluster node" } td { (name) } } }
            }
        }
        @if !s.nodes.is_empty() {
            h2 { "Cluster nodes" }
            div.scroll { table id="status-nodes" {
                thead { tr { th scope="col" { "Node" } th scope="col" { "Live" } th scope="col" { "State version served" } th scope="col" { "Last heartbeat" } th scope="col" { "Address" } } }
                tbody { @for node in &s.nodes {
                    tr data-node=(node.name) {
                        th scope="row" { (node.name) }
                        td.live { (if node.is_live() { "yes" } else if node.removed { "removed" } else { "no" }) }
                        td { (node.version) }
                        td { time datetime=(node.heartbeat) { (node.heartbeat) } }
                        td { (node.address) }
                    }
                } }
            } }
        }
        @if !s.repository_hosts.is_empty() {
            h2 { "Repository hosts" }
            div.scroll { table id="status-hosts" {
                thead { tr { th scope="col" { "Host" } th scope="col" { "Role" } th scope="col" { "Reachable" } th scope="col" { "Sessions" } th scope="col" { "Warm backends" } } }
                tbody { @for h in &s.repository_hosts {
                    tr data-host=(h.address) {
                        th scope="row" { (h.address) }
                        td { (h.role) }
                        td { (if h.reachable { "yes" } else { "no" }) }
                        td { (h.sessions) }
                        td { (h.warm) }
                    }
                } }
            } }
        }
        h2 { "Client sessions" }
        @if s.sessions.is_empty() {
            p { "None." }
        } @else {
            div.scroll { table id="status-sessions" {
                thead { tr { th scope="col" { "User" } th scope="col" { "TLS" } th scope="col" { "Sessions" } th scope="col" { "Holding a backend" } } }
                tbody { @for c in &s.sessions {
                    tr data-user=(c.user) data-tls=(c.tls) {
                        th scope="row" { (c.user) }
                        td { (c.tls) }
                        td.count { (c.sessions) }
                        td { (c.with_backend) }
                    }
                } }
            } }
            p { a href=(super::nav::Page::Sessions.path()) { "Every session, with a Terminate button" } }
        }
        @if let Some(pool) = s.pool.as_ref().filter(|p| p.enabled) {
            h2 { "Warm backends" }
            p {
                (pool.keys.iter().map(|k| k.busy).sum::<usize>()) " busy, "
                (pool.keys.iter().map(|k| k.idle).sum::<usize>()) " idle, "
                (pool.waiting) " clients waiting; " (pool.mode) " mode. "
                a href=(super::nav::Page::Pool.path()) { "Per role and database" }
            }
        }
        h2 { "Certificates" }
        @if s.certificates.is_empty() {
            p { "None: repository SSL is off and nothing else is configured." }
        } @else {
            div.scroll { table id="status-certificates" {
                thead { tr { th scope="col" { "Use" } th scope="col" { "Subject" } th scope="col" { "Expires" } } }
                tbody { @for c in &s.certificates {
                    tr data-certificate=(c.certificate) {
                        th scope="row" { (c.certificate) }
                        td { (c.subject) }
                        td.expiry {
                            @if c.days_left < 0 { strong { "expired " (-c.days_left) " days ago" } }
                            @else if c.days_left < crate::control::expiry::WARN_DAYS { strong { "in " (c.days_left) " days" } }
                            @else { "in " (c.days_left) " days" }
                        }
                    }
                } }
            } }
        }
        h2 { "Pending changes" }
        @if s.pending.is_empty() {
            p id="status-pending" { "None." }
        } @else {
            ul id="status-pending" { @for line in &s.pending { li { (line) } } }
            p { "Apply or discard them with the buttons above." }
        }
        p {
            "The same report: " code { "pgssl " (Status::ACTION) }
            " (locally, or remotely with " code { "-s" } ") or " code { "GET /api/v1" (Status::PATH) } "."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::operations::status::{CertificateStatus, SessionCount, ThisNode};

    #[test]
    fn each_part_is_a_table_and_values_are_escaped() {
        let report = StatusReport {
            node: ThisNode {
                version: "1.0.0".into(),
                running: true,
                listen: Some("127.0.0.1:6432".into()),
                repository: Some("127.0.0.1:5432".into()),
                mode: "required".into(),
                cluster_name: None,
            },
            nodes: Vec::new(),
            repository_hosts: vec![super::super::hosts::tests::host("10.0.0.1:5432", "primary")],
            sessions: vec![SessionCount {
                user: "<b>x</b>".into(),
                tls: "TLSv1_3".into(),
                sessions: 3,
                with_backend: 1,
            }],
            pool: None,
            certificates: vec![CertificateStatus {
                certificate: "served".into(),
                subject: "CN=repo".into(),
                days_left: 12,
            }],
            pending: vec!["repository-ssl mode: required -> off".into()],
            problems: Vec::new(),
        };
        let html = page(&report).into_string();
        for part in [
            "status-node",
            "status-hosts",
            "status-sessions",
            "status-certificates",
        ] {
            assert!(
                html.contains(&format!("<table id=\"{part}\">")),
                "{part}: {html}"
            );
        }
        assert!(!html.contains("<pre>"), "{html}");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(html.contains("<strong>in 12 days</strong>"), "{html}");
        assert!(html.contains("required -&gt; off"), "{html}");
        assert!(
            !html.contains("status-nodes"),
            "no cluster, no nodes table: {html}"
        );
    }
}
