//! The Warm backends page: the running server's `pool list` as tables — the pool's mode and rules,
//! then one row per (role, database) with its busy and idle backends, hand-outs and backends
//! opened. Read-only: the pool is configured in `pgssl.toml` (`[pool]`).

use axum::response::Response;
use maud::{Markup, html};

use super::{Shared, report};
use crate::admin::auth::Admin;
use crate::control::operations::model::Operation;
use crate::control::operations::pool::{List, PoolReport};

/// The page's content: the tables, or why there are none.
pub(super) async fn content(state: Shared, admin: Admin) -> Result<Markup, Response> {
    Ok(match report(&state, &admin, List {}).await {
        Ok(pool) => page(&pool),
        Err(failed) => html! { pre { (failed) } },
    })
}

fn page(pool: &PoolReport) -> Markup {
    let (handouts, opened) = pool
        .keys
        .iter()
        .fold((0, 0), |(h, o), k| (h + k.handouts, o + k.opened));
    html! {
        @if !pool.enabled {
            p { "The running server keeps no warm sessions (passthrough, or " code { "pool.enabled = false" } ")." }
        }
        p { "Pool mode: " strong { (pool.mode) } "." @if pool.waiting > 0 { " " (pool.waiting) " clients are waiting for a backend (the bounds are reached)." } }
        @if !pool.rules.is_empty() {
            table id="pool-rules" {
                thead { tr { th scope="col" { "Role" } th scope="col" { "Database" } th scope="col" { "Mode" } th scope="col" { "At most" } } }
                tbody { @for r in &pool.rules {
                    tr {
                        td { (r.role.as_deref().unwrap_or("(any)")) }
                        td { (r.database.as_deref().unwrap_or("(any)")) }
                        td { (r.mode.unwrap_or(pool.mode)) }
                        td { (r.max_backends.map_or("–".to_string(), |n| n.to_string())) }
                    }
                } }
            }
        }
        div.scroll { table id="pool-keys" {
            thead { tr {
                th scope="col" { "Role" } th scope="col" { "Database" } th scope="col" { "Mode" }
                th scope="col" { "Busy" } th scope="col" { "Idle" } th scope="col" { "Hand-outs" } th scope="col" { "Opened" }
            } }
            tbody { @for k in &pool.keys {
                tr data-role=(k.role) {
                    th scope="row" { (k.role) }
                    td { (k.database) }
                    td { (k.mode) }
                    td { (k.busy) }
                    td { (k.idle) }
                    td { (k.handouts) }
                    td { (k.opened) }
                }
            } }
        } }
        p id="pool-summary" { (handouts) " clients got a warm session: " (handouts) " backends not forked; " (opened) " opened." }
        p {
            "The same listing: " code { "pgssl " (List::ACTION) } " or " code { "GET /api/v1" (List::PATH) }
            ". The pool is configured in " code { "pgssl.toml" } " (" code { "[pool]" } "), read when the server starts."
        }
    }
}
