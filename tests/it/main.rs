//! Integration tests: a real PostgreSQL, pgssl in front of it, real clients (psql/libpq and a Rust
//! client).

mod admin;
mod admin_abuse;
mod auth;
mod browser;
mod cli;
mod client;
mod cluster;
mod containers;
mod external_ssl;
mod extsvc;
mod hardening;
mod harness;
mod layout;
mod live_reload;
mod managed;
mod metrics;
mod mutual_ssl;
mod negotiation;
mod pki;
mod pool;
mod pool_prefill;
mod proxy_protocol;
mod psql_matrix;
mod rotation;
mod upstream_tls;
