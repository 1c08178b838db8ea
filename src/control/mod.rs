//! The control plane: the operations behind every command, the state they stage and apply, and the
//! reload path to a running server.

pub mod api;
pub mod cluster;
pub mod expiry;
pub mod operations;
pub mod reload;
pub mod settings;
pub mod state;
