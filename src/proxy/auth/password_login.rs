//! pgssl logging into the repository with a password it holds (a managed repository's role, for a
//! certificate-authenticated client): SCRAM-SHA-256 as a client, with postgres-protocol's
//! implementation. The repository's SASL messages stay between pgssl and the repository; what it
//! decided is returned for the caller to pass on (a relayed session) or keep (a warm backend).

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{FrameError, read_frame};
use crate::proxy::protocol::auth_message::{
    AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, Frame,
};
use crate::proxy::protocol::login_watch::LoginOutcome;

/// How the repository answered the start-up.
pub(crate) enum Answer {
    /// AuthenticationOk.
    Ok,
    /// An ErrorResponse.
    Refused,
    /// Another authentication request (not answered).
    Password,
}

/// The repository's decision and the messages it sent up to it (notices, NegotiateProtocolVersion,
/// then its AuthenticationOk or ErrorResponse), none of them passed on yet.
pub(crate) struct Decided {
    /// The decision.
    pub answer: Answer,
    /// The messages, in order.
    pub frames: Vec<Frame>,
}

impl Decided {
    /// The NegotiateProtocolVersion among them, if the repository sent one.
    pub fn negotiated(&self) -> Option<Frame> {
        self.frames.iter().find(|f| f.kind == b'v').cloned()
    }

    /// Whether it refused the password itself (28P01).
    pub fn wrong_password(&self) -> bool {
        matches!(self.answer, Answer::Refused)
            && self.frames.last().is_some_and(|f| {
                matches!(LoginOutcome::refused(&f.body), LoginOutcome::Refused { sqlstate, .. } if sqlstate == "28P01")
            })
    }
}

/// Runs the exchange on `upstream` (its start-up already sent) until the repository decides.
pub(crate) async fn log_in<U>(upstream: &mut U, password: &[u8]) -> Result<Decided, FrameError>
where
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut scram: Option<ScramSha256> = None;
    let mut frames = Vec::new();
    loop {
        let frame = read_frame(upstream).await?;
        let data = frame.body.get(4..).unwrap_or_default();
        let mut out = BytesMut::new();
        let decided = |answer, mut frames: Vec<Frame>, frame| {
            frames.push(frame);
            Ok(Decided { answer, frames })
        };
        match (frame.kind, frame.auth_code(), scram.as_mut()) {
            (b'R', Some(AUTH_OK), _) => return decided(Answer::Ok, frames, frame),
            (b'E', _, _) => return decided(Answer::Refused, frames, frame),
            (b'R', Some(AUTH_SASL), None) => {
                let offered = data
                    .split(|b| *b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offered {
                    return decided(Answer::Password, frames, frame);
                }
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                scram = Some(s);
            }
            (b'R', Some(AUTH_SASL_CONTINUE), Some(s)) => {
                s.update(data)?;
                frontend::sasl_response(s.message(), &mut out)?;
            }
            (b'R', Some(AUTH_SASL_FINAL), Some(s)) => {
                // Proves the repository knows the verifier too; AuthenticationOk follows.
                s.finish(data)?;
                continue;
            }
            (b'R', _, _) => return decided(Answer::Password, frames, frame),
            _ => {
                frames.push(frame);
                continue;
            }
        }
        upstream.write_all(&out).await?;
        upstream.flush().await?;
    }
}
