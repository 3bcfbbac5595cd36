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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use super::writer::{LedgerCheck, RETRY_PAUSE, Server, gaps_around};

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

#[derive(Debug, Default)]
struct TaskLog {
    acked: Vec<(i64, i64, Server)>,
    in_doubt: Vec<i64>,
    /// Transactions that bumped the task's counter: acknowledged, and in doubt.
    counter: (i64, i64),
    commits: Vec<Instant>,
    errors: Vec<String>,
    both_accepted: usize,
}

/// What the writer saw, over all tasks.
#[derive(Debug, Default)]
pub struct MyLedger {
    acked: Vec<(i64, i64, Server)>,
    in_doubt: Vec<i64>,
    /// Per task: (task, counter bumps acknowledged, in doubt).
    counters: Vec<(i64, i64, i64)>,
    /// Commit times, sorted.
    pub commits: Vec<Instant>,
    /// Failed statements' messages (expected only around a cutover).
    pub errors: Vec<String>,
    /// Times both servers accepted the app as writable at once (split brain; must be 0).
    pub both_accepted: usize,
    /// Tasks that panicked: their acknowledgements are unknown, so the check fails.
    pub panicked: usize,
}

/// A running writer.
pub struct MyWriter {
    stop: Arc<AtomicBool>,
    on_target: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<TaskLog>>,
}

/// ER_OPTION_PREVENTS_STATEMENT: the server runs with read-only; the insert did not happen.
fn refused_read_only(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1290 || s.code == 1836)
}

impl MyWriter {
    /// Starts the tasks.
    pub fn start(config: MyWriterConfig) -> MyWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let on_target = Arc::new(AtomicUsize::new(0));
        let period = Duration::from_secs_f64(config.tasks as f64 / config.rate.max(1) as f64);
        let tasks = (0..config.tasks as i64)
            .map(|task| {
                let (stop, config, on_target) = (stop.clone(), config.clone(), on_target.clone());
                tokio::spawn(async move { run_task(task, config, period, stop, on_target).await })
            })
            .collect();
        MyWriter {
            stop,
            on_target,
            tasks,
        }
    }

    /// Commits acknowledged by the target so far.
    pub fn acked_on_target(&self) -> usize {
        self.on_target.load(Ordering::SeqCst)
    }

    /// Waits until the target acknowledged `n` commits (the writer really reached the new
    /// primary), up to `limit`; whether it did.
    pub async fn wait_on_target(&self, n: usize, limit: Duration) -> bool {
        super::writer::wait_for(&self.on_target, n, limit).await
    }

    /// Stops the tasks and returns what they saw.
    pub async fn stop(self) -> MyLedger {
        self.stop.store(true, Ordering::SeqCst);
        let mut ledger = MyLedger::default();
        for (task, handle) in self.tasks.into_iter().enumerate() {
            let log = match handle.await {
                Ok(log) => log,
                Err(e) => {
                    ledger.panicked += 1;
                    ledger.errors.push(format!("writer task died: {e}"));
                    TaskLog::default()
                }
            };
            ledger.acked.extend(log.acked);
            ledger.in_doubt.extend(log.in_doubt);
            ledger
                .counters
                .push((task as i64, log.counter.0, log.counter.1));
            ledger.commits.extend(log.commits);
            ledger.errors.extend(log.errors);
            ledger.both_accepted += log.both_accepted;
        }
        ledger.commits.sort();
        ledger
    }
}

async fn run_task(
    task: i64,
    config: MyWriterConfig,
    period: Duration,
    stop: Arc<AtomicBool>,
    on_target: Arc<AtomicUsize>,
) -> TaskLog {
    let mut log = TaskLog::default();
    let mut on = Server::Source;
    let mut conn: Option<Conn> = None;
    let other = |on: Server| {
        if on == Server::Source {
            Server::Target
        } else {
            Server::Source
        }
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = conn.as_mut() else {
            // Ask both at once: at most one may take the app's writes at any time.
            let (s, t) = tokio::join!(writable(&config.source), writable(&config.target));
            conn = match (s, t) {
                (Some(s), Some(_)) => {
                    log.both_accepted += 1;
                    on = Server::Source;
                    Some(s)
                }
                (Some(s), None) => {
                    on = Server::Source;
                    Some(s)
                }
                (None, Some(t)) => {
                    on = Server::Target;
                    Some(t)
                }
                (None, None) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    None
                }
            };
            continue;
        };
        ticker.tick().await;
        seq += 1;
        let k = task * 1_000_000_000 + seq;
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
                log.acked.push((k, id, on));
                log.commits.push(Instant::now());
                if transaction {
                    log.counter.0 += 1;
                }
                if on == Server::Target {
                    on_target.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err((e, at_commit)) if refused_read_only(&e) && !at_commit => {
                // Refused before it happened: ask both servers again.
                on = other(on);
                conn = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err((e, _)) => {
                // The connection died with the statement in flight (killed at the fence), or
                // the COMMIT failed: either may or may not have happened.
                log.in_doubt.push(k);
                if transaction {
                    log.counter.1 += 1;
                }
                if log.errors.len() < 20 {
                    log.errors.push(e.to_string());
                }
                conn = None;
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

impl MyLedger {
    /// Checks every acknowledged insert against `conn` (the primary after the cutover, with
    /// the app database selected).
    pub async fn check(&self, conn: &mut Conn) -> Result<LedgerCheck, mysql_async::Error> {
        let rows: Vec<(i64, i64, i64, i64)> = conn
            .query(
                "SELECT k, COUNT(*), MIN(id), MIN(payload = MD5(k)) FROM writes WHERE k >= 0 GROUP BY k",
            )
            .await?;
        let present: HashMap<i64, (i64, i64, bool)> = rows
            .into_iter()
            .map(|(k, n, id, intact)| (k, (n, id, intact == 1)))
            .collect();
        let acked: HashMap<i64, i64> = self.acked.iter().map(|a| (a.0, a.1)).collect();
        let doubt: HashSet<i64> = self.in_doubt.iter().copied().collect();
        let mut out = LedgerCheck {
            acked: self.acked.len(),
            acked_on_target: self.acked.iter().filter(|a| a.2 == Server::Target).count(),
            in_doubt: self.in_doubt.len(),
            panicked: self.panicked,
            both_accepted: self.both_accepted,
            ..LedgerCheck::default()
        };
        for (k, id) in &acked {
            match present.get(k) {
                None => out.lost.push(format!("writes:{k}")),
                Some((1, row_id, intact)) => {
                    if row_id != id {
                        out.changed.push(format!(
                            "writes:{k} acknowledged as id {id}, holds id {row_id}"
                        ));
                    }
                    if !intact {
                        out.changed
                            .push(format!("writes:{k} does not hold what was written"));
                    }
                }
                Some((n, _, _)) => out.duplicated.push(format!("writes:{k} x{n}")),
            }
        }
        for (k, (n, _, _)) in &present {
            if !acked.contains_key(k) && !doubt.contains(k) {
                out.unexpected.push(format!("writes:{k}"));
            } else if doubt.contains(k) && *n > 1 {
                out.duplicated.push(format!("writes:{k} x{n}"));
            }
        }
        let counters: Vec<(i64, i64)> = conn.query("SELECT id, n FROM counters").await?;
        let counters: HashMap<i64, i64> = counters.into_iter().collect();
        for (task, acked, doubt) in &self.counters {
            let n = counters.get(task).copied().unwrap_or(0);
            if n < *acked || n > acked + doubt {
                out.counter_problems.push(format!(
                    "counter {task} is {n}, expected {acked} (+ up to {doubt} in doubt)"
                ));
            }
        }
        let last_source = self
            .acked
            .iter()
            .filter(|a| a.2 == Server::Source)
            .map(|a| a.1)
            .max();
        let first_target = self
            .acked
            .iter()
            .filter(|a| a.2 == Server::Target)
            .map(|a| a.1)
            .min();
        if let (Some(s), Some(t)) = (last_source, first_target)
            && t <= s
        {
            out.id_problems.push(format!(
                "first AUTO_INCREMENT id on the target {t} is not above the last on the source {s}"
            ));
        }
        Ok(out)
    }

    /// Longest gap between commits overlapping `[from, to]`, and the longest elsewhere.
    pub fn gaps_around(&self, from: Instant, to: Instant) -> (Duration, Duration) {
        gaps_around(&self.commits, from, to)
    }
}
