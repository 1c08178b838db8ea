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

use super::requests;
use super::session::Session;
use super::{AdminState, Req, json_error, respond, session_cookie};
use crate::atomic;
use crate::control::operations::{
    CommandError, OutputLine, custom_cert, data_access, external_ssl, pending_changes,
    regenerate_tokens, repository_ssl, vizql_extsvc,
};
use crate::keystore::Secret;

type Resp = Response<Full<Bytes>>;

fn json_ok(value: Value) -> Resp {
    respond(StatusCode::OK, "application/json", value.to_string())
}

/// The status a failed operation maps to: its kind's (user 400, server 500, upstream 503).
pub(crate) fn error_status(e: &CommandError) -> StatusCode {
    StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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
    let body: requests::SignIn = match requests::parse(&req.body) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let (user, password) = (body.username.as_str(), body.password.as_str());
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
    // Each change reads its own typed body; one without arguments takes none.
    macro_rules! body {
        ($t:ty) => {
            match requests::parse::<$t>(&req.body) {
                Ok(b) => b,
                Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
            }
        };
    }
    if req.method == Method::POST
        && NO_ARGUMENTS.contains(&path)
        && let Err(e) = requests::parse::<requests::NoArguments>(&req.body)
    {
        return json_error(StatusCode::BAD_REQUEST, &e);
    }
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
                .record(&session.user, req.peer, "sign-out", "ok")
                .await;
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
            let internal_only = body!(requests::RepositorySslEnable).internal_only;
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
            let body = body!(requests::ExternalSslEnable);
            finish(external_ssl_enable(state, act("external-ssl enable"), body).await)
        }
        (&Method::POST, "/external-ssl/disable") => {
            run(state, act("external-ssl disable"), external_ssl::disable).await
        }
        (&Method::GET, "/custom-cert") => list(state, custom_cert::list).await,
        (&Method::POST, "/custom-cert/add") => {
            let body = body!(requests::CustomCertAdd);
            finish(custom_cert_add(state, act("custom-cert add"), body).await)
        }
        (&Method::POST, "/custom-cert/delete") => {
            run(state, act("custom-cert delete"), custom_cert::delete).await
        }
        (&Method::GET, "/vizql-extsvc-ssl") => list(state, vizql_extsvc::list).await,
        (&Method::POST, "/vizql-extsvc-ssl/enable") => {
            let body = body!(requests::ExtsvcEnable);
            finish(extsvc_enable(state, act("vizql-extsvc-ssl enable"), body).await)
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
            let secs = body!(requests::RegenerateTokens).request_timeout_secs;
            if !(1..=regenerate_tokens::MAX_TIMEOUT_SECS).contains(&secs) {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "invalid request body: field 'request_timeout_secs' must be 1 to {}",
                        regenerate_tokens::MAX_TIMEOUT_SECS
                    ),
                );
            }
            run(state, act("regenerate-internal-tokens"), move |ctx| {
                regenerate_tokens::regenerate(ctx, Duration::from_secs(secs))
            })
            .await
        }
        (&Method::POST, "/data-access/enable") => {
            let body = body!(requests::DataAccessEnable);
            let name = body.repository_username.name();
            let password = Secret::new(body.repository_password);
            run(state, act("data-access enable"), move |ctx| {
                data_access::enable(ctx, name, &password)
            })
            .await
        }
        (&Method::POST, "/data-access/disable") => {
            let name = body!(requests::DataAccessDisable)
                .repository_username
                .name();
            run(state, act("data-access disable"), move |ctx| {
                data_access::disable(ctx, name)
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

/// The changes that take no arguments.
const NO_ARGUMENTS: &[&str] = &[
    "/repository-ssl/disable",
    "/pending-changes/apply",
    "/pending-changes/discard",
    "/external-ssl/disable",
    "/custom-cert/delete",
    "/vizql-extsvc-ssl/disable",
];

async fn run<F>(
    state: &Arc<AdminState>,
    (user, peer, action): (String, IpAddr, &'static str),
    op: F,
) -> Resp
where
    F: FnOnce(&crate::control::operations::Context) -> Result<(), CommandError> + Send + 'static,
{
    let (result, lines) = state.perform(&user, peer, action, op).await;
    outcome(result, lines)
}

async fn list<F>(state: &Arc<AdminState>, op: F) -> Resp
where
    F: FnOnce(&crate::control::operations::Context) -> Result<(), CommandError> + Send + 'static,
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
        let id = crate::control::state::store::new_id().map_err(|e| e.to_string())?;
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

pub(crate) async fn external_ssl_enable(
    state: &Arc<AdminState>,
    act: (String, IpAddr, &'static str),
    body: requests::ExternalSslEnable,
) -> Result<Outcome, Refusal> {
    let upload = Upload::new(state).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let files = (|| {
        let name = |n: &Option<String>, default: &'static str| {
            n.clone().unwrap_or_else(|| default.to_string())
        };
        let cert = upload.file(
            &name(&body.cert_file_name, "server.crt"),
            body.cert_pem.as_bytes(),
        )?;
        let key = upload.file(
            &name(&body.key_file_name, "server.key"),
            body.key_pem.as_bytes(),
        )?;
        let chain = body
            .chain_pem
            .as_ref()
            .map(|c| upload.file(&name(&body.chain_file_name, "chain.crt"), c.as_bytes()))
            .transpose()?;
        Ok::<_, String>((cert, key, chain))
    })();
    let (cert_file, key_file, chain_file) =
        files.map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let args = external_ssl::EnableArgs {
        cert_file,
        key_file,
        chain_file,
        passphrase: body.passphrase.map(Secret::new),
        protocols: body.protocols,
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
    body: requests::CustomCertAdd,
) -> Result<Outcome, Refusal> {
    use base64::Engine;
    let contents = match (body.cert_pem, body.cert_der_base64) {
        (Some(pem), None) => pem.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: field 'cert_der_base64' is not base64: {e}"),
                )
            })?,
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                "invalid request body: exactly one of 'cert_pem' and 'cert_der_base64' is required"
                    .to_string(),
            ));
        }
    };
    let upload = Upload::new(state).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let file = upload
        .file(
            body.cert_file_name.as_deref().unwrap_or("custom-ca.crt"),
            &contents,
        )
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
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
    body: requests::ExtsvcEnable,
) -> Result<Outcome, Refusal> {
    let bad = |m: &str| {
        Err((
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {m}"),
        ))
    };
    if body.extsvc_port == Some(0) {
        return bad("field 'extsvc_port' must be 1 to 65535");
    }
    let connect_timeout_ms = body
        .connect_timeout_ms
        .unwrap_or(vizql_extsvc::DEFAULT_CONNECT_TIMEOUT_MS);
    if !(1..=vizql_extsvc::MAX_CONNECT_TIMEOUT_MS).contains(&connect_timeout_ms) {
        return bad(&format!(
            "field 'connect_timeout_ms' must be 1 to {}",
            vizql_extsvc::MAX_CONNECT_TIMEOUT_MS
        ));
    }
    let upload = Upload::new(state).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let cert_file = body
        .cert_pem
        .as_ref()
        .map(|c| {
            upload.file(
                body.cert_file_name.as_deref().unwrap_or("extsvc.crt"),
                c.as_bytes(),
            )
        })
        .transpose()
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let args = vizql_extsvc::EnableArgs {
        connection_type: body.connection_type,
        host: body.extsvc_host,
        port: body.extsvc_port,
        cert_file,
        username: body.extsvc_username,
        password: body.extsvc_password.map(Secret::new),
        connect_timeout_ms,
        script_disabled: body.script_disabled.unwrap_or(true),
        skip_check: body.skip_check.unwrap_or(false),
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
