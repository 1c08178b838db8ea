//! The JSON API under `/api/v1/` (documented in `src/admin/openapi.yaml`, served at
//! `/api/v1/openapi.yaml`). Each change calls the same
//! control-plane operation as the CLI and answers `{"ok": true, "messages": [...]}` with the CLI's
//! lines, or `{"error": "<the CLI's one-line message>"}` with a 4xx/5xx status.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::session::Session;
use super::{AdminState, Req, json_error, respond, session_cookie};
use crate::commands::{
    CommandError, OutputLine, custom_cert, data_access, external_ssl, pending_changes,
    regenerate_tokens, repository_ssl, vizql_extsvc,
};
use crate::state::atomic;
use crate::state::keystore::Secret;
use crate::state::security::ConnectionType;

type Resp = Response<Full<Bytes>>;

fn json_ok(value: Value) -> Resp {
    respond(StatusCode::OK, "application/json", value.to_string())
}

/// The status a failed operation maps to.
pub(crate) fn error_status(e: &CommandError) -> StatusCode {
    match e {
        CommandError::Refused(_)
        | CommandError::Cert(_)
        | CommandError::AdminUser(_)
        | CommandError::Config(_) => StatusCode::BAD_REQUEST,
        CommandError::Control(_) | CommandError::Managed(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn outcome(result: Result<(), CommandError>, lines: Vec<OutputLine>) -> Resp {
    match result {
        Ok(()) => json_ok(json!({ "ok": true, "messages": lines })),
        Err(e) => respond(
            error_status(&e),
            "application/json",
            json!({ "error": e.to_string().replace('\n', " "), "messages": lines }).to_string(),
        ),
    }
}

/// `POST /api/v1/session`: sign in with `{"username", "password"}`.
pub(crate) async fn sign_in(state: &Arc<AdminState>, req: &Req) -> Resp {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"username\": ..., \"password\": ...}",
        );
    };
    let (Some(user), Some(password)) = (body["username"].as_str(), body["password"].as_str())
    else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "username and password are required",
        );
    };
    match state.sign_in(req.peer, user, password).await {
        Ok((token, session)) => {
            let mut resp = json_ok(json!({ "username": user, "csrf_token": session.csrf }));
            resp.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&token, None));
            resp
        }
        Err(refusal) => {
            let (status, message, retry_after) = refusal.answer();
            let mut resp = json_error(status, &message);
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}

/// Routes an authenticated API request.
pub(crate) async fn route(
    state: &Arc<AdminState>,
    req: &Req,
    session: &Session,
    token: &str,
) -> Resp {
    let path = req.path.trim_end_matches('/');
    let Some(path) = path.strip_prefix("/api/v1") else {
        return json_error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not valid JSON: {e}"),
                );
            }
        }
    };
    let user = session.user.clone();
    let peer = req.peer;
    let act = |action: &'static str| (user.clone(), peer, action);
    match (&req.method, path) {
        (&Method::GET, "/session") => {
            json_ok(json!({ "username": session.user, "csrf_token": session.csrf }))
        }
        (&Method::DELETE, "/session") => {
            state.sessions().end(token);
            state
                .audit
                .record(&session.user, req.peer, "sign-out", "ok");
            let mut resp = json_ok(json!({ "ok": true }));
            resp.headers_mut()
                .insert(header::SET_COOKIE, session_cookie("", Some(0)));
            resp
        }
        (&Method::GET, "/repository-ssl") => {
            let (status, lines) = state
                .run(|ctx| {
                    let status = repository_ssl::status(ctx)?;
                    repository_ssl::list(ctx)?;
                    Ok(status)
                })
                .await;
            match status {
                Ok(s) => json_ok(json!({ "status": s, "messages": lines })),
                Err(e) => outcome(Err(e), lines),
            }
        }
        (&Method::POST, "/repository-ssl/enable") => {
            let internal_only = body["internal_only"].as_bool().unwrap_or(false);
            run(state, act("repository-ssl enable"), move |ctx| {
                repository_ssl::enable(ctx, internal_only)
            })
            .await
        }
        (&Method::POST, "/repository-ssl/disable") => {
            run(
                state,
                act("repository-ssl disable"),
                repository_ssl::disable,
            )
            .await
        }
        (&Method::GET, "/repository-ssl/certificate") => {
            let (pem, _) = state
                .run(|ctx| repository_ssl::served_certificate(ctx).map(|c| c.pem()))
                .await;
            match pem {
                Ok(pem) => {
                    let mut resp = respond(StatusCode::OK, "application/x-pem-file", pem);
                    resp.headers_mut().insert(
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"server.crt\""),
                    );
                    resp
                }
                Err(e) => outcome(Err(e), Vec::new()),
            }
        }
        (&Method::GET, "/pending-changes") => {
            let (changes, _) = state.run(pending_changes::describe).await;
            match changes {
                Ok(changes) => json_ok(json!({ "changes": changes })),
                Err(e) => outcome(Err(e), Vec::new()),
            }
        }
        (&Method::POST, "/pending-changes/apply") => {
            run(state, act("pending-changes apply"), |ctx| {
                pending_changes::apply(ctx, true)
            })
            .await
        }
        (&Method::POST, "/pending-changes/discard") => {
            run(
                state,
                act("pending-changes discard"),
                pending_changes::discard,
            )
            .await
        }
        (&Method::GET, "/external-ssl") => list(state, external_ssl::list).await,
        (&Method::POST, "/external-ssl/enable") => {
            finish(external_ssl_enable(state, act("external-ssl enable"), &body).await)
        }
        (&Method::POST, "/external-ssl/disable") => {
            run(state, act("external-ssl disable"), external_ssl::disable).await
        }
        (&Method::GET, "/custom-cert") => list(state, custom_cert::list).await,
        (&Method::POST, "/custom-cert/add") => {
            finish(custom_cert_add(state, act("custom-cert add"), &body).await)
        }
        (&Method::POST, "/custom-cert/delete") => {
            run(state, act("custom-cert delete"), custom_cert::delete).await
        }
        (&Method::GET, "/vizql-extsvc-ssl") => list(state, vizql_extsvc::list).await,
        (&Method::POST, "/vizql-extsvc-ssl/enable") => {
            finish(extsvc_enable(state, act("vizql-extsvc-ssl enable"), &body).await)
        }
        (&Method::POST, "/vizql-extsvc-ssl/disable") => {
            run(
                state,
                act("vizql-extsvc-ssl disable"),
                vizql_extsvc::disable,
            )
            .await
        }
        (&Method::POST, "/regenerate-internal-tokens") => {
            let secs = body["request_timeout_secs"].as_u64().unwrap_or(1800).max(1);
            run(state, act("regenerate-internal-tokens"), move |ctx| {
                regenerate_tokens::regenerate(ctx, Duration::from_secs(secs))
            })
            .await
        }
        (&Method::POST, "/data-access/enable") => {
            let Some(name) = direct_user(&body) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "repository_username must be tableau or readonly",
                );
            };
            let Some(password) = body["repository_password"]
                .as_str()
                .map(|p| Secret::new(p.to_string()))
            else {
                return json_error(StatusCode::BAD_REQUEST, "repository_password is required");
            };
            run(state, act("data-access enable"), move |ctx| {
                data_access::enable(ctx, &name, &password)
            })
            .await
        }
        (&Method::POST, "/data-access/disable") => {
            let Some(name) = direct_user(&body) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "repository_username must be tableau or readonly",
                );
            };
            run(state, act("data-access disable"), move |ctx| {
                data_access::disable(ctx, &name)
            })
            .await
        }
        (_, p) if KNOWN.contains(&p) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint",
        ),
        _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

const KNOWN: &[&str] = &[
    "/session",
    "/repository-ssl",
    "/repository-ssl/enable",
    "/repository-ssl/disable",
    "/repository-ssl/certificate",
    "/pending-changes",
    "/pending-changes/apply",
    "/pending-changes/discard",
    "/external-ssl",
    "/external-ssl/enable",
    "/external-ssl/disable",
    "/custom-cert",
    "/custom-cert/add",
    "/custom-cert/delete",
    "/vizql-extsvc-ssl",
    "/vizql-extsvc-ssl/enable",
    "/vizql-extsvc-ssl/disable",
    "/regenerate-internal-tokens",
    "/data-access/enable",
    "/data-access/disable",
];

fn direct_user(body: &Value) -> Option<String> {
    body["repository_username"]
        .as_str()
        .filter(|u| matches!(*u, "tableau" | "readonly"))
        .map(str::to_string)
}

async fn run<F>(
    state: &Arc<AdminState>,
    (user, peer, action): (String, IpAddr, &'static str),
    op: F,
) -> Resp
where
    F: FnOnce(&crate::commands::Context) -> Result<(), CommandError> + Send + 'static,
{
    let (result, lines) = state.perform(&user, peer, action, op).await;
    outcome(result, lines)
}

async fn list<F>(state: &Arc<AdminState>, op: F) -> Resp
where
    F: FnOnce(&crate::commands::Context) -> Result<(), CommandError> + Send + 'static,
{
    let (result, lines) = state.run(op).await;
    outcome(result, lines)
}

/// Uploaded files, written into a private folder for the operation and removed afterwards.
struct Upload {
    dir: PathBuf,
}

impl Upload {
    fn new(state: &AdminState) -> Result<Upload, String> {
        let id = crate::state::store::new_id().map_err(|e| e.to_string())?;
        let dir = state.data_dir.join("run").join("uploads").join(id);
        atomic::create_private_dir(&dir).map_err(|e| format!("cannot store the upload: {e}"))?;
        Ok(Upload { dir })
    }

    /// Writes `contents` as `name` (only its last path component), 0600.
    fn file(&self, name: &str, contents: &[u8]) -> Result<PathBuf, String> {
        let name = std::path::Path::new(name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .unwrap_or_else(|| "upload".into());
        let path = self.dir.join(name);
        atomic::write_file(&path, contents, atomic::PRIVATE_MODE)
            .map_err(|e| format!("cannot store the upload: {e}"))?;
        Ok(path)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An operation's result and report.
pub(crate) type Outcome = (Result<(), CommandError>, Vec<OutputLine>);
/// A request refused before any operation ran: status and message.
pub(crate) type Refusal = (StatusCode, String);

fn finish(result: Result<Outcome, Refusal>) -> Resp {
    match result {
        Ok((result, lines)) => outcome(result, lines),
        Err((status, message)) => json_error(status, &message),
    }
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body[key].as_str()
}

pub(crate) async fn external_ssl_enable(
    state: &Arc<AdminState>,
    act: (String, IpAddr, &'static str),
    body: &Value,
) -> Result<Outcome, Refusal> {
    let (Some(cert), Some(key)) = (text(body, "cert_pem"), text(body, "key_pem")) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "cert_pem and key_pem are required".to_string(),
        ));
    };
    let upload = match Upload::new(state) {
        Ok(u) => u,
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let files = (|| {
        let cert = upload.file(
            text(body, "cert_file_name").unwrap_or("server.crt"),
            cert.as_bytes(),
        )?;
        let key = upload.file(
            text(body, "key_file_name").unwrap_or("server.key"),
            key.as_bytes(),
        )?;
        let chain = text(body, "chain_pem")
            .map(|c| {
                upload.file(
                    text(body, "chain_file_name").unwrap_or("chain.crt"),
                    c.as_bytes(),
                )
            })
            .transpose()?;
        Ok::<_, String>((cert, key, chain))
    })();
    let (cert_file, key_file, chain_file) = match files {
        Ok(f) => f,
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let args = external_ssl::EnableArgs {
        cert_file,
        key_file,
        chain_file,
        passphrase: text(body, "passphrase").map(|p| Secret::new(p.to_string())),
        protocols: text(body, "protocols").map(str::to_string),
    };
    let (user, peer, action) = act;
    let done = state
        .perform(&user, peer, action, move |ctx| {
            external_ssl::enable(ctx, &args)
        })
        .await;
    drop(upload);
    Ok(done)
}

pub(crate) async fn custom_cert_add(
    state: &Arc<AdminState>,
    act: (String, IpAddr, &'static str),
    body: &Value,
) -> Result<Outcome, Refusal> {
    use base64::Engine;
    let contents = match (text(body, "cert_pem"), text(body, "cert_der_base64")) {
        (Some(pem), _) => pem.as_bytes().to_vec(),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(der) => der,
            Err(e) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("cert_der_base64 is not base64: {e}"),
                ));
            }
        },
        (None, None) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "cert_pem or cert_der_base64 is required".to_string(),
            ));
        }
    };
    let upload = match Upload::new(state) {
        Ok(u) => u,
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let file = match upload.file(
        text(body, "cert_file_name").unwrap_or("custom-ca.crt"),
        &contents,
    ) {
        Ok(f) => f,
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let (user, peer, action) = act;
    let done = state
        .perform(&user, peer, action, move |ctx| custom_cert::add(ctx, &file))
        .await;
    drop(upload);
    Ok(done)
}

pub(crate) async fn extsvc_enable(
    state: &Arc<AdminState>,
    act: (String, IpAddr, &'static str),
    body: &Value,
) -> Result<Outcome, Refusal> {
    let connection_type = match text(body, "connection_type").map(str::parse::<ConnectionType>) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err((StatusCode::BAD_REQUEST, e.to_string())),
        None => {
            return Err((
                StatusCode::BAD_REQUEST,
                "connection_type is required".to_string(),
            ));
        }
    };
    let Some(host) = text(body, "extsvc_host") else {
        return Err((
            StatusCode::BAD_REQUEST,
            "extsvc_host is required".to_string(),
        ));
    };
    let port = match body.get("extsvc_port").and_then(Value::as_u64) {
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "extsvc_port must be 1-65535".to_string(),
                ));
            }
        },
        None => None,
    };
    let upload = match Upload::new(state) {
        Ok(u) => u,
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let cert_file = match text(body, "cert_pem")
        .map(|c| {
            upload.file(
                text(body, "cert_file_name").unwrap_or("extsvc.crt"),
                c.as_bytes(),
            )
        })
        .transpose()
    {
        Ok(f) => f,
        Err(e) => return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let args = vizql_extsvc::EnableArgs {
        connection_type,
        host: host.to_string(),
        port,
        cert_file,
        username: text(body, "extsvc_username").map(str::to_string),
        password: text(body, "extsvc_password").map(|p| Secret::new(p.to_string())),
        connect_timeout_ms: body["connect_timeout_ms"]
            .as_u64()
            .unwrap_or(vizql_extsvc::DEFAULT_CONNECT_TIMEOUT_MS)
            .clamp(1, 600_000),
        script_disabled: body["script_disabled"].as_bool().unwrap_or(true),
        skip_check: body["skip_check"].as_bool().unwrap_or(false),
    };
    let (user, peer, action) = act;
    let done = state
        .perform(&user, peer, action, move |ctx| {
            vizql_extsvc::enable(ctx, &args)
        })
        .await;
    drop(upload);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_in_the_openapi_document() {
        for path in KNOWN {
            assert!(
                super::super::OPENAPI.contains(&format!("\n  {path}:\n")),
                "{path} is missing from openapi.yaml"
            );
        }
    }
}
