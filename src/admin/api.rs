//! The JSON API under `/api/v1/` (documented in `src/admin/openapi.yaml`, served at
//! `/api/v1/openapi.yaml`). Every operation of [`model::each_remote`] is one route, read with its
//! own request type and answered with its typed report: `{<the report's fields>, "progress": [...],
//! "messages": [...]}`, where `messages` is the report as the CLI words it (after any progress
//! lines); a failure is `{"error": "<the CLI's one-line message>", "messages": [...]}` with its
//! kind's status (400 user, 500 server, 503 upstream).

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Value, json};

use super::auth::{self, Admin, Face};
use super::http::{self, Peer};
use super::{AdminState, Outcome, requests};
use crate::control::operations::model::{self, Operation, Report, Verb, Visit};
use crate::control::operations::{CommandError, Output, OutputLine};

type Shared = Arc<AdminState>;

/// One route of the API.
struct Route {
    method: Method,
    path: &'static str,
    handler: MethodRouter<Shared>,
}

/// The routes served without a session: sign-in and the API's own description.
fn public_routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            path: "/session",
            handler: post(sign_in),
        },
        Route {
            method: Method::GET,
            path: "/openapi.yaml",
            handler: get(|| async {
                ([(header::CONTENT_TYPE, "application/yaml")], super::OPENAPI)
            }),
        },
    ]
}

/// The routes that need a session: the session itself and every operation.
fn session_routes() -> Vec<Route> {
    struct Operations(Vec<Route>);
    impl Visit for Operations {
        fn operation<T: Operation>(&mut self) {
            let (method, handler) = match T::VERB {
                Verb::Get => (Method::GET, get(operation::<T>)),
                Verb::Post => (Method::POST, post(operation::<T>)),
            };
            self.0.push(Route {
                method,
                path: T::PATH,
                handler,
            });
        }
    }
    let mut routes = Operations(vec![
        Route {
            method: Method::GET,
            path: "/session",
            handler: get(session_info),
        },
        Route {
            method: Method::DELETE,
            path: "/session",
            handler: delete(sign_out),
        },
    ]);
    model::each_remote(&mut routes);
    routes.0
}

/// Every `(method, path)` the API serves, under `/api/v1`: what the OpenAPI document must list.
pub fn routes() -> Vec<(Method, &'static str)> {
    public_routes()
        .into_iter()
        .chain(session_routes())
        .map(|r| (r.method, r.path))
        .collect()
}

/// The API's router (nested under `/api/v1`).
pub(crate) fn router(state: Shared) -> axum::Router {
    let add = |router: axum::Router<Shared>, routes: Vec<Route>| {
        routes
            .into_iter()
            .fold(router, |r, route| r.route(route.path, route.handler))
    };
    let guarded = add(axum::Router::new(), session_routes()).route_layer(
        axum::middleware::from_fn_with_state((state.clone(), Face::Api), auth::require_admin),
    );
    add(guarded, public_routes())
        .fallback(|| async { http::json_error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            http::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .with_state(state)
}

/// `POST /api/v1/session`: sign in with `{"username", "password"}`.
async fn sign_in(
    State(state): State<Shared>,
    Extension(Peer(peer)): Extension<Peer>,
    body: Bytes,
) -> Response {
    let body: requests::SignIn = match requests::parse(&body) {
        Ok(b) => b,
        Err(e) => return http::json_error(StatusCode::BAD_REQUEST, &e),
    };
    match state.sign_in(peer, &body.username, &body.password).await {
        Ok((token, session)) => {
            let resp = http::json(
                StatusCode::OK,
                &json!({ "username": body.username, "csrf_token": session.csrf }),
            );
            http::with_cookie(resp, &http::session_cookie(&token))
        }
        Err(refusal) => auth::refusal_answer(&refusal, Face::Api),
    }
}

/// `GET /api/v1/session`: who is signed in, and the CSRF token.
async fn session_info(Extension(admin): Extension<Admin>) -> Response {
    http::json(
        StatusCode::OK,
        &json!({ "username": admin.user, "csrf_token": admin.csrf }),
    )
}

/// `DELETE /api/v1/session`: sign out.
async fn sign_out(State(state): State<Shared>, Extension(admin): Extension<Admin>) -> Response {
    let resp = http::json(StatusCode::OK, &json!({ "ok": true }));
    auth::sign_out(&state, &admin, resp).await
}

/// Any operation: its typed request from the body (a `GET`'s from its query string:
/// `?user=tableau`), run for the signed-in administrator, answered with its typed report.
async fn operation<T: Operation>(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = match T::VERB {
        Verb::Get => requests::parse_query(query.as_deref().unwrap_or_default()),
        Verb::Post => requests::parse(&body),
    };
    let request: T = match parsed {
        Ok(r) => r,
        Err(e) => return http::json_error(StatusCode::BAD_REQUEST, &e),
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    answer(state.perform(&admin, request).await, wants_json)
}

/// The status a failed operation maps to: its kind's (user 400, server 500, upstream 503).
pub(crate) fn error_status(e: &CommandError) -> StatusCode {
    StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn answer<R: Report>((result, progress): Outcome<R>, wants_json: bool) -> Response {
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            return http::json(
                error_status(&e),
                &json!({ "error": e.to_string().replace('\n', " "), "messages": progress, "progress": progress }),
            );
        }
    };
    if let (Some(file), false) = (report.file(), wants_json) {
        let disposition = format!("attachment; filename=\"{}\"", file.name);
        let mut resp = (
            [(header::CONTENT_TYPE, file.content_type)],
            file.contents.to_vec(),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return resp;
    }
    let mut value = match serde_json::to_value(&report) {
        Ok(Value::Object(fields)) => Value::Object(fields),
        Ok(other) => json!({ "report": other }),
        Err(e) => {
            return http::json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the report: {e}"),
            );
        }
    };
    let rendered = Output::collect();
    report.render(&rendered);
    let messages: Vec<OutputLine> = progress.iter().cloned().chain(rendered.take()).collect();
    value["ok"] = json!(true);
    value["progress"] = json!(progress);
    value["messages"] = json!(messages);
    http::json(StatusCode::OK, &value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `(method, path)` pairs the OpenAPI document describes: paths are the two-space keys under
    /// `paths:`, methods the four-space keys under them.
    fn documented() -> Vec<(Method, String)> {
        let mut out = Vec::new();
        let mut path = None;
        let mut in_paths = false;
        for line in super::super::OPENAPI.lines() {
            if !line.starts_with(' ') {
                in_paths = line.trim_end() == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /") {
                path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
            } else if let (Some(m), Some(p)) = (line.strip_prefix("    "), &path)
                && !m.starts_with(' ')
                && let Ok(method) = m.trim_end().trim_end_matches(':').to_uppercase().parse()
            {
                out.push((method, p.clone()));
            }
        }
        out
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        let served: Vec<(Method, String)> = routes()
            .into_iter()
            .map(|(m, p)| (m, p.to_string()))
            .collect();
        let documented = documented();
        for route in &served {
            assert!(
                documented.contains(route),
                "{route:?} is served but not documented"
            );
        }
        for route in &documented {
            assert!(
                served.contains(route),
                "{route:?} is documented but not served"
            );
        }
        assert!(served.len() > 20, "{served:?}");
    }
}
