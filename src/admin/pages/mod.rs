//! The web pages: sign-in, Configuration → Security → Repository SSL (the model's three options), the
//! other security pages, the running server's warm backends and repository hosts (read-only), and a
//! pending-changes banner with Apply and Discard on every page.
//! Server-rendered HTML ([`templates`]) with labels and plain forms (keyboard-usable without script);
//! one small script only shows progress while an apply runs. Each form decodes into its operation's
//! request type and runs it like the API does.

mod forms;
mod hosts;
mod nav;
mod pool;
mod sessions;
mod status;
mod templates;

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
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
use nav::{Button, Page};

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
    routes()
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Face::Pages),
            auth::require_admin,
        ))
        .route(
            nav::LOGIN,
            get(|| async { html(templates::login(None)) }).post(login),
        )
        .route(
            nav::SCRIPT,
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

/// The routes for a signed-in administrator: every [`Page`], every [`Button`], the banner's forms
/// and sign-out.
fn routes() -> axum::Router<Shared> {
    let router = axum::Router::new()
        .route("/", get(|| async { http::redirect(Page::LANDING.path()) }))
        .route(nav::LOGOUT, post(logout))
        .route(nav::APPLY, post(apply))
        .route(nav::DISCARD, post(discard));
    let router = Page::ALL
        .into_iter()
        .fold(router, |r, page| r.route(page.path(), page_route(page)));
    Button::ALL.into_iter().fold(router, |r, button| {
        r.route(&button.path(), button_route(button))
    })
}

/// What a page's path serves: the page, and the form it posts to itself (if it has one). Every
/// handler is given `page`, so the page it frames and the page its form returns to are the one
/// routed here.
fn page_route(page: Page) -> MethodRouter<Shared> {
    match page {
        Page::Status => view(page, status::content),
        Page::RepositorySsl => view(page, repository_ssl_content).post(repository_ssl_form),
        Page::ExternalSsl => {
            view(page, external_ssl_content).merge(forms::submit::<forms::ExternalSslForm>(page))
        }
        Page::CustomCert => {
            view(page, custom_cert_content).merge(forms::submit::<forms::CustomCertForm>(page))
        }
        Page::ExternalService => {
            view(page, extsvc_content).merge(forms::submit::<forms::ExtsvcForm>(page))
        }
        Page::RegenerateTokens => view(page, regenerate_content)
            .merge(forms::stage::<regenerate_tokens::Regenerate>(page)),
        Page::Pool => view(page, pool::content),
        Page::RepositoryHosts => view(page, hosts::content),
        Page::Sessions => {
            view(page, sessions::content).merge(forms::submit::<sessions::TerminateForm>(page))
        }
        Page::MutualSsl => {
            view(page, mutual_ssl_content).merge(forms::submit::<forms::MutualSslForm>(page))
        }
    }
}

/// What a button's path serves: its operation, staged, then back to the button's page.
fn button_route(button: Button) -> MethodRouter<Shared> {
    let page = button.page();
    match button {
        Button::ExternalSslDisable => forms::stage::<external_ssl::Disable>(page),
        Button::CustomCertDelete => forms::stage::<custom_cert::Delete>(page),
        Button::ExternalServiceDisable => forms::stage::<vizql_extsvc::Disable>(page),
        Button::MutualSslEnable => forms::stage::<mutual_ssl::Enable>(page),
        Button::MutualSslDisable => forms::stage::<mutual_ssl::Disable>(page),
    }
}

/// A page's `GET`: what `content` makes for the signed-in administrator, framed with `page` marked
/// in the navigation (or the answer `content` gave instead).
fn view<C, F>(page: Page, content: C) -> MethodRouter<Shared>
where
    C: Fn(Shared, Admin) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Markup, Response>> + Send + 'static,
{
    get(
        move |State(state): State<Shared>, Extension(admin): Extension<Admin>| async move {
            match content(state.clone(), admin.clone()).await {
                Ok(markup) => framed(&state, &admin, page, markup).await,
                Err(answer) => answer,
            }
        },
    )
}

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
            let resp = http::redirect(Page::LANDING.path());
            http::with_cookie(resp, &http::session_cookie(&token))
        }
        Err(refusal) => auth::refusal_answer(&refusal, Face::Pages),
    }
}

async fn logout(State(state): State<Shared>, Extension(admin): Extension<Admin>) -> Response {
    auth::sign_out(&state, &admin, http::redirect(nav::LOGIN)).await
}

/// Runs a page form's operation (or shows why its fields do not make one), keeps the outcome for the
/// next page as its flash message, and sends the browser back to `page`.
async fn act<T: Operation>(
    state: &AdminState,
    admin: &Admin,
    request: Result<T, String>,
    page: Page,
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
    http::redirect(page.path())
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
async fn framed(state: &AdminState, admin: &Admin, current: Page, content: Markup) -> Response {
    // A banner that cannot be read is left out; the page itself says what failed.
    let pending = state
        .perform(admin, pending_changes::List {})
        .await
        .0
        .map(|c| {
            // What the change would refuse is said before Apply, as the CLI warns.
            let mut lines = c.changes;
            if !c.would_refuse.is_empty() {
                lines.push(format!(
                    "Warning: applying would refuse clients seen in the last {} days:",
                    crate::control::inventory::WINDOW_DAYS
                ));
                let refused = crate::control::operations::preflight::refusal_lines(&c.would_refuse);
                lines.extend(refused.into_iter().map(|l| l.trim().to_string()));
            }
            lines
        })
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

async fn repository_ssl_content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    match state.perform(&admin, repository_ssl::List {}).await.0 {
        Ok(listing) => Ok(templates::repository_ssl(&listing.status, &admin.csrf)),
        Err(e) => Err(http::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The model's three options: OK stages `required`, `optional` (internal only) or `off`.
async fn repository_ssl_form(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    let page = Page::RepositorySsl;
    match form_field(&body, "mode").as_deref() {
        Some("required") => {
            let request = repository_ssl::Enable {
                internal_only: false,
            };
            act(&state, &admin, Ok(request), page).await
        }
        Some("optional") => {
            let request = repository_ssl::Enable {
                internal_only: true,
            };
            act(&state, &admin, Ok(request), page).await
        }
        Some("off") => act(&state, &admin, Ok(repository_ssl::Disable {}), page).await,
        _ => http::text(StatusCode::BAD_REQUEST, "choose one of the three options"),
    }
}

/// Where a banner form came from (one of the pages only).
fn back(body: &[u8]) -> Page {
    form_field(body, "back")
        .and_then(|asked| Page::at(&asked))
        .unwrap_or(Page::LANDING)
}

async fn apply(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    let request = pending_changes::Apply {
        ignore_prompt: true,
        refuse_if_breaking: false,
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

/// A read-only operation's report, or its failure worded as the CLI prints it (`error: …`, e.g.
/// when no server runs), which every listing page shows in its place.
async fn report<T: Operation>(
    state: &AdminState,
    admin: &Admin,
    request: T,
) -> Result<T::Report, String> {
    state
        .perform(admin, request)
        .await
        .0
        .map_err(|e| format!("error: {e}"))
}

/// A listing page's content: the `list` operation's report as the CLI words it, then the page's
/// forms.
async fn listing<T: Operation>(
    state: &AdminState,
    admin: &Admin,
    list: T,
    forms: Markup,
) -> Markup {
    let text = match report(state, admin, list).await {
        Ok(report) => rendered(&report).join("\n"),
        Err(failed) => failed,
    };
    templates::listing(&text, forms)
}

async fn external_ssl_content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    let forms = templates::external_ssl_forms(&admin.csrf);
    Ok(listing(&state, &admin, external_ssl::List {}, forms).await)
}

async fn custom_cert_content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    let forms = templates::custom_cert_forms(&admin.csrf);
    Ok(listing(&state, &admin, custom_cert::List {}, forms).await)
}

async fn extsvc_content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    let forms = templates::extsvc_forms(&admin.csrf);
    Ok(listing(&state, &admin, vizql_extsvc::List {}, forms).await)
}

async fn regenerate_content(_: Shared, admin: Admin) -> Result<Markup, Response> {
    Ok(templates::regenerate_form(&admin.csrf))
}

/// Mutual SSL: the configuration (`mutual-ssl list`) and its forms.
async fn mutual_ssl_content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    let forms = templates::mutual_ssl_forms(&admin.csrf);
    Ok(listing(&state, &admin, mutual_ssl::List {}, forms).await)
}

#[cfg(test)]
mod tests;
