//! pgssl: a PostgreSQL-wire proxy that terminates TLS in front of a PostgreSQL server (the
//! "repository") and enforces who must use it.
//!
//! A tour, in the order a connection meets the code:
//!
//! - Data plane: [`server`] accepts and limits connections; [`connection`] runs one of them through
//!   [`negotiate`] (first packets, built on [`protocol`]), [`policy`] (mode × user class), [`upstream`]
//!   (with [`upstream_tls`] when the repository leg is encrypted) and [`relay`]. [`live`] holds the
//!   settings, the TLS acceptor ([`tls`]) and the upstream connector ([`tls_client`]) that new
//!   connections get.
//! - Control plane: [`state`] (applied and pending state, certificates, atomic files), [`repository`]
//!   (talking to the upstream as a client), and [`control`] (the reload socket a running server listens
//!   on).
//! - Admin: [`admin`] serves the same operations over HTTPS (JSON API and web pages).
//! - CLI: [`cli`] maps the tsm-style grammar onto [`commands`], or with `-s` onto the admin API
//!   ([`remote`]).

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connection;
pub mod control;
pub mod live;
pub mod negotiate;
pub mod policy;
pub mod protocol;
pub mod relay;
pub mod remote;
pub mod repository;
pub mod server;
pub mod state;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod tls_client;
pub mod upstream;
pub mod upstream_tls;
