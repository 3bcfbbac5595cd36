//! The checked writer for MySQL/MariaDB cutover tests and benchmarks: as the app user, on
//! whichever server accepts it (asking both at every connection, and counting the times both
//! did: split brain), it commits at a steady rate, alternately, a single-row insert into
//! `writes` and a multi-statement transaction (an insert into `writes` and an update of the
//! task's row in `counters`, as a real app's transaction would). It remembers every
//! acknowledged commit and afterwards proves row by row that nothing acknowledged was lost or
//! duplicated (the key is indexed, not unique, so a duplicate can show), that each row holds
//! the id and payload acknowledged, that each task's counter lies between its acknowledged
//! transactions and those plus the ones in doubt, and that the target's AUTO_INCREMENT ids
//! continue above the source's.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use super::ledger::{Control, Held, RETRY_PAUSE, Readback, SplitBrain, TASK_KEYS, TaskLog, Tasks};
pub use super::ledger::{Ledger as MyLedger, LedgerCheck, Server};

/// The table the writer inserts into (in the app database).
pub const TABLE_SQL: &str = "CREATE TABLE writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
     k BIGINT NOT NULL, payload VARCHAR(64) NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), KEY (k)); \
     CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)";

/// Writer settings.
#[derive(Clone)]
pub struct MyWriterConfig {
    /// The source, as the app user, with the app database selected.
    pub source: Opts,
    /// The target, likewise.
    pub target: Opts,
    /// Inserts per second over all tasks.
    pub rate: u32,
    /// Concurrent connections.
    pub tasks: u32,
}

/// A running writer.
pub struct MyWriter(Tasks);

/// ER_OPTION_PREVENTS_STATEMENT: the server runs with read-only; the insert did not happen.
fn refused_read_only(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1290 || s.code == 1836)
}

impl MyWriter {
    /// Starts the tasks.
    pub fn start(config: MyWriterConfig) -> MyWriter {
        MyWriter::start_retrying(config, RETRY_PAUSE)
    }

    /// [`MyWriter::start`], asking both servers again `retry` after a refusal (each ask is a
    /// new connection to each: a login, over TLS a handshake, on the servers' cores).
    pub fn start_retrying(config: MyWriterConfig, retry: Duration) -> MyWriter {
        let (tasks, rate) = (config.tasks, config.rate);
        MyWriter(Tasks::spawn(
            0,
            tasks,
            rate,
            &["writes"],
            // The probe is a write: both accepting it at once is split brain.
            SplitBrain::Probes,
            move |task, period, control| run_task(task, config.clone(), period, control, retry),
        ))
    }

    /// Stops the tasks and returns what they saw.
    pub async fn stop(self) -> MyLedger {
        self.0.stop().await
    }
}

impl std::ops::Deref for MyWriter {
    type Target = Tasks;
    fn deref(&self) -> &Tasks {
        &self.0
    }
}

async fn run_task(
    task: i64,
    config: MyWriterConfig,
    period: Duration,
    control: Control,
    retry: Duration,
) -> TaskLog {
    let mut log = TaskLog::default();
    let mut current: Option<(Server, Conn)> = None;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: i64 = 0;
    while !control.stopped() {
        let Some((on, c)) = current.as_mut() else {
            // Ask both at once: at most one may take the app's writes at any time.
            let (s, t) = tokio::join!(writable(&config.source), writable(&config.target));
            current = log.choose(s, t);
            if current.is_none() {
                tokio::time::sleep(retry).await;
            }
            continue;
        };
        let on = *on;
        ticker.tick().await;
        seq += 1;
        let k = task * TASK_KEYS + seq;
        let transaction = seq % 2 == 0;
        let result = if transaction {
            // Statements before COMMIT that fail leave nothing behind (the transaction is
            // rolled back, or dies with its connection); a failed COMMIT is in doubt.
            let body = async {
                c.query_drop("START TRANSACTION").await?;
                c.exec_drop("INSERT INTO writes (k, payload) VALUES (?, MD5(?))", (k, k))
                    .await?;
                let id = c.last_insert_id().unwrap_or(0) as i64;
                c.exec_drop(
                    "INSERT INTO counters (id, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1",
                    (task,),
                )
                .await?;
                Ok::<i64, mysql_async::Error>(id)
            }
            .await;
            match body {
                Ok(id) => c
                    .query_drop("COMMIT")
                    .await
                    .map(|()| id)
                    .map_err(|e| (e, true)),
                Err(e) => {
                    let _ = c.query_drop("ROLLBACK").await;
                    Err((e, false))
                }
            }
        } else {
            c.exec_drop("INSERT INTO writes (k, payload) VALUES (?, MD5(?))", (k, k))
                .await
                .map(|()| c.last_insert_id().unwrap_or(0) as i64)
                .map_err(|e| (e, false))
        };
        match result {
            Ok(id) => {
                log.acked("writes", k, id, on, transaction);
                control.count(on);
            }
            Err((e, at_commit)) if refused_read_only(&e) && !at_commit => {
                // Refused before it happened: ask both servers again.
                current = None;
                tokio::time::sleep(retry).await;
            }
            Err((e, _)) => {
                // The connection died with the statement in flight (killed at the fence), or
                // the COMMIT failed: either may or may not have happened.
                log.in_doubt("writes", k, transaction, e.to_string());
                current = None;
            }
        }
    }
    log
}

/// A connection to a server that takes the app's writes now, or `None`. Probed the way the app
/// would find out, with an insert (rolled back): `read_only` alone does not tell, since it does
/// not bind every user.
async fn writable(opts: &Opts) -> Option<Conn> {
    let mut c = Conn::new(opts.clone()).await.ok()?;
    c.query_drop("START TRANSACTION").await.ok()?;
    let accepted = c
        .query_drop("INSERT INTO writes (k, payload) VALUES (-1, 'probe')")
        .await
        .is_ok();
    c.query_drop("ROLLBACK").await.ok()?;
    if accepted {
        Some(c)
    } else {
        let _ = c.disconnect().await;
        None
    }
}

/// The MySQL/MariaDB half of the proof, on a connection with the app database selected.
impl Readback for &mut Conn {
    type Error = mysql_async::Error;

    async fn held(&mut self, table: &str, from: i64, to: i64) -> Result<Held, Self::Error> {
        let rows: Vec<(i64, i64, i64, i64)> = self
            .exec(
                format!(
                    "SELECT k, COUNT(*), MIN(id), MIN(payload = MD5(k)) FROM {table} \
                     WHERE k >= ? AND k < ? GROUP BY k"
                ),
                (from, to),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(k, n, id, intact)| (k, (n, id, intact == 1)))
            .collect())
    }

    async fn counter(&mut self, task: i64) -> Result<Option<i64>, Self::Error> {
        // The row is created by the task's first transaction: missing reads as never bumped.
        let n: Option<i64> = self
            .exec_first("SELECT n FROM counters WHERE id = ?", (task,))
            .await?;
        Ok(Some(n.unwrap_or(0)))
    }
}
