//! The checked writer for MySQL/MariaDB cutover tests and benchmarks: inserts rows with unique
//! keys at a steady rate into `writes`, as the app user, on whichever server accepts it (asking
//! both at every connection, and counting the times both did: split brain); remembers every
//! acknowledged insert and afterwards proves row by row that nothing acknowledged was lost or
//! duplicated (the key is indexed, not unique, so a duplicate can show), that each row holds
//! the id and payload acknowledged, and that the target's AUTO_INCREMENT ids continue above
//! the source's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use super::writer::{LedgerCheck, RETRY_PAUSE, Server, gaps_around};

/// The table the writer inserts into (in the app database).
pub const TABLE_SQL: &str = "CREATE TABLE writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
     k BIGINT NOT NULL, payload VARCHAR(64) NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), KEY (k))";

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
    commits: Vec<Instant>,
    errors: Vec<String>,
    both_accepted: usize,
}

/// What the writer saw, over all tasks.
#[derive(Debug, Default)]
pub struct MyLedger {
    acked: Vec<(i64, i64, Server)>,
    in_doubt: Vec<i64>,
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
        let period = Duration::from_secs_f64(config.tasks as f64 / config.rate.max(1) as f64);
        let tasks = (0..config.tasks as i64)
            .map(|task| {
                let (stop, config) = (stop.clone(), config.clone());
                tokio::spawn(async move { run_task(task, config, period, stop).await })
            })
            .collect();
        MyWriter { stop, tasks }
    }

    /// Stops the tasks and returns what they saw.
    pub async fn stop(self) -> MyLedger {
        self.stop.store(true, Ordering::SeqCst);
        let mut ledger = MyLedger::default();
        for handle in self.tasks {
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
        match c
            .exec_drop("INSERT INTO writes (k, payload) VALUES (?, MD5(?))", (k, k))
            .await
        {
            Ok(()) => {
                let id = c.last_insert_id().unwrap_or(0) as i64;
                log.acked.push((k, id, on));
                log.commits.push(Instant::now());
            }
            Err(e) if refused_read_only(&e) => {
                // Refused before it happened: ask both servers again.
                on = other(on);
                conn = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                // The connection died with the statement in flight (killed at the fence).
                log.in_doubt.push(k);
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
