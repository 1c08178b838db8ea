//! A client of Patroni's REST API: how pgssl learns which repository host Patroni made primary, and
//! how it asks Patroni for a switchover.
//!
//! Patroni decides failovers; pgssl only reads its answers (`GET /patroni` per member, `GET /cluster`
//! for the whole view) and, on an administrator's request, posts `POST /switchover`. Every call opens
//! its own connection (http, or https with the configured CA and optional client certificate), is
//! bounded in time and in body size, and returns typed values ([`status`]) or a [`PatroniError`].
//! The password only ever travels in a sensitive `Authorization` header; it is never shown.
//! See <https://patroni.readthedocs.io/en/latest/rest_api.html>.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::keystore::Secret;
use crate::tls::certs;
use crate::tls::client::{self, Verification};

pub mod error;
mod http;
pub mod status;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod tests;

pub use error::{BadUrl, PatroniError};
pub use http::BODY_LIMIT;
pub use status::{ClusterMember, ClusterRole, ClusterView, Lag, MemberStatus, Role, WalPosition};

use http::{Answer, Call, Endpoint};

/// How long a switchover call waits for Patroni's answer at least: Patroni answers only once it
/// sees the new leader, which it polls for up to twice `max(10 s, loop_wait)`.
pub const SWITCHOVER_WAIT: Duration = Duration::from_secs(60);

/// How much of an error body an error keeps (Patroni's messages are one line; an HTML error page
/// is cut).
const KEPT_BODY: usize = 1024;

/// How to reach Patroni's REST API.
#[derive(Debug, Clone)]
pub struct PatroniOptions {
    /// One URL per Patroni member, `http://host:port` or `https://host:port` (Patroni's default port
    /// is 8008); nothing after the port.
    pub urls: Vec<String>,
    /// The CA that signed Patroni's certificate (`restapi.certfile`), for https URLs; the system's
    /// CAs when unset.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM chain) for Patroni's `restapi.verify_client`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub key_file: Option<PathBuf>,
    /// `restapi.authentication.username`, sent with `POST /switchover` (Patroni never asks for it
    /// on a `GET`).
    pub username: Option<String>,
    /// `restapi.authentication.password`.
    pub password: Option<Secret>,
    /// How long a call may take (connecting, TLS, the answer); a switchover waits at least
    /// [`SWITCHOVER_WAIT`] for its answer.
    pub timeout: Duration,
}

/// The environment variable holding Patroni's REST API password (`repository.patroni_user`'s).
pub const PASSWORD_ENV: &str = "PGSSL_PATRONI_PASSWORD";

impl PatroniOptions {
    /// `repository.patroni` and its TLS and credentials (the password from [`PASSWORD_ENV`]), each
    /// call bounded by `repository.probe_timeout`.
    pub fn from_config(config: &crate::config::Config) -> PatroniOptions {
        let r = &config.repository;
        PatroniOptions {
            urls: r.patroni.clone(),
            ca_file: r.patroni_ca.clone(),
            cert_file: r.patroni_cert.clone(),
            key_file: r.patroni_key.clone(),
            username: r.patroni_user.clone(),
            password: std::env::var(PASSWORD_ENV).ok().map(Secret::new),
            timeout: r.probe_timeout,
        }
    }
}

/// What Patroni answered a switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverOutcome {
    /// 200: done; Patroni's message, e.g. `Successfully switched over to "pg1"`.
    Done {
        /// Patroni's message.
        message: String,
    },
    /// 202: scheduled for later.
    Scheduled {
        /// Patroni's message.
        message: String,
    },
}

/// A client of one Patroni cluster's REST API (one URL per member).
#[derive(Clone)]
pub struct PatroniClient {
    endpoints: Vec<Endpoint>,
    tls: Option<TlsConnector>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for PatroniClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatroniClient")
            .field(
                "urls",
                &self.endpoints.iter().map(|e| &e.url).collect::<Vec<_>>(),
            )
            .field("authenticated", &self.authorization.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PatroniClient {
    /// Checks the URLs and credentials, and reads the CA and client certificate when a URL is https.
    pub fn new(options: PatroniOptions) -> Result<PatroniClient, PatroniError> {
        if options.urls.is_empty() {
            return Err(PatroniError::NoUrls);
        }
        let endpoints = options
            .urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let authorization = match (&options.username, &options.password) {
            (Some(user), Some(password)) => Some(basic_authorization(user, password)?),
            (None, None) => None,
            (Some(_), None) => return Err(PatroniError::HalfCredentials { given: "user name" }),
            (None, Some(_)) => return Err(PatroniError::HalfCredentials { given: "password" }),
        };
        let tls = if endpoints.iter().any(|e| e.tls) {
            Some(connector(&options)?)
        } else {
            None
        };
        Ok(PatroniClient {
            endpoints,
            tls,
            authorization,
            timeout: options.timeout,
        })
    }

    /// How many URLs the client has (the indexes [`PatroniClient::member`] takes).
    pub fn url_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The URL at `index`, as given.
    pub fn url(&self, index: usize) -> Option<&str> {
        self.endpoints.get(index).map(|e| e.url.as_str())
    }

    /// Asks the member at URL `index` about itself (`GET /patroni`).
    pub async fn member(&self, index: usize) -> Result<MemberStatus, PatroniError> {
        let endpoint = self.endpoints.get(index).ok_or(PatroniError::NoSuchUrl {
            index,
            count: self.endpoints.len(),
        })?;
        let answer = self.get(endpoint, "/patroni").await?;
        MemberStatus::parse(&answer.body).map_err(|source| PatroniError::Malformed {
            url: endpoint.url.clone(),
            endpoint: "/patroni",
            source,
        })
    }

    /// Whether the member at URL `index` holds the leader lock (`GET /leader`: 200 yes, 503 no).
    /// `GET /patroni`'s `role` is only what PostgreSQL says of itself (`pg_is_in_recovery()`); the
    /// lock is what Patroni decided.
    pub async fn holds_leader_lock(&self, index: usize) -> Result<bool, PatroniError> {
        let endpoint = self.endpoints.get(index).ok_or(PatroniError::NoSuchUrl {
            index,
            count: self.endpoints.len(),
        })?;
        let call = Call {
            method: Method::GET,
            path: "/leader",
            authorization: None,
            json: None,
            connect_timeout: self.timeout,
            total_timeout: self.timeout,
            tls: self.tls.as_ref(),
        };
        let answer = http::exchange(endpoint, call).await?;
        match answer.status {
            StatusCode::OK => Ok(true),
            StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            other => Err(PatroniError::UnexpectedStatus {
                url: endpoint.url.clone(),
                status: other.as_u16(),
                body: body_text(&answer.body),
            }),
        }
    }

    /// The whole cluster as the DCS shows it (`GET /cluster`), from the first URL that answers
    /// with a view this client can read.
    pub async fn cluster(&self) -> Result<ClusterView, PatroniError> {
        let mut last = None;
        for endpoint in &self.endpoints {
            let parsed = self.get(endpoint, "/cluster").await.and_then(|answer| {
                ClusterView::parse(&answer.body).map_err(|source| PatroniError::Malformed {
                    url: endpoint.url.clone(),
                    endpoint: "/cluster",
                    source,
                })
            });
            match parsed {
                Ok(view) => return Ok(view),
                Err(e) => {
                    tracing::debug!(url = %endpoint.url, error = %e, "Patroni /cluster failed; trying the next URL");
                    last = Some(e);
                }
            }
        }
        Err(self.none_answered(last))
    }

    /// Asks Patroni to hand the leader role from `leader` to `candidate` (`POST /switchover`;
    /// an empty `candidate` lets Patroni choose), with Basic authentication when credentials are
    /// configured. The first URL that takes the request answers it; the next URL is tried only when
    /// a connection or TLS handshake failed, so a request is never sent twice.
    pub async fn switchover(
        &self,
        leader: &str,
        candidate: &str,
    ) -> Result<SwitchoverOutcome, PatroniError> {
        let mut body = serde_json::Map::new();
        body.insert("leader".into(), leader.into());
        if !candidate.is_empty() {
            body.insert("candidate".into(), candidate.into());
        }
        let json = serde_json::Value::Object(body).to_string().into_bytes();
        let mut last = None;
        for endpoint in &self.endpoints {
            let call = Call {
                method: Method::POST,
                path: "/switchover",
                authorization: self.authorization.clone(),
                json: Some(json.clone()),
                connect_timeout: self.timeout,
                total_timeout: self.timeout.max(SWITCHOVER_WAIT),
                tls: self.tls.as_ref(),
            };
            match http::exchange(endpoint, call).await {
                Ok(answer) => return self.switchover_answer(endpoint, answer),
                Err(e @ (PatroniError::Connect { .. } | PatroniError::Handshake { .. })) => {
                    tracing::debug!(url = %endpoint.url, error = %e, "Patroni unreachable for a switchover; trying the next URL");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(self.none_answered(last))
    }

    fn switchover_answer(
        &self,
        endpoint: &Endpoint,
        answer: Answer,
    ) -> Result<SwitchoverOutcome, PatroniError> {
        let url = endpoint.url.clone();
        let body = body_text(&answer.body);
        match answer.status {
            StatusCode::OK => Ok(SwitchoverOutcome::Done { message: body }),
            StatusCode::ACCEPTED => Ok(SwitchoverOutcome::Scheduled { message: body }),
            StatusCode::BAD_REQUEST => Err(PatroniError::BadRequest { url, body }),
            StatusCode::UNAUTHORIZED => Err(PatroniError::Unauthorized {
                url,
                sent_credentials: self.authorization.is_some(),
                body,
            }),
            StatusCode::FORBIDDEN => Err(PatroniError::Forbidden { url, body }),
            StatusCode::PRECONDITION_FAILED => Err(PatroniError::NotPossible { url, body }),
            StatusCode::SERVICE_UNAVAILABLE => Err(PatroniError::SwitchoverFailed { url, body }),
            other => Err(PatroniError::UnexpectedStatus {
                url,
                status: other.as_u16(),
                body,
            }),
        }
    }

    async fn get(&self, endpoint: &Endpoint, path: &'static str) -> Result<Answer, PatroniError> {
        let call = Call {
            method: Method::GET,
            path,
            // Patroni authenticates no GET; the password stays off the wire when not needed.
            authorization: None,
            json: None,
            connect_timeout: self.timeout,
            total_timeout: self.timeout,
            tls: self.tls.as_ref(),
        };
        let answer = http::exchange(endpoint, call).await?;
        if answer.status != StatusCode::OK {
            return Err(PatroniError::UnexpectedStatus {
                url: endpoint.url.clone(),
                status: answer.status.as_u16(),
                body: body_text(&answer.body),
            });
        }
        Ok(answer)
    }

    /// The error when no URL answered: the one failure itself when there is one URL.
    fn none_answered(&self, last: Option<PatroniError>) -> PatroniError {
        match last {
            Some(e) if self.endpoints.len() == 1 => e,
            Some(e) => PatroniError::NoneAnswered {
                tried: self.endpoints.len(),
                last: Box::new(e),
            },
            // `new` refuses an empty list, so some URL was tried.
            None => PatroniError::NoUrls,
        }
    }
}

/// `Basic base64(user:password)`, marked sensitive so that hyper never shows it.
fn basic_authorization(user: &str, password: &Secret) -> Result<HeaderValue, PatroniError> {
    let pair = Zeroizing::new(format!("{user}:{}", password.expose()));
    let encoded = Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ));
    // Base64 is visible ASCII, so this cannot fail; the error is reported rather than unwrapped.
    let mut value = HeaderValue::from_str(&encoded).map_err(|e| PatroniError::Request {
        url: "(credentials)".into(),
        source: e.into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A TLS connector verifying Patroni's certificate (chain and host name) against `ca_file` or the
/// system's CAs, presenting the client certificate when one is configured.
fn connector(options: &PatroniOptions) -> Result<TlsConnector, PatroniError> {
    let roots = match &options.ca_file {
        Some(path) => {
            let chain = certs::read_chain(path).map_err(|source| PatroniError::Certificate {
                what: "CA file",
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for ca in chain {
                roots.add(ca).map_err(PatroniError::Tls)?;
            }
            roots
        }
        None => {
            let roots = client::system_roots();
            if roots.is_empty() {
                return Err(PatroniError::NoTrustAnchor);
            }
            roots
        }
    };
    let identity = match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs::read_chain(cert).map_err(|source| PatroniError::Certificate {
                what: "client certificate",
                source,
            })?;
            let key = certs::read_key(key).map_err(|source| PatroniError::Certificate {
                what: "client key",
                source,
            })?;
            Some((chain, key))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(PatroniError::HalfIdentity {
                given: "certificate",
            });
        }
        (None, Some(_)) => return Err(PatroniError::HalfIdentity { given: "key" }),
    };
    client::connector_with_identity(Verification::Full(roots), &[], identity)
        .map_err(PatroniError::Tls)
}

/// Patroni's answer as text: lossy UTF-8, trimmed, cut at [`KEPT_BODY`] bytes on a character
/// boundary.
fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut end = text.len().min(KEPT_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
