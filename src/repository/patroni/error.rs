//! How a call to Patroni's REST API fails, and who has to act on it.
//!
//! Text Patroni sent (an error body) is shown through [`LogSafe`], so a body with line breaks or
//! escape sequences cannot forge log lines, and a long HTML page is cut.

use crate::error::ErrorKind;
use crate::telemetry::LogSafe;
use crate::tls::certs::CertError;

/// What is wrong with a Patroni URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadUrl {
    /// Not a URL at all.
    #[error("not a URL (expected http://host:port or https://host:port)")]
    NotAUrl,
    /// A scheme other than http and https.
    #[error("scheme '{0}' is not http or https")]
    Scheme(String),
    /// No scheme: whether TLS is meant cannot be guessed.
    #[error("no scheme (write http://… or https://…)")]
    NoScheme,
    /// No host.
    #[error("no host")]
    NoHost,
    /// Port 0, or a port that is not a number.
    #[error("port '{0}' is not a port number from 1 to 65535")]
    Port(String),
    /// Credentials in the URL, which would then show wherever the URL is shown.
    #[error(
        "credentials belong in repository.patroni_user and PGSSL_PATRONI_PASSWORD, not in the URL"
    )]
    Credentials,
    /// A path, query or fragment: the client adds the endpoint's path itself.
    #[error(
        "'{0}' after the port: give only scheme, host and port (the client adds /patroni, /cluster, /switchover)"
    )]
    Path(String),
}

/// Why a call to Patroni's REST API failed.
#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    /// No URL was given.
    #[error("no Patroni REST API URL is configured")]
    NoUrls,
    /// A URL that cannot be used.
    #[error("Patroni URL '{url}': {problem}")]
    BadUrl {
        /// The URL as given (it holds no credentials: those are refused).
        url: String,
        /// What is wrong with it.
        problem: BadUrl,
    },
    /// A user name without a password, or a password without a user name.
    #[error(
        "Patroni credentials need both repository.patroni_user and PGSSL_PATRONI_PASSWORD; only the {given} is set"
    )]
    HalfCredentials {
        /// Which of the two is set.
        given: &'static str,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error(
        "a client certificate for Patroni needs both a certificate and a key file; only the {given} is set"
    )]
    HalfIdentity {
        /// Which of the two is set.
        given: &'static str,
    },
    /// The CA, client certificate or key file cannot be read or used.
    #[error("Patroni {what}: {source}")]
    Certificate {
        /// Which file ("CA file", "client certificate", "client key").
        what: &'static str,
        /// Why.
        source: CertError,
    },
    /// An https URL, no CA file, and no CA bundle on the system to verify Patroni's certificate.
    #[error(
        "no CA to verify Patroni's certificate with: configure the CA file that signed it (this system has no CA bundle)"
    )]
    NoTrustAnchor,
    /// rustls refused to build the client configuration.
    #[error("cannot build the TLS client for Patroni: {0}")]
    Tls(#[source] rustls::Error),
    /// `member` was asked for a URL that is not in the list.
    #[error("Patroni URL number {index} asked for, but {count} are configured")]
    NoSuchUrl {
        /// The index asked for.
        index: usize,
        /// How many URLs there are.
        count: usize,
    },
    /// The TCP connection failed.
    #[error("cannot connect to Patroni at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed (for example an untrusted certificate, or a client certificate
    /// Patroni's `verify_client` refused).
    #[error("TLS handshake with Patroni at {url} failed: {source}")]
    Handshake {
        /// The URL.
        url: String,
        /// rustls' or the socket's error.
        source: std::io::Error,
    },
    /// The request could not be built (its parts come from checked URLs, so this is pgssl's bug).
    #[error("cannot build the request to Patroni at {url}: {source}")]
    Request {
        /// The URL.
        url: String,
        /// http's error.
        source: hyper::http::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with Patroni at {url} failed: {source}")]
    Http {
        /// The URL.
        url: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// No complete answer within the time allowed.
    #[error("Patroni at {url} did not answer within {ms} ms")]
    TimedOut {
        /// The URL.
        url: String,
        /// The limit.
        ms: u128,
    },
    /// The answer's body is larger than any Patroni answer.
    #[error("Patroni at {url} sent a body over {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The answer is not the JSON this client reads.
    #[error("Patroni at {url} answered {endpoint} with JSON this client cannot read: {source}")]
    Malformed {
        /// The URL.
        url: String,
        /// The endpoint ("/patroni", "/cluster").
        endpoint: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// 400: Patroni found the request malformed (for a switchover without a leader, for example).
    #[error("Patroni at {url} refused the request as malformed (400): {}", LogSafe(.body))]
    BadRequest {
        /// The URL.
        url: String,
        /// Patroni's answer.
        body: String,
    },
    /// 401: Patroni asked for credentials, or refused the ones sent.
    #[error(
        "Patroni at {url} refused the credentials (repository.patroni_user / PGSSL_PATRONI_PASSWORD){} (401): {}",
        if *.sent_credentials { "" } else { "; none are configured" },
        LogSafe(.body)
    )]
    Unauthorized {
        /// The URL.
        url: String,
        /// Whether a user name and password were sent.
        sent_credentials: bool,
        /// Patroni's answer.
        body: String,
    },
    /// 403: this client is not allowed (Patroni's `restapi.allowlist`, or a client certificate
    /// required by `verify_client`).
    #[error(
        "Patroni at {url} refused this client (403; check restapi.allowlist and verify_client): {}",
        LogSafe(.body)
    )]
    Forbidden {
        /// The URL.
        url: String,
        /// Patroni's answer.
        body: String,
    },
    /// 412: the switchover is not possible as asked (wrong leader name, unknown candidate, no
    /// healthy candidate).
    #[error("Patroni at {url} cannot do this switchover (412): {}", LogSafe(.body))]
    NotPossible {
        /// The URL.
        url: String,
        /// Patroni's answer.
        body: String,
    },
    /// 503: the switchover failed, or Patroni does not know whether it succeeded.
    #[error("Patroni at {url} reports the switchover failed or its outcome is unknown (503): {}", LogSafe(.body))]
    SwitchoverFailed {
        /// The URL.
        url: String,
        /// Patroni's answer.
        body: String,
    },
    /// Any other status.
    #[error("Patroni at {url} answered {status}: {}", LogSafe(.body))]
    UnexpectedStatus {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Patroni's answer.
        body: String,
    },
    /// Every URL was tried and none gave an answer.
    #[error("none of the {tried} Patroni URLs answered; the last: {last}")]
    NoneAnswered {
        /// How many URLs were tried.
        tried: usize,
        /// The last URL's failure.
        last: Box<PatroniError>,
    },
}

impl PatroniError {
    /// Configuration is the administrator's to fix, as are credentials, allowlists and a switchover
    /// Patroni finds impossible; a Patroni that cannot be reached or answers nonsense is upstream's;
    /// a request Patroni finds malformed is pgssl's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PatroniError::NoUrls
            | PatroniError::BadUrl { .. }
            | PatroniError::HalfCredentials { .. }
            | PatroniError::HalfIdentity { .. }
            | PatroniError::NoTrustAnchor
            | PatroniError::Unauthorized { .. }
            | PatroniError::Forbidden { .. }
            | PatroniError::NotPossible { .. } => ErrorKind::User,
            PatroniError::Certificate { source, .. } => source.kind(),
            PatroniError::Tls(_)
            | PatroniError::NoSuchUrl { .. }
            | PatroniError::Request { .. }
            | PatroniError::BadRequest { .. } => ErrorKind::Server,
            PatroniError::Connect { .. }
            | PatroniError::Handshake { .. }
            | PatroniError::Http { .. }
            | PatroniError::TimedOut { .. }
            | PatroniError::TooLarge { .. }
            | PatroniError::Malformed { .. }
            | PatroniError::SwitchoverFailed { .. }
            | PatroniError::UnexpectedStatus { .. } => ErrorKind::Upstream,
            PatroniError::NoneAnswered { last, .. } => last.kind(),
        }
    }

    /// The HTTP status Patroni answered, for the errors that are an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            PatroniError::BadRequest { .. } => Some(400),
            PatroniError::Unauthorized { .. } => Some(401),
            PatroniError::Forbidden { .. } => Some(403),
            PatroniError::NotPossible { .. } => Some(412),
            PatroniError::SwitchoverFailed { .. } => Some(503),
            PatroniError::UnexpectedStatus { status, .. } => Some(*status),
            PatroniError::NoneAnswered { last, .. } => last.status(),
            _ => None,
        }
    }
}
