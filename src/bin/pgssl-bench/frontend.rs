//! The bench's own minimal PostgreSQL frontend over any async stream: start-up with trust, cleartext,
//! MD5 or SCRAM-SHA-256 authentication, simple queries, and Terminate.
//!
//! Built on `postgres-protocol`'s message codecs. It is deliberately small — one round trip per
//! `SELECT 1`, no statement preparation, no type look-ups, no background task — so the figures in
//! BENCHMARKS.md measure the endpoint, not the client; they were taken with this frontend, so it stays
//! as it was when pgssl's library still carried it.

use std::io;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An error reported by the server, read as pgssl reads the repository's.
pub use pgssl::proxy::protocol::error_response::ReceivedError as ServerError;

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket trouble, or the server closed the connection.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server sent an ErrorResponse.
    #[error("{0}")]
    Server(ServerError),
    /// The server sent something this client does not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server asked for an authentication method this client does not speak.
    #[error("unsupported authentication request: {0}")]
    UnsupportedAuth(&'static str),
    /// The server wants a password and none was given.
    #[error("the server asked for a password and none was given")]
    PasswordRequired,
}

/// An authenticated session.
#[derive(Debug)]
pub struct Session<S> {
    stream: S,
    buf: BytesMut,
}

/// The text rows of a simple query; `None` is SQL NULL.
pub type Rows = Vec<Vec<Option<String>>>;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends a protocol 3.0 StartupMessage with `params` (which must include `user`) and authenticates.
    pub async fn start(
        stream: S,
        params: &[(&str, &str)],
        password: Option<&str>,
    ) -> Result<Session<S>, ClientError> {
        let user = params
            .iter()
            .find(|(k, _)| *k == "user")
            .map_or("", |(_, v)| *v)
            .to_string();
        let mut session = Session {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out)?;
        session.send(&out).await?;
        session.authenticate(&user, password).await?;
        loop {
            match session.next_message().await? {
                Message::ParameterStatus(_) | Message::BackendKeyData(_) => {}
                Message::ReadyForQuery(_) => return Ok(session),
                Message::ErrorResponse(e) => {
                    return Err(ClientError::Server(ServerError::from_response(&e)?));
                }
                Message::NoticeResponse(_) => {}
                _ => {
                    return Err(ClientError::Protocol(
                        "unexpected message during start-up".into(),
                    ));
                }
            }
        }
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        let mut scram: Option<ScramSha256> = None;
        loop {
            out.clear();
            match self.next_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = password.ok_or(ClientError::PasswordRequired)?;
                    frontend::password_message(pw.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = password.ok_or(ClientError::PasswordRequired)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        pw.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let pw = password.ok_or(ClientError::PasswordRequired)?;
                    let mechanisms: Vec<String> =
                        body.mechanisms().map(|m| Ok(m.to_string())).collect()?;
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(ClientError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ClientError::Protocol("SASL continue before SASL start".into())
                    })?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ClientError::Protocol("SASL final before SASL start".into())
                    })?;
                    s.finish(body.data())?;
                    continue;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(ClientError::UnsupportedAuth(
                        "Kerberos, GSSAPI, SSPI or SCM",
                    ));
                }
                Message::ErrorResponse(e) => {
                    return Err(ClientError::Server(ServerError::from_response(&e)?));
                }
                Message::NoticeResponse(_) => continue,
                _ => {
                    return Err(ClientError::Protocol(
                        "unexpected message during authentication".into(),
                    ));
                }
            }
            self.send(&out).await?;
        }
    }

    /// Runs `sql` with the simple query protocol and returns the rows of its last statement.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows, ClientError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next_message().await? {
                Message::RowDescription(_) => rows.clear(),
                Message::DataRow(row) => {
                    let buffer = row.buffer();
                    let values: Vec<Option<String>> = row
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
                        .collect()?;
                    rows.push(values);
                }
                Message::ErrorResponse(e) => {
                    let e = ServerError::from_response(&e)?;
                    // A FATAL ends the session: no ReadyForQuery follows, only the close.
                    if e.severity == "FATAL" || e.severity == "PANIC" {
                        return Err(ClientError::Server(e));
                    }
                    error = Some(e);
                }
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(ClientError::Server(e)),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes the stream.
    pub async fn terminate(mut self) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        self.send(&out).await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn next_message(&mut self) -> Result<Message, ClientError> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf)? {
                return Ok(message);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
        }
    }
}
