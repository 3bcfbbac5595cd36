//! A concurrent writer for cutover tests, benchmarks and the demo: it commits inserts and
//! updates at a steady rate to whichever server accepts its role (source first, the target once
//! the source refuses), remembers every acknowledged commit, and afterwards proves row by row
//! that nothing acknowledged was lost or duplicated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

/// Tables the writer uses (created on the source by [`create_tables`]).
pub const SCHEMA_SQL: &str = "
    CREATE TABLE writes (id serial PRIMARY KEY, k bigint NOT NULL, payload text NOT NULL,
                         at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE idents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, k bigint NOT NULL,
                         n int NOT NULL DEFAULT 0);
    CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
";

/// Pause between connection attempts while neither server accepts the app role. Each attempt
/// costs both servers a fork and a SCRAM exchange; a tighter loop would mostly measure how
/// much CPU the retries steal from the cutover on a small machine.
pub const RETRY_PAUSE: Duration = Duration::from_millis(3);

/// Writer connections the lab's demo uses (and seeds counters for).
pub const DEMO_TASKS: u32 = 2;

/// Which server a commit went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The old primary.
    Source,
    /// The new primary.
    Target,
}

/// Writer settings.
#[derive(Clone)]
pub struct WriterConfig {
    /// How to reach the source as the app role.
    pub source: Config,
    /// How to reach the target as the app role.
    pub target: Config,
    /// Transactions per second, over all tasks.
    pub rate: u32,
    /// Concurrent connections.
    pub tasks: u32,
    /// Id of the first task (its counter row and key range): two writers running at once
    /// (say, as two roles) use disjoint ranges.
    pub first_task: i32,
}

/// Keys one task writes: `task * TASK_KEYS + seq`.
const TASK_KEYS: i64 = 1_000_000_000;

/// One acknowledged insert.
#[derive(Debug, Clone, Copy)]
struct Ack {
    table: &'static str,
    k: i64,
    id: i64,
    on: Server,
    /// When the commit was acknowledged.
    at: Instant,
}

/// What one writer task saw.
#[derive(Debug, Default)]
struct TaskLog {
    acked: Vec<Ack>,
    in_doubt: Vec<(&'static str, i64)>,
    counter_acked: i64,
    counter_in_doubt: i64,
    commits: Vec<Instant>,
    both_accepted: usize,
    errors: Vec<String>,
}

/// Everything the writer saw, merged over its tasks.
#[derive(Debug, Default)]
pub struct Ledger {
    acked: Vec<Ack>,
    in_doubt: Vec<(&'static str, i64)>,
    counters: Vec<(i32, i64, i64)>,
    /// Commit times, sorted.
    pub commits: Vec<Instant>,
    /// Times both servers accepted the app role at once (split brain; must be 0).
    pub both_accepted: usize,
    /// Failed commits, with the first few messages (expected only around a cutover).
    pub errors: Vec<String>,
    /// Keys this writer used, `[from, to)`; the check looks at these rows only.
    keys: (i64, i64),
    /// Tasks that panicked: their acknowledgements are unknown, so the check fails.
    pub panicked: usize,
}

/// A running writer.
pub struct Writer {
    stop: Arc<AtomicBool>,
    on_target: Arc<AtomicUsize>,
    acked: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<TaskLog>>,
    keys: (i64, i64),
    first_task: i32,
}

/// Creates the writer's tables on the source (as a superuser client) and grants them to `role`.
pub async fn create_tables(client: &Client, role: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_SQL).await?;
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    client
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON writes, idents, counters TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .await
}

/// Creates one counter row per task (before replication starts, so they are copied).
pub async fn seed_counters(client: &Client, tasks: u32) -> Result<(), tokio_postgres::Error> {
    for task in 0..tasks as i32 {
        client
            .execute(
                "INSERT INTO counters (id, n) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                &[&task],
            )
            .await?;
    }
    Ok(())
}

impl Writer {
    /// Starts the writer's tasks.
    pub fn start(config: WriterConfig) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let on_target = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(AtomicUsize::new(0));
        let period = Duration::from_secs_f64(config.tasks as f64 / config.rate.max(1) as f64);
        let first_task = config.first_task;
        let keys = (
            first_task as i64 * TASK_KEYS,
            (first_task as i64 + config.tasks as i64) * TASK_KEYS,
        );
        let tasks = (first_task..first_task + config.tasks as i32)
            .map(|task| {
                let stop = stop.clone();
                let config = config.clone();
                let counts = (on_target.clone(), acked.clone());
                tokio::spawn(async move { run_task(task, config, period, stop, counts).await })
            })
            .collect();
        Writer {
            stop,
            on_target,
            acked,
            tasks,
            keys,
            first_task,
        }
    }

    /// Commits acknowledged by the target so far.
    pub fn acked_on_target(&self) -> usize {
        self.on_target.load(Ordering::SeqCst)
    }

    /// Waits until `n` commits were acknowledged by either server (the writer really writes),
    /// up to `limit`; whether they were.
    pub async fn wait_acked(&self, n: usize, limit: Duration) -> bool {
        wait_for(&self.acked, n, limit).await
    }

    /// Waits until the target acknowledged `n` commits (the writer really reached the new
    /// primary), up to `limit`; whether it did.
    pub async fn wait_on_target(&self, n: usize, limit: Duration) -> bool {
        wait_for(&self.on_target, n, limit).await
    }

    /// Stops the tasks and returns what they saw.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        let mut ledger = Ledger {
            keys: self.keys,
            ..Ledger::default()
        };
        for (i, handle) in self.tasks.into_iter().enumerate() {
            let task = self.first_task as usize + i;
            let log = match handle.await {
                Ok(log) => log,
                Err(e) => {
                    ledger.panicked += 1;
                    ledger.errors.push(format!("writer task {task} died: {e}"));
                    TaskLog::default()
                }
            };
            ledger.acked.extend(log.acked);
            ledger.in_doubt.extend(log.in_doubt);
            ledger
                .counters
                .push((task as i32, log.counter_acked, log.counter_in_doubt));
            ledger.commits.extend(log.commits);
            ledger.both_accepted += log.both_accepted;
            ledger.errors.extend(log.errors);
        }
        ledger.commits.sort();
        ledger
    }
}

async fn connect(config: &Config) -> Option<Client> {
    let (client, connection) = config.connect(NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

/// Waits until `count` reaches `n`, up to `limit`; whether it did.
pub(crate) async fn wait_for(count: &AtomicUsize, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::SeqCst) < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn run_task(
    task: i32,
    config: WriterConfig,
    period: Duration,
    stop: Arc<AtomicBool>,
    (on_target, acked): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> TaskLog {
    let mut log = TaskLog::default();
    let mut current: Option<(Server, Client)> = None;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some((on, client)) = &current else {
            // Ask both at once: exactly one should accept the app role at any time.
            let (s, t) = tokio::join!(connect(&config.source), connect(&config.target));
            current = match (s, t) {
                (Some(s), Some(_)) => {
                    log.both_accepted += 1;
                    Some((Server::Source, s))
                }
                (Some(s), None) => Some((Server::Source, s)),
                (None, Some(t)) => Some((Server::Target, t)),
                (None, None) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    None
                }
            };
            continue;
        };
        ticker.tick().await;
        seq += 1;
        let k = (task as i64) * TASK_KEYS + seq;
        let ok = if seq % 2 == 0 {
            match client
                .query_one(
                    "INSERT INTO writes (k, payload) VALUES ($1, md5($1::int8::text)) RETURNING id::int8",
                    &[&k],
                )
                .await
            {
                Ok(row) => {
                    log.acked.push(Ack {
                        table: "writes",
                        k,
                        id: row.get(0),
                        on: *on,
                        at: Instant::now(),
                    });
                    true
                }
                Err(e) => {
                    log.in_doubt.push(("writes", k));
                    log.errors.push(error_text(&e));
                    false
                }
            }
        } else {
            // A transaction with an insert and an update.
            let result = async {
                client.batch_execute("BEGIN").await?;
                let row = client
                    .query_one("INSERT INTO idents (k) VALUES ($1) RETURNING id", &[&k])
                    .await?;
                client
                    .execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&task])
                    .await?;
                client
                    .execute(
                        "UPDATE idents SET n = n + 1 WHERE id = $1",
                        &[&row.get::<_, i64>(0)],
                    )
                    .await?;
                client.batch_execute("COMMIT").await?;
                Ok::<i64, tokio_postgres::Error>(row.get(0))
            }
            .await;
            match result {
                Ok(id) => {
                    log.acked.push(Ack {
                        table: "idents",
                        k,
                        id,
                        on: *on,
                        at: Instant::now(),
                    });
                    log.counter_acked += 1;
                    true
                }
                Err(e) => {
                    log.in_doubt.push(("idents", k));
                    log.errors.push(error_text(&e));
                    log.counter_in_doubt += 1;
                    false
                }
            }
        };
        if ok {
            log.commits.push(Instant::now());
            acked.fetch_add(1, Ordering::SeqCst);
            if *on == Server::Target {
                on_target.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            current = None;
        }
    }
    log
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The row-by-row proof, read from the server that is primary after the cutover.
#[derive(Debug, Default)]
pub struct LedgerCheck {
    /// Acknowledged commits.
    pub acked: usize,
    /// Acknowledged inserts that went to the target.
    pub acked_on_target: usize,
    /// Failed commits whose outcome is unknown (present at most once is fine).
    pub in_doubt: usize,
    /// Acknowledged rows that are missing (`table:k`).
    pub lost: Vec<String>,
    /// Rows present more than once.
    pub duplicated: Vec<String>,
    /// Rows nobody wrote (neither acknowledged nor in doubt).
    pub unexpected: Vec<String>,
    /// Acknowledged rows present once but with another id or content than acknowledged.
    pub changed: Vec<String>,
    /// Counter rows outside `[acked, acked + in doubt]`.
    pub counter_problems: Vec<String>,
    /// Inserts on the target whose ids are not above every id used on the source.
    pub id_problems: Vec<String>,
    /// Writer tasks that panicked (their acknowledgements are unknown).
    pub panicked: usize,
    /// Writes both servers took: for the PostgreSQL writer, commits acknowledged by the source
    /// after the target acknowledged one; for the MySQL writer, times both accepted a probe
    /// write at once.
    pub both_accepted: usize,
}

impl LedgerCheck {
    /// No loss, no duplicate, no stranger, counters and ids right.
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.unexpected.is_empty()
            && self.changed.is_empty()
            && self.counter_problems.is_empty()
            && self.id_problems.is_empty()
            && self.panicked == 0
            && self.both_accepted == 0
    }
}

impl Ledger {
    /// Checks every acknowledged write against `db` (the primary after the cutover).
    pub async fn check(&self, db: &Client) -> Result<LedgerCheck, tokio_postgres::Error> {
        use std::collections::{HashMap, HashSet};
        let mut out = LedgerCheck {
            acked: self.acked.len(),
            acked_on_target: self.acked.iter().filter(|a| a.on == Server::Target).count(),
            panicked: self.panicked,
            // Writes taken by both servers: commits the source acknowledged after the target
            // acknowledged its first (connections both servers accepted before the target's
            // app roles were blocked took no write, and are not counted).
            both_accepted: self
                .acked
                .iter()
                .filter(|a| a.on == Server::Target)
                .map(|a| a.at)
                .min()
                .map_or(0, |first| {
                    self.acked
                        .iter()
                        .filter(|a| a.on == Server::Source && a.at > first)
                        .count()
                }),
            in_doubt: self.in_doubt.len(),
            ..LedgerCheck::default()
        };
        let (from, to) = self.keys;
        for table in ["writes", "idents"] {
            // Per key: copies, the first id, and whether every copy holds what was written
            // (the payload of `writes`, the one update of `idents`).
            let content = if table == "writes" {
                "payload = md5(k::text)"
            } else {
                "n = 1"
            };
            let rows = db
                .query(
                    &format!(
                        "SELECT k, count(*), min(id)::int8, bool_and({content}) FROM {table}
                         WHERE k >= $1 AND k < $2 GROUP BY k"
                    ),
                    &[&from, &to],
                )
                .await?;
            let present: HashMap<i64, (i64, i64, bool)> = rows
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
                .collect();
            let doubt: HashSet<i64> = self
                .in_doubt
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, k)| *k)
                .collect();
            let acked: HashMap<i64, i64> = self
                .acked
                .iter()
                .filter(|a| a.table == table)
                .map(|a| (a.k, a.id))
                .collect();
            for (k, id) in &acked {
                match present.get(k) {
                    None => out.lost.push(format!("{table}:{k}")),
                    Some((1, row_id, intact)) => {
                        if row_id != id {
                            out.changed.push(format!(
                                "{table}:{k} acknowledged as id {id}, holds id {row_id}"
                            ));
                        }
                        if !intact {
                            out.changed
                                .push(format!("{table}:{k} does not hold what was written"));
                        }
                    }
                    Some((n, _, _)) => out.duplicated.push(format!("{table}:{k} x{n}")),
                }
            }
            for (k, (n, _, _)) in &present {
                if !acked.contains_key(k) && !doubt.contains(k) {
                    out.unexpected.push(format!("{table}:{k}"));
                } else if doubt.contains(k) && *n > 1 {
                    out.duplicated.push(format!("{table}:{k} x{n}"));
                }
            }
            let max_source = self
                .acked
                .iter()
                .filter(|a| a.table == table && a.on == Server::Source)
                .map(|a| a.id)
                .max();
            let min_target = self
                .acked
                .iter()
                .filter(|a| a.table == table && a.on == Server::Target)
                .map(|a| a.id)
                .min();
            if let (Some(s), Some(t)) = (max_source, min_target)
                && t <= s
            {
                out.id_problems.push(format!(
                    "{table}: first id on the target {t} is not above the last id on the source {s}"
                ));
            }
        }
        for (task, acked, doubt) in &self.counters {
            let n: i64 = db
                .query_opt("SELECT n FROM counters WHERE id = $1", &[task])
                .await?
                .map(|r| r.get(0))
                .unwrap_or(-1);
            if n < *acked || n > acked + doubt {
                out.counter_problems.push(format!(
                    "counter {task} is {n}, expected {acked}..={}",
                    acked + doubt
                ));
            }
        }
        Ok(out)
    }

    /// Longest gap between consecutive commits that overlaps `[from, to]`, and the longest one
    /// entirely outside it.
    pub fn gaps_around(&self, from: Instant, to: Instant) -> (Duration, Duration) {
        gaps_around(&self.commits, from, to)
    }
}

/// Longest gap between consecutive `commits` (sorted) that overlaps `[from, to]`, and the
/// longest one entirely outside it.
pub fn gaps_around(commits: &[Instant], from: Instant, to: Instant) -> (Duration, Duration) {
    let mut inside = Duration::ZERO;
    let mut outside = Duration::ZERO;
    for w in commits.windows(2) {
        let gap = w[1] - w[0];
        if w[1] > from && w[0] < to {
            inside = inside.max(gap);
        } else {
            outside = outside.max(gap);
        }
    }
    (inside, outside)
}
