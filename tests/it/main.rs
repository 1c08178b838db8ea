//! Integration tests: a real PostgreSQL, pgssl in front of it, real clients (psql/libpq and a Rust
//! client).

mod cli;
mod client;
mod harness;
mod live_reload;
mod managed;
mod metrics;
mod negotiation;
mod psql_matrix;
mod rotation;
