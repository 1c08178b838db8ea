//! The web pages: sign-in, Configuration → Security → Repository SSL (the model's three options), the
//! other security pages, and a pending-changes banner with Apply and Discard on every page.
//! Server-rendered HTML ([`templates`]) with labels and plain forms (keyboard-usable without script);
//! one small script only shows progress while an apply runs. Each form decodes into its operation's
//! request type and runs it like the API does.

mod forms;
mod templates;

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use super::auth::{self, Admin, Face, form_field};
use super::http::{self, Peer};
use super::session::Flash;
use super::{AdminState, Outcome};
use crate::control::operations::model::{Operation, Report};
use crate::control::operations::{
    Output, OutputLine, custom_cert, external_ssl, mutual_ssl, pending_changes, regenerate_tokens,
    repository_ssl, vizql_extsvc,
};

type Shared = Arc<AdminState>;

const SCRIPT: &str = r#"// pgssl admin: show progress while a long form post (apply, regenerate) runs.
document.querySelectorAll('form[data-progress]').forEach(function (form) {
  form.addEventListener('submit', function () {
    form.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    var status = document.getElementById('progress');
    if (status) { status.textContent = form.getAttribute('data-progress'); }
  });
});
"#;

/// The pages' router.
pub(crate) fn router(state: Shared) -> axum::Router {
    let guarded = axum::Router::new()
        .route("/", get(|| async { http::redirect(REPOSITORY_SSL) }))
        .route("/logout", post(logout))
        .route(
            REPOSITORY_SSL,
            get(repository_ssl_page).post(repository_ssl_form),
        )
        .route("/pending-changes/apply", post(apply))
        .route("/pending-changes/discard", post(discard))
        .route(
            "/security/external-ssl",
            get(external_ssl_page).post(forms::submit::<forms::ExternalSslForm>),
        )
        .route(
            "/security/external-ssl/disable",
            post(forms::stage::<external_ssl::Disable, 1>),
        )
        .route(
            "/security/custom-cert",
            get(custom_cert_page).post(forms::submit::<forms::CustomCertForm>),
        )
        .route(
            "/security/custom-cert/delete",
            post(forms::stage::<custom_cert::Delete, 2>),
        )
        .route(
            "/security/vizql-extsvc-ssl",
            get(extsvc_page).post(forms::submit::<forms::ExtsvcForm>),
        )
        .route(
            "/security/vizql-extsvc-ssl/disable",
            post(forms::stage::<vizql_extsvc::Disable, 3>),
        )
        .route(
            REGENERATE,
            get(regenerate_page).post(forms::stage::<regenerate_tokens::Regenerate, 4>),
        )
        .route(POOL, get(pool_page))
        .route(
            MUTUAL_SSL,
            get(mutual_ssl_page).post(forms::submit::<forms::MutualSslForm>),
        )
        .route(
            "/authentication/mutual-ssl/enable",
            post(forms::stage::<mutual_ssl::Enable, 6>),
        )
        .route(
            "/authentication/mutual-ssl/disable",
            post(forms::stage::<mutual_ssl::Disable, 6>),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Face::Pages),
            auth::require_admin,
        ));
    guarded
        .route(
            "/login",
            get(|| async { html(templates::login(None)) }).post(login),
        )
        .route(
            "/static/pgssl.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .fallback(|| async { http::text(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

const REPOSITORY_SSL: &str = "/security/repository-ssl";
const REGENERATE: &str = "/security/regenerate-internal-tokens";
const POOL: &str = "/pool";
const MUTUAL_SSL: &str = "/authentication/mutual-ssl";

/// A page: HTML with a content security policy that allows its inline stylesheet and nothing else
/// inline.
fn html(markup: Markup) -> Response {
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    resp.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    resp
}

/// The sign-in page, with a refusal.
pub(crate) fn login_page(error: Option<&str>) -> Response {
    html(templates::login(error))
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`: signs in from the form.
async fn login(
    State(state): State<Shared>,
    Extension(Peer(peer)): Extension<Peer>,
    body: Bytes,
) -> Response {
    let form: SignInForm = serde_urlencoded::from_bytes(&body).unwrap_or(SignInForm {
        username: String::new(),
        password: String::new(),
    });
    match state.sign_in(peer, &form.username, &form.password).await {
        Ok((token, _)) => {
            let resp = http::redirect(REPOSITORY_SSL);
            http::with_cookie(resp, &http::session_cookie(&token))
        }
        Err(refusal) => auth::refusal_answer(&refusal, Face::Pages),
    }
}

async fn logout(State(state): State<Shared>, Extension(admin): Extension<Admin>) -> Response {
    auth::sign_out(&state, &admin, http::redirect("/login")).await
}

/// Runs a page form's operation (or shows why its fields do not make one), keeps the outcome for the
/// next page as its flash message, and sends the browser to `back`.
async fn act<T: Operation>(
    state: &AdminState,
    admin: &Admin,
    request: Result<T, String>,
    back: &'static str,
) -> Response {
    let flash = match request {
        Ok(request) => flash_of(state.perform(admin, request).await),
        Err(e) => Flash {
            failed: true,
            text: format!("error: {e}"),
        },
    };
    if let Some(s) = state.sessions().touch(&admin.token) {
        s.flash = Some(flash);
    }
    http::redirect(back)
}

/// An operation's outcome as the CLI would print it, its error (if any) as the last line.
fn flash_of<R: Report>((result, progress): Outcome<R>) -> Flash {
    let mut lines: Vec<String> = progress.into_iter().map(line_text).collect();
    let failed = match result {
        Ok(report) => {
            lines.extend(rendered(&report));
            false
        }
        Err(e) => {
            lines.push(format!("error: {e}"));
            true
        }
    };
    Flash {
        failed,
        text: lines.join("\n"),
    }
}

fn line_text(line: OutputLine) -> String {
    match line {
        OutputLine::Info(t) | OutputLine::Warning(t) => t,
    }
}

fn rendered<R: Report>(report: &R) -> Vec<String> {
    let out = Output::collect();
    report.render(&out);
    out.take().into_iter().map(line_text).collect()
}

/// A signed-in page: `content` in the frame, with the pending-changes banner and the flash message.
async fn framed(state: &AdminState, admin: &Admin, current: usize, content: Markup) -> Response {
    // A banner that cannot be read is left out; the page itself says what failed.
    let pending = state
        .perform(admin, pending_changes::List {})
        .await
        .0
        .map(|c| c.changes)
        .unwrap_or_default();
    let flash = state
        .sessions()
        .touch(&admin.token)
        .and_then(|s| s.flash.take());
    let frame = templates::Frame {
        user: &admin.user,
        csrf: &admin.csrf,
        current,
        pending: &pending,
        flash,
    };
    html(templates::page(frame, content))
}

async fn repository_ssl_page(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    match state.perform(&admin, repository_ssl::List {}).await.0 {
        Ok(listing) => {
            let content = templates::repository_ssl(&listing.status, &admin.csrf);
            framed(&state, &admin, 0, content).await
        }
        Err(e) => http::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The model's three options: OK stages `required`, `optional` (internal only) or `off`.
async fn repository_ssl_form(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    match form_field(&body, "mode").as_deref() {
        Some("required") => {
            act(
                &state,
                &admin,
                Ok(repository_ssl::Enable {
                    internal_only: false,
                }),
                REPOSITORY_SSL,
            )
            .await
        }
        Some("optional") => {
            act(
                &state,
                &admin,
                Ok(repository_ssl::Enable {
                    internal_only: true,
                }),
                REPOSITORY_SSL,
            )
            .await
        }
        Some("off") => {
            act(
                &state,
                &admin,
                Ok(repository_ssl::Disable {}),
                REPOSITORY_SSL,
            )
            .await
        }
        _ => http::text(StatusCode::BAD_REQUEST, "choose one of the three options"),
    }
}

/// Where a banner form came from (one of the pages only).
fn back(body: &[u8]) -> &'static str {
    let asked = form_field(body, "back");
    templates::NAV
        .iter()
        .map(|(path, _)| *path)
        .find(|p| asked.as_deref() == Some(*p))
        .unwrap_or(REPOSITORY_SSL)
}

async fn apply(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    let request = pending_changes::Apply {
        ignore_prompt: true,
    };
    act(&state, &admin, Ok(request), back(&body)).await
}

async fn discard(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    act(&state, &admin, Ok(pending_changes::Discard {}), back(&body)).await
}

/// A listing page: the `list` operation's report as the CLI words it, then the page's forms.
async fn listing<T: Operation>(
    state: &AdminState,
    admin: &Admin,
    current: usize,
    list: T,
    forms: Markup,
) -> Response {
    let text = match state.perform(admin, list).await.0 {
        Ok(report) => rendered(&report).join("\n"),
        Err(e) => format!("error: {e}"),
    };
    framed(state, admin, current, templates::listing(&text, forms)).await
}

async fn external_ssl_page(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    let forms = templates::external_ssl_forms(&admin.csrf);
    listing(&state, &admin, 1, external_ssl::List {}, forms).await
}

async fn custom_cert_page(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    let forms = templates::custom_cert_forms(&admin.csrf);
    listing(&state, &admin, 2, custom_cert::List {}, forms).await
}

async fn extsvc_page(State(state): State<Shared>, Extension(admin): Extension<Admin>) -> Response {
    let forms = templates::extsvc_forms(&admin.csrf);
    listing(&state, &admin, 3, vizql_extsvc::List {}, forms).await
}

async fn regenerate_page(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    let content = templates::regenerate_form(&admin.csrf);
    framed(&state, &admin, 4, content).await
}

/// The running server's warm sessions (`pool list`), read-only.
async fn pool_page(State(state): State<Shared>, Extension(admin): Extension<Admin>) -> Response {
    let empty = maud::html! {};
    listing(
        &state,
        &admin,
        5,
        crate::control::operations::pool::List {},
        empty,
    )
    .await
}

/// Mutual SSL: the configuration (`mutual-ssl list`) and its forms.
async fn mutual_ssl_page(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    let forms = templates::mutual_ssl_forms(&admin.csrf);
    listing(&state, &admin, 6, mutual_ssl::List {}, forms).await
}
