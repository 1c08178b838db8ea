//! The client's end of a test connection: it writes what libpq would (postgres-protocol's frontend
//! encoders) and reads pgssl's answers with postgres-protocol's backend decoder, so neither side of
//! a test trusts pgssl's own codecs.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::within;
use crate::tls::ALPN_POSTGRESQL;
use crate::tls::client::{Identity, Verification, connector_with_identity};

/// The client's transport: the pipe as it is, or TLS over it.
enum ClientIo {
    Plain(DuplexStream),
    Tls(Box<tokio_rustls::client::TlsStream<DuplexStream>>),
}

forward_io!(ClientIo: Plain, Tls);

/// A FATAL ErrorResponse as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::proxy::tests) struct Fatal {
    /// The SQLSTATE (`C`).
    pub(in crate::proxy::tests) code: String,
    /// The message (`M`).
    pub(in crate::proxy::tests) message: String,
    /// The hint (`H`), if any.
    pub(in crate::proxy::tests) hint: Option<String>,
}

/// What a session's start-up answer told the client, after AuthenticationOk.
#[derive(Debug)]
pub(in crate::proxy::tests) struct Welcome {
    /// ParameterStatus values, in order.
    pub(in crate::proxy::tests) params: Vec<(String, String)>,
    /// BackendKeyData's process ID.
    pub(in crate::proxy::tests) pid: i32,
    /// BackendKeyData's secret.
    pub(in crate::proxy::tests) secret: i32,
}

/// A scripted client.
pub(in crate::proxy::tests) struct Client {
    io: ClientIo,
    /// Bytes read but not yet decoded.
    buf: BytesMut,
}

impl Client {
    /// The client on `io`, the far end of the pipe pgssl serves.
    pub(in crate::proxy::tests) fn new(io: DuplexStream) -> Client {
        Client {
            io: ClientIo::Plain(io),
            buf: BytesMut::new(),
        }
    }

    /// Writes `bytes` and flushes.
    pub(in crate::proxy::tests) async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("client write");
        self.io.flush().await.expect("client flush");
    }

    /// A StartupMessage (protocol 3.0) with `params`.
    pub(in crate::proxy::tests) fn startup_packet(params: &[(&str, &str)]) -> BytesMut {
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out).expect("a start-up packet");
        out
    }

    /// Sends a StartupMessage with `params`.
    pub(in crate::proxy::tests) async fn startup(&mut self, params: &[(&str, &str)]) {
        self.send(&Client::startup_packet(params)).await;
    }

    /// Sends an SSLRequest and returns pgssl's one-byte answer.
    pub(in crate::proxy::tests) async fn ssl_request(&mut self) -> u8 {
        let mut out = BytesMut::new();
        frontend::ssl_request(&mut out);
        self.send(&out).await;
        self.byte().await
    }

    /// Reads one raw byte (an SSLRequest's or GSSENCRequest's answer).
    pub(in crate::proxy::tests) async fn byte(&mut self) -> u8 {
        assert!(self.buf.is_empty(), "undecoded bytes before a raw byte");
        within("a one-byte answer", self.io.read_u8())
            .await
            .expect("a one-byte answer")
    }

    /// Runs a TLS handshake over the connection (after `S`, or as direct TLS), offering ALPN
    /// `postgresql` when `alpn`; fails when pgssl refuses the handshake.
    pub(in crate::proxy::tests) async fn tls(self, alpn: bool) -> std::io::Result<Client> {
        self.handshake(alpn, None).await
    }

    /// [`Client::tls`] with ALPN `postgresql`, presenting the client certificate `identity`.
    pub(in crate::proxy::tests) async fn tls_as(
        self,
        identity: Identity,
    ) -> std::io::Result<Client> {
        self.handshake(true, Some(identity)).await
    }

    async fn handshake(self, alpn: bool, identity: Option<Identity>) -> std::io::Result<Client> {
        let ClientIo::Plain(io) = self.io else {
            panic!("TLS inside TLS")
        };
        let protocols: &[&[u8]] = if alpn { &[ALPN_POSTGRESQL] } else { &[] };
        let connector =
            connector_with_identity(Verification::None, protocols, identity).expect("a connector");
        let name = ServerName::try_from("localhost").expect("a server name");
        let tls = within("the TLS handshake", connector.connect(name, io)).await?;
        Ok(Client {
            io: ClientIo::Tls(Box::new(tls)),
            buf: self.buf,
        })
    }

    /// The `tls-server-end-point` binding data of the certificate the server presented.
    pub(in crate::proxy::tests) fn server_end_point(&self) -> Vec<u8> {
        let ClientIo::Tls(tls) = &self.io else {
            panic!("no TLS")
        };
        let certs = tls.get_ref().1.peer_certificates().expect("a certificate");
        crate::proxy::auth::scram::tls_server_end_point(&certs[0])
    }

    /// The next message pgssl sent; fails the test when the connection closed first.
    pub(in crate::proxy::tests) async fn message(&mut self) -> Message {
        within("a message from pgssl", async {
            loop {
                if let Some(message) = Message::parse(&mut self.buf).expect("a valid message") {
                    return message;
                }
                let n = self.io.read_buf(&mut self.buf).await.expect("client read");
                assert!(
                    n > 0,
                    "pgssl closed the connection instead of sending a message"
                );
            }
        })
        .await
    }

    /// Exactly `n` bytes pgssl sent, as they came.
    pub(in crate::proxy::tests) async fn raw(&mut self, n: usize) -> Vec<u8> {
        within("bytes from pgssl", async {
            while self.buf.len() < n {
                let read = self.io.read_buf(&mut self.buf).await.expect("client read");
                assert!(read > 0, "pgssl closed the connection early");
            }
        })
        .await;
        self.buf.split_to(n).to_vec()
    }

    /// Reads until pgssl closes; everything it sent meanwhile (a read error counts as closed).
    pub(in crate::proxy::tests) async fn rest(&mut self) -> Vec<u8> {
        let mut rest = self.buf.split().to_vec();
        within("pgssl closing the connection", async {
            let _ = self.io.read_to_end(&mut rest).await;
        })
        .await;
        rest
    }

    /// Asserts that pgssl closed the connection without sending anything more.
    pub(in crate::proxy::tests) async fn assert_closed(&mut self) {
        let rest = self.rest().await;
        assert!(rest.is_empty(), "pgssl sent {rest:?} instead of closing");
    }

    /// The FATAL error pgssl ends the connection with (it must close right after it).
    pub(in crate::proxy::tests) async fn fatal(&mut self) -> Fatal {
        match self.message().await {
            Message::ErrorResponse(body) => self.closed_after(&body).await,
            other => panic!("expected an ErrorResponse, got {}", describe(&other)),
        }
    }

    /// The FATAL `body` says, once pgssl has closed the connection after it.
    async fn closed_after(&mut self, body: &ErrorResponseBody) -> Fatal {
        let mut fields = body.fields();
        let (mut severity, mut code, mut message, mut hint) = (None, None, None, None);
        while let Some(field) = fields.next().expect("error fields") {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => severity = Some(value),
                b'C' => code = Some(value),
                b'M' => message = Some(value),
                b'H' => hint = Some(value),
                _ => {}
            }
        }
        assert_eq!(severity.as_deref(), Some("FATAL"));
        self.assert_closed().await;
        Fatal {
            code: code.expect("a SQLSTATE"),
            message: message.expect("a message"),
            hint,
        }
    }

    /// Answers pgssl's SCRAM exchange with `password` over `mechanism`, binding as `binding` says;
    /// returns the mechanisms pgssl offered, or the FATAL it answered with at any step.
    pub(in crate::proxy::tests) async fn scram(
        &mut self,
        password: &str,
        mechanism: &str,
        binding: ChannelBinding,
    ) -> Result<Vec<String>, Fatal> {
        let offered = match self.message().await {
            Message::AuthenticationSasl(body) => body
                .mechanisms()
                .map(|m| Ok(m.to_string()))
                .collect::<Vec<_>>()
                .expect("mechanisms"),
            Message::ErrorResponse(body) => return Err(self.closed_after(&body).await),
            other => panic!("expected AuthenticationSASL, got {}", describe(&other)),
        };
        let mut scram = ScramSha256::new(password.as_bytes(), binding);
        let mut out = BytesMut::new();
        frontend::sasl_initial_response(mechanism, scram.message(), &mut out).expect("encoded");
        self.send(&out).await;
        match self.message().await {
            Message::AuthenticationSaslContinue(body) => scram
                .update(body.data())
                .expect("a valid server-first message"),
            Message::ErrorResponse(body) => return Err(self.closed_after(&body).await),
            other => panic!("expected SASLContinue, got {}", describe(&other)),
        }
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).expect("encoded");
        self.send(&out).await;
        match self.message().await {
            Message::AuthenticationSaslFinal(body) => {
                scram
                    .finish(body.data())
                    .expect("the server proved the verifier");
                Ok(offered)
            }
            Message::ErrorResponse(body) => Err(self.closed_after(&body).await),
            other => panic!("expected SASLFinal, got {}", describe(&other)),
        }
    }

    /// The FATAL pgssl answers [`Client::scram`] with; fails the test when the client logs in.
    pub(in crate::proxy::tests) async fn refused(
        &mut self,
        password: &str,
        mechanism: &str,
        binding: ChannelBinding,
    ) -> Fatal {
        self.scram(password, mechanism, binding)
            .await
            .expect_err("refused")
    }

    /// The start-up answer after authentication: AuthenticationOk, parameters, BackendKeyData,
    /// ReadyForQuery (idle).
    pub(in crate::proxy::tests) async fn welcome(&mut self) -> Welcome {
        let message = self.message().await;
        assert!(
            matches!(message, Message::AuthenticationOk),
            "expected AuthenticationOk, got {}",
            describe(&message)
        );
        let mut params = Vec::new();
        loop {
            match self.message().await {
                Message::ParameterStatus(p) => params.push((
                    p.name().expect("a name").to_string(),
                    p.value().expect("a value").to_string(),
                )),
                Message::BackendKeyData(key) => {
                    let ready = self.message().await;
                    let Message::ReadyForQuery(status) = ready else {
                        panic!("expected ReadyForQuery, got {}", describe(&ready))
                    };
                    assert_eq!(status.status(), b'I');
                    return Welcome {
                        params,
                        pid: key.process_id(),
                        secret: key.secret_key(),
                    };
                }
                other => panic!("unexpected {} in a start-up answer", describe(&other)),
            }
        }
    }

    /// Sends a simple Query.
    pub(in crate::proxy::tests) async fn query(&mut self, text: &str) {
        let mut out = BytesMut::new();
        frontend::query(text, &mut out).expect("encoded");
        self.send(&out).await;
    }

    /// Sends Terminate.
    pub(in crate::proxy::tests) async fn terminate(&mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        self.send(&out).await;
    }
}

/// A message's name for assertion failures.
fn describe(message: &Message) -> &'static str {
    match message {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::AuthenticationSasl(_) => "AuthenticationSASL",
        Message::AuthenticationSaslContinue(_) => "AuthenticationSASLContinue",
        Message::AuthenticationSaslFinal(_) => "AuthenticationSASLFinal",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::CommandComplete(_) => "CommandComplete",
        Message::NoticeResponse(_) => "NoticeResponse",
        _ => "another message",
    }
}
