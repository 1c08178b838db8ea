//! What every admin answer shares: the body deadline and size limit, the security headers, the
//! session cookie, and small response builders.
//!
//! The size limit is tower-http's [`RequestBodyLimitLayer`], the headers its
//! [`SetResponseHeaderLayer`], the cookie the `cookie` crate's; what is left here is the whole-body
//! deadline, which no layer offers (tower-http's body timeout restarts with every chunk, so a client
//! trickling a byte at a time would never meet it).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use http_body_util::LengthLimitError;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::info;

/// Largest request body accepted (certificate uploads included).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The client's address, set on every request by the connection that carried it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// The headers every admin answer carries unless it set its own (a page sets its own content
/// security policy): no caching, no sniffing, no framing, no referrer, a strict content security
/// policy, HSTS.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    ),
    ("strict-transport-security", "max-age=31536000"),
];

/// `app` with the [`SECURITY_HEADERS`] on every answer, its fallback's and its layers' included.
pub(crate) fn with_security_headers(app: axum::Router) -> axum::Router {
    SECURITY_HEADERS
        .into_iter()
        .fold(app, |app, (name, value)| {
            app.layer(SetResponseHeaderLayer::if_not_present(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            ))
        })
}

/// `app` behind the body limits: at most [`MAX_BODY`] bytes (413 with a JSON message), all of them
/// within `deadline` (408, and the connection closed), so that handlers get the body in one piece;
/// and the [`SECURITY_HEADERS`] on every answer, refusals included.
pub(crate) fn harden(app: axum::Router, deadline: Duration) -> axum::Router {
    let app = app
        .layer(axum::middleware::from_fn(move |req, next| {
            buffer_body(deadline, req, next)
        }))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::middleware::map_response(explain_too_large));
    with_security_headers(app)
}

/// Reads the whole body (limited by the [`RequestBodyLimitLayer`] outside) within `deadline`: a
/// client that trickles it is answered 408 and closed.
async fn buffer_body(deadline: Duration, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<Peer>().map(|p| p.0);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, usize::MAX)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if too_large(&e) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Ok(Err(e)) => {
            info!(peer = ?peer, error = %e, "admin request body unreadable");
            return json_error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
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

/// Whether reading a body failed on the [`RequestBodyLimitLayer`]'s limit.
fn too_large(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Every 413 (the limit layer's own, for a `Content-Length` over the limit, or [`buffer_body`]'s)
/// says so in the API's JSON shape. No handler answers 413 itself.
async fn explain_too_large(resp: Response) -> Response {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 1 MiB",
        )
    } else {
        resp
    }
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

/// The session cookie carrying `token`: sent back only over HTTPS, to this site's own requests,
/// never to scripts; it lasts as long as the browser runs.
pub(crate) fn session_cookie(token: &str) -> Cookie<'static> {
    Cookie::build((super::SESSION_COOKIE, token.to_string()))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .build()
}

/// The cookie that ends the session cookie in the browser (`Max-Age=0`).
pub(crate) fn ended_session_cookie() -> Cookie<'static> {
    let mut cookie = session_cookie("");
    cookie.set_max_age(cookie::time::Duration::ZERO);
    cookie
}

/// `resp` setting `cookie`.
pub(crate) fn with_cookie(resp: Response, cookie: &Cookie<'_>) -> Response {
    // A value that is no header value (never, for our hex tokens) makes this a 500, not a panic.
    ([(header::SET_COOKIE, cookie.to_string())], resp).into_response()
}

/// The value of the cookie `name` the request carries.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::body::Bytes;
    use axum::routing::post;
    use hyper::body::Frame;
    use tower::ServiceExt;

    use super::*;

    /// A body that sends nothing and never ends: a client trickling too slowly.
    struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// An app that answers with the length of the body it got, and a page that sets its own
    /// content security policy, hardened with a 2 s body deadline.
    fn app() -> axum::Router {
        let app = axum::Router::new()
            .route(
                "/echo",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route(
                "/page",
                post(|| async { ([("content-security-policy", "default-src 'none'")], "page") }),
            );
        harden(app, Duration::from_secs(2))
    }

    async fn send(
        path: &str,
        body: Body,
        length: Option<usize>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method("POST").uri(path);
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let resp = app().oneshot(request.body(body).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn assert_security_headers(headers: &HeaderMap) {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(headers[name], value, "{name}");
        }
    }

    #[tokio::test]
    async fn a_body_within_the_limit_reaches_the_handler_whole_with_the_security_headers() {
        let (status, headers, body) = send("/echo", Body::from(vec![b'x'; MAX_BODY]), None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "1048576"));
        assert_security_headers(&headers);
        // A page's own content security policy is kept; the others are added.
        let (_, headers, _) = send("/page", Body::empty(), None).await;
        assert_eq!(headers["content-security-policy"], "default-src 'none'");
        assert_eq!(headers["x-frame-options"], "DENY");
        // The fallback's answers carry them too.
        let (status, headers, _) = send("/nowhere", Body::empty(), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_security_headers(&headers);
    }

    #[tokio::test]
    async fn a_body_over_1_mib_is_413_with_a_json_message_announced_or_not() {
        let big = || Body::from(vec![b'x'; MAX_BODY + 1]);
        for length in [Some(MAX_BODY + 1), None] {
            let (status, headers, body) = send("/echo", big(), length).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{length:?}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value["error"], "the request body is larger than 1 MiB");
            assert_security_headers(&headers);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_received_by_the_deadline_is_408_and_closes() {
        let started = tokio::time::Instant::now();
        let (status, headers, body) = send("/echo", Body::new(Stalled), Some(10)).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert_eq!(headers[header::CONNECTION], "close");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["error"], "the request body did not arrive in time");
        assert_security_headers(&headers);
    }

    #[test]
    fn the_session_cookie_is_hardened_and_read_back() {
        let set = session_cookie("abc123").to_string();
        assert!(set.starts_with("pgssl_admin=abc123;"), "{set}");
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.split("; ").any(|a| a == attribute), "{set}");
        }
        assert!(!set.contains("Max-Age"), "{set}");
        let ended = ended_session_cookie().to_string();
        assert!(ended.starts_with("pgssl_admin=;"), "{ended}");
        assert!(ended.split("; ").any(|a| a == "Max-Age=0"), "{ended}");
        assert!(
            ended.contains("HttpOnly") && ended.contains("Secure"),
            "{ended}"
        );

        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("other=1; pgssl_admin=abc123; x=y"),
        );
        assert_eq!(cookie(&headers, "pgssl_admin").as_deref(), Some("abc123"));
        assert_eq!(cookie(&headers, "missing"), None);
        let resp = with_cookie(StatusCode::OK.into_response(), &session_cookie("t"));
        assert_eq!(
            resp.headers()[header::SET_COOKIE],
            session_cookie("t").to_string()
        );
    }
}
