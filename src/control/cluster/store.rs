//! The shared store as the publish/follow state machine sees it: one committed version (with its
//! generation and sealed snapshot), a commit guarded by the version it was based on, every node's
//! heartbeat, and a notification when a version commits.
//!
//! [`PgStore`] is the cluster's repository, through the statements of [`super::repo`]; the tests
//! drive the same state machine ([`super::publish`], [`super::follow`]) over an in-memory store
//! that can also be cut off or made to lose a race on demand.

use std::borrow::BorrowMut;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use super::publish::TIMEOUT;
use super::repo::{self, Beat, Conn, Head, NodeRow, Stored};
use super::{ClusterError, Membership};
use crate::keystore::Keystore;

/// Opens sessions on the shared store for a node.
pub trait Store: Send + Sync {
    /// One node's session.
    type Session: StoreSession;

    /// A session for the node of `membership` whose config folder is `config_dir`;
    /// [`ClusterError::Unreachable`] or [`ClusterError::Refused`] when the store cannot be reached.
    fn connect(
        &self,
        membership: &Membership,
        config_dir: &Path,
    ) -> impl Future<Output = Result<Self::Session, ClusterError>> + Send;
}

/// A session on the shared store. Every failure to reach the store is
/// [`ClusterError::Unreachable`]; a lost commit race is [`ClusterError::Conflict`].
pub trait StoreSession: Send {
    /// The committed version and generation; `None` before the first commit.
    fn head(&mut self) -> impl Future<Output = Result<Option<Head>, ClusterError>> + Send;

    /// The committed version with its sealed snapshot; `None` before the first commit.
    fn fetch(&mut self) -> impl Future<Output = Result<Option<Stored>, ClusterError>> + Send;

    /// Commits `sealed` as the version after `base` (0: the first), with `generation` (`None`
    /// keeps it), and notifies every listening session; [`ClusterError::Conflict`] when the store
    /// is no longer at `base`. Returns the new version.
    fn commit(
        &mut self,
        base: u64,
        generation: Option<u64>,
        sealed: &[u8],
        by: &str,
    ) -> impl Future<Output = Result<u64, ClusterError>> + Send;

    /// Starts receiving the notifications of new versions on this session.
    fn listen(&mut self) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Waits up to `timeout` for a notification; `false` when none came.
    fn wait_change(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;

    /// Records a node's heartbeat; its id, or `None` when the node was removed.
    fn heartbeat(
        &mut self,
        beat: &Beat<'_>,
    ) -> impl Future<Output = Result<Option<u8>, ClusterError>> + Send;

    /// Every node, by name.
    fn nodes(&mut self) -> impl Future<Output = Result<Vec<NodeRow>, ClusterError>> + Send;

    /// The questions `node` has not answered yet, oldest first: their ids and bodies
    /// ([`super::questions`]).
    fn questions(
        &mut self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<(i64, String)>, ClusterError>> + Send;

    /// Records `node`'s answer to question `id`.
    fn answer(
        &mut self,
        id: i64,
        node: &str,
        body: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Where the session is: the repository host it reached (the primary, of several).
    fn host(&self) -> &str;

    /// Ends the session (nothing to report if that fails: the store drops it anyway).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// The cluster's repository, reached as the cluster role.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgStore;

/// A session on the repository: a connection (owned, or borrowed from a caller that keeps it)
/// and the host it reached, for error messages. Every statement is given up after [`TIMEOUT`]: a
/// primary that vanished without closing the connection (its machine died, a partition) must not
/// hold a node's follower, which then reconnects to whichever host is the primary.
#[derive(Debug)]
pub struct PgSession<C = Conn> {
    conn: C,
    repository: String,
}

/// `statement` on `repository`, given up after [`TIMEOUT`].
async fn bounded<T>(
    repository: &str,
    statement: impl Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(TIMEOUT, statement)
        .await
        .unwrap_or_else(|_| {
            Err(ClusterError::Unreachable {
                repository: repository.to_string(),
                message: format!("no answer within {TIMEOUT:?}"),
            })
        })
}

/// A connection a [`PgSession`] runs on: its own, ended with the session, or a caller's, which the
/// caller ends.
pub trait PgConn: BorrowMut<Conn> + Send {
    /// Ends the connection if it is the session's own.
    fn end(self) -> impl Future<Output = ()> + Send;
}

impl PgConn for Conn {
    async fn end(self) {
        let _ = self.terminate().await;
    }
}

impl PgConn for &mut Conn {
    async fn end(self) {}
}

impl<C: PgConn> PgSession<C> {
    /// A session over `conn`, a connection to the repository host `repository`.
    pub fn new(conn: C, repository: &str) -> PgSession<C> {
        PgSession {
            conn,
            repository: repository.to_string(),
        }
    }

    /// The connection, for statements of a command's own.
    pub fn into_conn(self) -> C {
        self.conn
    }
}

impl Store for PgStore {
    type Session = PgSession;

    async fn connect(
        &self,
        membership: &Membership,
        config_dir: &Path,
    ) -> Result<PgSession, ClusterError> {
        let keystore = Keystore::open(config_dir)?;
        let (conn, host) = repo::connect(membership, config_dir, &keystore, TIMEOUT).await?;
        Ok(PgSession::new(conn, &host))
    }
}

impl<C: PgConn> StoreSession for PgSession<C> {
    async fn head(&mut self) -> Result<Option<Head>, ClusterError> {
        let PgSession { conn, repository } = self;
        bounded(repository, repo::head(conn.borrow_mut(), repository)).await
    }

    async fn fetch(&mut self) -> Result<Option<Stored>, ClusterError> {
        let PgSession { conn, repository } = self;
        bounded(repository, repo::fetch(conn.borrow_mut(), repository)).await
    }

    async fn commit(
        &mut self,
        base: u64,
        generation: Option<u64>,
        sealed: &[u8],
        by: &str,
    ) -> Result<u64, ClusterError> {
        let PgSession { conn, repository } = self;
        let commit = repo::commit(conn.borrow_mut(), repository, base, generation, sealed, by);
        bounded(repository, commit).await
    }

    async fn listen(&mut self) -> Result<(), ClusterError> {
        let PgSession { conn, repository } = self;
        bounded(repository, repo::listen(conn.borrow_mut(), repository)).await
    }

    async fn wait_change(&mut self, timeout: Duration) -> Result<bool, ClusterError> {
        self.conn
            .borrow_mut()
            .wait_notification(timeout)
            .await
            .map_err(|e| ClusterError::Unreachable {
                repository: self.repository.clone(),
                message: e.to_string(),
            })
    }

    async fn heartbeat(&mut self, beat: &Beat<'_>) -> Result<Option<u8>, ClusterError> {
        let PgSession { conn, repository } = self;
        bounded(
            repository,
            repo::heartbeat(conn.borrow_mut(), repository, beat),
        )
        .await
    }

    async fn nodes(&mut self) -> Result<Vec<NodeRow>, ClusterError> {
        let PgSession { conn, repository } = self;
        bounded(repository, repo::nodes(conn.borrow_mut(), repository)).await
    }

    async fn questions(&mut self, node: &str) -> Result<Vec<(i64, String)>, ClusterError> {
        let PgSession { conn, repository } = self;
        let pending = super::questions::pending(conn.borrow_mut(), repository, node);
        bounded(repository, pending).await
    }

    async fn answer(&mut self, id: i64, node: &str, body: &str) -> Result<(), ClusterError> {
        let PgSession { conn, repository } = self;
        let answer = super::questions::answer(conn.borrow_mut(), repository, id, node, body);
        bounded(repository, answer).await
    }

    fn host(&self) -> &str {
        &self.repository
    }

    async fn close(self) {
        // A Terminate to a host that vanished is never answered.
        let _ = tokio::time::timeout(TIMEOUT, self.conn.end()).await;
    }
}
