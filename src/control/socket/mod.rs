//! The control socket: how the CLI asks the `serve` running on its data directory to reload, and
//! what it runs with and holds, through a Unix socket at `<data-dir>/run/control.sock` whose folder
//! is 0700, so only the data directory's owner can ask.
//!
//! One connection carries one exchange of serde-tagged JSON lines: the request
//! (`{"request":"reload"}`, `{"request":"status"}`, `{"request":"pool"}`,
//! `{"request":{"sessions":{"user":"tableau"}}}`), then the answer,
//! `{"ok": …}` with the request's report or `{"error": "…"}`. Lines are framed with
//! [`tokio_util::codec::LinesCodec`] and bounded ([`MAX_REQUEST_LINE`], [`MAX_REPLY_LINE`]), so a
//! peer that never ends its line costs a bounded buffer. The server side ([`serve`]) answers from
//! the node's in-process handle; the client side ([`SocketNode`]) is that same handle
//! ([`RunningNode`](crate::control::node::RunningNode)) for a process that is not the node.

mod client;
mod server;

pub use client::SocketNode;
pub use server::{bind, serve};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::control::reload::ControlError;
use crate::proxy::sessions::Selector;

/// Longest request line the server reads: a request is a few words of JSON (a termination names a
/// role, a database and an administrator).
pub const MAX_REQUEST_LINE: usize = 1024;

/// Longest answer line the client reads: a pool report grows with the (role, database) pairs it
/// lists, a sessions list with the sessions, a few hundred bytes each.
pub const MAX_REPLY_LINE: usize = 8 * 1024 * 1024;

/// A request on the control socket, one JSON object on one line, tagged `request`:
/// `{"request":"reload"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlRequest {
    /// Reload the applied state; answered with a
    /// [`ReloadReport`](crate::control::reload::ReloadReport).
    Reload,
    /// What the server runs with; answered with a
    /// [`ServeStatus`](crate::control::reload::ServeStatus).
    Status,
    /// What the pool holds; answered with a [`PoolSnapshot`](crate::control::node::PoolSnapshot).
    Pool,
    /// The repository hosts; answered with a list of
    /// [`HostStatus`](crate::proxy::repository::hosts::HostStatus).
    Hosts,
    /// The client sessions the selector names; answered with a list of
    /// [`SessionInfo`](crate::proxy::sessions::SessionInfo).
    Sessions(Selector),
    /// Ends the sessions the selector names; answered with the ids it ended.
    Terminate(Termination),
    /// The clients seen logging in; answered with a list of
    /// [`Seen`](crate::proxy::inventory::Seen).
    Inventory,
}

/// A `terminate` request: which sessions, and the administrator whose word it is (the clients are
/// told, and the node logs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Termination {
    /// Which sessions.
    pub selector: Selector,
    /// Who asked.
    pub by: String,
}

/// A request line: the request under its tag and nothing else (an internally tagged enum's unit
/// variants would let other fields through).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    request: ControlRequest,
}

impl ControlRequest {
    /// The request on one line (its line end already taken off); an error for anything else.
    pub fn decode(line: &str) -> Result<ControlRequest, serde_json::Error> {
        // An object, not the struct's sequence form serde would also take (`["reload"]`).
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)?;
        serde_json::from_value::<RequestLine>(object.into()).map(|l| l.request)
    }

    /// The request as its line, without the line end.
    pub fn encode(self) -> String {
        // A fixed tag and strings: serialising it cannot fail.
        serde_json::to_string(&RequestLine { request: self }).unwrap_or_default()
    }
}

/// The answer to a request, one JSON object on one line: `{"ok": …}` or `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ControlReply<T> {
    /// The request's report.
    Ok(T),
    /// Why the request was refused (one line).
    Error(String),
}

impl<T: Serialize> ControlReply<T> {
    /// The answer to `result`: its report, or its error's message on one line.
    pub fn of(result: Result<T, ControlError>) -> ControlReply<T> {
        match result {
            Ok(report) => ControlReply::Ok(report),
            // A refusal is sent as the server's own words, which the client wraps again.
            Err(ControlError::Refused(message)) => ControlReply::Error(message),
            Err(e) => ControlReply::Error(one_line(&e.to_string())),
        }
    }

    /// The answer as its line, without the line end.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::to_string(&ControlReply::<()>::Error(format!(
                "cannot encode the answer: {e}"
            )))
            .unwrap_or_default()
        })
    }
}

/// The report in an answer line: the server's refusal as [`ControlError::Refused`], anything that
/// is not an answer as [`ControlError::Unexpected`].
pub fn decode_reply<T: DeserializeOwned>(line: &str) -> Result<T, ControlError> {
    match serde_json::from_str::<ControlReply<T>>(line) {
        Ok(ControlReply::Ok(report)) => Ok(report),
        Ok(ControlReply::Error(message)) => Err(ControlError::Refused(message)),
        Err(e) => Err(ControlError::Unexpected(e.to_string())),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
