//! The web pages: sign-in, Configuration → Security → Repository SSL (the model's three options), the
//! other security pages, and a pending-changes banner with Apply and Discard on every page.
//! Server-rendered HTML with labels and plain forms (keyboard-usable without script); one small script
//! only shows progress while an apply runs.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::session::{Flash, Session};
use super::{AdminState, Req, respond, session_cookie};
use crate::control::operations::{
    OutputLine, custom_cert, external_ssl, pending_changes, regenerate_tokens, repository_ssl,
    vizql_extsvc,
};
use crate::proxy::policy::Mode;

type Resp = Response<Full<Bytes>>;

const SCRIPT: &str = r#"// pgssl admin: show progress while a long form post (apply, regenerate) runs.
document.querySelectorAll('form[data-progress]').forEach(function (form) {
  form.addEventListener('submit', function () {
    form.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    var status = document.getElementById('progress');
    if (status) { status.textContent = form.getAttribute('data-progress'); }
  });
});
"#;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f}header{background:#1f3a5f;color:#fff;padding:.6rem 1rem}\
header a{color:#fff}nav{float:left;width:15rem;padding:1rem}nav ul{list-style:none;padding:0}nav li{margin:.4rem 0}\
main{margin-left:16rem;padding:1rem;max-width:50rem}.banner{background:#fff4ce;border:1px solid #c9a227;padding:.6rem 1rem;margin-bottom:1rem}\
.flash{background:#e6f4ea;border:1px solid #2e7d32;padding:.6rem 1rem;margin-bottom:1rem;white-space:pre-wrap;overflow-wrap:anywhere}\
.error{background:#fdecea;border-color:#c62828}fieldset{border:1px solid #ccc;margin:1rem 0}label{display:block;margin:.4rem 0}\
button{padding:.4rem 1rem;margin-right:.5rem}dl{display:grid;grid-template-columns:12rem 1fr}dt{font-weight:600}pre{background:#f5f5f5;padding:.6rem}";

/// The script, served from our origin so the content security policy can forbid inline script.
pub(crate) fn script() -> Resp {
    respond(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
}

/// A 303 redirect.
pub(crate) fn redirect(to: &str) -> Resp {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// HTML-escapes `s`.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A field of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (url_decode(k)? == name).then(|| url_decode(v)).flatten()
    })
}

fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn page(title: &str, body: &str) -> Resp {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · pgssl</title><style>{STYLE}</style></head><body>{body}<script src=\"/static/pgssl.js\"></script></body></html>",
        esc(title)
    );
    let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", html);
    // The stylesheet is inline; allow exactly that.
    resp.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'"),
    );
    resp
}

/// The sign-in page.
pub(crate) fn login_page(error: Option<&str>) -> Resp {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"flash error\" role=\"alert\">{}</p>", esc(e))
    });
    page(
        "Sign in",
        &format!(
            "<header><strong>pgssl</strong> services manager</header><main style=\"margin-left:1rem\"><h1>Sign in</h1>{error}\
             <form method=\"post\" action=\"/login\"><label for=\"username\">User name</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <p><button type=\"submit\" id=\"sign-in\">Sign in</button></p></form></main>"
        ),
    )
}

/// `POST /login`: signs in from the form.
pub(crate) async fn login(state: &Arc<AdminState>, req: &Req) -> Resp {
    let user = form_field(&req.body, "username").unwrap_or_default();
    let password = form_field(&req.body, "password").unwrap_or_default();
    let (status, message, retry_after) = match state.sign_in(req.peer, &user, &password).await {
        Ok((token, _)) => {
            let mut resp = redirect("/security/repository-ssl");
            resp.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&token, None));
            return resp;
        }
        Err(refusal) => refusal.answer(),
    };
    // The page speaks in sentences: capitalise the shared message.
    let mut chars = message.chars();
    let sentence = chars
        .next()
        .map(|c| format!("{}{}.", c.to_uppercase(), chars.as_str()))
        .unwrap_or_default();
    let mut resp = login_page(Some(&sentence));
    *resp.status_mut() = status;
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

const NAV: [(&str, &str); 5] = [
    ("/security/repository-ssl", "Repository SSL"),
    ("/security/external-ssl", "External SSL"),
    ("/security/custom-cert", "Custom certificate"),
    ("/security/vizql-extsvc-ssl", "External service"),
    ("/security/regenerate-internal-tokens", "Regenerate tokens"),
];

/// Routes an authenticated page request.
pub(crate) async fn route(
    state: &Arc<AdminState>,
    req: &Req,
    session: &Session,
    token: &str,
) -> Resp {
    let user = session.user.clone();
    let peer = req.peer;
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/") => redirect("/security/repository-ssl"),
        (&Method::POST, "/logout") => {
            state.sessions().end(token);
            state.audit.record(&user, peer, "sign-out", "ok").await;
            let mut resp = redirect("/login");
            resp.headers_mut()
                .insert(header::SET_COOKIE, session_cookie("", Some(0)));
            resp
        }
        (&Method::GET, "/security/repository-ssl") => {
            repository_ssl_page(state, session, token).await
        }
        (&Method::POST, "/security/repository-ssl") => {
            let choice = form_field(&req.body, "mode").unwrap_or_default();
            let (result, lines) = match choice.as_str() {
                "required" | "optional" => {
                    let internal_only = choice == "optional";
                    state
                        .perform(&user, peer, "repository-ssl enable", move |ctx| {
                            repository_ssl::enable(ctx, internal_only)
                        })
                        .await
                }
                "off" => {
                    state
                        .perform(
                            &user,
                            peer,
                            "repository-ssl disable",
                            repository_ssl::disable,
                        )
                        .await
                }
                _ => {
                    return respond(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        "choose one of the three options",
                    );
                }
            };
            flash(state, token, result, lines);
            redirect("/security/repository-ssl")
        }
        (&Method::POST, "/pending-changes/apply") => {
            let (result, lines) = state
                .perform(&user, peer, "pending-changes apply", |ctx| {
                    pending_changes::apply(ctx, true)
                })
                .await;
            flash(state, token, result, lines);
            redirect(&back(req))
        }
        (&Method::POST, "/pending-changes/discard") => {
            let (result, lines) = state
                .perform(
                    &user,
                    peer,
                    "pending-changes discard",
                    pending_changes::discard,
                )
                .await;
            flash(state, token, result, lines);
            redirect(&back(req))
        }
        (&Method::GET, "/security/external-ssl") => {
            let form = external_ssl_form(session);
            listing_page(state, session, token, 1, external_ssl::list, &form).await
        }
        (&Method::GET, "/security/custom-cert") => {
            let form = custom_cert_form(session);
            listing_page(state, session, token, 2, custom_cert::list, &form).await
        }
        (&Method::GET, "/security/vizql-extsvc-ssl") => {
            let form = extsvc_form(session);
            listing_page(state, session, token, 3, vizql_extsvc::list, &form).await
        }
        (&Method::GET, "/security/regenerate-internal-tokens") => {
            let form = format!(
                "<p>Generates a new internal certificate, new passwords for the internal roles and a new master key, without downtime.</p>\
                 <form method=\"post\" action=\"/security/regenerate-internal-tokens\" data-progress=\"Regenerating…\">{}\
                 <button type=\"submit\">Regenerate internal tokens</button></form><p id=\"progress\" role=\"status\" aria-live=\"polite\"></p>",
                csrf_input(session)
            );
            shell(state, session, token, 4, &form).await
        }
        (&Method::POST, "/security/regenerate-internal-tokens") => {
            let (result, lines) = state
                .perform(&user, peer, "regenerate-internal-tokens", |ctx| {
                    regenerate_tokens::regenerate(
                        ctx,
                        std::time::Duration::from_secs(regenerate_tokens::DEFAULT_TIMEOUT_SECS),
                    )
                })
                .await;
            flash(state, token, result, lines);
            redirect("/security/regenerate-internal-tokens")
        }
        (&Method::POST, "/security/external-ssl") => {
            let body = form_json(
                &req.body,
                &[
                    "cert_pem",
                    "key_pem",
                    "chain_pem",
                    "passphrase",
                    "protocols",
                ],
            );
            let act = (user, peer, "external-ssl enable");
            let done = match form_request(&body) {
                Ok(body) => super::api::external_ssl_enable(state, act, body).await,
                Err(refusal) => Err(refusal),
            };
            flash_outcome(state, token, done);
            redirect("/security/external-ssl")
        }
        (&Method::POST, "/security/external-ssl/disable") => {
            let done = state
                .perform(&user, peer, "external-ssl disable", external_ssl::disable)
                .await;
            flash(state, token, done.0, done.1);
            redirect("/security/external-ssl")
        }
        (&Method::POST, "/security/custom-cert") => {
            let body = form_json(&req.body, &["cert_pem"]);
            let act = (user, peer, "custom-cert add");
            let done = match form_request(&body) {
                Ok(body) => super::api::custom_cert_add(state, act, body).await,
                Err(refusal) => Err(refusal),
            };
            flash_outcome(state, token, done);
            redirect("/security/custom-cert")
        }
        (&Method::POST, "/security/custom-cert/delete") => {
            let done = state
                .perform(&user, peer, "custom-cert delete", custom_cert::delete)
                .await;
            flash(state, token, done.0, done.1);
            redirect("/security/custom-cert")
        }
        (&Method::POST, "/security/vizql-extsvc-ssl") => {
            let mut body = form_json(
                &req.body,
                &[
                    "connection_type",
                    "extsvc_host",
                    "cert_pem",
                    "extsvc_username",
                    "extsvc_password",
                ],
            );
            for number in ["extsvc_port", "connect_timeout_ms"] {
                if let Some(n) =
                    form_field(&req.body, number).and_then(|v| v.trim().parse::<u64>().ok())
                {
                    body[number] = serde_json::json!(n);
                }
            }
            body["script_disabled"] = serde_json::json!(
                form_field(&req.body, "script_disabled").as_deref() != Some("false")
            );
            body["skip_check"] = serde_json::json!(form_field(&req.body, "skip_check").is_some());
            let act = (user, peer, "vizql-extsvc-ssl enable");
            let done = match form_request(&body) {
                Ok(body) => super::api::extsvc_enable(state, act, body).await,
                Err(refusal) => Err(refusal),
            };
            flash_outcome(state, token, done);
            redirect("/security/vizql-extsvc-ssl")
        }
        (&Method::POST, "/security/vizql-extsvc-ssl/disable") => {
            let done = state
                .perform(
                    &user,
                    peer,
                    "vizql-extsvc-ssl disable",
                    vizql_extsvc::disable,
                )
                .await;
            flash(state, token, done.0, done.1);
            redirect("/security/vizql-extsvc-ssl")
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found",
        ),
    }
}

/// Where a banner form came from (a local path only).
fn back(req: &Req) -> String {
    form_field(&req.body, "back")
        .filter(|b| b.starts_with("/security/") && !b.contains("//"))
        .unwrap_or_else(|| "/security/repository-ssl".into())
}

fn flash(
    state: &Arc<AdminState>,
    token: &str,
    result: Result<(), crate::control::operations::CommandError>,
    lines: Vec<OutputLine>,
) {
    let flash = Flash {
        failed: result.is_err(),
        text: report_text(result, lines),
    };
    if let Some(s) = state.sessions().touch(token) {
        s.flash = Some(flash);
    }
}

/// An operation's report as text, its error (if any) as the last line.
fn report_text(
    result: Result<(), crate::control::operations::CommandError>,
    lines: Vec<OutputLine>,
) -> String {
    let mut text: Vec<String> = lines
        .into_iter()
        .map(|l| match l {
            OutputLine::Info(t) | OutputLine::Warning(t) => t,
        })
        .collect();
    if let Err(e) = result {
        text.push(format!("error: {e}"));
    }
    text.join("\n")
}

fn flash_outcome(
    state: &Arc<AdminState>,
    token: &str,
    done: Result<super::api::Outcome, super::api::Refusal>,
) {
    match done {
        Ok((result, lines)) => flash(state, token, result, lines),
        Err((_, message)) => flash(
            state,
            token,
            Err(crate::control::operations::CommandError::Invalid(message)),
            Vec::new(),
        ),
    }
}

/// The non-empty `fields` of a form, as the API's JSON body.
/// A form's fields as the API's typed request, refused the API's way when they do not fit it.
fn form_request<T: serde::de::DeserializeOwned>(
    body: &serde_json::Value,
) -> Result<T, super::api::Refusal> {
    super::requests::parse(body.to_string().as_bytes()).map_err(|e| (StatusCode::BAD_REQUEST, e))
}

fn form_json(body: &[u8], fields: &[&str]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for field in fields {
        if let Some(value) = form_field(body, field).filter(|v| !v.trim().is_empty()) {
            map.insert((*field).to_string(), serde_json::Value::String(value));
        }
    }
    serde_json::Value::Object(map)
}

fn text_area(id: &str, label: &str, required: bool) -> String {
    format!(
        "<label for=\"{id}\">{label}</label><textarea id=\"{id}\" name=\"{id}\" rows=\"5\" cols=\"70\" spellcheck=\"false\"{}></textarea>",
        if required { " required" } else { "" }
    )
}

fn external_ssl_form(session: &Session) -> String {
    format!(
        "<h2>Enable with your certificate</h2><form method=\"post\" action=\"/security/external-ssl\">{csrf}{}{}{}\
         <label for=\"passphrase\">Key passphrase (only for an encrypted key)</label><input type=\"password\" id=\"passphrase\" name=\"passphrase\" autocomplete=\"off\">\
         <label for=\"protocols\">Protocols</label><input id=\"protocols\" name=\"protocols\" value=\"all, -SSLv2, -SSLv3\" size=\"40\">\
         <p><button type=\"submit\">Stage external SSL</button></p></form>\
         <form method=\"post\" action=\"/security/external-ssl/disable\">{csrf}<button type=\"submit\">Stage disable</button></form>",
        text_area("cert_pem", "Certificate (PEM; the chain may follow)", true),
        text_area("key_pem", "Private key (PEM)", true),
        text_area("chain_pem", "Chain (PEM, optional)", false),
        csrf = csrf_input(session)
    )
}

fn custom_cert_form(session: &Session) -> String {
    format!(
        "<h2>Add a CA certificate</h2><form method=\"post\" action=\"/security/custom-cert\">{csrf}{}\
         <p><button type=\"submit\">Stage add</button></p></form>\
         <form method=\"post\" action=\"/security/custom-cert/delete\">{csrf}<button type=\"submit\">Stage delete</button></form>",
        text_area("cert_pem", "CA certificate (PEM)", true),
        csrf = csrf_input(session)
    )
}

fn extsvc_form(session: &Session) -> String {
    format!(
        "<h2>Enable a connection</h2><form method=\"post\" action=\"/security/vizql-extsvc-ssl\">{csrf}\
         <label for=\"connection_type\">Connection type</label><select id=\"connection_type\" name=\"connection_type\">\
         <option value=\"rserve\">Rserve</option><option value=\"rserve-secure\">Rserve (TLS)</option>\
         <option value=\"tabpy\">TabPy</option><option value=\"tabpy-secure\">TabPy (TLS)</option></select>\
         <label for=\"extsvc_host\">Host</label><input id=\"extsvc_host\" name=\"extsvc_host\" required>\
         <label for=\"extsvc_port\">Port (default 6311 for Rserve, 9004 for TabPy)</label><input id=\"extsvc_port\" name=\"extsvc_port\" inputmode=\"numeric\">\
         {}<label for=\"extsvc_username\">User name</label><input id=\"extsvc_username\" name=\"extsvc_username\" autocomplete=\"off\">\
         <label for=\"extsvc_password\">Password</label><input type=\"password\" id=\"extsvc_password\" name=\"extsvc_password\" autocomplete=\"off\">\
         <label for=\"connect_timeout_ms\">Connect timeout (ms)</label><input id=\"connect_timeout_ms\" name=\"connect_timeout_ms\" value=\"1000\" inputmode=\"numeric\">\
         <label for=\"script_disabled\">Scripts</label><select id=\"script_disabled\" name=\"script_disabled\"><option value=\"true\">disabled</option><option value=\"false\">enabled</option></select>\
         <label for=\"skip_check\"><input type=\"checkbox\" id=\"skip_check\" name=\"skip_check\"> Skip the TLS check</label>\
         <p><button type=\"submit\">Stage connection</button></p></form>\
         <form method=\"post\" action=\"/security/vizql-extsvc-ssl/disable\">{csrf}<button type=\"submit\">Stage disable</button></form>",
        text_area(
            "cert_pem",
            "Service certificate or its CA (PEM, TLS types only)",
            false
        ),
        csrf = csrf_input(session)
    )
}

fn csrf_input(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf_token\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// Navigation, the flash message and the pending-changes banner around `content`.
async fn shell(
    state: &Arc<AdminState>,
    session: &Session,
    token: &str,
    current: usize,
    content: &str,
) -> Resp {
    // A banner that cannot be read is left out; the page itself says what failed.
    let pending = state
        .run(pending_changes::describe)
        .await
        .0
        .unwrap_or_default();
    let flash = state.sessions().touch(token).and_then(|s| s.flash.take());
    let (title, path) = (NAV[current].1, NAV[current].0);
    let mut html = format!(
        "<header><strong>pgssl</strong> services manager · Configuration · signed in as {} \
         <form method=\"post\" action=\"/logout\" style=\"display:inline\">{}<button type=\"submit\">Sign out</button></form></header>\
         <nav aria-label=\"Security\"><h2>Security</h2><ul>",
        esc(&session.user),
        csrf_input(session)
    );
    for (i, (href, label)) in NAV.iter().enumerate() {
        let current_attr = if i == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            html,
            "<li><a href=\"{href}\"{current_attr}>{label}</a></li>"
        );
    }
    html.push_str("</ul></nav><main>");
    if !pending.is_empty() {
        let _ = write!(
            html,
            "<section class=\"banner\" aria-labelledby=\"pending-title\"><h2 id=\"pending-title\">Pending changes</h2><ul>"
        );
        for line in &pending {
            let _ = write!(html, "<li>{}</li>", esc(line));
        }
        let _ = write!(
            html,
            "</ul><form method=\"post\" action=\"/pending-changes/apply\" data-progress=\"Applying pending changes…\" style=\"display:inline\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{path}\">\
             <button type=\"submit\" id=\"apply\">Apply changes</button></form>\
             <form method=\"post\" action=\"/pending-changes/discard\" style=\"display:inline\">{csrf}<input type=\"hidden\" name=\"back\" value=\"{path}\">\
             <button type=\"submit\" id=\"discard\">Discard changes</button></form><p id=\"progress\" role=\"status\" aria-live=\"polite\"></p></section>",
            csrf = csrf_input(session)
        );
    }
    if let Some(flash) = flash {
        let class = if flash.failed { "flash error" } else { "flash" };
        let _ = write!(
            html,
            "<div class=\"{class}\" role=\"status\" id=\"result\">{}</div>",
            esc(&flash.text)
        );
    }
    let _ = write!(html, "<h1>{title}</h1>{content}</main>");
    page(title, &html)
}

async fn repository_ssl_page(state: &Arc<AdminState>, session: &Session, token: &str) -> Resp {
    let status = match state.run(repository_ssl::status).await.0 {
        Ok(s) => s,
        Err(e) => {
            return respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                e.to_string(),
            );
        }
    };
    // The applied option is the one checked; a staged one shows in the pending-changes banner.
    let selected = status.mode;
    let option = |mode: Mode, id: &str, label: &str, help: &str| {
        let checked = if selected == mode { " checked" } else { "" };
        format!(
            "<label for=\"{id}\"><input type=\"radio\" name=\"mode\" id=\"{id}\" value=\"{mode}\"{checked}> {label}</label>\
             <p style=\"margin:0 0 .6rem 1.6rem;color:#555\">{help}</p>"
        )
    };
    let mut content = format!(
        "<p>Applied option: <strong id=\"applied-mode\">{}</strong></p>\
         <form method=\"post\" action=\"/security/repository-ssl\">{}<fieldset><legend>SSL for connections to the repository</legend>{}{}{}</fieldset>\
         <button type=\"submit\" id=\"ok\">OK</button></form>",
        esc(status.mode.description()),
        csrf_input(session),
        option(
            Mode::Required,
            "mode-required",
            "Required for all connections",
            "Every user must connect with SSL."
        ),
        option(
            Mode::Optional,
            "mode-optional",
            "Optional for user connections",
            "Internal services must use SSL; the direct users tableau and readonly may choose."
        ),
        option(
            Mode::Off,
            "mode-off",
            "Off for all connections",
            "No SSL is offered."
        ),
    );
    match &status.certificate {
        Some(c) => {
            let _ = write!(
                content,
                "<h2>Certificate{}</h2><dl><dt>Subject</dt><dd>{}</dd><dt>Issuer</dt><dd>{}</dd><dt>Subject alternative names</dt><dd>{}</dd>\
                 <dt>SHA-256 fingerprint</dt><dd><code>{}</code></dd><dt>Expires</dt><dd>{}</dd></dl>\
                 <p><a href=\"/api/v1/repository-ssl/certificate\" download=\"server.crt\">Download the public certificate (server.crt)</a></p>",
                if status.external_ssl {
                    " (external SSL)"
                } else {
                    ""
                },
                esc(&c.subject),
                esc(&c.issuer),
                esc(&c.subject_alt_names.join(", ")),
                esc(&c.sha256_fingerprint),
                esc(&c.not_after)
            );
        }
        None => content
            .push_str("<h2>Certificate</h2><p>None yet: choosing an SSL option generates one.</p>"),
    }
    shell(state, session, token, 0, &content).await
}

async fn listing_page<F>(
    state: &Arc<AdminState>,
    session: &Session,
    token: &str,
    current: usize,
    op: F,
    forms: &str,
) -> Resp
where
    F: FnOnce(
            &crate::control::operations::Context,
        ) -> Result<(), crate::control::operations::CommandError>
        + Send
        + 'static,
{
    let (result, lines) = state.run(op).await;
    let text = report_text(result, lines);
    let content = format!(
        "<h2>Current settings</h2><pre>{}</pre>{forms}<p>The same changes can be made with the <code>pgssl security</code> commands (locally, or remotely with <code>-s</code>) or the API under <code>/api/v1/</code>.</p>",
        esc(&text)
    );
    shell(state, session, token, current, &content).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_decode_and_html_escapes() {
        let body = b"csrf_token=ab%2Fc&mode=optional&back=%2Fsecurity%2Fx+y";
        assert_eq!(form_field(body, "csrf_token").as_deref(), Some("ab/c"));
        assert_eq!(form_field(body, "mode").as_deref(), Some("optional"));
        assert_eq!(form_field(body, "back").as_deref(), Some("/security/x y"));
        assert_eq!(form_field(body, "nope"), None);
        assert_eq!(form_field(b"x=%zz", "x"), None);
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
