//! Transaction pooling: a client holds a backend only from its first message to the end of its
//! transaction, so that thousands of clients share a few repository sessions.
//!
//! - [`tracker`] follows the client's messages and its backends' answers: transaction status,
//!   protocol-level prepared statements (moved from backend to backend under pgssl's names),
//!   session parameters, pins.
//! - [`sql`] reads what a statement's leading words mean for that.
//! - [`statements`] is a backend's set of pgssl's prepared statements.
//! - [`serve`] is the loop that takes and gives back backends around the tracker.

/// The serve loop of a transaction-pooled client.
pub mod serve;
pub mod sql;
pub mod statements;
pub mod tracker;

pub use sql::PinReason;
pub use tracker::{BackendState, OnPin, TrackOptions};
