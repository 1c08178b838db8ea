//! [`RepositoryConnector`]: the one way the data plane opens a connection to the repository.
//!
//! Every stage that needs the repository — a session's backend, a certificate login, a cancel
//! request, the pool's top-ups — asks the connection context's connector, never an address. The
//! server's connector is a [`Target`]; unit tests put a fake repository in its place, which answers
//! from scripted messages or fails on demand, so that each stage is tested in process.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::tls::RepositoryTls;
use super::{RepositoryAddr, RepositoryConnectError, RepositoryStream, Target};

/// A connection to the repository on its way.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RepositoryStream, RepositoryConnectError>> + Send + 'a>>;

/// Opens connections to the repository. `Display` names it for the operator's log (never for a
/// client).
pub trait RepositoryConnector: Send + Sync + fmt::Debug + fmt::Display {
    /// Connects and, unless `tls` is `disable`, negotiates TLS with the repository; all within
    /// `timeout`.
    fn connect<'a>(&'a self, timeout: Duration, tls: &'a RepositoryTls) -> ConnectFuture<'a>;

    /// The repository's address as configured (a Unix socket is the managed repository's).
    fn addr(&self) -> &RepositoryAddr;
}

impl RepositoryConnector for Target {
    fn connect<'a>(&'a self, timeout: Duration, tls: &'a RepositoryTls) -> ConnectFuture<'a> {
        Box::pin(Target::connect(self, timeout, tls))
    }

    fn addr(&self) -> &RepositoryAddr {
        Target::addr(self)
    }
}
