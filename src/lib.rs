//! pgssl: a PostgreSQL-wire proxy that terminates TLS in front of a PostgreSQL server (the
//! "repository") and enforces who must use it.
//!
//! The folders are the layers, in the order a connection and a command meet them:
//!
//! - [`proxy`], the data plane: [`proxy::server`] accepts and limits connections;
//!   [`proxy::connection`] runs one through [`proxy::negotiate`] (first packets, on [`proxy::protocol`]),
//!   [`proxy::policy`] (mode × user class), [`proxy::repository`] (optionally over TLS) and
//!   [`proxy::relay`]. It serves the plain [`proxy::settings::LiveSettings`] snapshot it is handed and
//!   knows nothing of how state is stored.
//! - [`tls`]: rustls server configuration, outgoing-TLS verifiers, certificate files and protocol lists.
//! - [`control`], the control plane: [`control::operations`] (one file per command family),
//!   [`control::state`] (applied and pending state, keystore), [`control::reload`] (building the
//!   settings snapshot and the reload socket).
//! - [`repository`]: the managed PostgreSQL cluster, roles and grants, a minimal client.
//! - [`admin`]: the HTTPS admin server (JSON API, web pages) over the same operations.
//! - [`cli`]: the command-line grammar, run locally or against the admin API ([`cli::remote`]).
//! - [`app`]: the composition root of `pgssl serve`.
//! - Shared: [`config`], [`error`] (who has to act on a failure), [`telemetry`], [`atomic`] (atomic
//!   file writes), [`keystore`] (secrets sealed at rest).

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod atomic;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod keystore;
pub mod proxy;
pub mod repository;
pub mod telemetry;
pub mod tls;
