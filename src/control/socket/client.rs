//! The CLI's side of the control socket: the running node as a
//! [`RunningNode`](crate::control::node::RunningNode) that asks over the socket.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use super::{ControlRequest, MAX_REPLY_LINE, decode_reply};
use crate::control::node::{NodeFuture, PoolSnapshot, RunningNode};
use crate::control::reload::{ControlError, ReloadReport, ServeStatus};
use crate::proxy::repository::hosts::HostStatus;
use crate::proxy::sessions::{Selector, SessionInfo};

/// How long a status or pool question may take.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reload may take (it rebuilds every TLS configuration).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The `serve` on a data directory, asked through its control socket.
#[derive(Debug, Clone)]
pub struct SocketNode {
    path: PathBuf,
}

impl SocketNode {
    /// The node that listens (or would) on the control socket at `path`.
    pub fn new(path: PathBuf) -> SocketNode {
        SocketNode { path }
    }

    /// Sends `request` and reads its answer; `None` when no server listens.
    async fn ask<T: DeserializeOwned>(
        &self,
        request: ControlRequest,
        timeout: Duration,
    ) -> Result<Option<T>, ControlError> {
        let io_err = |source| ControlError::Io {
            path: self.path.clone(),
            source,
        };
        let exchange = async {
            let stream = match UnixStream::connect(&self.path).await {
                Ok(s) => s,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(io_err(e)),
            };
            let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REPLY_LINE));
            lines
                .send(request.encode())
                .await
                .map_err(codec_err(&io_err))?;
            match lines.next().await {
                Some(Ok(line)) => decode_reply(&line).map(Some),
                Some(Err(e)) => Err(codec_err(&io_err)(e)),
                None => Err(ControlError::Unexpected(
                    "it closed the connection without answering".into(),
                )),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(io_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", timeout.as_secs()),
                )))
            })
    }
}

/// A framing failure as a [`ControlError`]: an answer too long to be one is not understood.
fn codec_err(
    io_err: &impl Fn(io::Error) -> ControlError,
) -> impl Fn(LinesCodecError) -> ControlError + '_ {
    move |e| match e {
        LinesCodecError::MaxLineLengthExceeded => {
            ControlError::Unexpected(format!("an answer longer than {MAX_REPLY_LINE} bytes"))
        }
        LinesCodecError::Io(e) => io_err(e),
    }
}

impl RunningNode for SocketNode {
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>> {
        Box::pin(self.ask(ControlRequest::Status, QUESTION_TIMEOUT))
    }

    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>> {
        Box::pin(self.ask(ControlRequest::Reload, RELOAD_TIMEOUT))
    }

    fn pool(&self) -> NodeFuture<'_, Option<PoolSnapshot>> {
        Box::pin(self.ask(ControlRequest::Pool, QUESTION_TIMEOUT))
    }

    fn repository_hosts(&self) -> NodeFuture<'_, Option<Vec<HostStatus>>> {
        Box::pin(self.ask(ControlRequest::Hosts, QUESTION_TIMEOUT))
    }

    fn sessions(&self, selector: Selector) -> NodeFuture<'_, Option<Vec<SessionInfo>>> {
        Box::pin(self.ask(ControlRequest::Sessions(selector), QUESTION_TIMEOUT))
    }

    fn terminate(&self, selector: Selector, by: String) -> NodeFuture<'_, Option<Vec<u64>>> {
        let request = ControlRequest::Terminate(super::Termination { selector, by });
        Box::pin(self.ask(request, QUESTION_TIMEOUT))
    }

    fn inventory(&self) -> NodeFuture<'_, Option<Vec<crate::proxy::inventory::Seen>>> {
        Box::pin(self.ask(ControlRequest::Inventory, QUESTION_TIMEOUT))
    }
}
