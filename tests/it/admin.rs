//! The admin server over real HTTPS: the JSON API (auth failures, CSRF, each endpoint family), the
//! remote CLI (`-s … -u … -p -`), and the live proxy changing underneath.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{HeaderMap, Method, StatusCode};
use pgssl::cli::remote::http_request;
use pgssl::tls::client::{Verification, connector_with_alpn};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::harness::{Postgres, psql};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-pass-ç-1";

/// A served data directory with one administrator, the admin server on a free port.
pub async fn admin_env(pg: &Postgres) -> (CliEnv, ServeProcess, SocketAddr) {
    admin_env_with(pg, "").await
}

/// [`admin_env`] with `[admin]` settings added to the config.
pub async fn admin_env_with(pg: &Postgres, admin: &str) -> (CliEnv, ServeProcess, SocketAddr) {
    let env = CliEnv::new(&pg.repository_text());
    if !admin.is_empty() {
        let config = std::fs::read_to_string(env.config()).unwrap();
        std::fs::write(env.config(), format!("{config}[admin]\n{admin}\n")).unwrap();
    }
    serve_with_admin(env).await
}

/// Adds the administrator to `env` and serves it with the admin server on a free port.
pub async fn serve_with_admin(env: CliEnv) -> (CliEnv, ServeProcess, SocketAddr) {
    ok(&env
        .run_with_stdin(
            &["admin-user", "add", "--username", ADMIN, "--password", "-"],
            &format!("{ADMIN_PASSWORD}\n"),
        )
        .await);
    let server = ServeProcess::start(&env, &["--admin-listen", "127.0.0.1:0"]).await;
    let admin = server.admin_addr().await;
    (env, server, admin)
}

/// An API client with an optional session.
pub struct Api {
    addr: SocketAddr,
    cookie: Option<String>,
    csrf: Option<String>,
    source: Option<std::net::IpAddr>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            cookie: None,
            csrf: None,
            source: None,
        }
    }

    /// A client whose connections come from `source` (any 127.0.0.0/8 address works on loopback).
    pub fn from_source(addr: SocketAddr, source: std::net::IpAddr) -> Api {
        Api {
            source: Some(source),
            ..Api::new(addr)
        }
    }

    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        match self.source {
            None => tokio::net::TcpStream::connect(self.addr).await,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(self.addr).await
            }
        }
    }

    /// One request; `csrf` adds the session's token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let connector = connector_with_alpn(Verification::None, &[b"http/1.1"]).unwrap();
        let tcp = self.connect().await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut headers = Vec::new();
        if let Some(c) = &self.cookie {
            headers.push(("cookie", format!("pgssl_admin={c}")));
        }
        if csrf && let Some(t) = &self.csrf {
            headers.push(("x-csrf-token", t.clone()));
        }
        let (status, headers, bytes) = http_request(
            tls,
            method,
            &self.addr.to_string(),
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap();
        (status, headers, bytes.to_vec())
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self.call(method, path, body, true).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A call that must be refused with `status`; returns the error message.
    pub async fn refused(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> String {
        let (got, value) = self.json(method, path, body).await;
        assert_eq!(got, status, "{path}: {value}");
        value["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {value}"))
            .to_string()
    }

    /// The headers a signed-in client sends: the session cookie and the CSRF token.
    pub fn session_headers(&self) -> Vec<String> {
        let mut headers = Vec::new();
        if let Some(c) = &self.cookie {
            headers.push(format!("Cookie: pgssl_admin={c}"));
        }
        if let Some(t) = &self.csrf {
            headers.push(format!("X-CSRF-Token: {t}"));
        }
        headers
    }

    pub async fn sign_in(&mut self, user: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
        let (status, headers, bytes) = self
            .call(
                Method::POST,
                "/api/v1/session",
                Some(json!({ "username": user, "password": password })),
                false,
            )
            .await;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == StatusCode::OK {
            let cookie = headers["set-cookie"].to_str().unwrap();
            self.cookie = Some(
                cookie
                    .strip_prefix("pgssl_admin=")
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .to_string(),
            );
            self.csrf = value["csrf_token"].as_str().map(str::to_string);
        }
        (status, headers, value)
    }
}

fn lines(v: &Value) -> String {
    v["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// psql without TLS as `user`: whether it got in, and what it said.
async fn plaintext(proxy: SocketAddr, user: &str) -> (bool, String) {
    let run = psql(&format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=disable",
        proxy.port()
    ))
    .await;
    (run.ok, run.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_signs_in_checks_csrf_and_drives_the_live_proxy() {
    let pg = Postgres::start();
    let (env, server, admin) = admin_env(&pg).await;
    let mut api = Api::new(admin);

    // No session.
    let (status, body) = api.json(Method::GET, "/api/v1/repository-ssl", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("sign in first"));
    // Wrong password.
    let (status, _, body) = api.sign_in(ADMIN, "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "wrong user name or password");
    // Right password: a hardened cookie and a CSRF token.
    let (status, headers, body) = api.sign_in(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64);
    assert_eq!(headers["x-frame-options"], "DENY");

    // A change without the CSRF token is refused and changes nothing.
    let (status, _, bytes) = api
        .call(
            Method::POST,
            "/api/v1/repository-ssl/enable",
            Some(json!({})),
            false,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let (_, pending) = api.json(Method::GET, "/api/v1/pending-changes", None).await;
    assert_eq!(pending["changes"], json!([]));

    // Stage optional, see it, apply it live.
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/repository-ssl/enable",
            Some(json!({ "internal_only": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        lines(&body).contains("Staged repository SSL mode off -> optional"),
        "{body}"
    );
    let (_, status_body) = api.json(Method::GET, "/api/v1/repository-ssl", None).await;
    assert_eq!(status_body["status"]["mode"], "off");
    assert_eq!(status_body["status"]["pending_mode"], "optional");
    let (_, pending) = api.json(Method::GET, "/api/v1/pending-changes", None).await;
    assert!(
        pending["changes"][0]
            .as_str()
            .unwrap()
            .contains("off -> optional")
    );
    let (status, body) = api
        .json(Method::POST, "/api/v1/pending-changes/apply", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        lines(&body).contains("The running pgssl server took the change"),
        "{body}"
    );
    let (in_, err) = plaintext(server.addr, "internal_svc").await;
    assert!(
        !in_ && err.contains("SSL required for user \"internal_svc\""),
        "{err}"
    );
    let (in_, err) = plaintext(server.addr, "tableau").await;
    assert!(in_, "{err}");

    // The same one-line errors as the CLI, as JSON with a 4xx status.
    let (status, body) = api
        .json(Method::POST, "/api/v1/pending-changes/apply", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("there are no pending changes to apply")
    );
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/external-ssl/enable",
            Some(
                json!({ "cert_file": {"name": "mine.crt", "pem": "junk"}, "key_file": {"pem": "junk"} }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("mine.crt is not a PEM X.509 certificate"),
        "{body}"
    );
    let (status, _) = api.json(Method::GET, "/api/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .json(Method::DELETE, "/api/v1/pending-changes", None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // The certificate download is the served certificate.
    let (status, headers, pem) = api
        .call(
            Method::GET,
            "/api/v1/repository-ssl/certificate",
            None,
            false,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-pem-file");
    let on_disk = std::fs::read(env.data_dir().join("config/pgsql15/security/server.crt")).unwrap();
    assert_eq!(pem, on_disk);

    // Every security family answers: custom CA from DER, external service listing, disable + discard.
    let pki = crate::pki::TestPki::new(env.dir.path(), "Api");
    let der = pem::parse(std::fs::read(&pki.root).unwrap()).unwrap();
    use base64::Engine;
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/custom-cert/add",
            Some(json!({
                "cert_file": {
                    "der_base64": base64::engine::general_purpose::STANDARD.encode(der.contents()),
                    "name": "api-root.der"
                }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = api.json(Method::GET, "/api/v1/custom-cert", None).await;
    assert!(lines(&body).contains("pending: add api-root.der"), "{body}");
    let (_, body) = api
        .json(Method::GET, "/api/v1/vizql-extsvc-ssl", None)
        .await;
    assert!(lines(&body).contains("enabled:             no"), "{body}");
    let (status, _) = api
        .json(Method::POST, "/api/v1/repository-ssl/disable", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .json(Method::POST, "/api/v1/pending-changes/discard", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        lines(&body).contains("Discarded the pending changes"),
        "{body}"
    );

    // Every other endpoint answers, with the CLI's refusals where the setup rules it out.
    let (status, body) = api.json(Method::GET, "/api/v1/session", None).await;
    assert_eq!(
        (status, body["username"].as_str()),
        (StatusCode::OK, Some(ADMIN))
    );
    let leaf = pki.server("api-leaf", &["localhost"], 90);
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/external-ssl/enable",
            Some(json!({
                "cert_file": {"pem": std::fs::read_to_string(&leaf.cert).unwrap(), "name": "api-leaf.crt"},
                "key_file": {"pem": leaf.key_pem},
                "chain_file": {"pem": std::fs::read_to_string(&pki.intermediate).unwrap()},
                "protocols": "all -TLSv1.2",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        lines(&body).contains("protocols:           TLSv1.3"),
        "{body}"
    );
    let (_, body) = api.json(Method::GET, "/api/v1/external-ssl", None).await;
    assert!(
        lines(&body).contains("certificate file:    api-leaf.crt"),
        "{body}"
    );
    let (status, _) = api
        .json(Method::POST, "/api/v1/external-ssl/disable", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // The discard above dropped the staged CA, so there is nothing to delete.
    let (status, body) = api
        .json(Method::POST, "/api/v1/custom-cert/delete", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "there is no custom CA certificate to delete");
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/vizql-extsvc-ssl/enable",
            Some(json!({ "connection_type": "tabpy", "extsvc_host": "tabpy.example", "extsvc_password": "pw-not-listed", "extsvc_username": "u" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        lines(&body).contains("port:                9004")
            && !body.to_string().contains("pw-not-listed")
    );
    let (status, _) = api
        .json(Method::POST, "/api/v1/vizql-extsvc-ssl/disable", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let err = api
        .refused(
            Method::POST,
            "/api/v1/vizql-extsvc-ssl/enable",
            Some(json!({ "connection_type": "spark", "extsvc_host": "x" })),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(err.contains("not a connection type"), "{err}");
    // This server fronts an external upstream: managed-repository operations say so.
    let err = api
        .refused(
            Method::POST,
            "/api/v1/data-access/enable",
            Some(json!({ "repository_username": "tableau", "repository_password": "x" })),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(err.contains("needs the managed repository"), "{err}");
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/data-access/disable",
            Some(json!({ "repository_username": "nobody" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let before = std::fs::read(env.data_dir().join("config/pgsql15/security/server.crt")).unwrap();
    let (status, body) = api
        .json(
            Method::POST,
            "/api/v1/regenerate-internal-tokens",
            Some(json!({ "request_timeout_secs": 30 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        lines(&body).contains("Internal tokens regenerated"),
        "{body}"
    );
    let after = std::fs::read(env.data_dir().join("config/pgsql15/security/server.crt")).unwrap();
    assert_ne!(before, after, "a new internal certificate");
    let (status, body) = api
        .json(Method::POST, "/api/v1/pending-changes/discard", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, spec) = api
        .call(Method::GET, "/api/v1/openapi.yaml", None, false)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&spec).starts_with("openapi: 3"));
    // A web form without its CSRF token is refused too.
    let (status, _, _) = api
        .call(Method::POST, "/security/repository-ssl", None, false)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Sign out ends the session.
    let (status, _) = api.json(Method::DELETE, "/api/v1/session", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.json(Method::GET, "/api/v1/repository-ssl", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Failed sign-ins are limited per address.
    let mut stranger = Api::new(admin);
    let mut last = StatusCode::OK;
    for _ in 0..6 {
        last = stranger.sign_in(ADMIN, "guess").await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let (status, headers, _) = stranger.sign_in(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert!(headers.contains_key("retry-after"));

    // The audit log names who did what, and never a password.
    let audit = std::fs::read_to_string(env.data_dir().join("log/admin-audit.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"pending-changes apply\",\"outcome\":\"ok\""),
        "{audit}"
    );
    assert!(audit.contains("\"user\":\"admin\""));
    assert!(
        audit.contains("refused: CSRF token missing or wrong"),
        "{audit}"
    );
    assert!(audit.contains("refused: wrong user name or password"));
    assert!(!audit.contains(ADMIN_PASSWORD) && !audit.contains("guess"));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_cli_runs_commands_through_the_api() {
    let pg = Postgres::start();
    let (env, server, admin) = admin_env(&pg).await;
    let url = format!("https://{admin}");
    let sessions = env.dir.path().join("sessions");
    let remote = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("PGSSL_SESSION_DIR", &sessions);
        cmd
    };

    // Without the trust flag the self-signed admin certificate is refused, with the way out.
    let out = remote(&[
        "-s",
        &url,
        "-u",
        ADMIN,
        "-p",
        ADMIN_PASSWORD,
        "security",
        "repository-ssl",
        "list",
    ])
    .output()
    .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("does not trust") && err.contains("--trust-admin-controller-cert"),
        "{err}"
    );
    // http is refused outright.
    let err = failed(
        &remote(&["-s", "http://127.0.0.1:1", "pending-changes", "list"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("only https"), "{err}");

    // Sign in with the password on standard input; the staged change is visible remotely.
    let child = crate::cli::spawn_with_stdin(
        remote(&[
            "-s",
            &url,
            "-u",
            ADMIN,
            "-p",
            "-",
            "--trust-admin-controller-cert",
            "security",
            "repository-ssl",
            "enable",
            "--internal-only",
        ]),
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await;
    let out = child.wait_with_output().await.unwrap();
    assert!(ok(&out).contains("Staged repository SSL mode off -> optional"));
    // The session is cached 0600: -u/-p are not needed again.
    let cached: Vec<_> = std::fs::read_dir(&sessions).unwrap().flatten().collect();
    assert_eq!(cached.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        cached[0].metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    let trust = ["-s", url.as_str(), "--trust-admin-controller-cert"];
    let with = |rest: &[&str]| {
        let mut args: Vec<&str> = trust.to_vec();
        args.extend_from_slice(rest);
        remote(&args).output().unwrap()
    };
    let listed = ok(&with(&["pending-changes", "list"]));
    assert!(
        listed.contains("repository-ssl mode: off -> optional"),
        "{listed}"
    );
    let applied = ok(&with(&["pending-changes", "apply"]));
    assert!(
        applied.contains("The running pgssl server took the change"),
        "{applied}"
    );

    // The live proxy changed.
    let (in_, err) = plaintext(server.addr, "internal_svc").await;
    assert!(!in_ && err.contains("SSL required"), "{err}");
    assert!(plaintext(server.addr, "tableau").await.0);
    let cert = env.dir.path().join("remote.crt");
    ok(&with(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        cert.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        std::fs::read(env.data_dir().join("config/pgsql15/security/server.crt")).unwrap()
    );
    // Errors come back as the CLI's one line; local-only commands say so.
    let err = failed(&with(&["pending-changes", "apply"]));
    assert!(
        err.contains("there are no pending changes to apply"),
        "{err}"
    );
    let err = failed(&with(&["internal-credentials"]));
    assert!(err.contains("runs only locally"), "{err}");

    // A local data directory whose custom CA is the admin certificate verifies it without the flag.
    let local = CliEnv::new("127.0.0.1:1");
    let admin_cert = env.data_dir().join("config/admin/server.crt");
    ok(&local.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        admin_cert.to_str().unwrap(),
    ]));
    ok(&local.run(&["pending-changes", "apply"]));
    let mut cmd = local.command(&["-s", &url, "pending-changes", "list"]);
    cmd.env("PGSSL_SESSION_DIR", &sessions);
    let listed = ok(&cmd.output().unwrap());
    assert!(listed.contains("No pending changes"), "{listed}");

    // Deleting the administrator ends their session.
    ok(&env.run(&["admin-user", "delete", "--username", ADMIN]));
    let err = failed(&with(&["pending-changes", "list"]));
    assert!(
        err.contains("has ended") || err.contains("no longer exists"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(server);
}

/// The API answers each operation with its typed report, and the remote CLI prints the same report as
/// the local one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_typed_reports_and_the_remote_cli_prints_them_like_the_local_one() {
    let pg = Postgres::start();
    let (env, _server, admin) = admin_env(&pg).await;
    let mut api = Api::new(admin);
    assert_eq!(api.sign_in(ADMIN, ADMIN_PASSWORD).await.0, StatusCode::OK);

    let (status, staged) = api
        .json(
            Method::POST,
            "/api/v1/repository-ssl/enable",
            Some(json!({ "internal_only": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{staged}");
    let on_disk = env.data_dir().join("config/pgsql15/security/server.crt");
    let fingerprint = pgssl::tls::certs::read_info(&on_disk)
        .unwrap()
        .sha256_fingerprint;
    assert_eq!(
        (
            &staged["mode"],
            &staged["applied_mode"],
            &staged["staged"],
            &staged["postgres_major"],
            staged["certificate"]["sha256_fingerprint"].as_str(),
        ),
        (
            &json!("required"),
            &json!("off"),
            &json!(true),
            &json!(15),
            Some(fingerprint.as_str())
        ),
        "{staged}"
    );
    let (_, listing) = api.json(Method::GET, "/api/v1/repository-ssl", None).await;
    assert_eq!(listing["status"]["pending_mode"], "required", "{listing}");
    assert_eq!(
        listing["generated"]["info"]["sha256_fingerprint"], fingerprint,
        "{listing}"
    );
    let (status, applied) = api
        .json(Method::POST, "/api/v1/pending-changes/apply", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["server"]["mode"], "required", "{applied}");
    assert_eq!(
        applied["server"]["cert_fingerprint"], fingerprint,
        "{applied}"
    );
    assert!(
        applied["applied"][0]
            .as_str()
            .unwrap()
            .contains("off -> required"),
        "{applied}"
    );
    let (_, pending) = api.json(Method::GET, "/api/v1/pending-changes", None).await;
    assert_eq!(pending["changes"], json!([]));

    // A custom CA: its certificate's subject and the name it had, not where it was.
    let pki = crate::pki::TestPki::new(env.dir.path(), "Typed");
    let (status, added) = api
        .json(
            Method::POST,
            "/api/v1/custom-cert/add",
            Some(json!({ "cert_file": {
                "name": "/somewhere/secret/typed-root.pem",
                "pem": std::fs::read_to_string(&pki.root).unwrap()
            }})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added["is_ca"], true, "{added}");
    assert_eq!(added["added"]["record"]["cert_file_name"], "typed-root.pem");
    assert!(
        added["added"]["certificate"]["subject"]
            .as_str()
            .unwrap()
            .contains("Typed Root CA"),
        "{added}"
    );

    // The remote CLI decodes the certificate report and writes the same file the local one does.
    let url = format!("https://{admin}");
    let sessions = env.dir.path().join("sessions");
    let remote = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("PGSSL_SESSION_DIR", &sessions);
        cmd.output().unwrap()
    };
    let (remote_file, local_file) = (env.dir.path().join("r.crt"), env.dir.path().join("l.crt"));
    let printed = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let from_remote = printed(remote(&[
        "-s",
        &url,
        "-u",
        ADMIN,
        "-p",
        ADMIN_PASSWORD,
        "--trust-admin-controller-cert",
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        remote_file.to_str().unwrap(),
    ]));
    let from_local = printed(env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        local_file.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(&remote_file).unwrap(),
        std::fs::read(&on_disk).unwrap()
    );
    assert_eq!(
        from_remote.replace(remote_file.to_str().unwrap(), "F"),
        from_local.replace(local_file.to_str().unwrap(), "F")
    );
    assert!(from_remote.contains(&fingerprint), "{from_remote}");
    let listed = |out| printed(out);
    assert_eq!(
        listed(remote(&[
            "-s",
            &url,
            "--trust-admin-controller-cert",
            "security",
            "custom-cert",
            "list"
        ])),
        listed(env.run(&["security", "custom-cert", "list"]))
    );
}
