//! One HTTP/1.1 exchange with one Patroni REST API endpoint: the URL checked once, then per call a
//! TCP connection (TLS for https), one request, the status and a bounded body.
//!
//! Patroni's server (Python's `BaseHTTPRequestHandler`) answers HTTP/1.0 and closes the connection
//! after each answer, so there is nothing to keep alive: each call opens its own connection.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::{BadUrl, PatroniError};
use crate::tls::client::host_port;

/// The largest body read from Patroni: its answers are a few KiB, even `/cluster` of a large cluster.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A checked Patroni URL: scheme, host and port.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// The URL as given, for messages.
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Checks `url`: `http://` or `https://`, a host, an optional port (the scheme's by default),
    /// nothing after it but an optional `/`, and no credentials.
    pub fn parse(url: &str) -> Result<Endpoint, PatroniError> {
        let bad = |problem| PatroniError::BadUrl {
            // Credentials never reach a message: the URL is shown without its user part.
            url: match problem {
                BadUrl::Credentials => "(URL with credentials)".to_string(),
                _ => url.to_string(),
            },
            problem,
        };
        let uri: hyper::Uri = url.trim().parse().map_err(|_| bad(BadUrl::NotAUrl))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(bad(BadUrl::Scheme(other.to_string()))),
            None => return Err(bad(BadUrl::NoScheme)),
        };
        let authority = uri.authority().ok_or_else(|| bad(BadUrl::NoHost))?;
        if authority.as_str().contains('@') {
            return Err(bad(BadUrl::Credentials));
        }
        let port = match authority.port() {
            Some(port) => match port.as_u16() {
                0 => return Err(bad(BadUrl::Port(port.as_str().to_string()))),
                p => p,
            },
            // `host:` (an empty port) or a port that is not a number leaves text after the host.
            None if authority.as_str() != authority.host() => {
                let text = authority.as_str().rsplit(':').next().unwrap_or_default();
                return Err(bad(BadUrl::Port(text.to_string())));
            }
            None if tls => 443,
            None => 80,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(BadUrl::NoHost));
        }
        let rest = uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
        if !rest.is_empty() && rest != "/" {
            return Err(bad(BadUrl::Path(rest.to_string())));
        }
        // http::Uri drops a fragment silently; a fragment is as wrong here as a path.
        if url.contains('#') {
            let fragment = url.split_once('#').map(|(_, f)| f).unwrap_or_default();
            return Err(bad(BadUrl::Path(format!("#{fragment}"))));
        }
        Ok(Endpoint {
            url: url.trim().trim_end_matches('/').to_string(),
            tls,
            host: host.to_string(),
            port,
        })
    }

    fn authority(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// What Patroni answered.
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A request to send.
pub(super) struct Call<'a> {
    pub method: Method,
    pub path: &'static str,
    /// `Authorization` header value, already encoded; marked sensitive so hyper never shows it.
    pub authorization: Option<HeaderValue>,
    pub json: Option<Vec<u8>>,
    /// How long connecting (and the TLS handshake) may take.
    pub connect_timeout: Duration,
    /// How long the whole call may take.
    pub total_timeout: Duration,
    pub tls: Option<&'a TlsConnector>,
}

/// Sends `call` to `endpoint` and reads the answer, within the call's time limits.
pub(super) async fn exchange(endpoint: &Endpoint, call: Call<'_>) -> Result<Answer, PatroniError> {
    let timed_out = |limit: Duration| PatroniError::TimedOut {
        url: endpoint.url.clone(),
        ms: limit.as_millis(),
    };
    let attempt = async {
        let connecting = connect(endpoint, call.tls);
        let stream = tokio::time::timeout(call.connect_timeout, connecting)
            .await
            .map_err(|_| timed_out(call.connect_timeout))??;
        match stream {
            Stream::Plain(tcp) => request(endpoint, tcp, &call).await,
            Stream::Tls(tls) => request(endpoint, *tls, &call).await,
        }
    };
    tokio::time::timeout(call.total_timeout, attempt)
        .await
        .map_err(|_| timed_out(call.total_timeout))?
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(endpoint: &Endpoint, tls: Option<&TlsConnector>) -> Result<Stream, PatroniError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| PatroniError::Connect {
            url: endpoint.url.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return Ok(Stream::Plain(tcp));
    }
    let handshake = |source| PatroniError::Handshake {
        url: endpoint.url.clone(),
        source,
    };
    // The client builds a connector whenever one of its URLs is https; never fall back to plaintext.
    let connector = tls.ok_or_else(|| {
        handshake(std::io::Error::other(
            "no TLS client configured for an https URL",
        ))
    })?;
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
        handshake(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e.to_string(),
        ))
    })?;
    let stream = connector.connect(name, tcp).await.map_err(handshake)?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Aborts the connection's driver task when the call ends, whichever way (a timeout included).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn request<S>(endpoint: &Endpoint, stream: S, call: &Call<'_>) -> Result<Answer, PatroniError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| PatroniError::Http {
        url: endpoint.url.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        // Its error (a reset, say) also fails the request below, which reports it.
        let _ = conn.await;
    }));
    let mut builder = Request::builder()
        .method(call.method.clone())
        .uri(call.path)
        .header(header::HOST, endpoint.authority())
        .header(header::ACCEPT, "application/json");
    if let Some(auth) = &call.authorization {
        builder = builder.header(header::AUTHORIZATION, auth.clone());
    }
    if call.json.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let body = Full::new(Bytes::from(call.json.clone().unwrap_or_default()));
    let request = builder.body(body).map_err(|source| PatroniError::Request {
        url: endpoint.url.clone(),
        source,
    })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => http(*e),
            // The only other error Limited gives is its own LengthLimitError.
            Err(_) => PatroniError::TooLarge {
                url: endpoint.url.clone(),
                limit: BODY_LIMIT,
            },
        })?
        .to_bytes();
    Ok(Answer { status, body })
}
