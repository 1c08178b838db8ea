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
        out.info(format!("Pool mode: {}.", self.mode));
        for r in &self.rules {
            let bound = r
                .max_backends
                .map_or(String::new(), |n| format!(", at most {n} backends"));
            out.info(format!(
                "Rule: role {} on database {}: {} mode{bound}.",
                r.role.as_deref().unwrap_or("(any)"),
                r.database.as_deref().unwrap_or("(any)"),
                r.mode.unwrap_or(self.mode),
            ));
        }
        out.info(format!(
            "{:<20} {:<20} {:<12} {:>6} {:>6} {:>10} {:>8}",
            "role", "database", "mode", "busy", "idle", "handouts", "opened"
        ));
        for k in &self.keys {
            out.info(format!(
                "{:<20} {:<20} {:<12} {:>6} {:>6} {:>10} {:>8}",
                k.role,
                k.database,
                k.mode.to_string(),
                k.busy,
                k.idle,
                k.handouts,
                k.opened
            ));
        }
        let (handouts, opened): (u64, u64) = self
            .keys
            .iter()
            .fold((0, 0), |(h, o), k| (h + k.handouts, o + k.opened));
        out.info(format!(
            "{handouts} clients got a warm session: {handouts} backends not forked; {opened} opened."
        ));
        if self.waiting > 0 {
            out.info(format!(
                "{} clients are waiting for a backend (the bounds are reached).",
                self.waiting
            ));
        }
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
