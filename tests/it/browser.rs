//! A real browser on the admin pages: headless Chromium driven over WebDriver (chromedriver) signs in,
//! picks "Optional for user connections", clicks OK, applies, and psql then proves the proxy changed.
//! A screenshot of the Repository SSL page is kept in `target/test-artifacts/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hyper::Method;
use pgssl::cli::remote::http_request;
use serde_json::{Value, json};

use crate::admin::{ADMIN, ADMIN_PASSWORD, admin_env};
use crate::harness::{Postgres, free_port, poll, psql, wait_until};

/// How long a page or the driver has to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// W3C WebDriver's element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} not found: install the Debian packages chromium and chromium-driver (apt-get install chromium chromium-driver)",
        names.join(" or ")
    );
}

/// chromedriver and one browser session, closed on drop.
struct Browser {
    driver: tokio::process::Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = find_program(&["chromedriver"]);
        let port = free_port();
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group: the browsers it starts are ended with it, even when a test fails.
            .process_group(0)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until("chromedriver to listen", PAGE_WAIT, || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1200,900",
                         format!("--user-data-dir={}", browser._profile.path().display())],
            },
        }}});
        let created = browser.call(Method::POST, "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let body = body.or_else(|| (method == Method::POST).then(|| json!({})));
        let (_, _, bytes) = http_request(
            tcp,
            method,
            &self.addr.to_string(),
            path,
            &[],
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        value["value"].clone()
    }

    async fn session_call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    async fn goto(&self, url: &str) {
        self.session_call(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The element matching `css`, waiting up to 30 s for it.
    async fn find(&self, css: &str) -> String {
        let found = poll(PAGE_WAIT, || async {
            let found = self
                .session_call(
                    Method::POST,
                    "/element",
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            found[ELEMENT].as_str().map(str::to_string)
        })
        .await;
        if let Some(id) = found {
            return id;
        }
        let source = self.session_call(Method::GET, "/source", None).await;
        panic!("no element '{css}' on the page:\n{source}");
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.session_call(Method::POST, &format!("/element/{id}/click"), None)
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.session_call(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.session_call(Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits up to 30 s for the element matching `css` to contain `needle` (pages load after a click
    /// returns); returns its text.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let what = format!("'{css}' to contain '{needle}'");
        crate::harness::wait_for(&what, PAGE_WAIT, || async {
            let found = self
                .session_call(
                    Method::POST,
                    "/element",
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            let Some(id) = found[ELEMENT].as_str() else {
                return Err("no such element".to_string());
            };
            let text = self
                .session_call(Method::GET, &format!("/element/{id}/text"), None)
                .await;
            let text = text.as_str().unwrap_or_default().to_string();
            if text.contains(needle) {
                Ok(text)
            } else {
                Err(format!("text {text:?}"))
            }
        })
        .await
    }

    async fn selected(&self, css: &str) -> bool {
        let id = self.find(css).await;
        self.session_call(Method::GET, &format!("/element/{id}/selected"), None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    async fn screenshot(&self, file: &str) -> PathBuf {
        use base64::Engine;
        let png = self.session_call(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn kill_group(&self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: signalling a process group this test created.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
    }

    async fn close(mut self) {
        self.session_call(Method::DELETE, "", None).await;
        self.kill_group();
        let _ = self.driver.wait().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_chooses_optional_applies_and_psql_sees_it() {
    let pg = Postgres::start();
    let (env, server, admin) = admin_env(&pg).await;
    let browser = Browser::start().await;
    let base = format!("https://localhost:{}", admin.port());

    // Unauthenticated pages lead to sign-in; a wrong password is said so.
    browser
        .goto(&format!("{base}/security/repository-ssl"))
        .await;
    browser.type_into("#username", ADMIN).await;
    browser.type_into("#password", "not-it").await;
    browser.click("#sign-in").await;
    assert!(
        browser
            .text("[role=alert]")
            .await
            .contains("Wrong user name or password")
    );
    browser.type_into("#username", ADMIN).await;
    browser.type_into("#password", ADMIN_PASSWORD).await;
    browser.click("#sign-in").await;

    // Signed in, the administrator lands on the Status page (repository SSL off so far).
    browser.wait_text("h1", "Status").await;
    browser.wait_text("#status-mode", "off").await;
    browser.click("a[href='/security/repository-ssl']").await;
    // The page shows the applied option checked, worded as in the model.
    browser.wait_text("h1", "Repository SSL").await;
    assert!(browser.selected("#mode-off").await);
    assert!(
        browser
            .text("label[for=mode-optional]")
            .await
            .contains("Optional for user connections")
    );
    assert!(
        browser
            .text("label[for=mode-required]")
            .await
            .contains("Required for all connections")
    );
    assert!(
        browser
            .text("label[for=mode-off]")
            .await
            .contains("Off for all connections")
    );

    browser.click("#mode-optional").await;
    browser.click("#ok").await;
    // Staged: the banner lists the change, with Apply and Discard.
    browser.wait_text(".banner", "off -> optional").await;
    browser.click("#apply").await;
    browser
        .wait_text("#result", "The running pgssl server took the change")
        .await;
    browser
        .wait_text("#applied-mode", "Optional for user connections")
        .await;
    assert!(browser.selected("#mode-optional").await);
    assert!(browser.text("dl").await.contains("SHA-256 fingerprint"));
    let shot = browser.screenshot("repository-ssl.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // The other security pages join the same navigation with their own forms.
    let pki = crate::pki::TestPki::new(env.dir.path(), "Web");
    browser.click("a[href='/security/custom-cert']").await;
    browser.wait_text("h1", "Custom certificate").await;
    browser
        .type_into("#cert_pem", &std::fs::read_to_string(&pki.root).unwrap())
        .await;
    browser
        .click("form[action='/security/custom-cert'] button")
        .await;
    browser
        .wait_text(".banner", "custom-cert: trust the CA certificate")
        .await;
    browser.wait_text("#result", "CN=Web Root CA").await;
    browser.click("#discard").await;
    browser
        .wait_text("#result", "Discarded the pending changes")
        .await;
    // The warm-backends page asks the running server (whose sessions here are passthrough: none).
    browser.click("a[href='/pool']").await;
    browser.wait_text("h1", "Warm backends").await;
    browser
        .wait_text("main", "0 clients got a warm session")
        .await;
    assert!(browser.text("#pool-keys").await.contains("Hand-outs"));
    // The Status page: this node's facts as tables, the applied mode, the served certificate's
    // expiry; the navigation says where the reader is.
    browser.click("a[href='/status']").await;
    browser.wait_text("h1", "Status").await;
    browser.wait_text("#status-mode", "optional").await;
    assert!(
        browser
            .text("#status-certificates")
            .await
            .contains("served")
    );
    assert_eq!(
        browser.text("nav [aria-current=page]").await.trim(),
        "Status"
    );
    // Mutual SSL: configure from a pasted CA, staged like every change, then discarded.
    browser.click("a[href='/authentication/mutual-ssl']").await;
    browser.wait_text("h1", "Mutual SSL").await;
    browser.wait_text("main", "not configured").await;
    browser
        .type_into("#ca_pem", &std::fs::read_to_string(&pki.root).unwrap())
        .await;
    browser
        .click("form[action='/authentication/mutual-ssl'] button")
        .await;
    browser
        .wait_text(".banner", "authentication mutual-ssl: off (CA from")
        .await;
    browser.wait_text("#result", "Staged mutual SSL").await;
    browser
        .click("form[action='/authentication/mutual-ssl/enable'] button")
        .await;
    browser
        .wait_text(".banner", "authentication mutual-ssl: on")
        .await;
    browser.click("#discard").await;
    browser
        .wait_text("#result", "Discarded the pending changes")
        .await;
    browser.close().await;

    // psql through the proxy: an internal user without TLS is refused, tableau without TLS gets in.
    let conn = |user: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=disable",
            server.addr.port()
        )
    };
    let internal = psql(&conn("internal_svc")).await;
    assert!(!internal.ok);
    assert!(
        internal
            .stderr
            .contains("SSL required for user \"internal_svc\""),
        "{}",
        internal.stderr
    );
    let tableau = psql(&conn("tableau")).await;
    assert!(tableau.ok, "{}", tableau.stderr);
    drop(server);
}

/// The Status page of a two-node cluster, in a real browser on node 1's admin server: both nodes
/// live on one state version, and node 2's client counted among the client sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_of_a_two_node_cluster_shows_both_nodes_and_their_clients() {
    let (dir, _pg, _upstream, mut n1, mut n2) = crate::cluster::two_nodes_over_tcp();
    crate::cli::ok(
        &n1.env
            .run_with_stdin(
                &["admin-user", "add", "--username", ADMIN, "--password", "-"],
                &format!("{ADMIN_PASSWORD}\n"),
            )
            .await,
    );
    let admin_args = ["--admin-listen", "127.0.0.1:0"];
    crate::cluster::two_nodes_in_required_mode_with(&mut n1, &mut n2, dir.path(), &admin_args)
        .await;
    let admin = n1.serve.as_ref().unwrap().admin_addr().await;
    let mut on2 = crate::client::connect_tls_unverified(
        n2.addr(),
        "tableau",
        "postgres",
        crate::harness::PASSWORD,
    )
    .await
    .unwrap();
    on2.simple_query("SELECT 1").await.unwrap();

    let browser = Browser::start().await;
    browser
        .goto(&format!("https://localhost:{}/status", admin.port()))
        .await;
    browser.type_into("#username", ADMIN).await;
    browser.type_into("#password", ADMIN_PASSWORD).await;
    browser.click("#sign-in").await;
    browser.wait_text("h1", "Status").await;
    browser.wait_text("#status-mode", "required").await;
    for node in ["n1", "n2"] {
        let live = browser
            .text(&format!("#status-nodes tr[data-node={node}] td.live"))
            .await;
        assert_eq!(live.trim(), "yes", "{node}");
    }
    let versions: Vec<String> = {
        let mut v = Vec::new();
        for node in ["n1", "n2"] {
            v.push(
                browser
                    .text(&format!(
                        "#status-nodes tr[data-node={node}] td:nth-of-type(2)"
                    ))
                    .await,
            );
        }
        v
    };
    assert_eq!(versions[0], versions[1], "one state version served");
    // The client on n2, counted by the page n1 serves.
    browser
        .wait_text("#status-sessions tr[data-user=tableau]", "TLSv1_3")
        .await;
    assert_eq!(
        browser.text("nav [aria-current=page]").await.trim(),
        "Status"
    );
    let shot = browser.screenshot("status-two-nodes.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    browser.close().await;
    on2.terminate().await.unwrap();
}
