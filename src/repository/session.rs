//! Sessions on the repository through `tokio-postgres`, over the stream pgssl opened itself.
//!
//! Every repository stream is established in one place, `crate::proxy::repository` (TCP or Unix
//! socket, the SSLRequest, rustls with the configured verification), and handed to tokio-postgres's
//! `connect_raw` with `NoTls`: tokio-postgres speaks the protocol on it — the start-up,
//! authentication with the given password (trust, cleartext, MD5 or SCRAM-SHA-256; no channel
//! binding, as tokio-postgres does not see the TLS under it) and statements with bound parameters.
//!
//! A task per session drives the connection (tokio-postgres's `Connection`) and passes on the
//! notifications it reads (`LISTEN`), so a caller waits for one with [`Session::wait_notification`]
//! while its queries go through the [`Client`] the session dereferences to.

use std::future::poll_fn;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::DbError;
use tokio_postgres::tls::{NoTls, NoTlsStream};
use tokio_postgres::{AsyncMessage, Client, Connection};

use crate::error::ErrorKind;
use crate::keystore::Secret;

/// Who logs in, where, and how.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The role.
    pub user: &'a str,
    /// The database.
    pub database: &'a str,
    /// What `pg_stat_activity` shows for the session.
    pub application_name: &'a str,
    /// The role's password, when the repository asks for one.
    pub password: Option<&'a Secret>,
}

/// A repository session's failures; the cause is kept, with its SQLSTATE when the repository
/// answered one.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The repository's socket could not be opened.
    #[error("cannot reach the repository: {0}")]
    Connect(#[from] std::io::Error),
    /// The repository answered an error, or the protocol failed on the way.
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The repository closed the session.
    #[error("the repository closed the connection")]
    Closed,
}

/// A server error as `SEVERITY: message (SQLSTATE code)`, anything else as tokio-postgres words it
/// (how a session's failure reads, in pgssl and in its tests' clients).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            // `S` is localized in real servers; `V` (9.6+) is the fixed severity, as
            // ReceivedError reads it.
            let severity = db
                .parsed_severity()
                .map_or_else(|| db.severity().to_string(), |v| v.to_string());
            format!(
                "{severity}: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            )
        }
        None => e.to_string(),
    }
}

impl SessionError {
    /// The error the repository answered, if it answered one.
    pub fn db_error(&self) -> Option<&DbError> {
        match self {
            SessionError::Postgres(e) => e.as_db_error(),
            _ => None,
        }
    }

    /// The SQLSTATE the repository answered, if it answered one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.db_error().map(|db| db.code().code())
    }

    /// The repository's to fix (or to come back): it refused, answered an error, or is away.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Upstream
    }
}

/// What the connection's driver tells the session: a notification came, or the connection failed.
type Event = Result<(), tokio_postgres::Error>;

/// A logged-in session. Dropping it closes the connection (tokio-postgres sends Terminate).
#[derive(Debug)]
pub struct Session {
    client: Client,
    events: mpsc::Receiver<Event>,
    server_version: Option<String>,
}

impl std::ops::Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Session {
    /// Logs in as `login` on `stream`, already connected (and encrypted) by pgssl.
    pub async fn start<S>(stream: S, login: &Login<'_>) -> Result<Session, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut config = tokio_postgres::Config::new();
        config
            .user(login.user)
            .dbname(login.database)
            .application_name(login.application_name)
            // The stream is already what it should be: no SSLRequest of tokio-postgres's own.
            .ssl_mode(SslMode::Disable);
        if let Some(password) = login.password {
            config.password(password.expose());
        }
        let (client, connection) = config.connect_raw(stream, NoTls).await?;
        let server_version = connection.parameter("server_version").map(str::to_owned);
        // One pending wake-up is enough: the caller reads the state anew after any.
        let (tx, events) = mpsc::channel(1);
        // The driver ends with the connection: when the session drops its client, or the repository
        // closes it.
        tokio::spawn(drive(connection, tx));
        Ok(Session {
            client,
            events,
            server_version,
        })
    }

    /// The repository's `server_version`, as it reported it at start-up.
    pub fn server_version(&self) -> Option<&str> {
        self.server_version.as_deref()
    }

    /// Waits up to `timeout` for a notification (after `LISTEN`); `Ok(false)` when none came. Fails
    /// when the connection has.
    pub async fn wait_notification(&mut self, timeout: Duration) -> Result<bool, SessionError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Err(_) => Ok(false),
            Ok(Some(Ok(()))) => Ok(true),
            Ok(Some(Err(e))) => Err(SessionError::Postgres(e)),
            Ok(None) => Err(SessionError::Closed),
        }
    }

    /// Sends Terminate and waits for the connection to close.
    pub async fn terminate(self) -> Result<(), SessionError> {
        let Session {
            client, mut events, ..
        } = self;
        drop(client);
        // The driver's sender goes when the connection has closed; a failure it saw on the way
        // out comes first.
        let mut result = Ok(());
        while let Some(event) = events.recv().await {
            if let Err(e) = event {
                result = Err(SessionError::Postgres(e));
            }
        }
        result
    }
}

/// Drives `connection` until it ends, passing notifications and its failure on to the session.
async fn drive<S>(mut connection: Connection<S, NoTlsStream>, events: mpsc::Sender<Event>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                // Full: a wake-up is already pending.
                let _ = events.try_send(Ok(()));
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(
                    severity = notice.severity(),
                    message = notice.message(),
                    "repository notice"
                );
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "repository session ended");
                // A failure must reach a waiting caller even when a wake-up is pending.
                let _ = events.send(Err(e)).await;
                return;
            }
            None => return,
        }
    }
}
