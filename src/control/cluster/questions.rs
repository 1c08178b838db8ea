//! Questions a command on one node asks every node of its cluster — the client sessions each
//! serves, or to end some — through the repository, as everything else in a cluster is
//! coordinated: the command writes a row in `pgssl.questions` and notifies; each node's follower
//! answers the questions it has not answered (at once when notified, else within its next tick)
//! with a row in `pgssl.answers`; the command reads the answers of every live node, waiting a
//! bounded time for the others, and deletes its question. No node needs to reach another.
//!
//! ```text
//! pgssl.questions   id, asked_at, body (JSON: {"sessions": {…}} or {"terminate": {…}})
//! pgssl.answers     question, node, body (JSON: {"sessions": […]} or {"terminated": […]})
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::repo::{self, Conn, failed};
use super::{CHANNEL, ClusterError, Membership};
use crate::control::socket::Termination;
use crate::keystore::Keystore;
use crate::proxy::sessions::{Selector, SessionInfo};

/// How long a command waits for the live nodes' answers.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// How often the asking command looks for answers.
const ANSWER_POLL: Duration = Duration::from_millis(50);

/// A question every node answers about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Question {
    /// The client sessions the selector names.
    Sessions(Selector),
    /// End the sessions the selector names (only on the node it names, if it names one).
    Terminate(Termination),
    /// The clients each node has seen log in.
    Inventory,
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Answer {
    /// Its sessions.
    Sessions(Vec<SessionInfo>),
    /// The ids of the sessions it ended.
    Terminated(Vec<u64>),
    /// The clients it has seen log in.
    Inventory(Vec<crate::proxy::inventory::Seen>),
    /// It could not answer (no server runs behind its follower, a question it does not know).
    Failed(String),
}

/// What the nodes answered.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Each live node's answer, by node name.
    pub answered: Vec<(String, Answer)>,
    /// The live nodes that did not answer in time.
    pub silent: Vec<String>,
}

/// Asks every node of the cluster the data directory whose config folder is `config_dir` belongs
/// to; `None` when it belongs to none (the caller asks its own node).
pub async fn ask(config_dir: &Path, question: &Question) -> Result<Option<Answers>, ClusterError> {
    let Some(m) = Membership::read(config_dir)? else {
        return Ok(None);
    };
    let keystore = Keystore::open(config_dir)?;
    let (mut conn, host) =
        repo::connect(&m, config_dir, &keystore, super::publish::TIMEOUT).await?;
    let body = serde_json::to_string(question).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
    let id = post(&mut conn, &host, &body).await?;
    let asked = collect(&mut conn, &host, id).await;
    // The question goes whatever happened (its answers with it); a node that answers late finds
    // nothing to answer.
    let _ = conn
        .execute("DELETE FROM pgssl.questions WHERE id = $1", &[&id])
        .await;
    let _ = conn.terminate().await;
    asked.map(Some)
}

/// Waits for every live node's answer to question `id`, for up to [`ANSWER_WAIT`], looking at
/// who answered (not what: answers may be large) until all have; then reads the answers once.
async fn collect(conn: &mut Conn, host: &str, id: i64) -> Result<Answers, ClusterError> {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    let silent = loop {
        let live: Vec<String> = repo::nodes(conn, host)
            .await?
            .into_iter()
            .filter(|n| n.is_live())
            .map(|n| n.name)
            .collect();
        let rows = conn
            .query("SELECT node FROM pgssl.answers WHERE question = $1", &[&id])
            .await
            .map_err(failed(host))?;
        let answered: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(failed(host))?;
        let silent: Vec<String> = live.into_iter().filter(|n| !answered.contains(n)).collect();
        if silent.is_empty() || tokio::time::Instant::now() >= deadline {
            break silent;
        }
        tokio::time::sleep(ANSWER_POLL).await;
    };
    let rows = conn
        .query(
            "SELECT node, body FROM pgssl.answers WHERE question = $1 ORDER BY node",
            &[&id],
        )
        .await
        .map_err(failed(host))?;
    let mut answers = Answers {
        answered: Vec::new(),
        silent,
    };
    for row in rows {
        let node: String = row.try_get(0).map_err(failed(host))?;
        let body: String = row.try_get(1).map_err(failed(host))?;
        let answer = serde_json::from_str(&body)
            .unwrap_or_else(|e| Answer::Failed(format!("an answer that does not read: {e}")));
        answers.answered.push((node, answer));
    }
    Ok(answers)
}

/// Writes the question and wakes the followers (on the channel they already listen on: a wake-up
/// with no new version only makes them look). Questions an earlier command left behind (it was
/// killed before deleting its own) are deleted first.
async fn post(conn: &mut Conn, host: &str, body: &str) -> Result<i64, ClusterError> {
    conn.execute(
        "DELETE FROM pgssl.questions WHERE asked_at < now() - interval '1 minute'",
        &[],
    )
    .await
    .map_err(failed(host))?;
    let row = conn
        .query_one(
            "WITH asked AS (INSERT INTO pgssl.questions (body) VALUES ($1) RETURNING id)
             SELECT id, pg_notify($2, 'question') FROM asked",
            &[&body, &CHANNEL],
        )
        .await
        .map_err(failed(host))?;
    row.try_get(0).map_err(failed(host))
}

/// The questions `node` has not answered yet, oldest first.
pub async fn pending(
    conn: &mut Conn,
    host: &str,
    node: &str,
) -> Result<Vec<(i64, String)>, ClusterError> {
    let rows = conn
        .query(
            "SELECT q.id, q.body FROM pgssl.questions AS q
              WHERE NOT EXISTS (SELECT 1 FROM pgssl.answers AS a
                                 WHERE a.question = q.id AND a.node = $1)
              ORDER BY q.id",
            &[&node],
        )
        .await
        .map_err(failed(host))?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(failed(host))?,
                r.try_get(1).map_err(failed(host))?,
            ))
        })
        .collect()
}

/// Records `node`'s answer to question `id` (nothing when the question is gone meanwhile: its
/// asker deleted it, or gave up on it).
pub async fn answer(
    conn: &mut Conn,
    host: &str,
    id: i64,
    node: &str,
    body: &str,
) -> Result<(), ClusterError> {
    let inserted = conn
        .execute(
            "INSERT INTO pgssl.answers (question, node, body)
             SELECT id, $2, $3 FROM pgssl.questions WHERE id = $1
             ON CONFLICT (question, node) DO NOTHING",
            &[&id, &node, &body],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        // Deleted between the SELECT and the insert's key check.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
            Ok(())
        }
        Err(e) => Err(failed(host)(e)),
    }
}

/// The tables, for a cluster made before they were (created by the first node that connects; a
/// node that loses the race to another finds them made).
pub(super) const TABLES: &str = "CREATE TABLE IF NOT EXISTS pgssl.questions (
       id bigserial PRIMARY KEY,
       asked_at timestamptz NOT NULL DEFAULT now(),
       body text NOT NULL);
     CREATE TABLE IF NOT EXISTS pgssl.answers (
       question bigint NOT NULL REFERENCES pgssl.questions ON DELETE CASCADE,
       node text NOT NULL,
       body text NOT NULL,
       PRIMARY KEY (question, node));
     REVOKE ALL ON pgssl.questions, pgssl.answers FROM PUBLIC";
