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
use crate::control::operations::print_line;
use crate::keystore::Secret;
use crate::tls::client::{self, Verification};

mod error;
pub use error::{BadServerUrl, RemoteError};

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
    ) -> Result<Remote, RemoteError> {
        let bad = |problem| RemoteError::BadServer {
            server: server.to_string(),
            problem,
        };
        // Without a scheme the text is an authority (`host[:port]`), which http::Uri reads as such.
        let uri: hyper::Uri = server.parse().map_err(|_| bad(BadServerUrl::NotAUrl))?;
        match uri.scheme_str() {
            None | Some("https") => {}
            Some(scheme) => return Err(bad(BadServerUrl::NotHttps(scheme.to_string()))),
        }
        let authority = uri.authority().ok_or_else(|| bad(BadServerUrl::NotAUrl))?;
        let port = match authority.port_u16() {
            Some(0) => return Err(bad(BadServerUrl::PortZero)),
            Some(p) => p,
            // A port that is not a number leaves text after the host.
            None if authority.as_str() != authority.host() => {
                let text = authority.as_str().rsplit(':').next().unwrap_or_default();
                return Err(bad(BadServerUrl::BadPort(text.to_string())));
            }
            None => 8850,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(BadServerUrl::NotAUrl));
        }
        if username.is_some() != password.is_some() {
            return Err(RemoteError::HalfCredentials);
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
    pub async fn call<T: Operation>(&self, request: &T) -> Result<T::Report, RemoteError> {
        let mut session = match &self.username {
            Some(_) => self.sign_in().await?,
            None => self
                .cached()
                .ok_or_else(|| RemoteError::NotSignedIn(self.url()))?,
        };
        // A `GET` carries its request (filters such as `--user`) as its query string.
        let (body, query) = match T::VERB {
            Verb::Get => (
                None,
                serde_urlencoded::to_string(request).map_err(RemoteError::EncodeQuery)?,
            ),
            Verb::Post => (
                Some(serde_json::to_vec(request).map_err(RemoteError::Encode)?),
                String::new(),
            ),
        };
        let mut retried = false;
        loop {
            let (status, _, answer) = self.send::<T>(body.clone(), &query, &session).await?;
            if status == StatusCode::UNAUTHORIZED && !retried && self.username.is_none() {
                let _ = std::fs::remove_file(self.cache_path());
                return Err(RemoteError::SessionEnded(self.url()));
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

    async fn sign_in(&self) -> Result<CachedSession, RemoteError> {
        let (Some(user), Some(password)) = (&self.username, &self.password) else {
            return Err(RemoteError::NoCredentials);
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
            return Err(RemoteError::SignInRefused {
                url: self.url(),
                message: api_error(&bytes, status),
            });
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(RemoteError::NotJson)?;
        let token = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")))
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
            .ok_or(RemoteError::NoSessionCookie)?;
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
        query: &str,
        session: &CachedSession,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RemoteError> {
        let headers = [
            ("cookie", format!("{SESSION_COOKIE}={}", session.token)),
            (CSRF_HEADER, session.csrf.clone()),
            ("accept", "application/json".to_string()),
        ];
        let method = match T::VERB {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        };
        let path = match query {
            "" => format!("/api/v1{}", T::PATH),
            query => format!("/api/v1{}?{query}", T::PATH),
        };
        self.exchange(method, &path, &headers, body).await
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RemoteError> {
        let unreachable = |reason: String| RemoteError::Unreachable {
            url: self.url(),
            reason,
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
            let tls = connector.connect(name, tcp).await.map_err(|source| {
                if self.trust_self_signed {
                    unreachable(source.to_string())
                } else {
                    RemoteError::Untrusted {
                        url: self.url(),
                        source,
                    }
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
fn decode<T: Operation>(status: StatusCode, body: &[u8]) -> Result<T::Report, RemoteError> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    for line in value["progress"].as_array().into_iter().flatten() {
        let text = line["text"].as_str().unwrap_or_default();
        match line["kind"].as_str() {
            Some("warning") => print_line(&mut std::io::stderr(), text),
            _ => print_line(&mut std::io::stdout(), text),
        }
    }
    if !status.is_success() {
        return Err(RemoteError::Refused {
            status: status.as_u16(),
            message: api_error(body, status),
        });
    }
    serde_json::from_value(value).map_err(|source| RemoteError::UnexpectedReport {
        action: T::ACTION,
        source,
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
