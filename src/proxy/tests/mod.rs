//! The data plane's stages, each tested in process: the client is one end of a
//! `tokio::io::duplex` pipe, the repository a fake that answers from scripted messages or fails on
//! demand ([`support::FakeRepository`]), so a failure names the stage that broke. The integration
//! suite (`tests/it`) proves the whole against real PostgreSQL servers.
//!
//! - [`negotiate`]: the first packets (SSLRequest, GSSENCRequest, direct TLS, lengths, CancelRequest).
//! - [`policy`]: the SSL mode × user class × transport matrix and the other admission checks.
//! - [`authenticate`]: pgssl's own SCRAM, its channel binding, and the failed-login lockout.
//! - [`backend`]: a session's repository backend, from the warm pool or freshly connected.
//! - [`cancel`]: where a CancelRequest goes.
//! - [`relay`]: bytes both ways until either side leaves.
//! - [`certificate`]: logins by client certificate.

mod authenticate;
mod backend;
mod cancel;
mod certificate;
mod negotiate;
mod policy;
mod relay;
mod support;
