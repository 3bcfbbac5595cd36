//! MySQL / MariaDB binlog replication from a source server to a target server.
//!
//! - [`dialect`]: flavour, numeric version, and the statement table per dialect.
//! - [`db`]: connecting with the plan's credentials; errors name the server and the step.
//! - [`tls`]: the mysql client's `ssl_mode` / `ssl_ca` / `ssl_cert` / `ssl_key` for cutover's
//!   connections.
//! - [`preflight`]: checks on both servers, each failure with its fix and where to apply it.
//! - [`snapshot`]: `mariadb-dump`/`mysqldump --single-transaction` streamed into the target.
//! - [`start`]: replication user, heartbeat table, snapshot, replica configured and started.
//! - [`inventory`]: schema drift between source and target (DDL the filter may skip).
//! - [`heartbeat`]: the pt-heartbeat compatible table and the measured lag.
//! - [`parallel`]: parallel apply on the target while it replicates, restored after promotion.
//! - [`writers`]: who can write (fence scope), and the account lock that makes the fence hold.
//! - [`audit`]: under a fence by account, the old primary's binlog read for post-fence writes.
//! - [`lease`]: the migration's lease on both servers (`GET_LOCK` + holder record).
//! - [`neighbours`]: the source server's other databases, which the server-wide fence reaches.
//! - [`status`]: replica threads, lag (heartbeat, `Seconds_Behind_*`, GTIDs), errors verbatim.
//! - `contract`: this engine behind the engine contract ([`crate::engine::Pair`]).

pub mod audit;
pub mod cleanup;
pub mod config;
mod contract;
pub mod cutover;
pub mod db;
pub mod dialect;
pub mod heartbeat;
pub mod inventory;
pub mod lease;
pub mod monitor;
pub mod neighbours;
pub mod parallel;
pub mod preflight;
pub mod resync;
pub mod shared;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod tls;
pub mod verify;
pub mod writers;

pub use db::{Db, MyError, Server};

use crate::plan::{MysqlPair, Plan};

/// The database holding cutover's heartbeat table on the source (replicated to the target).
pub const HEARTBEAT_DB: &str = "cutover";

/// A `[[mysql]]` pair with its servers.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The plan's pair.
    pub plan: MysqlPair,
    /// Migration name.
    pub migration: String,
    /// The server the data lives on today.
    pub source: Server,
    /// The server it moves to.
    pub target: Server,
    /// The adaptive gate's budget (the plan's `window_budget` and `gate_timeout`).
    pub budget: Option<crate::engine::gate::Budget>,
    /// The plan's hosts over ssh: where a server's machine can be read (its free space).
    pub machines: Option<crate::plan::Hosts>,
}

impl Pair {
    /// The same pair seen backwards, for a reverse cutover after a completed one: the new
    /// primary is the source and the old primary (its replica through reverse replication) the
    /// target. It sets up no replication back of its own.
    pub fn reversed(&self) -> Pair {
        let mut plan = self.plan.clone();
        std::mem::swap(&mut plan.source, &mut plan.target);
        plan.reverse_replication = false;
        plan.replication_host = None;
        plan.replication_port = None;
        Pair {
            source: self.target.clone(),
            target: self.source.clone(),
            migration: self.migration.clone(),
            budget: self.budget,
            machines: self.machines.clone(),
            plan,
        }
    }

    /// The pair `pair` of migration `plan`.
    pub fn new(plan: &Plan, pair: &MysqlPair) -> Pair {
        Pair {
            plan: pair.clone(),
            migration: plan.migration.name.clone(),
            source: Server::new("source", &pair.source),
            target: Server::new("target", &pair.target),
            budget: crate::engine::gate::Budget::of(plan),
            machines: plan.hosts.clone(),
        }
    }

    /// The plan's pairs, or only the one named `only`.
    pub fn select(plan: &Plan, only: Option<&str>) -> Vec<Pair> {
        plan.mysql
            .iter()
            .filter(|p| only.is_none_or(|name| p.name == name))
            .map(|p| Pair::new(plan, p))
            .collect()
    }

    /// The replication user cutover creates (on the source; on the target for reverse
    /// replication): at most 32 characters, as MySQL requires.
    pub fn replication_user(&self) -> String {
        let mut name = format!("cutover_repl_{}", self.migration.replace('-', "_"));
        name.truncate(32);
        name
    }

    /// The host part of the replication accounts (`%` unless the plan names one).
    pub fn replication_user_host(&self) -> &str {
        self.plan.replication_user_host.as_deref().unwrap_or("%")
    }

    /// The databases the snapshot and replication cover: the plan's and the heartbeat's.
    pub fn replicated_databases(&self) -> Vec<String> {
        let mut dbs = self.plan.databases.clone();
        dbs.push(HEARTBEAT_DB.to_owned());
        dbs
    }

    /// Host and port the target uses to reach the source.
    pub fn replication_address(&self) -> (String, u16) {
        (
            self.plan
                .replication_host
                .clone()
                .unwrap_or_else(|| self.source.endpoint.host.clone()),
            self.plan
                .replication_port
                .unwrap_or(self.source.endpoint.port),
        )
    }

    /// Connects to both servers.
    pub async fn connect(&self) -> Result<(Db, Db), MyError> {
        tokio::try_join!(self.source.connect(), self.target.connect())
    }
}
