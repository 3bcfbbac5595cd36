//! PostgreSQL logical replication from a source database to a target database.
//!
//! One module per job, in the order a migration uses them:
//! - [`names`]: the deterministic names of everything cutover creates (publication, slot, ...).
//! - [`db`]: connecting with the plan's credentials; every SQL error carries the server's message.
//! - [`tls`]: libpq's `sslmode` / `sslrootcert` / `sslcert` / `sslkey` for cutover's connections.
//! - [`catalog`]: what is in scope (tables, keys, sequences, extensions) on a server.
//! - [`inventory`]: everything else a database holds, what replication does not carry, drift.
//! - [`preflight`]: checks on both servers, each failure with its fix and the server it applies to.
//! - [`schema`]: `pg_dump --schema-only` piped into the target.
//! - [`start`]: publication, subscription, the marker table; target app roles blocked.
//! - [`status`]: initial-copy state per table, lag in bytes and seconds, WAL retained.
//! - [`fence`]: blocking and unblocking the application roles (the write fence), scoped to the
//!   moved database where that holds.
//! - [`neighbours`]: the cluster's other databases and what the fence does to each.
//! - [`cutover`]: gate, fence, exact catch-up, sequences, reverse replication, promotion.
//! - [`verify`]: row counts and checksums per primary-key chunk, source against target.
//! - [`writers`]: who else can write the replicated tables (fence scope), and the audit that
//!   proves the old primary took no writes after the fence.
//! - [`lease`]: the migration's lease on both servers (advisory lock + holder record).
//! - [`cleanup`]: removing every object cutover created, on both servers.
//! - `contract`: this engine behind the engine contract ([`crate::engine::Pair`]).

pub mod catalog;
pub mod cleanup;
pub mod config;
mod contract;
pub mod cutover;
pub mod db;
pub mod fence;
pub mod inventory;
pub mod lease;
pub mod monitor;
pub mod names;
pub mod neighbours;
pub mod preflight;
pub mod schema;
pub mod sequences;
pub mod shared;
pub mod start;
pub mod status;
pub mod tls;
pub mod verify;
pub mod writers;

use std::fmt;

use serde::Serialize;

pub use db::{Db, PgError, Server};
pub use names::Names;

use crate::plan::{Plan, PostgresPair};

/// Which end of a pair a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Where the data lives today.
    Source,
    /// Where the data moves to.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// One `[[postgres]]` pair of a plan, with the names derived from it.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The pair as written in the plan.
    pub plan: PostgresPair,
    /// Names of the objects cutover creates for this pair.
    pub names: Names,
    /// The source server.
    pub source: Server,
    /// The target server.
    pub target: Server,
    /// The adaptive gate's budget (the plan's `window_budget` and `gate_timeout`).
    pub budget: Option<crate::engine::gate::Budget>,
    /// The plan's hosts over ssh: where a server's machine can be read (its free space).
    pub machines: Option<crate::plan::Hosts>,
}

impl Pair {
    /// The pair `pair` of migration `plan`.
    pub fn new(plan: &Plan, pair: &PostgresPair) -> Pair {
        Pair {
            plan: pair.clone(),
            names: Names::new(&plan.migration.name, &pair.name),
            source: Server::new(Side::Source, pair.source.clone()),
            target: Server::new(Side::Target, pair.target.clone()),
            budget: crate::engine::gate::Budget::of(plan),
            machines: plan.hosts.clone(),
        }
    }

    /// The forward subscription's conninfo: the source as the target server reaches it
    /// (`publisher_host`/`publisher_port`, else the source's own address).
    pub fn forward_conninfo(&self) -> Result<crate::secret::Secret, PgError> {
        let host = self
            .plan
            .publisher_host
            .clone()
            .unwrap_or_else(|| self.plan.source.host.clone());
        let port = self.plan.publisher_port.unwrap_or(self.plan.source.port);
        self.source.subscription_conninfo(&host, port)
    }

    /// Every pair of the plan, or only the one called `only`.
    pub fn select(plan: &Plan, only: Option<&str>) -> Vec<Pair> {
        plan.postgres
            .iter()
            .filter(|p| only.is_none_or(|name| p.name == name))
            .map(|p| Pair::new(plan, p))
            .collect()
    }

    /// The same pair seen backwards, for a reverse cutover after a completed one: the new
    /// primary is the source, the old primary the target, and the reverse replication objects
    /// play the forward ones. It sets up no replication back of its own.
    pub fn reversed(&self) -> Pair {
        let mut plan = self.plan.clone();
        std::mem::swap(&mut plan.source, &mut plan.target);
        plan.reverse_replication = false;
        plan.publisher_host = None;
        plan.publisher_port = None;
        let names = Names {
            publication: self.names.reverse_publication.clone(),
            subscription: self.names.reverse_subscription.clone(),
            reverse_publication: self.names.publication.clone(),
            reverse_subscription: self.names.subscription.clone(),
            pair: self.names.pair.clone(),
        };
        // The servers keep their labels: messages name the hosts as the plan does.
        Pair {
            source: self.target.clone(),
            target: self.source.clone(),
            plan,
            names,
            budget: self.budget,
            machines: self.machines.clone(),
        }
    }

    /// Connects to both servers.
    pub async fn connect(&self) -> Result<(Db, Db), PgError> {
        let (source, target) = tokio::join!(self.source.connect(), self.target.connect());
        Ok((source?, target?))
    }
}
