//! The node's side of the control socket: binds it (replacing a stale one a crashed server left)
//! and answers each connection's one request from the node's in-process handle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{ControlReply, ControlRequest, MAX_REQUEST_LINE};
use crate::atomic;
use crate::control::node::RunningNode;
use crate::control::reload::ControlError;

/// How long a peer has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the control socket, replacing a stale one left by a crashed server.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        atomic::create_private_dir(dir).map_err(io_err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(
                path.parent()
                    .and_then(Path::parent)
                    .unwrap_or(path)
                    .to_path_buf(),
            ));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    UnixListener::bind(path).map_err(io_err)
}

/// Answers control requests with `node` until `stop` is cancelled, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    node: Arc<dyn RunningNode>,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move { answer(stream, node.as_ref()).await });
    }
    let _ = std::fs::remove_file(&path);
}

/// Reads one request line from `stream` and writes its answer line. A line that is not a request
/// (garbage, too long, not UTF-8) is answered with an error; a peer that sends nothing within
/// [`REQUEST_TIMEOUT`] is closed on.
pub(super) async fn answer<S>(stream: S, node: &dyn RunningNode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST_LINE));
    let Ok(Some(read)) = tokio::time::timeout(REQUEST_TIMEOUT, lines.next()).await else {
        return;
    };
    let request = match read {
        Ok(line) => ControlRequest::decode(&line).map_err(|_| {
            r#"unknown request (expected {"request": "reload"}, "status", "pool", "hosts", {"sessions": …}, {"terminate": …} or "inventory")"#
                .to_string()
        }),
        Err(LinesCodecError::MaxLineLengthExceeded) => Err(format!(
            "the request is longer than {MAX_REQUEST_LINE} bytes"
        )),
        Err(LinesCodecError::Io(e)) => Err(format!("the request cannot be read: {e}")),
    };
    let reply = match request {
        Ok(ControlRequest::Reload) => encode(node.reload().await),
        Ok(ControlRequest::Status) => encode(node.status().await),
        Ok(ControlRequest::Pool) => encode(node.pool().await),
        Ok(ControlRequest::Hosts) => encode(node.repository_hosts().await),
        Ok(ControlRequest::Sessions(selector)) => encode(node.sessions(selector).await),
        Ok(ControlRequest::Terminate(t)) => encode(node.terminate(t.selector, t.by).await),
        Ok(ControlRequest::Inventory) => encode(node.inventory().await),
        Err(refusal) => ControlReply::<()>::Error(refusal).encode(),
    };
    let _ = lines.send(reply).await;
}

/// The answer line of a node's answer; a node that is not running (it is, since it answers) is
/// said as such.
fn encode<T: Serialize>(answer: Result<Option<T>, ControlError>) -> String {
    ControlReply::of(answer.and_then(|a| a.ok_or(ControlError::NotRunning))).encode()
}
