//! The data plane: accept → negotiate → policy → upstream → relay.
//!
//! Nothing here reads or writes pgssl's state on disk, runs the admin server or parses the command
//! line: the control plane hands it a [`settings::LiveSettings`] snapshot through a
//! [`settings::SettingsCell`] and swaps it when an apply or SIGHUP asks.

pub mod connection;
pub mod metrics;
pub mod negotiate;
pub mod policy;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod settings;
pub mod stream;
pub mod upstream;
