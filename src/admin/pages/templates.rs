//! The pages' HTML, from maud templates (every value is escaped by the template engine): the layout
//! with navigation, flash message and pending-changes banner, and each page's content and forms.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::nav::{self, Button, Page};
use crate::admin::session::Flash;
use crate::control::operations::repository_ssl::Status;
use crate::proxy::policy::Mode;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f}header{background:#1f3a5f;color:#fff;padding:.6rem 1rem}\
header a{color:#fff}nav{float:left;width:15rem;padding:1rem}nav ul{list-style:none;padding:0}nav li{margin:.4rem 0}\
main{margin-left:16rem;padding:1rem;max-width:50rem}.banner{background:#fff4ce;border:1px solid #c9a227;padding:.6rem 1rem;margin-bottom:1rem}\
.flash{background:#e6f4ea;border:1px solid #2e7d32;padding:.6rem 1rem;margin-bottom:1rem;white-space:pre-wrap;overflow-wrap:anywhere}\
.error{background:#fdecea;border-color:#c62828}fieldset{border:1px solid #ccc;margin:1rem 0}label{display:block;margin:.4rem 0}\
button{padding:.4rem 1rem;margin-right:.5rem}dl{display:grid;grid-template-columns:12rem 1fr}dt{font-weight:600}pre{background:#f5f5f5;padding:.6rem}\
.help{margin:0 0 .6rem 1.6rem;color:#555}.scroll{overflow-x:auto}table{border-collapse:collapse}\
th,td{text-align:left;vertical-align:top;padding:.3rem .6rem;border-bottom:1px solid #ddd}";

/// A whole document.
fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { (title) " · pgssl" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (body)
                script src=(nav::SCRIPT) {}
            }
        }
    }
}

/// The sign-in page, with the refusal if there was one.
pub(crate) fn login(error: Option<&str>) -> Markup {
    document(
        "Sign in",
        html! {
            header { strong { "pgssl" } " services manager" }
            main style="margin-left:1rem" {
                h1 { "Sign in" }
                @if let Some(e) = error { p.flash.error role="alert" { (e) } }
                form method="post" action=(nav::LOGIN) {
                    label for="username" { "User name" }
                    input id="username" name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                    p { button type="submit" id="sign-in" { "Sign in" } }
                }
            }
        },
    )
}

/// What every signed-in page shows around its content.
pub(crate) struct Frame<'a> {
    /// The administrator.
    pub user: &'a str,
    /// The session's CSRF token, for every form.
    pub csrf: &'a str,
    /// Which page this is (marked in the navigation).
    pub current: Page,
    /// The staged changes (the banner shows when there are any).
    pub pending: &'a [String],
    /// The result of the last change, shown once.
    pub flash: Option<Flash>,
}

fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(token); }
}

/// Navigation, the flash message and the pending-changes banner around `content`.
pub(crate) fn page(frame: Frame<'_>, content: Markup) -> Markup {
    let (path, title) = (frame.current.path(), frame.current.title());
    let token = frame.csrf;
    document(
        title,
        html! {
            header {
                strong { "pgssl" } " services manager · Configuration · signed in as " (frame.user) " "
                form method="post" action=(nav::LOGOUT) style="display:inline" {
                    (csrf(token)) button type="submit" { "Sign out" }
                }
            }
            nav aria-label="Security" {
                h2 { "Security" }
                ul {
                    @for page in Page::ALL {
                        li { a href=(page.path()) aria-current=[(page == frame.current).then_some("page")] { (page.title()) } }
                    }
                }
            }
            main {
                @if !frame.pending.is_empty() {
                    section.banner aria-labelledby="pending-title" {
                        h2 id="pending-title" { "Pending changes" }
                        ul { @for line in frame.pending { li { (line) } } }
                        form method="post" action=(nav::APPLY) data-progress="Applying pending changes…" style="display:inline" {
                            (csrf(token)) input type="hidden" name="back" value=(path);
                            button type="submit" id="apply" { "Apply changes" }
                        }
                        form method="post" action=(nav::DISCARD) style="display:inline" {
                            (csrf(token)) input type="hidden" name="back" value=(path);
                            button type="submit" id="discard" { "Discard changes" }
                        }
                        p id="progress" role="status" aria-live="polite" {}
                    }
                }
                @if let Some(flash) = frame.flash {
                    div.flash.error[flash.failed] role="status" id="result" { (flash.text) }
                }
                h1 { (title) }
                (content)
            }
        },
    )
}

/// Configuration → Security → Repository SSL: the model's three options, the applied one checked.
pub(crate) fn repository_ssl(status: &Status, token: &str) -> Markup {
    let option = |mode: Mode, id: &str, label: &str, help: &str| {
        html! {
            label for=(id) {
                input type="radio" name="mode" id=(id) value=(mode.to_string()) checked[status.mode == mode];
                " " (label)
            }
            p.help { (help) }
        }
    };
    html! {
        p { "Applied option: " strong id="applied-mode" { (status.mode.description()) } }
        form method="post" action=(Page::RepositorySsl.path()) {
            (csrf(token))
            fieldset {
                legend { "SSL for connections to the repository" }
                (option(Mode::Required, "mode-required", "Required for all connections", "Every user must connect with SSL."))
                (option(Mode::Optional, "mode-optional", "Optional for user connections",
                    "Internal services must use SSL; the direct users tableau and readonly may choose."))
                (option(Mode::Off, "mode-off", "Off for all connections", "No SSL is offered."))
            }
            button type="submit" id="ok" { "OK" }
        }
        @match &status.certificate {
            Some(c) => {
                h2 { "Certificate" @if status.external_ssl { " (external SSL)" } }
                dl {
                    dt { "Subject" } dd { (c.subject) }
                    dt { "Issuer" } dd { (c.issuer) }
                    dt { "Subject alternative names" } dd { (c.subject_alt_names.join(", ")) }
                    dt { "SHA-256 fingerprint" } dd { code { (c.sha256_fingerprint) } }
                    dt { "Expires" } dd { (c.not_after) }
                }
                p { a href="/api/v1/repository-ssl/certificate" download="server.crt" { "Download the public certificate (server.crt)" } }
            }
            None => {
                h2 { "Certificate" }
                p { "None yet: choosing an SSL option generates one." }
            }
        }
    }
}

/// A listing page: the current settings as the CLI words them, then the page's forms.
pub(crate) fn listing(text: &str, forms: Markup) -> Markup {
    html! {
        h2 { "Current settings" }
        pre { (text) }
        (forms)
        p {
            "The same changes can be made with the " code { "pgssl security" }
            " commands (locally, or remotely with " code { "-s" } ") or the API under " code { "/api/v1/" } "."
        }
    }
}

fn text_area(id: &str, label: &str, required: bool) -> Markup {
    html! {
        label for=(id) { (label) }
        textarea id=(id) name=(id) rows="5" cols="70" spellcheck="false" required[required] {}
    }
}

/// A family's two forms: `fields` staged at `action` with the `submit` button, then a button that
/// stages `undo` (its action and label).
fn staging_forms(
    token: &str,
    title: &str,
    action: &str,
    fields: Markup,
    submit: &str,
    undo: (Button, &str),
) -> Markup {
    html! {
        h2 { (title) }
        form method="post" action=(action) {
            (csrf(token))
            (fields)
            p { button type="submit" { (submit) } }
        }
        form method="post" action=(undo.0.path()) { (csrf(token)) button type="submit" { (undo.1) } }
    }
}

/// External SSL's forms.
pub(crate) fn external_ssl_forms(token: &str) -> Markup {
    let fields = html! {
        (text_area("cert_pem", "Certificate (PEM; the chain may follow)", true))
        (text_area("key_pem", "Private key (PEM)", true))
        (text_area("chain_pem", "Chain (PEM, optional)", false))
        label for="passphrase" { "Key passphrase (only for an encrypted key)" }
        input type="password" id="passphrase" name="passphrase" autocomplete="off";
        label for="protocols" { "Protocols" }
        input id="protocols" name="protocols" value="all, -SSLv2, -SSLv3" size="40";
    };
    let action = Page::ExternalSsl.path();
    let undo = (Button::ExternalSslDisable, "Stage disable");
    staging_forms(
        token,
        "Enable with your certificate",
        action,
        fields,
        "Stage external SSL",
        undo,
    )
}

/// The custom CA's forms.
pub(crate) fn custom_cert_forms(token: &str) -> Markup {
    let fields = text_area("cert_pem", "CA certificate (PEM)", true);
    let undo = (Button::CustomCertDelete, "Stage delete");
    staging_forms(
        token,
        "Add a CA certificate",
        Page::CustomCert.path(),
        fields,
        "Stage add",
        undo,
    )
}

/// The external service's forms.
pub(crate) fn extsvc_forms(token: &str) -> Markup {
    let fields = html! {
        label for="connection_type" { "Connection type" }
        select id="connection_type" name="connection_type" {
            option value="rserve" { "Rserve" }
            option value="rserve-secure" { "Rserve (TLS)" }
            option value="tabpy" { "TabPy" }
            option value="tabpy-secure" { "TabPy (TLS)" }
        }
        label for="extsvc_host" { "Host" }
        input id="extsvc_host" name="extsvc_host" required;
        label for="extsvc_port" { "Port (default 6311 for Rserve, 9004 for TabPy)" }
        input id="extsvc_port" name="extsvc_port" inputmode="numeric";
        (text_area("cert_pem", "Service certificate or its CA (PEM, TLS types only)", false))
        label for="extsvc_username" { "User name" }
        input id="extsvc_username" name="extsvc_username" autocomplete="off";
        label for="extsvc_password" { "Password" }
        input type="password" id="extsvc_password" name="extsvc_password" autocomplete="off";
        label for="connect_timeout_ms" { "Connect timeout (ms)" }
        input id="connect_timeout_ms" name="connect_timeout_ms" value="1000" inputmode="numeric";
        label for="script_disabled" { "Scripts" }
        select id="script_disabled" name="script_disabled" {
            option value="true" { "disabled" }
            option value="false" { "enabled" }
        }
        label for="skip_check" { input type="checkbox" id="skip_check" name="skip_check"; " Skip the TLS check" }
    };
    let action = Page::ExternalService.path();
    let undo = (Button::ExternalServiceDisable, "Stage disable");
    staging_forms(
        token,
        "Enable a connection",
        action,
        fields,
        "Stage connection",
        undo,
    )
}

/// Mutual SSL's forms: configure (pasted PEM), enable, disable.
pub(crate) fn mutual_ssl_forms(token: &str) -> Markup {
    let fields = html! {
        (text_area("ca_pem", "CA certificate(s) that client certificates chain to (PEM)", true))
        label for="user_name_map" { "The user is the certificate's" }
        select id="user_name_map" name="user_name_map" {
            option value="cn" { "subject CN" }
            option value="upn" { "UserPrincipalName (or e-mail) local part" }
            option value="ldap" { "subject DN, through the map below" }
        }
        (text_area("map_text", "Map for ldap: lines of 'DN user', e.g. CN=alice,O=Example alice", false))
        (text_area("crl_pem", "Certificate revocation list (PEM)", false))
        label for="fallback_enable" { "A client without a certificate" }
        select id="fallback_enable" name="fallback_enable" {
            option value="true" { "may log in with a password" }
            option value="false" { "is refused (certificate required)" }
        }
    };
    let undo = (Button::MutualSslDisable, "Stage disable");
    html! {
        (staging_forms(token, "Configure mutual SSL", Page::MutualSsl.path(), fields, "Stage configuration", undo))
        form method="post" action=(Button::MutualSslEnable.path()) {
            (csrf(token))
            button type="submit" { "Stage enable" }
        }
    }
}

/// Regenerate tokens' form.
pub(crate) fn regenerate_form(token: &str) -> Markup {
    html! {
        p { "Generates a new internal certificate, new passwords for the internal roles and a new master key, without downtime." }
        form method="post" action=(Page::RegenerateTokens.path()) data-progress="Regenerating…" {
            (csrf(token))
            button type="submit" { "Regenerate internal tokens" }
        }
        p id="progress" role="status" aria-live="polite" {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_by_the_templates() {
        let html = login(Some("<script>alert(1)</script> & \"x\"")).into_string();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
    }

    /// The `href`s of the links inside the page's `<nav>`, and which one is marked current.
    fn nav_links(html: &str) -> (Vec<String>, Vec<String>) {
        let start = html.find("<nav").expect("a nav");
        let end = html[start..].find("</nav>").expect("the nav ends") + start;
        let mut links = Vec::new();
        let mut current = Vec::new();
        for anchor in html[start..end].split("<a ").skip(1) {
            let tag = &anchor[..anchor.find('>').expect("the tag ends")];
            let href = tag
                .split("href=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("an href");
            if tag.contains("aria-current=\"page\"") {
                current.push(href.to_string());
            }
            links.push(href.to_string());
        }
        (links, current)
    }

    #[test]
    fn the_navigation_lists_every_page_once_in_order_and_marks_the_current_one() {
        let paths: Vec<String> = Page::ALL.iter().map(|p| p.path().to_string()).collect();
        for page in Page::ALL {
            let frame = Frame {
                user: "admin",
                csrf: "t",
                current: page,
                pending: &["one change".to_string()],
                flash: None,
            };
            let html = super::page(frame, html! {}).into_string();
            let (links, current) = nav_links(&html);
            assert_eq!(links, paths, "{page:?}");
            assert_eq!(current, [page.path()], "{page:?}");
            assert!(
                html.contains(&format!("<h1>{}</h1>", page.title())),
                "{html}"
            );
            // The banner's forms come back to this page.
            let back = format!("name=\"back\" value=\"{}\"", page.path());
            assert_eq!(html.matches(&back).count(), 2, "{html}");
        }
    }
}
