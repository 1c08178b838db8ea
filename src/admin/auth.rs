//! Who is signed in: sign-in (per-address limits, bounded Argon2id work), the session every other
//! request needs, and the CSRF token every change needs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::http::{self, MAX_BODY, Peer};
use super::session::{self, Session};
use super::{AdminState, CSRF_HEADER, SESSION_COOKIE, lock};
use crate::control::state::admin_users::AdminUsers;

/// The signed-in administrator of a request (set by [`require_admin`]).
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// The administrator's name.
    pub user: String,
    /// Where the request came from.
    pub peer: IpAddr,
    /// The session's token (the cookie).
    pub token: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// Which face of the admin server a request is for: it decides how a refusal looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    /// JSON answers; the CSRF token comes in the `X-CSRF-Token` header.
    Api,
    /// Redirects to the sign-in page; the CSRF token comes as the form field `csrf_token`.
    Pages,
}

/// Lets a request through only with a live session of an administrator who still exists and, for a
/// change, the session's CSRF token; the request then carries its [`Admin`].
pub(crate) async fn require_admin(
    State((state, face)): State<(Arc<AdminState>, Face)>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
    let token = http::cookie(req.headers(), SESSION_COOKIE).unwrap_or_default();
    let session = state.sessions().touch(&token).cloned();
    let refused = |message: &str| match face {
        Face::Api => http::json_error(StatusCode::UNAUTHORIZED, message),
        Face::Pages => http::redirect("/login"),
    };
    let Some(session) = session else {
        return refused("sign in first (POST /api/v1/session with username and password)");
    };
    // An administrator deleted meanwhile is signed out. The file is read off the async runtime.
    let users = AdminUsers::open(&state.data_dir.join("config"));
    let listed = tokio::task::spawn_blocking(move || users.list()).await;
    if !matches!(&listed, Ok(Ok(names)) if names.contains(&session.user)) {
        state.sessions().end(&token);
        return refused("this administrator no longer exists");
    }
    let admin = Admin {
        user: session.user.clone(),
        peer,
        token,
        csrf: session.csrf.clone(),
    };
    let req = if req.method() == Method::GET || req.method() == Method::HEAD {
        req
    } else {
        match check_csrf(&state, &admin, &session, face, req).await {
            Ok(req) => req,
            Err(refusal) => return refusal,
        }
    };
    let mut req = req;
    req.extensions_mut().insert(admin);
    next.run(req).await
}

/// Passes a change request on when it carries the session's CSRF token; refuses and audit-logs it
/// otherwise.
async fn check_csrf(
    state: &AdminState,
    admin: &Admin,
    session: &Session,
    face: Face,
    req: Request,
) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    // The body was collected already (and limited): this only takes it back out.
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let presented = match face {
        Face::Api => parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        Face::Pages => form_field(&bytes, "csrf_token"),
    };
    if presented.is_some_and(|p| session::same_secret(&p, &session.csrf)) {
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    }
    state
        .audit
        .record(
            &admin.user,
            admin.peer,
            &format!("{} {}", parts.method, parts.uri.path()),
            "refused: CSRF token missing or wrong",
        )
        .await;
    Err(match face {
        Face::Api => http::json_error(
            StatusCode::FORBIDDEN,
            "CSRF token missing or wrong (send the X-CSRF-Token header from sign-in)",
        ),
        Face::Pages => http::text(
            StatusCode::FORBIDDEN,
            "CSRF token missing or wrong; reload the page",
        ),
    })
}

/// A field of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Ends the request's session: the cookie is cleared and the sign-out audit-logged.
pub(crate) async fn sign_out(state: &AdminState, admin: &Admin, resp: Response) -> Response {
    state.sessions().end(&admin.token);
    state
        .audit
        .record(&admin.user, admin.peer, "sign-out", "ok")
        .await;
    http::with_cookie(resp, &http::ended_session_cookie())
}

/// A refused sign-in as an answer: status, message, `Retry-After` when there is one.
pub(crate) fn refusal_answer(refusal: &SignInRefusal, face: Face) -> Response {
    let (status, message, retry_after) = refusal.answer();
    let mut resp = match face {
        Face::Api => http::json_error(status, &message),
        Face::Pages => {
            // The page speaks in sentences: capitalise the shared message.
            let mut chars = message.chars();
            let sentence = chars
                .next()
                .map(|c| format!("{}{}.", c.to_uppercase(), chars.as_str()))
                .unwrap_or_default();
            (status, super::pages::login_page(Some(&sentence))).into_response()
        }
    };
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Why a sign-in was refused.
pub(crate) enum SignInRefusal {
    /// Too many failures from this address; wait this long.
    Blocked(Duration),
    /// Every password-hashing slot stayed taken for [`HASH_QUEUE_WAIT`]; nothing was checked.
    Busy,
    /// Wrong name or password (recorded as a failure).
    Wrong,
    /// The administrators file or the random source failed.
    Internal(String),
}

impl SignInRefusal {
    /// The HTTP status, the message a person reads, and the seconds for `Retry-After` if any.
    pub(crate) fn answer(&self) -> (StatusCode, String, Option<u64>) {
        match self {
            SignInRefusal::Blocked(wait) => {
                let secs = wait.as_secs() + 1;
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed sign-ins from this address; try again in {secs} s"),
                    Some(secs),
                )
            }
            SignInRefusal::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin server is busy checking other sign-ins; try again in a second".into(),
                Some(1),
            ),
            SignInRefusal::Wrong => (
                StatusCode::UNAUTHORIZED,
                "wrong user name or password".into(),
                None,
            ),
            SignInRefusal::Internal(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.clone(), None),
        }
    }
}

/// How long a sign-in waits for a password-hashing slot before it is answered 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

impl AdminState {
    /// Checks a sign-in against the per-address limit and the Argon2id hash (on a blocking thread),
    /// audit-logs it, and on success starts a session: its token and the session.
    pub(crate) async fn sign_in(
        &self,
        peer: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(String, Session), SignInRefusal> {
        // Counted before the check, so that parallel guesses cannot all be checked before any counts.
        self.limiter()
            .reserve(peer)
            .map_err(SignInRefusal::Blocked)?;
        // Each Argon2id check holds ~19 MiB while it runs: only as many run as there are cores, for
        // known and unknown names alike, whatever the number of sign-ins arriving.
        let Ok(Ok(permit)) = tokio::time::timeout(HASH_QUEUE_WAIT, self.hashing.acquire()).await
        else {
            self.limiter().release(peer);
            return Err(SignInRefusal::Busy);
        };
        let users = AdminUsers::open(&self.data_dir.join("config"));
        let (name, secret) = (
            user.to_string(),
            crate::keystore::Secret::new(password.to_string()),
        );
        let mut memory = lock(&self.hash_memory).pop().unwrap_or_default();
        let checked = tokio::task::spawn_blocking(move || {
            let verified = users.verify_with(&name, secret.expose(), &mut memory);
            (verified, memory)
        })
        .await;
        let verified = match checked {
            Ok((verified, memory)) => {
                lock(&self.hash_memory).push(memory);
                verified.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        drop(permit);
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                self.limiter().release(peer);
                return Err(SignInRefusal::Internal(e));
            }
        };
        if !verified {
            self.audit
                .record(
                    user,
                    peer,
                    "sign-in",
                    "refused: wrong user name or password",
                )
                .await;
            return Err(SignInRefusal::Wrong);
        }
        self.limiter().succeeded(peer);
        let started = self.sessions().create(user).ok_or_else(|| {
            SignInRefusal::Internal("the system random number generator failed".into())
        })?;
        self.audit.record(user, peer, "sign-in", "ok").await;
        Ok(started)
    }
}
