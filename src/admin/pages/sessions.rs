//! The Client sessions page: the running server's client sessions (`sessions list`), one table row
//! each, with a Terminate button per session and per role. maud escapes every value: user names,
//! application names, server names and certificate subjects are the clients' own words.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::forms::PageForm;
use super::{Shared, report};
use crate::admin::auth::Admin;
use crate::control::operations::model::Operation;
use crate::control::operations::sessions::{List, Terminate};
use crate::proxy::sessions::SessionInfo;

/// What stands in an empty cell.
const NONE: &str = "–";

/// The page's content: the table, or why there is none.
pub(super) async fn content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    let listed = report(&state, &admin, List::default()).await;
    Ok(page(
        listed
            .as_ref()
            .map(|r| r.sessions.as_slice())
            .map_err(String::as_str),
        &admin.csrf,
    ))
}

fn page(sessions: Result<&[SessionInfo], &str>, csrf: &str) -> Markup {
    html! {
        @match sessions {
            Ok([]) => p { "No client sessions." },
            Ok(sessions) => {
                p { (sessions.len()) " client sessions." }
                (table(sessions, csrf))
            }
            Err(failed) => pre { (failed) },
        }
        p {
            "The same listing: " code { "pgssl " (List::ACTION) }
            " (locally, or remotely with " code { "-s" } ") or " code { "GET /api/v1" (List::PATH) } ". "
            "A terminated client gets FATAL 57P01 and may reconnect; to keep a role out, disable its access."
        }
    }
}

fn table(sessions: &[SessionInfo], csrf: &str) -> Markup {
    html! {
        div.scroll {
            table id="sessions" {
                thead {
                    tr {
                        th scope="col" { "Id" }
                        th scope="col" { "User" }
                        th scope="col" { "Database" }
                        th scope="col" { "Application" }
                        th scope="col" { "Client" }
                        th scope="col" { "TLS" }
                        th scope="col" { "Authentication" }
                        th scope="col" { "Client certificate" }
                        th scope="col" { "State" }
                        th scope="col" { "Backend" }
                        th scope="col" { "Age (s)" }
                        th scope="col" { "Bytes in / out" }
                        th scope="col" { "End" }
                    }
                }
                tbody { @for s in sessions { (row(s, csrf)) } }
            }
        }
    }
}

fn row(s: &SessionInfo, csrf: &str) -> Markup {
    html! {
        tr data-session=(s.id) {
            th scope="row" {
                @if let Some(node) = &s.node { (node) ":" }
                (s.id)
            }
            td { (s.user) }
            td { (s.database) }
            td { (s.application_name) }
            td { (s.client_addr) }
            td {
                @match &s.tls {
                    Some(t) => {
                        (t.version) br; (t.cipher)
                        @if let Some(g) = &t.group { br; (g) }
                        @if let Some(sni) = &t.sni { br; "SNI " (sni) }
                    }
                    None => "none",
                }
            }
            td { (s.auth_method.as_deref().unwrap_or(NONE)) }
            td { (s.tls.as_ref().and_then(|t| t.client_cert_subject.as_deref()).unwrap_or(NONE)) }
            td.state { (s.state.label()) }
            td {
                @match s.backend_pid {
                    Some(pid) => { (s.backend_host.as_deref().unwrap_or(NONE)) ", pid " (pid) }
                    None => (NONE),
                }
            }
            td { (s.age_secs) }
            td { (s.bytes_to_repository) " / " (s.bytes_to_client) }
            td {
                form method="post" action=(super::nav::Page::Sessions.path()) {
                    input type="hidden" name="csrf_token" value=(csrf);
                    input type="hidden" name="id" value=(s.id);
                    @if let Some(node) = &s.node { input type="hidden" name="node" value=(node); }
                    button type="submit" aria-label=(format!("Terminate session {}", s.id)) { "Terminate" }
                }
            }
        }
    }
}

/// A Terminate button's form: one session by id (or, posted by hand, a role's sessions).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TerminateForm {
    id: Option<u64>,
    node: Option<String>,
    user: Option<String>,
}

impl PageForm for TerminateForm {
    type Request = Terminate;
    fn request(self) -> Result<Terminate, String> {
        if self.id.is_none() && self.user.is_none() {
            return Err("say which session to terminate".into());
        }
        Ok(Terminate {
            node: self.node,
            id: self.id,
            user: self.user,
            database: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::sessions::{SessionState, TlsFacts};

    fn session(id: u64, user: &str) -> SessionInfo {
        SessionInfo {
            id,
            node: None,
            user: user.into(),
            database: "workgroup".into(),
            application_name: "<script>alert(1)</script>".into(),
            client_addr: "192.0.2.7:50123".into(),
            tls: Some(TlsFacts {
                version: "TLSv1_3".into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                group: Some("X25519MLKEM768".into()),
                sni: None,
                client_cert_subject: Some("CN=tableau".into()),
            }),
            auth_method: Some("scram-sha-256-plus".into()),
            backend_host: Some("127.0.0.1:5432".into()),
            backend_pid: Some(4242),
            state: SessionState::InTransaction,
            started_at: "2026-12-07T06:00:00Z".into(),
            age_secs: 12,
            bytes_to_repository: 100,
            bytes_to_client: 2000,
        }
    }

    #[test]
    fn each_session_is_a_row_with_its_facts_escaped_and_a_terminate_form() {
        let html = page(Ok(&[session(7, "tableau"), session(9, "readonly")]), "tok").into_string();
        assert!(html.contains(r#"<tr data-session="7">"#), "{html}");
        assert!(html.contains(r#"<tr data-session="9">"#), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        for fact in [
            "TLS13_AES_128_GCM_SHA256",
            "X25519MLKEM768",
            "scram-sha-256-plus",
            "CN=tableau",
            "in transaction",
            "127.0.0.1:5432, pid 4242",
            "100 / 2000",
        ] {
            assert!(html.contains(fact), "{fact}: {html}");
        }
        assert!(html.contains(r#"name="id" value="7""#), "{html}");
        assert!(html.contains(r#"name="csrf_token" value="tok""#), "{html}");
        assert!(
            page(Ok(&[]), "tok")
                .into_string()
                .contains("No client sessions.")
        );
        let failed = page(Err("error: no pgssl server is running"), "tok").into_string();
        assert!(
            failed.contains("<pre>error: no pgssl server is running</pre>"),
            "{failed}"
        );
    }

    #[test]
    fn the_form_names_a_session_or_is_refused() {
        let by_id = TerminateForm {
            id: Some(7),
            node: Some("b".into()),
            user: None,
        };
        let request = by_id.request().unwrap();
        assert_eq!((request.id, request.node.as_deref()), (Some(7), Some("b")));
        let nothing = TerminateForm {
            id: None,
            node: None,
            user: None,
        };
        assert!(nothing.request().is_err());
    }
}
