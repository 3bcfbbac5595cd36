//! What a checked writer saw, and the row-by-row proof against the new primary, for both
//! engines.
//!
//! The writers ([`super::writer`] for PostgreSQL, [`super::mysql_writer`] for MySQL/MariaDB)
//! differ only in their SQL and in how they learn which server takes writes; the bookkeeping
//! (acknowledged and in-doubt commits, counters, commit times, split-brain counts), the task
//! pool and the judgement of what a server holds are engine-neutral and live here, once, so a
//! rule of the proof cannot drift between the engines.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Keys one task writes: `task * TASK_KEYS + seq`.
pub(crate) const TASK_KEYS: i64 = 1_000_000_000;

/// Pause between connection attempts while neither server accepts the app. Each attempt costs
/// both servers a connection and an authentication; a tighter loop would mostly measure how
/// much CPU the retries steal from the cutover on a small machine.
pub const RETRY_PAUSE: Duration = Duration::from_millis(3);

/// Which server a commit went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The old primary.
    Source,
    /// The new primary.
    Target,
}

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
pub(crate) struct TaskLog {
    acked: Vec<Ack>,
    in_doubt: Vec<(&'static str, i64)>,
    /// Transactions that bumped the task's counter: acknowledged, and in doubt.
    counter: (i64, i64),
    commits: Vec<Instant>,
    /// Times both servers accepted the app's probe at once.
    both_accepted: usize,
    errors: Vec<String>,
}

/// Errors a task keeps (the first few tell the story; thousands would only cost memory).
const KEPT_ERRORS: usize = 20;

impl TaskLog {
    /// An acknowledged insert of key `k` into `table` as row `id`; `counted` if the same
    /// transaction bumped the task's counter.
    pub(crate) fn acked(
        &mut self,
        table: &'static str,
        k: i64,
        id: i64,
        on: Server,
        counted: bool,
    ) {
        let at = Instant::now();
        self.acked.push(Ack {
            table,
            k,
            id,
            on,
            at,
        });
        self.commits.push(at);
        if counted {
            self.counter.0 += 1;
        }
    }

    /// A commit of key `k` whose outcome is unknown (its connection died, or its COMMIT
    /// failed): present at most once is right.
    pub(crate) fn in_doubt(&mut self, table: &'static str, k: i64, counted: bool, error: String) {
        self.in_doubt.push((table, k));
        if counted {
            self.counter.1 += 1;
        }
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }

    /// Chooses the server to write to from what both answered at once (exactly one should
    /// take the app's writes at any time); `None` if neither did.
    pub(crate) fn choose<C>(
        &mut self,
        source: Option<C>,
        target: Option<C>,
    ) -> Option<(Server, C)> {
        match (source, target) {
            (Some(s), Some(_)) => {
                self.both_accepted += 1;
                Some((Server::Source, s))
            }
            (Some(s), None) => Some((Server::Source, s)),
            (None, Some(t)) => Some((Server::Target, t)),
            (None, None) => None,
        }
    }
}

/// How a writer's split-brain count is decided.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SplitBrain {
    /// From the probes: both servers accepted a probe write at once.
    Probes,
    /// From the acknowledgements: commits the source acknowledged after the target
    /// acknowledged its first. For a writer whose probe is a connection (which both servers
    /// may accept while the target's app roles are still blocked and take no write).
    AckOrder,
}

/// A task's shared counters and the stop flag.
#[derive(Clone, Default)]
pub(crate) struct Control {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    on_target: Arc<AtomicUsize>,
}

impl Control {
    /// Whether the writer was told to stop.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Counts an acknowledged commit on `on`.
    pub(crate) fn count(&self, on: Server) {
        self.acked.fetch_add(1, Ordering::SeqCst);
        if on == Server::Target {
            self.on_target.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A pool of running writer tasks, whichever the engine.
pub struct Tasks {
    control: Control,
    handles: Vec<tokio::task::JoinHandle<TaskLog>>,
    first_task: i64,
    tables: &'static [&'static str],
    split: SplitBrain,
}

impl Tasks {
    /// Spawns tasks `first_task..first_task + tasks`, each running `task(id, period, control)`,
    /// at `rate` commits per second over all of them; the writer inserts into `tables`.
    pub(crate) fn spawn<F, Fut>(
        first_task: i64,
        tasks: u32,
        rate: u32,
        tables: &'static [&'static str],
        split: SplitBrain,
        task: F,
    ) -> Tasks
    where
        F: Fn(i64, Duration, Control) -> Fut,
        Fut: Future<Output = TaskLog> + Send + 'static,
    {
        let control = Control::default();
        let period = Duration::from_secs_f64(tasks as f64 / rate.max(1) as f64);
        let handles = (first_task..first_task + tasks as i64)
            .map(|id| tokio::spawn(task(id, period, control.clone())))
            .collect();
        Tasks {
            control,
            handles,
            first_task,
            tables,
            split,
        }
    }

    /// Commits acknowledged by the target so far.
    pub fn acked_on_target(&self) -> usize {
        self.control.on_target.load(Ordering::SeqCst)
    }

    /// Waits until `n` commits were acknowledged by either server (the writer really writes),
    /// up to `limit`; whether they were.
    pub async fn wait_acked(&self, n: usize, limit: Duration) -> bool {
        wait_for(&self.control.acked, n, limit).await
    }

    /// Waits until the target acknowledged `n` commits (the writer really reached the new
    /// primary), up to `limit`; whether it did.
    pub async fn wait_on_target(&self, n: usize, limit: Duration) -> bool {
        wait_for(&self.control.on_target, n, limit).await
    }

    /// Stops the tasks and returns what they saw.
    pub async fn stop(self) -> Ledger {
        self.control.stop.store(true, Ordering::SeqCst);
        let tasks = self.handles.len() as i64;
        let mut ledger = Ledger {
            keys: (
                self.first_task * TASK_KEYS,
                (self.first_task + tasks) * TASK_KEYS,
            ),
            tables: self.tables,
            ..Ledger::default()
        };
        let mut probes_both = 0;
        for (i, handle) in self.handles.into_iter().enumerate() {
            let task = self.first_task + i as i64;
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
            ledger.counters.push((task, log.counter.0, log.counter.1));
            ledger.commits.extend(log.commits);
            probes_both += log.both_accepted;
            ledger.errors.extend(log.errors);
        }
        ledger.commits.sort();
        ledger.both_accepted = match self.split {
            SplitBrain::Probes => probes_both,
            SplitBrain::AckOrder => ledger.source_acks_after_target(),
        };
        ledger
    }
}

/// Waits until `count` reaches `n`, up to `limit`; whether it did.
async fn wait_for(count: &AtomicUsize, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::SeqCst) < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Everything a writer saw, merged over its tasks.
#[derive(Debug, Default)]
pub struct Ledger {
    acked: Vec<Ack>,
    in_doubt: Vec<(&'static str, i64)>,
    /// Per task: (task, counter bumps acknowledged, in doubt).
    counters: Vec<(i64, i64, i64)>,
    /// Commit times, sorted.
    pub commits: Vec<Instant>,
    /// Writes both servers took (split brain; must be 0).
    pub both_accepted: usize,
    /// Failed commits, the first few messages of each task (expected only around a cutover).
    pub errors: Vec<String>,
    /// Keys this writer used, `[from, to)`; the check looks at these rows only.
    keys: (i64, i64),
    /// The tables it inserted into.
    tables: &'static [&'static str],
    /// Tasks that panicked: their acknowledgements are unknown, so the check fails.
    pub panicked: usize,
}

/// What the new primary holds of one table, per key: copies, the lowest id, and whether every
/// copy holds what was written.
pub type Held = HashMap<i64, (i64, i64, bool)>;

/// Reads back what a writer wrote, from the primary after the cutover: the engine's half of
/// the proof.
#[allow(async_fn_in_trait)]
pub trait Readback {
    /// The engine's error.
    type Error;
    /// What `table` holds for keys in `[from, to)`.
    async fn held(&mut self, table: &str, from: i64, to: i64) -> Result<Held, Self::Error>;
    /// Task `task`'s counter, `None` if its row is missing.
    async fn counter(&mut self, task: i64) -> Result<Option<i64>, Self::Error>;
}

impl Ledger {
    /// Checks every acknowledged write against `db` (the primary after the cutover).
    pub async fn check<R: Readback>(&self, mut db: R) -> Result<LedgerCheck, R::Error> {
        let mut out = LedgerCheck {
            acked: self.acked.len(),
            acked_on_target: self.acked.iter().filter(|a| a.on == Server::Target).count(),
            in_doubt: self.in_doubt.len(),
            panicked: self.panicked,
            both_accepted: self.both_accepted,
            ..LedgerCheck::default()
        };
        let (from, to) = self.keys;
        for table in self.tables {
            let held = db.held(table, from, to).await?;
            self.judge_table(table, &held, &mut out);
        }
        for &(task, acked, doubt) in &self.counters {
            match db.counter(task).await? {
                Some(n) if n >= acked && n <= acked + doubt => {}
                n => out.counter_problems.push(format!(
                    "counter {task} is {}, expected {acked} (+ up to {doubt} in doubt)",
                    n.map_or("missing".to_string(), |n| n.to_string())
                )),
            }
        }
        Ok(out)
    }

    fn judge_table(&self, table: &str, held: &Held, out: &mut LedgerCheck) {
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
            match held.get(k) {
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
        for (k, (n, _, _)) in held {
            if !acked.contains_key(k) && !doubt.contains(k) {
                out.unexpected.push(format!("{table}:{k}"));
            } else if doubt.contains(k) && *n > 1 {
                out.duplicated.push(format!("{table}:{k} x{n}"));
            }
        }
        let ids = |on: Server| {
            self.acked
                .iter()
                .filter(move |a| a.table == table && a.on == on)
                .map(|a| a.id)
        };
        if let (Some(s), Some(t)) = (ids(Server::Source).max(), ids(Server::Target).min())
            && t <= s
        {
            out.id_problems.push(format!(
                "{table}: first id on the target {t} is not above the last id on the source {s}"
            ));
        }
    }

    /// Commits the source acknowledged after the target acknowledged its first.
    fn source_acks_after_target(&self) -> usize {
        let first = self
            .acked
            .iter()
            .filter(|a| a.on == Server::Target)
            .map(|a| a.at)
            .min();
        first.map_or(0, |first| {
            self.acked
                .iter()
                .filter(|a| a.on == Server::Source && a.at > first)
                .count()
        })
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
    /// Writes both servers took (see the writer for how it tells).
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

    /// The proof in one sentence, for the demo and the benchmarks.
    pub fn summary(&self) -> String {
        format!(
            "{} acknowledged commits ({} after the move), {} in doubt at the fence; lost {}, duplicated {}, unexpected {}; ids continue on the target: {}",
            self.acked,
            self.acked_on_target,
            self.in_doubt,
            self.lost.len(),
            self.duplicated.len(),
            self.unexpected.len(),
            self.id_problems.is_empty()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(acks: &[(i64, i64, Server)], doubt: &[i64]) -> Ledger {
        let mut log = TaskLog::default();
        for &(k, id, on) in acks {
            log.acked("writes", k, id, on, false);
        }
        for &k in doubt {
            log.in_doubt("writes", k, false, "gone".into());
        }
        Ledger {
            acked: log.acked,
            in_doubt: log.in_doubt,
            tables: &["writes"],
            ..Ledger::default()
        }
    }

    #[test]
    fn judges_lost_duplicated_unexpected_changed_and_ids() {
        let l = ledger(
            &[
                (1, 10, Server::Source),
                (2, 11, Server::Source),
                (3, 12, Server::Source),
                (4, 5, Server::Target),
            ],
            &[7],
        );
        let held: Held = [
            (1, (1, 10, true)), // fine
            (2, (2, 11, true)), // duplicated
            (4, (1, 6, false)), // other id, other content
            (7, (1, 13, true)), // in doubt, present once: fine
            (9, (1, 14, true)), // nobody wrote it
        ]
        .into();
        let mut out = LedgerCheck::default();
        l.judge_table("writes", &held, &mut out);
        assert_eq!(out.lost, ["writes:3"]);
        assert_eq!(out.duplicated, ["writes:2 x2"]);
        assert_eq!(out.unexpected, ["writes:9"]);
        assert_eq!(out.changed.len(), 2, "{:?}", out.changed);
        assert_eq!(out.id_problems.len(), 1, "target id 5 is below source 12");
        assert!(!out.clean());
    }

    #[test]
    fn a_source_ack_after_the_first_target_ack_is_split_brain() {
        let mut l = ledger(&[(1, 1, Server::Source), (2, 2, Server::Target)], &[]);
        assert_eq!(l.source_acks_after_target(), 0);
        let mut log = TaskLog::default();
        log.acked("writes", 3, 3, Server::Source, false);
        l.acked.extend(log.acked);
        assert_eq!(l.source_acks_after_target(), 1);
    }
}
