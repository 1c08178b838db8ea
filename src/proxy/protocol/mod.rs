//! The PostgreSQL wire messages pgssl itself reads or writes.
//!
//! pgssl looks at the first packets of a connection (see
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP>) and at the
//! authentication exchange that follows ([`auth_message`]); after AuthenticationOk it relays bytes
//! without parsing them, only watching the frames of the repository's remaining login answers to
//! learn how the login ended ([`login_watch`]) — or, for a pooled session, following the frames both
//! ways to know whether the session is idle when the client leaves ([`session_watch`]). Parsing here
//! never touches a socket: it works on byte buffers so that it can be tested against fixtures and fuzzed.

pub mod auth_message;
pub mod error_response;
pub mod first_packet;
pub mod login_watch;
pub mod proxy_header;
pub mod session_watch;

pub use error_response::{ErrorResponse, SqlState};
pub use first_packet::{FirstPacket, PacketError, StartupMessage};
