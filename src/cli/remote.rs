//! The remote CLI: with `-s https://host:8850`, each command becomes a call to the admin server's API
//! instead of running on a local data directory. The server's answer is printed as the local command
//! would print it.
//!
//! A session is cached per server in `$PGSSL_SESSION_DIR` (default `~/.cache/pgssl`), 0600, so `-u/-p`
//! are needed only when no session is active.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::atomic;
use crate::control::api::{CSRF_HEADER, SESSION_COOKIE};
use crate::control::operations::model::{Operation, Verb};
use crate::control::operations::{CommandError, block_on, print_line};
use crate::keystore::Secret;
use crate::tls::client::{self, Verification};

/// How to reach and sign in to an admin server.
#[derive(Debug)]
pub struct Remote {
    host: String,
    port: u16,
    trust_self_signed: bool,
    custom_ca: Option<rustls::pki_types::CertificateDer<'static>>,
    username: Option<String>,
    password: Option<Secret>,
}

/// An HTTP exchange that failed below the API.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// Sends one HTTP/1.1 request on `stream` and returns the status, headers and body.
pub async fn http_request<S>(
    stream: S,
    method: Method,
    authority: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, HeaderMap, Bytes), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| HttpError(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| HttpError(e.to_string()))?
        .to_bytes();
    driver.abort();
    Ok((parts.status, parts.headers, bytes))
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CachedSession {
    token: String,
    csrf: String,
    username: String,
}

impl Remote {
    /// Parses `-s`: `https://host[:port]` or `host[:port]` (port 8850 by default); `http` is refused.
    pub fn new(
        server: &str,
        trust_self_signed: bool,
        username: Option<String>,
        password: Option<Secret>,
    ) -> Result<Remote, CommandError> {
        let bad = |why: &str| CommandError::Invalid(format!("-s {server}: {why}"));
        // Without a scheme the text is an authority (`host[:port]`), which http::Uri reads as such.
        let uri: hyper::Uri = server
            .parse()
            .map_err(|_| bad("expected https://host:port"))?;
        match uri.scheme_str() {
            None | Some("https") => {}
            Some(scheme) => {
                return Err(bad(&format!(
                    "the admin server speaks only https, not {scheme}"
                )));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad("expected https://host:port"))?;
        let port = match authority.port_u16() {
            Some(0) => return Err(bad("'0' is not a port")),
            Some(p) => p,
            // A port that is not a number leaves text after the host.
            None if authority.as_str() != authority.host() => {
                let text = authority.as_str().rsplit(':').next().unwrap_or_default();
                return Err(bad(&format!("'{text}' is not a port")));
            }
            None => 8850,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("expected https://host:port"));
        }
        if username.is_some() != password.is_some() {
            return Err(CommandError::Invalid(
                "give both -u NAME and -p PASSWORD (or -p - to type it)".into(),
            ));
        }
        Ok(Remote {
            host: host.to_string(),
            port,
            trust_self_signed,
            custom_ca: None,
            username,
            password,
        })
    }

    /// Also trusts `ca` (the local data directory's custom CA) when verifying the admin certificate.
    pub fn trusting(mut self, ca: Option<rustls::pki_types::CertificateDer<'static>>) -> Remote {
        self.custom_ca = ca;
        self
    }

    fn url(&self) -> String {
        format!("https://{}", self.authority())
    }

    fn authority(&self) -> String {
        client::host_port(&self.host, self.port)
    }

    fn cache_path(&self) -> PathBuf {
        let dir = std::env::var_os("PGSSL_SESSION_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("pgssl")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pgssl")))
            .unwrap_or_else(|| PathBuf::from(".pgssl-sessions"));
        let name: String = format!("{}_{}", self.host, self.port)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        dir.join(format!("session-{name}.json"))
    }

    /// Runs `request` on the admin server: prints the progress lines it reports and returns its typed
    /// report.
    pub fn call<T: Operation>(&self, request: &T) -> Result<T::Report, CommandError> {
        block_on(self.call_async(request))?
    }

    async fn call_async<T: Operation>(&self, request: &T) -> Result<T::Report, CommandError> {
        let mut session = match &self.username {
            Some(_) => self.sign_in().await?,
            None => self.cached().ok_or_else(|| {
                CommandError::Invalid(format!(
                    "not signed in to {}: give -u NAME -p - once (the session is then cached)",
                    self.url()
                ))
            })?,
        };
        let body = match T::VERB {
            Verb::Get => None,
            Verb::Post => Some(
                serde_json::to_vec(request)
                    .map_err(|e| CommandError::Fault(format!("cannot encode the request: {e}")))?,
            ),
        };
        let mut retried = false;
        loop {
            let (status, _, answer) = self.send::<T>(body.clone(), &session).await?;
            if status == StatusCode::UNAUTHORIZED && !retried && self.username.is_none() {
                let _ = std::fs::remove_file(self.cache_path());
                return Err(CommandError::Invalid(format!(
                    "the session with {} has ended: sign in again with -u NAME -p -",
                    self.url()
                )));
            }
            if status == StatusCode::UNAUTHORIZED && !retried {
                session = self.sign_in().await?;
                retried = true;
                continue;
            }
            return decode::<T>(status, &answer);
        }
    }

    fn cached(&self) -> Option<CachedSession> {
        let text = std::fs::read_to_string(self.cache_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    async fn sign_in(&self) -> Result<CachedSession, CommandError> {
        let (Some(user), Some(password)) = (&self.username, &self.password) else {
            return Err(CommandError::Invalid("sign in with -u NAME -p -".into()));
        };
        let body = json!({ "username": user, "password": password.expose() }).to_string();
        let (status, headers, bytes) = self
            .exchange(
                Method::POST,
                "/api/v1/session",
                &[],
                Some(body.into_bytes()),
            )
            .await?;
        if !status.is_success() {
            return Err(CommandError::Invalid(format!(
                "sign-in to {} failed: {}",
                self.url(),
                api_error(&bytes, status)
            )));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            CommandError::Fault(format!("the admin server's answer is not JSON: {e}"))
        })?;
        let token = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")))
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
            .ok_or_else(|| CommandError::Fault("the admin server set no session cookie".into()))?;
        let session = CachedSession {
            token,
            csrf: value["csrf_token"].as_str().unwrap_or_default().to_string(),
            username: user.clone(),
        };
        let path = self.cache_path();
        if let Some(dir) = path.parent()
            && atomic::create_private_dir(dir).is_ok()
            && let Ok(text) = serde_json::to_string(&session)
        {
            // Best effort: without a cache the next command simply needs -u/-p again.
            let _ = atomic::write_file(&path, text.as_bytes(), atomic::PRIVATE_MODE);
        }
        Ok(session)
    }

    async fn send<T: Operation>(
        &self,
        body: Option<Vec<u8>>,
        session: &CachedSession,
    ) -> Result<(StatusCode, HeaderMap, Bytes), CommandError> {
        let headers = [
            ("cookie", format!("{SESSION_COOKIE}={}", session.token)),
            (CSRF_HEADER, session.csrf.clone()),
            ("accept", "application/json".to_string()),
        ];
        let method = match T::VERB {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        };
        self.exchange(method, &format!("/api/v1{}", T::PATH), &headers, body)
            .await
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), CommandError> {
        let unreachable = |e: String| {
            CommandError::Unavailable(format!(
                "cannot reach the admin server at {}: {e}",
                self.url()
            ))
        };
        let verification = if self.trust_self_signed {
            Verification::None
        } else {
            let mut roots = client::system_roots();
            if let Some(ca) = &self.custom_ca {
                roots.add_parsable_certificates([ca.clone()]);
            }
            Verification::Full(roots)
        };
        let connector = client::connector_with_alpn(verification, &[b"http/1.1"])
            .map_err(|e| unreachable(e.to_string()))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| unreachable(format!("'{}' is not a valid host name", self.host)))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                if self.trust_self_signed {
                    unreachable(e.to_string())
                } else {
                    CommandError::Invalid(format!(
                        "the admin server at {} presented a certificate this machine does not trust ({e}); if it is pgssl's self-signed admin certificate, compare its fingerprint with the one 'pgssl serve' logged and pass --trust-admin-controller-cert",
                        self.url()
                    ))
                }
            })?;
            http_request(tls, method, &self.authority(), path, headers, body)
                .await
                .map_err(|e| unreachable(e.0))
        };
        tokio::time::timeout(Duration::from_secs(1900), exchange)
            .await
            .map_err(|_| unreachable("no answer".into()))?
    }
}

/// The typed report of a successful answer, after printing its progress lines; the API's error,
/// classified by its status, otherwise.
fn decode<T: Operation>(status: StatusCode, body: &[u8]) -> Result<T::Report, CommandError> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    for line in value["progress"].as_array().into_iter().flatten() {
        let text = line["text"].as_str().unwrap_or_default();
        match line["kind"].as_str() {
            Some("warning") => print_line(&mut std::io::stderr(), text),
            _ => print_line(&mut std::io::stdout(), text),
        }
    }
    if !status.is_success() {
        let message = api_error(body, status);
        return Err(match status.as_u16() {
            503 => CommandError::Unavailable(message),
            500..=599 => CommandError::Fault(message),
            _ => CommandError::Invalid(message),
        });
    }
    serde_json::from_value(value).map_err(|e| {
        CommandError::Fault(format!(
            "the admin server's answer to {} is not the report this CLI expects ({e}); are both the same pgssl version?",
            T::ACTION
        ))
    })
}

fn api_error(body: &[u8], status: StatusCode) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("the admin server answered {status}"))
}

/// The custom CA of a local data directory, if there is one: the remote CLI trusts it too. Nothing
/// is created when the directory does not exist.
pub(super) fn local_custom_ca(
    data_dir: &std::path::Path,
) -> Option<rustls::pki_types::CertificateDer<'static>> {
    if !data_dir.join("config").join("applied.toml").is_file() {
        return None;
    }
    let store = crate::control::state::StateStore::open(data_dir).ok()?;
    let ca = store.applied().ok()?.custom_ca?;
    crate::control::state::custom_ca::load(&store.custom_ca_path(&ca.id)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let r = Remote::new("https://admin.example:9000/", false, None, None).unwrap();
        assert_eq!((r.host.as_str(), r.port), ("admin.example", 9000));
        let r = Remote::new("admin.example", false, None, None).unwrap();
        assert_eq!(r.port, 8850);
        let r = Remote::new("https://[::1]:8851", false, None, None).unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.url()),
            ("::1", 8851, "https://[::1]:8851".to_string())
        );
        assert!(Remote::new("http://admin.example", false, None, None).is_err());
        assert!(Remote::new("https://admin.example:x", false, None, None).is_err());
        assert!(Remote::new("https://h", false, Some("a".into()), None).is_err());
    }
}
