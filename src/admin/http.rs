//! What every admin answer shares: the body deadline and size limit, the security headers, and small
//! response builders.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use tracing::info;

/// Largest request body accepted (certificate uploads included).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The client's address, set on every request by the connection that carried it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// Reads the whole body within `deadline` (a client that trickles it is answered 408 and closed) and
/// at most [`MAX_BODY`] bytes (413), so that handlers get it in one piece.
pub(crate) async fn collect_body(deadline: Duration, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<Peer>().map(|p| p.0);
    let collected = tokio::time::timeout(deadline, Limited::new(body, MAX_BODY).collect()).await;
    let bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than 1 MiB",
            );
        }
        Err(_) => {
            info!(peer = ?peer, "admin request body not received in time; closing");
            let mut resp = json_error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Adds the headers every admin answer carries: no caching, no sniffing, no framing, a strict content
/// security policy (a page may set its own first), HSTS.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        if !h.contains_key(name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

/// `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A 303 redirect to a local path.
pub(crate) fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// Plain text with `status`.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The session cookie (`max_age` 0 ends it).
pub(crate) fn session_cookie(token: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={a}"));
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; Secure; SameSite=Strict{age}",
        super::SESSION_COOKIE
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("pgssl_admin=; Path=/"))
}

/// The value of cookie `name`.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
