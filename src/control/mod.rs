//! The control plane: the operations behind every command, the state they stage and apply, and the
//! running node they ask to reload (in-process inside `serve`, over the control socket from the
//! CLI).

pub mod api;
pub mod cluster;
pub mod expiry;
pub mod inventory;
pub mod node;
pub mod operations;
pub mod reload;
pub mod renewal;
pub mod settings;
pub mod socket;
pub mod state;
