//! `pool list`: the warm repository sessions of the running server, per (role, database), as it
//! reports them.

use super::model::{Operation, Report, Verb, no_arguments};
use super::{CommandError, Context, Output};
use crate::control::node::PoolSnapshot;
use crate::control::reload::ControlError;

no_arguments!(
    /// `pool list`: busy and warm sessions per (role, database), warm hand-outs and backends opened.
    List
);

/// What the running server's pool holds.
pub type PoolReport = PoolSnapshot;

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

    async fn run(self, ctx: &Context) -> Result<PoolReport, CommandError> {
        ctx.store()?;
        Ok(ctx.node.pool().await?.ok_or(ControlError::NotRunning)?)
    }

    fn example() -> List {
        List {}
    }
}
