//! `pool list`: the warm repository sessions of the running server, per (role, database), as its
//! control socket reports them.

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Verb, no_arguments};
use super::{CommandError, Context, Output};
use crate::proxy::backend::pool::KeyStats;

no_arguments!(
    /// `pool list`: busy and warm sessions per (role, database), warm hand-outs and backends opened.
    List
);

/// What the running server's pool holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolReport {
    /// Whether the server keeps sessions warm (proxy mode with `pool.enabled`).
    pub enabled: bool,
    /// Per (role, database), sorted.
    pub keys: Vec<KeyStats>,
}

impl Report for PoolReport {
    fn render(&self, out: &Output) {
        if !self.enabled {
            out.info(
                "The running server keeps no warm sessions (passthrough, or pool.enabled = false)."
                    .into(),
            );
        }
        out.info(format!(
            "{:<20} {:<20} {:>6} {:>6} {:>10} {:>8}",
            "role", "database", "busy", "idle", "handouts", "opened"
        ));
        for k in &self.keys {
            out.info(format!(
                "{:<20} {:<20} {:>6} {:>6} {:>10} {:>8}",
                k.role, k.database, k.busy, k.idle, k.handouts, k.opened
            ));
        }
        let (handouts, opened): (u64, u64) = self
            .keys
            .iter()
            .fold((0, 0), |(h, o), k| (h + k.handouts, o + k.opened));
        out.info(format!(
            "{handouts} clients got a warm session: {handouts} backends not forked; {opened} opened."
        ));
    }
}

impl Operation for List {
    const ACTION: &'static str = "pool list";
    const PATH: &'static str = "/pool";
    const VERB: Verb = Verb::Get;
    type Report = PoolReport;

    fn run(self, ctx: &Context) -> Result<PoolReport, CommandError> {
        let store = ctx.store()?;
        let (enabled, keys) = crate::control::reload::request_pool(
            &store.control_socket_path(),
            std::time::Duration::from_secs(5),
        )?;
        Ok(PoolReport { enabled, keys })
    }

    fn example() -> List {
        List {}
    }
}
