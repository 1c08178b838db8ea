//! Making a repository session fresh for its next client, with simple queries pgssl sends itself:
//! ROLLBACK when the client left a transaction open, then `pool.reset_query` (`DISCARD ALL`: temp
//! tables, prepared statements, cursors, advisory locks, LISTENs, plans, sequences, and every SET back
//! to the session's start-up value, each reported parameter that changes announced again); at hand-out,
//! the next client's `application_name` and `pgssl.*` values.
//!
//! The queries are sent in one write and answered in one read cycle. Everything the repository
//! reports meanwhile is recorded, so the next client's start-up answer carries the values a new
//! backend would have. Any error, or a message that does not belong to a simple query (a COPY), and
//! the session is closed instead.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{Backend, StartupError, set_param};
use crate::proxy::auth::{FrameError, read_frame};
use crate::proxy::identity::Identity;
use crate::proxy::protocol::login_watch::LoginOutcome;
use crate::proxy::protocol::session_watch::Idle;

/// Why a session could not be made fresh (it is closed).
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The repository answered with an error.
    #[error("the repository refused '{query}': {sqlstate} {message}")]
    Refused {
        /// The query.
        query: String,
        /// Its SQLSTATE.
        sqlstate: String,
        /// The error's message.
        message: String,
    },
    /// A message that does not belong to a simple query's answer, or a transaction still open after.
    #[error("unexpected answer from the repository: {0}")]
    Unexpected(&'static str),
    /// The answer did not come in time.
    #[error("the repository did not answer in time")]
    TimedOut,
    /// The socket failed or a frame was malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed while sending.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<StartupError> for ResetError {
    fn from(e: StartupError) -> ResetError {
        match e {
            StartupError::Frame(f) => ResetError::Frame(f),
            _ => ResetError::Unexpected("a malformed ParameterStatus"),
        }
    }
}

/// Resets a session its client left idle (`how`, from the relay's watch) with `reset_query`.
pub async fn reset(
    backend: &mut Backend,
    how: Idle,
    reset_query: &str,
    deadline: Instant,
) -> Result<(), ResetError> {
    let queries: &[&str] = match how {
        Idle::OutsideTransaction => &[reset_query],
        Idle::InTransaction => &["ROLLBACK", reset_query],
    };
    run(backend, queries, deadline).await?;
    // The reset (DISCARD ALL) dropped what transaction pooling had left on the session: its
    // prepared statements and SETs.
    backend.pooling = Default::default();
    Ok(())
}

/// Gives a session its next client's `application_name` (a warm one: empty when it sent none, as
/// a new backend would have with the default configuration) and `pgssl.*` values, in one round trip;
/// nothing is sent when it already has them.
pub async fn hand_out(
    backend: &mut Backend,
    name: Option<&str>,
    identity: Option<&Arc<Identity>>,
    deadline: Instant,
) -> Result<(), ResetError> {
    let mut sql = String::new();
    if let Some(name) = name
        && backend.param("application_name") != Some(name.as_bytes())
    {
        sql = format!("SET application_name TO {}\n;", quoted(name));
    }
    let identity = identity.filter(|id| backend.pooling.identity.as_ref() != Some(*id));
    if let Some(id) = identity {
        sql.push_str(&id.set_sql());
    }
    if sql.is_empty() {
        return Ok(());
    }
    run(backend, &[&sql], deadline).await?;
    if let Some(id) = identity {
        backend.pooling.identity = Some(id.clone());
    }
    Ok(())
}

/// `value` as an SQL string literal, for the raw simple Queries pgssl sends a session itself (SET,
/// which takes no bound parameter; transaction pooling's SETs and refusals): the one place that
/// quotes.
pub fn quoted(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

/// Sends `queries` as pipelined simple Query messages and reads every answer; the session must end
/// outside a transaction.
async fn run(backend: &mut Backend, queries: &[&str], deadline: Instant) -> Result<(), ResetError> {
    let mut out = BytesMut::new();
    for q in queries {
        postgres_protocol::message::frontend::query(q, &mut out)?;
    }
    let answered = async {
        backend.stream.write_all(&out).await?;
        backend.stream.flush().await?;
        let mut status = b'I';
        for q in queries {
            status = read_answer(backend, q).await?;
        }
        if status != b'I' {
            return Err(ResetError::Unexpected("a transaction is still open"));
        }
        Ok(())
    };
    tokio::time::timeout_at(deadline, answered)
        .await
        .map_err(|_| ResetError::TimedOut)?
}

/// Reads one simple query's answer up to its ReadyForQuery; returns the transaction status.
async fn read_answer(backend: &mut Backend, query: &str) -> Result<u8, ResetError> {
    let mut refused = None;
    loop {
        let frame = read_frame(&mut backend.stream).await?;
        match frame.kind {
            b'S' => set_param(&mut backend.params, &frame.body)?,
            b'E' => refused = Some(LoginOutcome::refused(&frame.body)),
            // CommandComplete, rows, EmptyQueryResponse, a notice or a notification.
            b'C' | b'T' | b'D' | b'I' | b'N' | b'A' => {}
            b'Z' => {
                if let Some(LoginOutcome::Refused { sqlstate, message }) = refused {
                    return Err(ResetError::Refused {
                        query: query.to_string(),
                        sqlstate,
                        message,
                    });
                }
                return frame
                    .body
                    .first()
                    .copied()
                    .ok_or(ResetError::Unexpected("an empty ReadyForQuery"));
            }
            _ => {
                return Err(ResetError::Unexpected(
                    "a message a simple query does not send",
                ));
            }
        }
    }
}
