//! Executing a run: steps in order, each journalled before and after it runs, the point of no
//! return journalled before the first promotion, rollback of every fenced pair when anything
//! fails before it, and resume from the journal plus the servers' own state after a crash.
//!
//! The journal is the spine: every record goes to the store first (fsync'd, lease-checked),
//! then to the observer (the CLI's progress output), and the report is computed from the same
//! records, so a resumed run reports the outage the crashed process began.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::hooks;
use super::steps::{Db, Kind, Phase, Step, databases, reverse_steps, steps};
use crate::engine::{EngineError, PairState, Rollback, Window};
use crate::plan::{HookPoint, Plan};
use crate::state::{FileStore, Lease, StateDir, StateError, Store};
use crate::{dns, files, mysql, postgres};

/// How long the warm phase may wait for replication to be ready.
const WARM_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a long wait says where it stands.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// Attempts at a promotion after the point of no return before the run stops to be resumed.
const PROMOTE_ATTEMPTS: u32 = 3;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step done.
    Completed,
    /// Failed before the point of no return; every source serves again.
    RolledBack,
    /// Stopped with work left: the journal and the message say what `--resume` does.
    Failed,
}

impl Outcome {
    /// The outcome in words.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Entry {
    /// A run began.
    RunStarted {
        /// The plan's migration name.
        migration: String,
        /// A reverse cutover (`run --rollback`) of the run before it.
        #[serde(default)]
        reverse: bool,
        /// The step list, as `phase component: action` (a resume must see the same plan).
        steps: Vec<String>,
    },
    /// A runner took over an interrupted run.
    Resumed {
        /// What it decided and why.
        decision: String,
        /// Each pair's state as read from the servers.
        states: Vec<String>,
    },
    /// A step is about to run.
    StepBegin {
        /// Index in the step list.
        step: usize,
        /// Its phase.
        phase: Phase,
        /// Its component.
        component: String,
    },
    /// A step finished.
    StepDone {
        /// Index.
        step: usize,
        /// Duration.
        ms: f64,
        /// What it did, in words.
        summary: String,
        /// Figures for the report.
        #[serde(default)]
        detail: serde_json::Value,
    },
    /// A step failed.
    StepFailed {
        /// Index.
        step: usize,
        /// Duration.
        ms: f64,
        /// Why.
        error: String,
    },
    /// The first promotion comes next: from here on the run only goes forward.
    PointOfNoReturn,
    /// Rolling back every fenced pair.
    RollbackBegin {
        /// Why.
        reason: String,
    },
    /// One component rolled back.
    RolledBack {
        /// The component.
        component: String,
        /// What happened to its source.
        outcome: Rollback,
    },
    /// Where a long wait stands.
    Progress {
        /// The text.
        text: String,
    },
    /// Something worth telling that is not a step.
    Note {
        /// The text.
        text: String,
    },
    /// The run ended.
    RunFinished {
        /// How.
        outcome: Outcome,
        /// In words, with the true state of the servers.
        summary: String,
        /// It stopped with work that `run --resume` does (a failed step after the point of no
        /// return, or before it with `auto_rollback` off).
        #[serde(default)]
        resumable: bool,
        /// A health check failed after the promotion and the reverse cutover comes next (a
        /// crash before it began is resumed by starting it).
        #[serde(default)]
        reverse_next: bool,
    },
}

/// A journal record: an entry with its place and time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Position in the journal.
    pub seq: u64,
    /// The lease epoch of the runner that wrote it.
    pub epoch: u64,
    /// The run it belongs to.
    pub run: String,
    /// Wall clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Switch DNS before the safe time (logged).
    pub force: bool,
    /// Take over an interrupted run.
    pub resume: bool,
    /// On resume before the point of no return: go on instead of rolling back.
    pub go_on: bool,
    /// Reverse cutover of the last completed run: the old primaries become the primaries again.
    pub rollback: bool,
    /// A reverse cutover of a plan with files: the operator accepts that the trees stay on the
    /// new host (they are not carried back).
    pub leave_files: bool,
}

/// Why a run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory or its lease.
    #[error(transparent)]
    State(#[from] StateError),
    /// The run is refused before anything is changed.
    #[error("{0}")]
    Refused(String),
}

/// One step's timing in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTiming {
    /// Index.
    pub step: usize,
    /// Phase.
    pub phase: Phase,
    /// Component.
    pub component: String,
    /// Duration.
    pub ms: f64,
    /// `done` or `failed`.
    pub result: String,
    /// What it did or why it failed.
    pub summary: String,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// The migration.
    pub migration: String,
    /// The run id.
    pub run: String,
    /// How it ended (`None` while running).
    pub outcome: Option<Outcome>,
    /// Whether a runner resumed it.
    pub resumed: bool,
    /// Every step that ran, in order.
    pub steps: Vec<StepTiming>,
    /// Per database: fence began -> target writable, from the journal's clock.
    pub write_unavailable_ms: BTreeMap<String, f64>,
    /// Window opened (first window-open step) -> last promotion done.
    pub window_ms: Option<f64>,
    /// First fence -> last promotion: how long no database took writes for every pair.
    pub joint_write_unavailable_ms: Option<f64>,
    /// Files passes (warm and final) as reported by the files component.
    pub files: Vec<serde_json::Value>,
    /// Per `[[files]]` entry: whether its source tree changed after the final pass (read from
    /// the change log kept to the end of the run), the files' counterpart of
    /// `old_primary_clean`.
    #[serde(default)]
    pub files_after_final: BTreeMap<String, files::changelog::AfterFinal>,
    /// DNS: switch -> served by every authoritative server, per record.
    pub dns_propagation_ms: BTreeMap<String, f64>,
    /// Health checks.
    pub checks: Vec<serde_json::Value>,
    /// Per database: whether the old primary provably took no write after its fence.
    pub old_primary_clean: BTreeMap<String, Option<bool>>,
    /// What needs a hand.
    pub warnings: Vec<String>,
    /// What each rollback did.
    pub rollback: Vec<(String, Rollback)>,
    /// Why the run failed.
    pub error: Option<String>,
    /// First record -> last record.
    pub total_ms: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn step_line(s: &Step) -> String {
    format!("{} {}: {}", s.phase.as_str(), s.component, s.action)
}

/// The records of the last run in `journal`.
pub fn last_run(journal: &[serde_json::Value]) -> Vec<Record> {
    last_run_of(parse(journal))
}

fn parse(journal: &[serde_json::Value]) -> Vec<Record> {
    journal
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// The records of the last run that `records` (oldest first) started.
fn last_run_of(records: Vec<Record>) -> Vec<Record> {
    let Some(run) = records
        .iter()
        .rev()
        .find(|r| matches!(r.entry, Entry::RunStarted { .. }))
        .map(|r| r.run.clone())
    else {
        return Vec::new();
    };
    records.into_iter().filter(|r| r.run == run).collect()
}

/// What the journal says about a run.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Steps done.
    pub done: BTreeSet<usize>,
    /// Steps begun.
    pub begun: BTreeSet<usize>,
    /// The point of no return was passed.
    pub past_point_of_no_return: bool,
    /// How it ended, if it did.
    pub finished: Option<Outcome>,
    /// The last step begun.
    pub last_begun: Option<usize>,
    /// It ended with work left for `--resume`.
    pub resumable: bool,
    /// The reverse cutover was to follow (a failed health check).
    pub reverse_next: bool,
}

impl Progress {
    /// Reads `records` (one run's).
    pub fn of(records: &[Record]) -> Progress {
        let mut p = Progress::default();
        for r in records {
            match &r.entry {
                Entry::StepBegin { step, .. } => {
                    p.begun.insert(*step);
                    p.last_begun = Some(*step);
                }
                Entry::StepDone { step, .. } => {
                    p.done.insert(*step);
                }
                Entry::PointOfNoReturn => p.past_point_of_no_return = true,
                Entry::RunFinished {
                    outcome,
                    resumable,
                    reverse_next,
                    ..
                } => {
                    p.finished = Some(*outcome);
                    p.resumable = *resumable;
                    p.reverse_next = *reverse_next;
                }
                Entry::Resumed { .. } => {
                    p.finished = None;
                    p.resumable = false;
                    p.reverse_next = false;
                }
                _ => {}
            }
        }
        p
    }
}

/// Opens the window of one pair; `resume`: its history is unknown; `reverse`: the pair seen
/// backwards (a reverse cutover).
pub async fn open_window(
    plan: &Plan,
    db: Db,
    resume: bool,
    reverse: bool,
) -> Result<Box<dyn Window>, EngineError> {
    match db {
        Db::Postgres(i) => {
            let mut pair = postgres::Pair::new(plan, &plan.postgres[i]);
            if reverse {
                pair = pair.reversed();
            }
            let w = if resume {
                postgres::cutover::PgWindow::open_for_resume(&pair).await?
            } else {
                postgres::cutover::PgWindow::open(&pair).await?
            };
            Ok(Box::new(w))
        }
        Db::Mysql(i) => {
            let mut pair = mysql::Pair::select(plan, Some(&plan.mysql[i].name))
                .pop()
                .ok_or_else(|| EngineError::Refused("no such pair".into()))?;
            if reverse {
                pair = pair.reversed();
            }
            Ok(Box::new(mysql::cutover::MyWindow::open(&pair).await?))
        }
    }
}

/// The servers' state of every pair (connecting read-only); a pair that cannot be read says so.
pub async fn pair_states(plan: &Plan) -> Vec<(String, Result<PairState, EngineError>)> {
    let mut out = Vec::new();
    for (db, component) in databases(plan) {
        let state = match open_window(plan, db, true, false).await {
            Ok(mut w) => w.state().await,
            Err(e) => Err(e),
        };
        out.push((component, state));
    }
    out
}

/// A running run.
pub struct Runner<'a> {
    plan: &'a Plan,
    store: Box<dyn Store>,
    lease: Lease,
    run: String,
    seq: u64,
    steps: Vec<Step>,
    windows: HashMap<Db, Box<dyn Window>>,
    resumed: bool,
    observer: &'a mut (dyn FnMut(&Record) + Send),
    records: Vec<Record>,
    past_ponr: bool,
    cancel: CancellationToken,
    force: bool,
    lost_writes: bool,
    /// A reverse cutover: windows are opened on the reversed pairs.
    reverse: bool,
    /// Per DNS record, what it served before the forward run (for a reverse cutover).
    dns_previous: HashMap<usize, Vec<String>>,
    /// A health check failed after the point of no return.
    check_failed: bool,
    /// Paths changed on an old host's tree after its final pass (`entry: paths`).
    files_not_carried: Vec<String>,
}

impl<'a> Runner<'a> {
    fn record(&mut self, entry: Entry) -> Result<(), StateError> {
        self.seq += 1;
        let record = Record {
            seq: self.seq,
            epoch: self.lease.info.epoch,
            run: self.run.clone(),
            at_ms: now_ms(),
            entry,
        };
        let value = serde_json::to_value(&record).unwrap_or_default();
        self.store.append(&self.lease, &value)?;
        (self.observer)(&record);
        self.records.push(record);
        Ok(())
    }

    async fn window(&mut self, db: Db) -> Result<&mut Box<dyn Window>, String> {
        if !self.windows.contains_key(&db) {
            let w = open_window(self.plan, db, self.resumed, self.reverse)
                .await
                .map_err(|e| e.to_string())?;
            self.windows.insert(db, w);
        }
        Ok(self.windows.get_mut(&db).expect("inserted above"))
    }

    /// A progress line for a long wait (journalled like every record, so `status` has it).
    fn note(&mut self, text: String) -> Result<(), StateError> {
        self.record(Entry::Progress { text })
    }

    fn name(&self, db: Db) -> String {
        match db {
            Db::Postgres(i) => format!("postgres {}", self.plan.postgres[i].name),
            Db::Mysql(i) => format!("mysql {}", self.plan.mysql[i].name),
        }
    }

    /// Executes one step; returns (summary, detail) or why it failed.
    async fn exec(&mut self, step: &Step) -> Result<(String, serde_json::Value), String> {
        let plan = self.plan;
        let state_dir = plan.migration.state_dir.clone();
        let none = serde_json::Value::Null;
        match step.kind {
            Kind::PreflightDb(Db::Postgres(i)) => {
                let pair = postgres::Pair::new(plan, &plan.postgres[i]);
                let (s, t) = pair.connect().await.map_err(|e| e.to_string())?;
                let r = postgres::preflight::run(&pair, &s, &t)
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.passed() {
                    return Err(format!("preflight failed:\n{}", r.errors_text()));
                }
                Ok((format!("passed, {} tables in scope", r.tables.len()), none))
            }
            Kind::PreflightDb(Db::Mysql(i)) => {
                let pair = my_pair(plan, i)?;
                let (mut s, mut t) = pair.connect().await.map_err(|e| e.to_string())?;
                let r = mysql::preflight::run(&pair, &mut s, &mut t)
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.passed() {
                    return Err(format!("preflight failed:\n{}", r.errors_text()));
                }
                Ok((format!("passed, {} tables in scope", r.tables.len()), none))
            }
            Kind::PreflightFiles(i) => {
                let entry = files_entry(plan, i)?;
                let r = files::preflight::run(&entry)
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.passed() {
                    return Err(format!(
                        "preflight failed:\n{}",
                        crate::finding::errors_text(&r.findings)
                    ));
                }
                let warnings: Vec<String> = crate::plan::warnings(plan)
                    .into_iter()
                    .filter(|w| w.contains(&format!("`{}`", entry.plan.name)))
                    .chain(
                        r.findings
                            .iter()
                            .filter(|f| f.severity == crate::finding::Severity::Warning)
                            .map(|f| format!("{} (fix: {})", f.problem, f.fix)),
                    )
                    .collect();
                Ok((
                    format!(
                        "passed; source tree {} bytes{}",
                        r.source_bytes.unwrap_or_default(),
                        warnings
                            .iter()
                            .map(|w| format!("; WARNING: {w}"))
                            .collect::<String>()
                    ),
                    none,
                ))
            }
            Kind::PreflightDns(i) => {
                let discovery = dns::Discovery::system();
                let target = dns::Target::resolve(i, &plan.dns[i], &discovery)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    format!(
                        "zone {}, {} authoritative address(es)",
                        target.zone,
                        target.servers.len()
                    ),
                    none,
                ))
            }
            Kind::DnsReady(i) => {
                let record = &plan.dns[i];
                let states = dns::state::StateDir::new(&state_dir);
                let state = states
                    .load(&record.name, record.record_type)
                    .map_err(|e| e.to_string())?;
                match dns::update::check_safe(
                    &dns::label(record),
                    state.as_ref(),
                    SystemTime::now(),
                ) {
                    Ok(()) => Ok(("the lowered TTL has been served long enough".into(), none)),
                    Err(e) if self.force => {
                        tracing::warn!(record = %dns::label(record), reason = %e, "DNS readiness overridden (--force)");
                        Ok((format!("NOT READY, overridden by --force: {e}"), none))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Kind::WarmFiles(i) => {
                let entry = files_entry(plan, i)?;
                let r = files::sync::warm(&entry, &state_dir, &mut |_, _| {})
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    format!(
                        "{} files, {} bytes sent in {:.1} s",
                        r.figures.files_transferred, r.figures.wire_bytes, r.seconds
                    ),
                    serde_json::to_value(&r).unwrap_or_default(),
                ))
            }
            Kind::FinalFiles(i) => {
                let entry = files_entry(plan, i)?;
                // The watcher keeps watching to the end of the run: the report proves that
                // nothing changed on the old host after this pass, or names what did.
                let r = files::sync::final_pass_watching(&entry, &state_dir, &mut |_, _| {})
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    format!(
                        "{} ({}), {} files, {} bytes sent in {:.2} s{}",
                        r.method,
                        r.changed_paths
                            .map_or("whole tree".to_owned(), |n| format!("{n} changed paths")),
                        r.figures.files_transferred,
                        r.figures.wire_bytes,
                        r.seconds,
                        r.fallback
                            .as_ref()
                            .map_or(String::new(), |f| format!("; FULL PASS because {f}"))
                    ),
                    serde_json::to_value(&r).unwrap_or_default(),
                ))
            }
            Kind::StartDb(Db::Postgres(i)) => {
                let pair = postgres::Pair::new(plan, &plan.postgres[i]);
                postgres::start::start(&pair)
                    .await
                    .map_err(|e| e.to_string())?;
                let (s, t) = pair.connect().await.map_err(|e| e.to_string())?;
                let deadline = Instant::now() + WARM_TIMEOUT;
                let mut last_note = Instant::now();
                loop {
                    let st = postgres::status::status(&pair, &s, &t, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    let lag = st.lag_bytes.unwrap_or(i64::MAX);
                    // A copy or apply that keeps failing (rows the target already has, a
                    // missing column) never gets ready: say so instead of waiting the hour.
                    if let Some(row) = t
                        .query_opt(
                            "read the subscription's error counts",
                            "SELECT sync_error_count + apply_error_count FROM pg_stat_subscription_stats WHERE subname = $1",
                            &[&pair.names.subscription],
                        )
                        .await
                        .map_err(|e| e.to_string())?
                        && row.get::<_, i64>(0) > 0
                    {
                        return Err(format!(
                            "the target fails to apply the initial copy or changes ({} error(s) so far): see the target's server log (often rows the target already had, e.g. the app writing there)",
                            row.get::<_, i64>(0)
                        ));
                    }
                    if st.all_ready && st.apply_running && lag <= pair.plan.max_lag_bytes as i64 {
                        return Ok((
                            format!("{} tables copied, lag {lag} bytes", st.tables.len()),
                            none,
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "replication was not ready within {}",
                            humantime::format_duration(WARM_TIMEOUT)
                        ));
                    }
                    if last_note.elapsed() >= PROGRESS_EVERY {
                        last_note = Instant::now();
                        let ready = st.tables.iter().filter(|t| t.state == "ready").count();
                        self.note(format!(
                            "postgres {}: initial copy {ready}/{} tables ready, lag {} bytes (waiting for lag <= {})",
                            pair.plan.name,
                            st.tables.len(),
                            st.lag_bytes.map_or("unknown".to_owned(), |l| l.to_string()),
                            pair.plan.max_lag_bytes
                        ))
                        .map_err(|e| e.to_string())?;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Kind::StartDb(Db::Mysql(i)) => {
                let pair = my_pair(plan, i)?;
                mysql::start::start(&pair)
                    .await
                    .map_err(|e| e.to_string())?;
                let (mut s, mut t) = pair.connect().await.map_err(|e| e.to_string())?;
                let deadline = Instant::now() + WARM_TIMEOUT;
                let mut last_note = Instant::now();
                loop {
                    let lag = mysql::heartbeat::measure(&mut s, &mut t, pair.plan.max_lag)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(lag) = lag.replicated_after {
                        return Ok((
                            format!(
                                "replicating, heartbeat lag {:.1} ms",
                                lag.as_secs_f64() * 1e3
                            ),
                            none,
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "replication was not within max_lag after {}",
                            humantime::format_duration(WARM_TIMEOUT)
                        ));
                    }
                    if last_note.elapsed() >= PROGRESS_EVERY {
                        last_note = Instant::now();
                        self.note(format!(
                            "mysql {}: a heartbeat did not reach the target within max_lag ({}); still waiting",
                            pair.plan.name,
                            humantime::format_duration(pair.plan.max_lag)
                        ))
                        .map_err(|e| e.to_string())?;
                    }
                }
            }
            Kind::Hook(i) => {
                let hook = &plan.hooks[i];
                let (outcome, warning) =
                    hooks::run_hook(plan, hook, step.phase.as_str(), self.reverse).await?;
                Ok((
                    match warning {
                        Some(w) => format!("FAILED, allowed: {w}"),
                        None => format!("exited 0 in {:.0} ms", outcome.ms),
                    },
                    serde_json::to_value(&outcome).unwrap_or_default(),
                ))
            }
            Kind::Gate(db) => {
                let w = self.window(db).await?;
                let g = w.gate().await.map_err(|e| e.to_string())?;
                Ok((format!("passed, lag {}", g.lag), none))
            }
            Kind::Fence(db) | Kind::CatchUp(db) => {
                let w = self.window(db).await?;
                window_phase_call(w.as_mut(), step.kind).await
            }
            Kind::Promote(db) => {
                let mut last = String::new();
                for attempt in 1..=PROMOTE_ATTEMPTS {
                    let result = match self.window(db).await {
                        Ok(w) => window_phase_call(w.as_mut(), step.kind).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(done) => return Ok(done),
                        Err(e) => {
                            last = e;
                            tracing::warn!(attempt, error = %last, "promotion failed; retrying");
                            // A broken connection is replaced on the next attempt.
                            self.windows.remove(&db);
                            self.resumed = true;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Err(last)
            }
            Kind::Finish(db) => {
                let w = self.window(db).await?;
                let f = w.finish().await;
                // Reversed, the fenced side is the run's new primary.
                let fenced = if self.reverse {
                    "the new primary"
                } else {
                    "the old primary"
                };
                let clean = match f.old_primary_clean {
                    Some(true) => format!("{fenced} took no write after the fence"),
                    Some(false) => format!("WRITES LOST: {fenced} took writes after the fence"),
                    None => format!("NOT CHECKED whether {fenced} took writes after the fence"),
                };
                Ok((
                    format!(
                        "{clean}{}",
                        if f.warnings.is_empty() {
                            String::new()
                        } else {
                            format!("; warnings: {}", f.warnings.join("; "))
                        }
                    ),
                    serde_json::to_value(&f).unwrap_or_default(),
                ))
            }
            Kind::DnsSwitch(i) => {
                let discovery = dns::Discovery::system();
                let target = dns::Target::resolve(i, &plan.dns[i], &discovery)
                    .await
                    .map_err(|e| e.to_string())?;
                let states = dns::state::StateDir::new(&state_dir);
                let reports =
                    dns::update::update_all(std::slice::from_ref(&target), &states, self.force)
                        .await
                        .map_err(|e| e.to_string())?;
                let r = reports.first().ok_or("no update report")?;
                Ok((
                    format!(
                        "{} -> {}",
                        r.previous
                            .as_ref()
                            .map(|p| p.values.join(","))
                            .unwrap_or_else(|| "(none)".into()),
                        r.current.values.join(",")
                    ),
                    serde_json::to_value(r).unwrap_or_default(),
                ))
            }
            Kind::Check(i) => {
                let outcome = hooks::run_check(plan, &plan.checks[i]).await;
                let detail = serde_json::to_value(&outcome).unwrap_or_default();
                if outcome.passed {
                    Ok((
                        format!(
                            "passed after {} tr{}",
                            outcome.tries,
                            if outcome.tries == 1 { "y" } else { "ies" }
                        ),
                        detail,
                    ))
                } else {
                    Err(format!(
                        "check {} failed after {} tries: {}",
                        outcome.name, outcome.tries, outcome.last
                    ))
                }
            }
            Kind::DnsWait(i) => {
                let record = &plan.dns[i];
                let discovery = dns::Discovery::system();
                let target = dns::Target::resolve(i, record, &discovery)
                    .await
                    .map_err(|e| e.to_string())?;
                let outcome = dns::propagation::wait(
                    std::slice::from_ref(&target),
                    record.propagation_timeout,
                    Duration::from_millis(100),
                    |_, _| {},
                )
                .await;
                if !outcome.complete {
                    let pending: Vec<String> = outcome
                        .pending()
                        .map(|r| {
                            format!(
                                "{} ({})",
                                r.server,
                                r.last.as_ref().map(|s| s.describe()).unwrap_or_default()
                            )
                        })
                        .collect();
                    return Err(format!(
                        "not served everywhere within {}: {}",
                        humantime::format_duration(record.propagation_timeout),
                        pending.join(", ")
                    ));
                }
                Ok((
                    format!(
                        "every authoritative server serves {} ({:.0} ms)",
                        record.values.join(","),
                        outcome.elapsed.as_secs_f64() * 1000.0
                    ),
                    serde_json::json!({ "record": dns::label(record), "ms": outcome.elapsed.as_secs_f64() * 1000.0 }),
                ))
            }
            Kind::Report => {
                let mut after = BTreeMap::new();
                let mut not_carried = Vec::new();
                for i in 0..plan.files.len() {
                    let entry = files_entry(plan, i)?;
                    if !self.reverse {
                        // What the source tree did since the final pass (the watcher stops).
                        let seen = files::changelog::after_final(&entry, &state_dir)
                            .await
                            .unwrap_or_else(|e| files::changelog::AfterFinal::Unproven {
                                reason: e.to_string(),
                            });
                        if let files::changelog::AfterFinal::Changed { paths } = &seen {
                            not_carried.push(format!(
                                "{}: {}{}",
                                entry.plan.name,
                                paths
                                    .iter()
                                    .take(20)
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if paths.len() > 20 {
                                    format!(" and {} more", paths.len() - 20)
                                } else {
                                    String::new()
                                }
                            ));
                        }
                        after.insert(entry.plan.name.clone(), seen);
                        // The target tree is the live side now: no pass of any migration
                        // copies over it again without the operator saying so.
                        files::claim::write(&entry, files::claim::ClaimState::Live)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    // The running hosts' shared ssh connections have done their work.
                    if let Err(e) = files::hop::close(&entry, &state_dir).await {
                        tracing::warn!(entry = %entry.plan.name, error = %e, "a shared ssh connection was not closed");
                    }
                }
                self.files_not_carried = not_carried;
                Ok((
                    "report saved in the state directory".to_owned(),
                    if after.is_empty() {
                        none
                    } else {
                        serde_json::json!({ "files_after_final": after })
                    },
                ))
            }
            Kind::PrepareReverse(Db::Postgres(i)) => {
                let pair = postgres::Pair::new(plan, &plan.postgres[i]);
                let old = pair.source.connect().await.map_err(|e| e.to_string())?;
                let n = postgres::fence::reopen_for_reverse(&old, &pair.names.pair)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    format!("{n} fenced role(s) on the old primary can be lifted by its promotion"),
                    none,
                ))
            }
            Kind::PrepareReverse(Db::Mysql(i)) => {
                let pair = my_pair(plan, i)?;
                let mut old = pair.source.connect().await.map_err(|e| e.to_string())?;
                mysql::writers::release_for_reverse(&mut old, &pair.plan.name)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    "the old primary's account lock can be lifted by its promotion".to_owned(),
                    none,
                ))
            }
            Kind::DnsRestore(i) => {
                let Some(values) = self.dns_previous.get(&i).cloned() else {
                    return Ok((
                        "nothing to restore: the run did not switch this record".to_owned(),
                        none,
                    ));
                };
                let mut record = plan.dns[i].clone();
                record.values = values;
                let discovery = dns::Discovery::system();
                let target = dns::Target::resolve(i, &record, &discovery)
                    .await
                    .map_err(|e| e.to_string())?;
                let states = dns::state::StateDir::new(&state_dir);
                // Going back is never held to the safe time: the old address served until now.
                let reports = dns::update::update_all(std::slice::from_ref(&target), &states, true)
                    .await
                    .map_err(|e| e.to_string())?;
                let r = reports.first().ok_or("no update report")?;
                Ok((
                    format!("back to {}", r.current.values.join(",")),
                    serde_json::to_value(r).unwrap_or_default(),
                ))
            }
        }
    }

    /// Runs steps from the first not done. Returns the outcome.
    async fn go(&mut self, skip_gates_of: &BTreeSet<Db>) -> Result<Outcome, StateError> {
        let progress = Progress::of(&self.records);
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut index = 0;
        while index < self.steps.len() {
            let step = self.steps[index].clone();
            if progress.done.contains(&index)
                || matches!(step.kind, Kind::Gate(db) if skip_gates_of.contains(&db))
            {
                index += 1;
                continue;
            }
            // The fence, catch-up and promotion of every pair run side by side: the joint
            // window is the slowest pair's, not the sum.
            let mut batch = vec![index];
            if let Some(family) = window_phase(step.kind) {
                while let Some(next) = self.steps.get(batch[batch.len() - 1] + 1) {
                    let n = batch[batch.len() - 1] + 1;
                    if window_phase(next.kind) != Some(family) || progress.done.contains(&n) {
                        break;
                    }
                    batch.push(n);
                }
            }
            index = batch[batch.len() - 1] + 1;
            if step.point_of_no_return && !self.past_ponr {
                // Journalled before the first promotion is sent: a crash from here on resumes
                // forward.
                self.record(Entry::PointOfNoReturn)?;
                crate::run::test_stop::maybe_stop(self.seq);
                self.past_ponr = true;
            }
            if step.phase >= Phase::WindowOpen && deadline.is_none() {
                // The final files pass must not spend the window on ssh handshakes.
                if step.phase <= Phase::WindowOpen {
                    for i in 0..self.plan.files.len() {
                        if let Ok(entry) = files_entry(self.plan, i) {
                            files::sync::ready(&entry).await;
                        }
                    }
                }
                deadline = self
                    .plan
                    .migration
                    .window_timeout
                    .map(|t| tokio::time::Instant::now() + t);
            }
            for &i in &batch {
                self.record(Entry::StepBegin {
                    step: i,
                    phase: self.steps[i].phase,
                    component: self.steps[i].component.clone(),
                })?;
                crate::run::test_stop::maybe_stop(self.seq);
                crate::run::test_stop::maybe_stop_at_step(i, "begin");
            }
            let results = if self.past_ponr {
                self.exec_batch(&batch).await
            } else {
                let cancel = self.cancel.clone();
                let timeout = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let interrupted =
                    |why: String| batch.iter().map(|&i| (i, 0.0, Err(why.clone()))).collect();
                tokio::select! {
                    r = self.exec_batch(&batch) => r,
                    _ = cancel.cancelled() => interrupted("interrupted (SIGINT/SIGTERM) before the point of no return".to_owned()),
                    _ = timeout => interrupted(format!(
                        "window_timeout ({}) exceeded before the point of no return",
                        humantime::format_duration(self.plan.migration.window_timeout.unwrap_or_default())
                    )),
                }
            };
            let mut first_failure = None;
            for (i, ms, result) in results {
                match result {
                    Ok((summary, detail)) => {
                        if let Kind::Finish(_) = self.steps[i].kind
                            && detail.get("old_primary_clean") == Some(&serde_json::json!(false))
                        {
                            self.lost_writes = true;
                        }
                        self.record(Entry::StepDone {
                            step: i,
                            ms,
                            summary,
                            detail,
                        })?;
                        crate::run::test_stop::maybe_stop(self.seq);
                        crate::run::test_stop::maybe_stop_at_step(i, "done");
                    }
                    Err(error) => {
                        self.record(Entry::StepFailed {
                            step: i,
                            ms,
                            error: error.clone(),
                        })?;
                        first_failure.get_or_insert((i, error));
                    }
                }
            }
            if let Some((i, error)) = first_failure {
                let step = self.steps[i].clone();
                return self.failed(&step, error).await;
            }
        }
        let summary = match (self.lost_writes, self.reverse) {
            _ if !self.files_not_carried.is_empty() => format!(
                "completed, but FILES NOT CARRIED: these changed on the old host after the final pass and the new host may lack them: {}. Stop the tree's writers before the final pass (a window-open hook), and copy them by hand",
                self.files_not_carried.join("; ")
            ),
            (true, _) => {
                "completed, but a primary took writes after its fence (see the report)".to_owned()
            }
            (false, false) => "completed: every target is the primary, every check passed".to_owned(),
            (false, true) => {
                "reverse cutover completed: every old primary serves again, the new ones stay fenced"
                    .to_owned()
            }
        };
        let outcome = if self.lost_writes || !self.files_not_carried.is_empty() {
            Outcome::Failed
        } else {
            Outcome::Completed
        };
        self.record(Entry::RunFinished {
            outcome,
            summary,
            resumable: false,
            reverse_next: false,
        })?;
        Ok(outcome)
    }

    /// Executes `batch` (one step, or one window phase across pairs, concurrently). Returns
    /// each step's duration and result, in order.
    #[allow(clippy::type_complexity)]
    async fn exec_batch(
        &mut self,
        batch: &[usize],
    ) -> Vec<(usize, f64, Result<(String, serde_json::Value), String>)> {
        if batch.len() == 1 {
            let step = self.steps[batch[0]].clone();
            let started = Instant::now();
            let r = self.exec(&step).await;
            return vec![(batch[0], started.elapsed().as_secs_f64() * 1000.0, r)];
        }
        let mut taken = Vec::new();
        let mut out = Vec::new();
        for &i in batch {
            let kind = self.steps[i].kind;
            let db = match kind {
                Kind::Fence(db) | Kind::CatchUp(db) | Kind::Promote(db) => db,
                other => {
                    out.push((i, 0.0, Err(format!("{other:?} is not a window phase"))));
                    continue;
                }
            };
            match self.window(db).await {
                Ok(_) => {
                    let w = self.windows.remove(&db).expect("opened above");
                    taken.push((i, db, kind, w));
                }
                Err(e) => out.push((i, 0.0, Err(e))),
            }
        }
        let runs = taken.into_iter().map(|(i, db, kind, mut w)| async move {
            let started = Instant::now();
            let r = window_phase_call(w.as_mut(), kind).await;
            (i, db, w, started.elapsed().as_secs_f64() * 1000.0, r)
        });
        let mut retry = Vec::new();
        for (i, db, w, ms, r) in futures::future::join_all(runs).await {
            self.windows.insert(db, w);
            match r {
                Err(_) if matches!(self.steps[i].kind, Kind::Promote(_)) => retry.push(i),
                r => out.push((i, ms, r)),
            }
        }
        // A promotion that failed side by side is retried alone (with a fresh connection).
        for i in retry {
            let step = self.steps[i].clone();
            let started = Instant::now();
            let r = self.exec(&step).await;
            out.push((i, started.elapsed().as_secs_f64() * 1000.0, r));
        }
        out.sort_by_key(|(i, _, _)| *i);
        out
    }

    async fn failed(&mut self, step: &Step, error: String) -> Result<Outcome, StateError> {
        if self.past_ponr {
            let summary = match step.kind {
                Kind::Check(_) if !self.reverse => {
                    self.check_failed = true;
                    if self.plan.migration.auto_rollback && !self.plan.files.is_empty() {
                        format!(
                            "a health check failed after the point of no return ({error}); the new primaries serve. Not reversed automatically: the plan's file trees would be left behind (`run --rollback --leave-files` moves the databases back without them)"
                        )
                    } else if self.plan.migration.auto_rollback {
                        format!(
                            "a health check failed after the point of no return ({error}); the new primaries serve: reversing the cutover (auto_rollback)"
                        )
                    } else {
                        format!(
                            "a health check failed after the point of no return ({error}); the new primaries serve and the old ones stay fenced, kept current by reverse replication. auto_rollback is off: `run --rollback` reverses the cutover"
                        )
                    }
                }
                _ => format!(
                    "stopped after the point of no return at `{}` ({error}); the targets that were promoted serve. Resume the run to finish it",
                    step_line(step)
                ),
            };
            let reverse_next = matches!(step.kind, Kind::Check(_))
                && !self.reverse
                && self.plan.migration.auto_rollback
                && self.plan.files.is_empty();
            self.record(Entry::RunFinished {
                outcome: Outcome::Failed,
                summary,
                // A failed check is not resumed forward: the reverse cutover follows (or the
                // operator's `--rollback`).
                resumable: !matches!(step.kind, Kind::Check(_)),
                reverse_next,
            })?;
            return Ok(Outcome::Failed);
        }
        if !self.plan.migration.auto_rollback {
            let summary = format!(
                "failed at `{}` ({error}); auto_rollback is off, so nothing was undone: resuming the run rolls back, resuming with --continue goes on",
                step_line(step)
            );
            self.record(Entry::RunFinished {
                outcome: Outcome::Failed,
                summary,
                resumable: true,
                reverse_next: false,
            })?;
            return Ok(Outcome::Failed);
        }
        self.roll_back_all(&error).await
    }

    /// Rolls back every pair whose fence began, then runs the on-rollback hooks if the window
    /// had opened.
    async fn roll_back_all(&mut self, reason: &str) -> Result<Outcome, StateError> {
        self.record(Entry::RollbackBegin {
            reason: reason.to_owned(),
        })?;
        let progress = Progress::of(&self.records);
        let fenced: Vec<Db> = progress
            .begun
            .iter()
            .filter_map(|&i| match self.steps[i].kind {
                Kind::Fence(db) => Some(db),
                _ => None,
            })
            .collect();
        let window_opened = progress
            .begun
            .iter()
            .any(|&i| self.steps[i].phase >= Phase::WindowOpen);
        let mut all_serve = true;
        // A window dropped mid-phase (an interrupt) is reopened knowing nothing: its rollback
        // checks the servers for what the lost one may have done.
        self.resumed |= fenced.iter().any(|db| !self.windows.contains_key(db));
        for db in fenced.into_iter().rev() {
            let outcome = match self.window(db).await {
                Ok(w) => w.roll_back().await,
                Err(e) => Rollback::Failed {
                    error: format!("cannot reach the pair to roll it back: {e}"),
                },
            };
            all_serve &= outcome.source_serves();
            if self.reverse {
                // The old primary's fence goes back to being for good.
                if let Err(e) = self.keep_old_primary_fenced(db).await {
                    self.record(Entry::Note {
                        text: format!("{}: {e}", self.name(db)),
                    })?;
                }
            }
            let component = self.name(db);
            self.record(Entry::RolledBack { component, outcome })?;
        }
        // What this run started on the hosts goes too: the change-log watchers and the shared
        // ssh connections (a next run starts its own).
        for i in 0..self.plan.files.len() {
            let Ok(entry) = files_entry(self.plan, i) else {
                continue;
            };
            let state_dir = &self.plan.migration.state_dir;
            if let Ok(Some(watch)) = files::changelog::load(state_dir, &entry.plan.name)
                && let Err(e) = files::changelog::stop(&entry, state_dir, &watch).await
            {
                self.record(Entry::Note {
                    text: format!(
                        "files {}: the change-log watcher (pid {} on the source host) could not be stopped: {e}",
                        entry.plan.name, watch.pid
                    ),
                })?;
            }
            if let Err(e) = files::hop::close(&entry, state_dir).await {
                tracing::warn!(entry = %entry.plan.name, error = %e, "a shared ssh connection was not closed");
            }
        }
        let mut hook_failures = Vec::new();
        if window_opened {
            for hook in self
                .plan
                .hooks
                .iter()
                .filter(|h| h.at == HookPoint::OnRollback)
            {
                match hooks::run_hook(self.plan, hook, "on-rollback", true).await {
                    Ok((_, None)) => {}
                    Ok((_, Some(w))) => hook_failures.push(w),
                    Err(e) => hook_failures.push(e),
                }
            }
            for f in &hook_failures {
                self.record(Entry::Note { text: f.clone() })?;
            }
        }
        // Each pair's state as read from its servers now, never as assumed: a runner that
        // failed against servers another run had changed must not say they serve.
        let mut states = Vec::new();
        let undone = all_serve;
        for (db, component) in databases(self.plan) {
            let read = match self.window(db).await {
                Ok(w) => w.state().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match read {
                Ok(s) => {
                    all_serve &= !s.source_fenced && !s.target_promoted;
                    states.push(format!("{component}: {}", s.serving()));
                }
                Err(e) => {
                    all_serve = false;
                    states.push(format!("{component}: state unreadable ({e})"));
                }
            }
        }
        let every_source_serves = all_serve;
        let states = if states.is_empty() {
            String::new()
        } else {
            format!(" [read from the servers: {}]", states.join("; "))
        };
        let hooks_note = if hook_failures.is_empty() {
            String::new()
        } else {
            "; an on-rollback hook failed (see above)".to_owned()
        };
        let (outcome, summary) = if undone && every_source_serves {
            (
                Outcome::RolledBack,
                format!(
                    "rolled back ({reason}): every source serves writes again{states}{hooks_note}"
                ),
            )
        } else if undone {
            // This run undid what it did; the servers are not all as a fresh start would
            // find them (another run's work, a server down): said as read, not assumed.
            (
                Outcome::RolledBack,
                format!(
                    "rolled back ({reason}): nothing this run changed is left, but not every source serves writes{states}{hooks_note}"
                ),
            )
        } else {
            (
                Outcome::Failed,
                format!(
                    "ROLLBACK INCOMPLETE ({reason}): not every source serves writes{states}; see the rollback records for what to run"
                ),
            )
        };
        self.record(Entry::RunFinished {
            outcome,
            summary,
            // An incomplete rollback is tried again by `--resume`.
            resumable: outcome == Outcome::Failed,
            reverse_next: false,
        })?;
        Ok(outcome)
    }

    async fn keep_old_primary_fenced(&self, db: Db) -> Result<(), String> {
        match db {
            Db::Postgres(i) => {
                let pair = postgres::Pair::new(self.plan, &self.plan.postgres[i]);
                let old = pair.source.connect().await.map_err(|e| e.to_string())?;
                postgres::fence::keep_after_promotion(&old, &pair.names.pair)
                    .await
                    .map_err(|e| e.to_string())
            }
            Db::Mysql(i) => {
                let pair = my_pair(self.plan, i)?;
                let mut old = pair.source.connect().await.map_err(|e| e.to_string())?;
                mysql::writers::keep_locked(&mut old, &pair.plan.name)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn report(&self) -> RunReport {
        report_of(self.plan, &self.steps, &self.records)
    }
}

/// Runs one window phase (fence, catch-up or promotion) of `w`; its words for the journal.
async fn window_phase_call(
    w: &mut dyn Window,
    kind: Kind,
) -> Result<(String, serde_json::Value), String> {
    let failed = |e: EngineError| e.to_string();
    match kind {
        Kind::Fence(_) => w.fence().await.map_err(failed).map(|f| {
            (
                format!("fenced, {} session(s) ended", f.sessions_ended),
                serde_json::Value::Null,
            )
        }),
        Kind::CatchUp(_) => w.catch_up().await.map_err(failed).map(|c| {
            (
                format!("target has everything up to {}", c.position),
                serde_json::Value::Null,
            )
        }),
        Kind::Promote(_) => w.promote().await.map_err(failed).map(|p| {
            (
                "the target is the writable primary".to_owned(),
                serde_json::to_value(&p).unwrap_or_default(),
            )
        }),
        other => Err(format!("{other:?} is not a window phase")),
    }
}

/// The window phase a step belongs to, for running it side by side with its siblings.
fn window_phase(kind: Kind) -> Option<u8> {
    match kind {
        Kind::Fence(_) => Some(0),
        Kind::CatchUp(_) => Some(1),
        Kind::Promote(_) => Some(2),
        _ => None,
    }
}

fn my_pair(plan: &Plan, i: usize) -> Result<mysql::Pair, String> {
    mysql::Pair::select(plan, Some(&plan.mysql[i].name))
        .pop()
        .ok_or_else(|| format!("no mysql pair {i}"))
}

fn files_entry(plan: &Plan, i: usize) -> Result<files::Entry, String> {
    files::Entry::select(plan, Some(&plan.files[i].name))
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or_else(|| format!("no files entry {i}"))
}

/// The report of one run, computed from its journal records.
pub fn report_of(plan: &Plan, steps: &[Step], records: &[Record]) -> RunReport {
    let mut r = RunReport {
        migration: plan.migration.name.clone(),
        run: records.first().map(|r| r.run.clone()).unwrap_or_default(),
        ..RunReport::default()
    };
    let mut began: HashMap<usize, u64> = HashMap::new();
    let mut window_began = None;
    let mut first_fence = None;
    let mut last_promote = None;
    let mut fence_began: HashMap<String, u64> = HashMap::new();
    for rec in records {
        match &rec.entry {
            Entry::Resumed { .. } => r.resumed = true,
            Entry::StepBegin {
                step,
                phase,
                component,
            } => {
                began.insert(*step, rec.at_ms);
                if *phase >= Phase::WindowOpen && *phase <= Phase::Promote && window_began.is_none()
                {
                    window_began = Some(rec.at_ms);
                }
                if let Some(Kind::Fence(_)) = steps.get(*step).map(|s| s.kind) {
                    first_fence.get_or_insert(rec.at_ms);
                    fence_began.entry(component.clone()).or_insert(rec.at_ms);
                }
            }
            Entry::StepDone {
                step,
                ms,
                summary,
                detail,
            } => {
                let Some(s) = steps.get(*step) else { continue };
                r.steps.push(StepTiming {
                    step: *step,
                    phase: s.phase,
                    component: s.component.clone(),
                    ms: *ms,
                    result: "done".into(),
                    summary: summary.clone(),
                });
                match s.kind {
                    Kind::WarmFiles(_) | Kind::FinalFiles(_) => r.files.push(detail.clone()),
                    Kind::Report => {
                        if let Some(after) = detail.get("files_after_final")
                            && let Ok(after) = serde_json::from_value(after.clone())
                        {
                            r.files_after_final = after;
                        }
                    }
                    Kind::Check(_) => r.checks.push(detail.clone()),
                    Kind::Promote(_) => {
                        last_promote = Some(rec.at_ms);
                        // The engine's own clock when this process fenced; the journal's
                        // clock across a crash.
                        let ms = detail
                            .get("write_unavailable_ms")
                            .and_then(|v| v.as_f64())
                            .or_else(|| {
                                fence_began
                                    .get(&s.component)
                                    .map(|b| rec.at_ms.saturating_sub(*b) as f64)
                            });
                        if let Some(ms) = ms {
                            r.write_unavailable_ms.insert(s.component.clone(), ms);
                        }
                    }
                    Kind::Finish(_) => {
                        r.old_primary_clean.insert(
                            s.component.clone(),
                            detail.get("old_primary_clean").and_then(|v| v.as_bool()),
                        );
                        if let Some(w) = detail.get("warnings").and_then(|w| w.as_array()) {
                            r.warnings.extend(
                                w.iter()
                                    .filter_map(|w| w.as_str())
                                    .map(|w| format!("{}: {w}", s.component)),
                            );
                        }
                    }
                    Kind::DnsWait(_) => {
                        if let (Some(rec_name), Some(ms)) = (
                            detail.get("record").and_then(|v| v.as_str()),
                            detail.get("ms").and_then(|v| v.as_f64()),
                        ) {
                            r.dns_propagation_ms.insert(rec_name.to_owned(), ms);
                        }
                    }
                    _ => {}
                }
                if let Kind::Hook(_) = s.kind
                    && summary.starts_with("FAILED")
                {
                    r.warnings.push(summary.clone());
                }
            }
            Entry::StepFailed { step, ms, error } => {
                let Some(s) = steps.get(*step) else { continue };
                r.steps.push(StepTiming {
                    step: *step,
                    phase: s.phase,
                    component: s.component.clone(),
                    ms: *ms,
                    result: "failed".into(),
                    summary: error.clone(),
                });
                r.error = Some(format!("{}: {error}", step_line(s)));
            }
            Entry::RolledBack { component, outcome } => {
                r.rollback.push((component.clone(), outcome.clone()));
            }
            Entry::Note { text } => r.warnings.push(text.clone()),
            Entry::RunFinished { outcome, .. } => r.outcome = Some(*outcome),
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (window_began, last_promote) {
        r.window_ms = Some(b.saturating_sub(a) as f64);
    }
    if let (Some(a), Some(b)) = (first_fence, last_promote) {
        r.joint_write_unavailable_ms = Some(b.saturating_sub(a) as f64);
    }
    if let (Some(first), Some(last)) = (records.first(), records.last()) {
        r.total_ms = last.at_ms.saturating_sub(first.at_ms) as f64;
    }
    r
}

/// The records of the run before run `run` in `journal`.
fn run_before(journal: &[serde_json::Value], run: &str) -> Vec<Record> {
    let mut records = parse(journal);
    let Some(first) = records.iter().position(|r| r.run == run) else {
        return Vec::new();
    };
    records.truncate(first);
    last_run_of(records)
}

/// What each DNS record served before `records`' run switched it (from its switch steps).
fn dns_before(records: &[Record], steps: &[Step]) -> HashMap<usize, Vec<String>> {
    let mut out = HashMap::new();
    for r in records {
        if let Entry::StepDone { step, detail, .. } = &r.entry
            && let Some(Kind::DnsSwitch(i)) = steps.get(*step).map(|s| s.kind)
            && let Some(values) = detail
                .get("previous")
                .and_then(|p| p.get("values"))
                .and_then(|v| v.as_array())
        {
            out.insert(
                i,
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            );
        }
    }
    out
}

/// Refuses a plan whose rollback after promotion would lose writes, unless it says it accepts.
fn one_way_check(plan: &Plan) -> Result<(), RunError> {
    if plan.migration.accept_one_way {
        return Ok(());
    }
    let one_way: Vec<String> = plan
        .postgres
        .iter()
        .filter(|p| !p.reverse_replication)
        .map(|p| format!("postgres {}", p.name))
        .chain(
            plan.mysql
                .iter()
                .filter(|m| !m.reverse_replication)
                .map(|m| format!("mysql {}", m.name)),
        )
        .collect();
    if one_way.is_empty() {
        return Ok(());
    }
    Err(RunError::Refused(format!(
        "refusing to start: {} run(s) without reverse_replication, so rolling back after the promotion would lose every write the new primary took. Set `reverse_replication = true` on those pairs, or `accept_one_way = true` under [migration] to accept that",
        one_way.join(", ")
    )))
}

/// Runs (or resumes) `plan`. `observer` sees every journal record as it is written; `cancel`
/// is triggered by SIGINT/SIGTERM. Returns the outcome and the report (saved in the state
/// directory).
pub async fn run(
    plan: &Plan,
    opts: &Options,
    cancel: CancellationToken,
    observer: &mut (dyn FnMut(&Record) + Send),
) -> Result<(Outcome, RunReport), RunError> {
    run_under(plan, opts, cancel, observer, None).await
}

/// The reverse cutover that follows a health check failed after the promotion: its own
/// journalled run, under the lease of the run it undoes. The forward run's outcome is then
/// "rolled back" when the reverse cutover completed.
async fn reverse_after_failed_check(
    plan: &Plan,
    force: bool,
    cancel: CancellationToken,
    observer: &mut (dyn FnMut(&Record) + Send),
    lease: Lease,
) -> Result<(Outcome, RunReport), RunError> {
    let opts = Options {
        force,
        resume: false,
        go_on: false,
        rollback: true,
        leave_files: false,
    };
    let (back, report) = Box::pin(run_under(plan, &opts, cancel, observer, Some(lease))).await?;
    let outcome = match back {
        Outcome::Completed => Outcome::RolledBack,
        other => other,
    };
    Ok((outcome, report))
}

/// [`run`], under `lease` when given (the automatic reverse cutover keeps the lease of the run it
/// undoes: no other runner can step in between).
async fn run_under(
    plan: &Plan,
    opts: &Options,
    cancel: CancellationToken,
    observer: &mut (dyn FnMut(&Record) + Send),
    lease: Option<Lease>,
) -> Result<(Outcome, RunReport), RunError> {
    let store: Box<dyn Store> = Box::new(FileStore::new(&StateDir::new(&plan.migration.state_dir)));
    let purpose = match (opts.resume, opts.rollback) {
        (true, _) => "run --resume",
        (false, true) => "run --rollback",
        _ => "run",
    };
    let lease = match lease {
        Some(lease) => lease,
        None => store.acquire(purpose)?,
    };
    let journal = store.journal()?;
    let previous = last_run(&journal);
    let progress = Progress::of(&previous);
    let previous_reverse = matches!(
        previous.first().map(|r| &r.entry),
        Some(Entry::RunStarted { reverse: true, .. })
    );
    // A reverse cutover runs its own steps: when starting one, and when resuming one.
    let reverse = if opts.resume {
        previous_reverse
    } else {
        opts.rollback
    };
    let steps = if reverse {
        reverse_steps(plan)
    } else {
        steps(plan)
    };
    let lines: Vec<String> = steps.iter().map(step_line).collect();
    // What the DNS records served before the forward run this one reverses.
    let forward_run = if opts.resume && reverse {
        run_before(&journal, &previous[0].run)
    } else {
        previous.clone()
    };
    let dns_previous = if reverse {
        dns_before(&forward_run, &super::steps::steps(plan))
    } else {
        HashMap::new()
    };
    let seq = journal
        .iter()
        .filter_map(|v| v.get("seq").and_then(|s| s.as_u64()))
        .max()
        .unwrap_or_default();
    if opts.resume && progress.reverse_next && !previous_reverse {
        // A health check failed after the promotion, and the process stopped before the
        // reverse cutover it was to start: start it now, under this lease.
        return reverse_after_failed_check(plan, opts.force, cancel, observer, lease).await;
    }
    if opts.resume && !previous.is_empty() && progress.finished.is_some() && !progress.resumable {
        // The run ended; only its report may be missing (a crash between its last record and
        // the report's write): rebuilt from the journal, the spine it is made of.
        let current = store
            .report()?
            .and_then(|r| r.get("run").and_then(|v| v.as_str()).map(str::to_owned));
        if current.as_deref() != Some(previous[0].run.as_str()) {
            let steps_of_run = if previous_reverse {
                reverse_steps(plan)
            } else {
                super::steps::steps(plan)
            };
            let report = report_of(plan, &steps_of_run, &previous);
            store.save_report(&lease, &serde_json::to_value(&report).unwrap_or_default())?;
            return Ok((progress.finished.unwrap_or(Outcome::Failed), report));
        }
    }
    let mut runner = Runner {
        plan,
        store,
        lease,
        run: String::new(),
        seq,
        steps,
        windows: HashMap::new(),
        resumed: opts.resume,
        observer,
        records: Vec::new(),
        past_ponr: false,
        cancel,
        force: opts.force,
        lost_writes: false,
        reverse,
        dns_previous,
        check_failed: false,
        files_not_carried: Vec::new(),
    };
    let unfinished = !previous.is_empty() && (progress.finished.is_none() || progress.resumable);
    let outcome = if !opts.resume {
        if unfinished {
            return Err(RunError::Refused(format!(
                "an earlier run of this migration ({}) was interrupted {}; resume it (it finishes or rolls back) before starting another",
                previous[0].run,
                match progress.last_begun.and_then(|i| lines.get(i)) {
                    Some(step) => format!("at `{step}`"),
                    None => "before its first step".to_owned(),
                }
            )));
        }
        if opts.rollback {
            let forward_done = !previous_reverse
                && (progress.finished == Some(Outcome::Completed)
                    || (progress.finished == Some(Outcome::Failed)
                        && progress.past_point_of_no_return));
            if !forward_done {
                return Err(RunError::Refused(
                    "nothing to roll back: a reverse cutover follows a run that promoted its targets (the last run did not, or was itself a rollback)".to_owned(),
                ));
            }
            if !plan.files.is_empty() && !opts.leave_files {
                return Err(RunError::Refused(format!(
                    "the plan moves file trees ({}), and a reverse cutover does not carry them back: the old host lacks every file (and SQLite write) made on the new host since the move, so serving from it again would lose them. Copy them back first (a plan with source and target swapped, files only), or say they may be left behind with --leave-files",
                    plan.files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if let Some(pair) = plan.postgres.iter().find(|p| !p.reverse_replication) {
                return Err(RunError::Refused(format!(
                    "postgres {} has no reverse replication: its old primary lacks every write since the promotion, so promoting it back would lose them",
                    pair.name
                )));
            }
            if let Some(pair) = plan.mysql.iter().find(|m| !m.reverse_replication) {
                return Err(RunError::Refused(format!(
                    "mysql {} has no reverse replication: its old primary lacks every write since the promotion, so promoting it back would lose them",
                    pair.name
                )));
            }
        } else {
            let forward_done = !previous_reverse
                && (progress.finished == Some(Outcome::Completed)
                    || progress.past_point_of_no_return);
            if forward_done {
                return Err(RunError::Refused(format!(
                    "this migration already moved: its last run ({}) {}, so its targets are the live side now, and running it again would copy the old sources over them. Nothing was changed. To move back, use `--rollback`; to move again, write a plan with a new migration name (and source and target as they are now)",
                    previous[0].run,
                    match progress.finished {
                        Some(Outcome::Completed) => "completed".to_owned(),
                        _ => "passed its point of no return".to_owned(),
                    }
                )));
            }
            one_way_check(plan)?;
        }
        runner.run = format!(
            "{}-{}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            std::process::id()
        );
        runner.record(Entry::RunStarted {
            migration: plan.migration.name.clone(),
            reverse,
            steps: lines,
        })?;
        if reverse && !plan.files.is_empty() {
            runner.record(Entry::Note {
                text: format!(
                    "files left behind (--leave-files): {} stay on the new host; the old host's trees are as they were at the move",
                    plan.files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        }
        runner.go(&BTreeSet::new()).await?
    } else {
        if !unfinished {
            return Err(RunError::Refused(match progress.finished {
                Some(o) => format!(
                    "nothing to resume: the last run ({}) ended {}",
                    previous[0].run,
                    o.word()
                ),
                None => "nothing to resume: this migration has no run in its journal".to_owned(),
            }));
        }
        if let Some(r) = previous.first()
            && let Entry::RunStarted { steps: old, .. } = &r.entry
            && *old != lines
        {
            return Err(RunError::Refused(
                "the plan's steps changed since the interrupted run began; resume with the plan it was started with".to_owned(),
            ));
        }
        runner.run = previous[0].run.clone();
        runner.records = previous;
        runner.past_ponr = progress.past_point_of_no_return;
        // The servers' own state decides with the journal: a promoted target means forward.
        let mut states = Vec::new();
        let mut any_promoted = false;
        let mut fenced = BTreeSet::new();
        for (db, component) in databases(plan) {
            match runner.window(db).await {
                Ok(w) => match w.state().await {
                    Ok(s) => {
                        any_promoted |= s.target_promoted && s.source_fenced;
                        if s.source_fenced {
                            fenced.insert(db);
                        }
                        states.push(format!(
                            "{component}: {}; {}",
                            s.serving(),
                            s.lines.join("; ")
                        ));
                    }
                    Err(e) => states.push(format!("{component}: state unreadable: {e}")),
                },
                Err(e) => states.push(format!("{component}: unreachable: {e}")),
            }
        }
        let forward = runner.past_ponr || any_promoted;
        let decision = if forward {
            "forward: the point of no return was passed; finishing every remaining step".to_owned()
        } else if opts.go_on {
            "continue (--continue): before the point of no return; going on from the first step not done".to_owned()
        } else {
            "roll back: the run stopped before the point of no return".to_owned()
        };
        runner.record(Entry::Resumed { decision, states })?;
        if forward || opts.go_on {
            runner.past_ponr = forward;
            runner.go(&fenced).await?
        } else {
            runner
                .roll_back_all("resumed after an interruption before the point of no return")
                .await?
        }
    };
    let report = runner.report();
    crate::run::test_stop::maybe_stop_at_event("before-report");
    runner.store.save_report(
        &runner.lease,
        &serde_json::to_value(&report).unwrap_or_default(),
    )?;
    if runner.check_failed
        && plan.migration.auto_rollback
        && !runner.reverse
        && !plan.files.is_empty()
    {
        // The reverse cutover would leave the trees behind: that is the operator's call, not
        // an automatic one. The new host keeps serving; the summary says what to do.
        runner.record(Entry::Note {
            text: "a health check failed, but the plan moves file trees, which a reverse cutover does not carry back: nothing was reversed automatically, the new host serves. `run --rollback --leave-files` moves the databases back without the files".to_owned(),
        })?;
    } else if runner.check_failed && plan.migration.auto_rollback && !runner.reverse {
        crate::run::test_stop::maybe_stop_at_event("before-reverse");
        // A failed health check after the promotion: the reverse cutover, as its own journalled
        // run (resumable like any other), under this run's lease.
        let Runner {
            observer,
            cancel,
            lease,
            ..
        } = runner;
        return reverse_after_failed_check(plan, opts.force, cancel, observer, lease).await;
    }
    Ok((outcome, report))
}

/// What `status` says about a migration: read-only.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Who holds the lease now, if anyone.
    pub holder: Option<String>,
    /// The last run's id.
    pub run: Option<String>,
    /// How it ended (`None`: it did not, or there was none).
    pub outcome: Option<Outcome>,
    /// Steps done / total.
    pub steps_done: usize,
    /// Total steps.
    pub steps_total: usize,
    /// The last step begun, as text.
    pub last_step: Option<String>,
    /// Its phase.
    pub phase: Option<Phase>,
    /// Past the point of no return.
    pub past_point_of_no_return: bool,
    /// Each pair's state, read from the servers.
    pub pairs: Vec<(String, String)>,
    /// The same readings as values (`None`: unreadable), for the daemon's gauges.
    #[serde(skip)]
    pub pair_states: Vec<(String, Option<PairState>)>,
    /// What `run --resume` would do.
    pub resume_would: String,
    /// The last report saved.
    pub report: Option<serde_json::Value>,
}

/// Reads the journal, the lease and the servers; writes nothing.
pub async fn status(plan: &Plan) -> Result<Status, RunError> {
    let store = FileStore::new(&StateDir::new(&plan.migration.state_dir));
    let holder = store.holder()?.map(|h| h.to_string());
    let records = last_run(&store.journal()?);
    let progress = Progress::of(&records);
    let steps = match records.first().map(|r| &r.entry) {
        Some(Entry::RunStarted { reverse: true, .. }) => reverse_steps(plan),
        _ => steps(plan),
    };
    let reverse = matches!(
        records.first().map(|r| &r.entry),
        Some(Entry::RunStarted { reverse: true, .. })
    );
    let mut pairs = Vec::new();
    let mut states = Vec::new();
    let mut any_promoted = false;
    if reverse {
        // A reverse cutover's resume reads the pairs backwards (its target is the old
        // primary): what it would do is decided on the same reading.
        for (db, _) in databases(plan) {
            if let Ok(mut w) = open_window(plan, db, true, true).await
                && let Ok(s) = w.state().await
            {
                any_promoted |= s.target_promoted && s.source_fenced;
            }
        }
    }
    for (component, state) in pair_states(plan).await {
        match state {
            Ok(s) => {
                if !reverse {
                    any_promoted |= s.target_promoted && s.source_fenced;
                }
                pairs.push((
                    component.clone(),
                    format!("{}; {}", s.serving(), s.lines.join("; ")),
                ));
                states.push((component, Some(s)));
            }
            Err(e) => {
                pairs.push((component.clone(), format!("unreadable: {e}")));
                states.push((component, None));
            }
        }
    }
    let resume_would = if records.is_empty() {
        "nothing: no run yet".to_owned()
    } else if progress.reverse_next && holder.is_none() {
        "reverse the cutover: a health check failed after the promotion, and the reverse cutover that was to follow has not begun".to_owned()
    } else if let Some(o) = progress.finished.filter(|_| !progress.resumable) {
        format!("nothing: the last run ended {}", o.word())
    } else if holder.is_some() {
        "nothing yet: a runner holds the migration (it is running)".to_owned()
    } else if progress.past_point_of_no_return || any_promoted {
        "go forward: finish the remaining steps (past the point of no return)".to_owned()
    } else if reverse {
        "roll back the reverse cutover: the new primaries serve again (before its point of no return); with --continue, go on instead".to_owned()
    } else {
        "roll back every fenced source (before the point of no return); with --continue, go on instead".to_owned()
    };
    Ok(Status {
        holder,
        run: records.first().map(|r| r.run.clone()),
        outcome: progress.finished,
        steps_done: progress.done.len(),
        steps_total: steps.len(),
        last_step: progress
            .last_begun
            .and_then(|i| steps.get(i))
            .map(step_line),
        phase: progress
            .last_begun
            .and_then(|i| steps.get(i))
            .map(|s| s.phase),
        past_point_of_no_return: progress.past_point_of_no_return,
        pairs,
        pair_states: states,
        resume_would,
        report: store.report()?,
    })
}
