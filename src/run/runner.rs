//! The runner: a run's steps in order, top to bottom. Each step is journalled before and after
//! it runs (the store first, fsync'd and lease-checked, then the observer); the window's phases
//! run side by side across the pairs; the point of no return is journalled before the first
//! promotion; a failure before it rolls every fenced pair back, a failure after it stops the run
//! for `resume`. What each step does is in `actions`, one file per component.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::actions::{self, Done, StepError};
use super::hooks;
use super::journal::{Entry, Outcome, Progress, Record, now_ms, step_line};
use super::pairs::open_window;
use super::report::{RunReport, report_of};
use super::steps::{Db, Kind, Phase, Step, databases};
use crate::engine::{Rollback, Window};
use crate::plan::{HookPoint, Plan};
use crate::state::{Lease, StateError, Store};

/// Attempts at a promotion after the point of no return before the run stops to be resumed.
const PROMOTE_ATTEMPTS: u32 = 3;

/// A running run.
pub(super) struct Runner<'a> {
    pub(super) plan: &'a Plan,
    pub(super) store: Box<dyn Store>,
    pub(super) lease: Lease,
    pub(super) run: String,
    pub(super) seq: u64,
    pub(super) steps: Vec<Step>,
    pub(super) windows: HashMap<Db, Box<dyn Window>>,
    pub(super) resumed: bool,
    pub(super) observer: &'a mut (dyn FnMut(&Record) + Send),
    pub(super) records: Vec<Record>,
    pub(super) past_ponr: bool,
    pub(super) cancel: CancellationToken,
    pub(super) force: bool,
    pub(super) lost_writes: bool,
    /// A reverse cutover: windows are opened on the reversed pairs.
    pub(super) reverse: bool,
    /// Per DNS record, what it served before the forward run (for a reverse cutover).
    pub(super) dns_previous: HashMap<usize, Vec<String>>,
    /// A health check failed after the point of no return.
    pub(super) check_failed: bool,
    /// Paths changed on an old host's tree after its final pass (`entry: paths`).
    pub(super) files_not_carried: Vec<String>,
    /// The first journal write that failed (a full or failing disk): from then on records are
    /// kept in memory only, the run goes no further forward, and what it did and the
    /// servers' state are said in the error it ends with.
    pub(super) journal_error: Option<String>,
}

impl<'a> Runner<'a> {
    pub(super) fn record(&mut self, entry: Entry) -> Result<(), StateError> {
        self.record_all(vec![entry])
    }

    /// Journals `entries` in order with one flush to the disk: inside the window every fsync
    /// is paid by the app, so a phase's records (its steps' begins, or their results) are
    /// made durable together, before the phase acts and before the next one is decided.
    pub(super) fn record_all(&mut self, entries: Vec<Entry>) -> Result<(), StateError> {
        let at_ms = now_ms();
        let records: Vec<Record> = entries
            .into_iter()
            .enumerate()
            .map(|(n, entry)| Record {
                seq: self.seq + 1 + n as u64,
                epoch: self.lease.info.epoch,
                run: self.run.clone(),
                at_ms,
                entry,
            })
            .collect();
        let values = records
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Encode(e.to_string()))?;
        let mut records = records;
        if self.journal_error.is_none() {
            match self.store.append_all(&self.lease, &values) {
                Ok(()) => {}
                // The disk, not another runner: what is left to do (undo before the point of
                // no return, stop after it) is done without it, and said.
                Err(e @ StateError::Io { .. }) => {
                    tracing::error!(error = %e, "the journal could not be written");
                    self.journal_error = Some(e.to_string());
                    // Intentions that could not be journalled are not acted on: they never
                    // happened. Results and notes did, and are kept for the last word.
                    records.retain(|r| {
                        !matches!(r.entry, Entry::StepBegin { .. } | Entry::PointOfNoReturn)
                    });
                }
                Err(e) => return Err(e),
            }
        }
        for record in records {
            self.seq = record.seq;
            (self.observer)(&record);
            self.records.push(record);
        }
        Ok(())
    }

    /// The test stops after the records `from..=self.seq`, each as if alone: a run may be
    /// stopped after any record, and a record's step named by its side.
    fn stops_after(&self, from: u64) {
        let batch = (self.seq + 1).saturating_sub(from) as usize;
        for record in &self.records[self.records.len().saturating_sub(batch)..] {
            crate::test_stop::maybe_stop(record.seq);
            match &record.entry {
                Entry::StepBegin { step, .. } => {
                    crate::test_stop::maybe_stop_at_step(*step, "begin")
                }
                Entry::StepDone { step, .. } => crate::test_stop::maybe_stop_at_step(*step, "done"),
                _ => {}
            }
        }
    }

    pub(super) async fn window(&mut self, db: Db) -> Result<&mut Box<dyn Window>, StepError> {
        if !self.windows.contains_key(&db) {
            let w = open_window(self.plan, db, self.resumed, self.reverse).await?;
            self.windows.insert(db, w);
        }
        Ok(self.windows.get_mut(&db).expect("inserted above"))
    }

    /// A progress line for a long wait (journalled like every record, so `status` has it).
    fn note(&mut self, text: String) -> Result<(), StateError> {
        self.record(Entry::Progress { text })
    }

    fn name(&self, db: Db) -> String {
        super::pairs::pair(self.plan, db).component()
    }

    /// Executes one step through its component's action; returns (summary, detail) or why it
    /// failed.
    async fn exec(&mut self, step: &Step) -> Result<Done, StepError> {
        let plan = self.plan;
        match step.kind {
            Kind::PreflightDb(db) => actions::db::preflight(plan, db).await,
            Kind::PreflightFiles(i) => actions::files::preflight(plan, i).await,
            Kind::PreflightDns(i) => actions::dns::preflight(plan, i).await,
            Kind::PreflightProxy(i) => actions::proxy::preflight(plan, i).await,
            Kind::DnsReady(i) => actions::dns::ready(plan, i, self.force),
            Kind::WarmFiles(i) => actions::files::warm(plan, i).await,
            Kind::StartDb(db) => {
                let mut note = |text: String| self.note(text);
                actions::db::start(plan, db, &mut note).await
            }
            Kind::Hook(i) => actions::hooks::hook(plan, i, step.phase.as_str(), self.reverse).await,
            Kind::FinalFiles(i) => actions::files::final_pass(plan, i).await,
            Kind::Gate(db) => {
                self.window(db).await?;
                let mut w = self.windows.remove(&db).expect("opened above");
                let budget =
                    plan.migration
                        .window_budget
                        .map(|window| crate::engine::gate::Budget {
                            window,
                            timeout: plan.migration.gate_timeout,
                        });
                let mut unjournalled = None;
                let gated = {
                    let mut note = |text: String| {
                        if let Err(e) = self.note(text) {
                            unjournalled.get_or_insert(e);
                        }
                    };
                    actions::db::gate(w.as_mut(), budget, &mut note).await
                };
                self.windows.insert(db, w);
                if let Some(e) = unjournalled {
                    return Err(e.into());
                }
                let gated = gated?;
                // The last gate of several pairs fenced together: every pair must fit at once.
                let gates: Vec<Db> = self
                    .steps
                    .iter()
                    .filter_map(|s| match s.kind {
                        Kind::Gate(d) => Some(d),
                        _ => None,
                    })
                    .collect();
                match budget {
                    Some(budget) if gates.len() > 1 && gates.last() == Some(&db) => self
                        .joint_gate(&gates, budget)
                        .await
                        .map(|words| (format!("{}; {words}", gated.0), gated.1)),
                    _ => Ok(gated),
                }
            }
            Kind::Fence(db) | Kind::CatchUp(db) => {
                actions::db::phase(self.window(db).await?.as_mut(), step.kind).await
            }
            Kind::Promote(db) => self.promote(db, step.kind).await,
            Kind::Finish(db) => {
                let reverse = self.reverse;
                actions::db::finish(self.window(db).await?.as_mut(), reverse).await
            }
            Kind::ProxySwitch(i) => actions::proxy::switch(plan, i, false).await,
            Kind::DnsSwitch(i) => actions::dns::switch(plan, i, self.force).await,
            Kind::Check(i) => actions::hooks::check(plan, i).await,
            Kind::DnsWait(i) => actions::dns::wait(plan, i).await,
            Kind::Report => {
                let (wrap_up, not_carried) = actions::files::wrap_up(plan, self.reverse).await?;
                self.files_not_carried = not_carried;
                Ok((
                    "report saved in the state directory".to_owned(),
                    actions::Detail::Report(wrap_up),
                ))
            }
            Kind::PrepareReverse(db) => actions::db::prepare_reverse(plan, db).await,
            Kind::DnsRestore(i) => actions::dns::restore(plan, i, &self.dns_previous).await,
            Kind::ProxyRestore(i) => actions::proxy::switch(plan, i, true).await,
        }
    }

    /// After the last gate of several pairs: waits until every pair predicts a window within
    /// the budget at the same sample (each pair's own gate waited alone). Returns its words.
    async fn joint_gate(
        &mut self,
        gates: &[Db],
        budget: crate::engine::gate::Budget,
    ) -> Result<String, StepError> {
        for db in gates {
            self.window(*db).await?;
        }
        let mut taken: Vec<(Db, Box<dyn Window>)> = gates
            .iter()
            .filter_map(|db| self.windows.remove(db).map(|w| (*db, w)))
            .collect();
        let mut unjournalled = None;
        let result = {
            let mut refs: Vec<&mut Box<dyn Window>> = taken.iter_mut().map(|(_, w)| w).collect();
            let mut note = |text: String| {
                if let Err(e) = self.note(text) {
                    unjournalled.get_or_insert(e);
                }
            };
            crate::engine::gate::wait_until_all_fit(&mut refs, budget, &mut note).await
        };
        for (db, w) in taken {
            self.windows.insert(db, w);
        }
        if let Some(e) = unjournalled {
            return Err(e.into());
        }
        let fits = result?;
        Ok(format!(
            "every pair fits together after {:.1} s: {}",
            fits.first().map_or(0.0, |(_, w)| w.waited_ms) / 1000.0,
            fits.iter()
                .map(|(c, w)| format!(
                    "{c} predicts {}",
                    w.prediction
                        .window_ms()
                        .map_or("?".to_owned(), |ms| format!("{ms:.0} ms"))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// A promotion, tried again on a fresh connection: past the point of no return, giving up
    /// at the first broken connection would leave the pair for a resume.
    async fn promote(&mut self, db: Db, kind: Kind) -> Result<Done, StepError> {
        let mut last = None;
        for attempt in 1..=PROMOTE_ATTEMPTS {
            let result = match self.window(db).await {
                Ok(w) => actions::db::phase(w.as_mut(), kind).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(done) => return Ok(done),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "promotion failed; retrying");
                    last = Some(e);
                    // A broken connection is replaced on the next attempt.
                    self.windows.remove(&db);
                    self.resumed = true;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| "no promotion attempt was made".into()))
    }

    /// Runs steps from the first not done. Returns the outcome.
    pub(super) async fn go(&mut self, skip_gates_of: &BTreeSet<Db>) -> Result<Outcome, StateError> {
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
            let mut begins = Vec::new();
            let ponr = step.point_of_no_return && !self.past_ponr;
            if ponr {
                // Journalled before the first promotion is sent: a crash from here on resumes
                // forward.
                begins.push(Entry::PointOfNoReturn);
            }
            if step.phase >= Phase::WindowOpen && deadline.is_none() {
                // The final files pass must not spend the window on ssh handshakes.
                if step.phase <= Phase::WindowOpen {
                    actions::files::ready_all(self.plan).await;
                }
                deadline = self
                    .plan
                    .migration
                    .window_timeout
                    .map(|t| tokio::time::Instant::now() + t);
            }
            begins.extend(batch.iter().map(|&i| Entry::StepBegin {
                step: i,
                phase: self.steps[i].phase,
                component: self.steps[i].component.clone(),
                action: self.steps[i].action.clone(),
            }));
            let from = self.seq + 1;
            self.record_all(begins)?;
            if self.journal_error.is_some() {
                // Nothing of this batch was sent: a promotion never goes out unjournalled.
                return self.journal_lost().await;
            }
            self.past_ponr |= ponr;
            self.stops_after(from);
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
                let interrupted = |why: String| {
                    batch
                        .iter()
                        .map(|&i| (i, 0.0, Err(StepError::Refused(why.clone()))))
                        .collect()
                };
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
            let mut ends = Vec::new();
            for (i, ms, result) in results {
                match result {
                    Ok((summary, detail)) => {
                        if let actions::Detail::Finished(f) = &detail
                            && f.old_primary_clean == Some(false)
                        {
                            self.lost_writes = true;
                        }
                        // The step is done whatever its record: one that cannot be written
                        // says so in the journal instead of passing for empty.
                        let detail = detail.to_journal().unwrap_or_else(|e| {
                            tracing::error!(step = i, error = %e, "a step's result was not journalled");
                            serde_json::json!({ "unrecorded": e.to_string() })
                        });
                        ends.push(Entry::StepDone {
                            step: i,
                            ms,
                            summary,
                            detail,
                        });
                    }
                    Err(error) => {
                        ends.push(Entry::StepFailed {
                            step: i,
                            ms,
                            error: error.to_string(),
                        });
                        first_failure.get_or_insert((i, error));
                    }
                }
            }
            let from = self.seq + 1;
            self.record_all(ends)?;
            if self.journal_error.is_some() {
                return self.journal_lost().await;
            }
            self.stops_after(from);
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
    async fn exec_batch(&mut self, batch: &[usize]) -> Vec<(usize, f64, Result<Done, StepError>)> {
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
                    out.push((
                        i,
                        0.0,
                        Err(format!("{other:?} is not a window phase").into()),
                    ));
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
            let r = actions::db::phase(w.as_mut(), kind).await;
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

    /// Every pair's state as read from its servers now: whether every source serves (none
    /// fenced, no target promoted), and the states in words (` [read from the servers: ...]`,
    /// empty without pairs).
    async fn servers_now(&mut self) -> (bool, String) {
        let mut every_source_serves = true;
        let mut states = Vec::new();
        for (db, component) in databases(self.plan) {
            let read = match self.window(db).await {
                Ok(w) => w.state().await.map_err(StepError::from),
                Err(e) => Err(e),
            };
            match read {
                Ok(s) => {
                    every_source_serves &= !s.source_fenced && !s.target_promoted;
                    states.push(format!("{component}: {}", s.serving()));
                }
                Err(e) => {
                    every_source_serves = false;
                    states.push(format!("{component}: state unreadable ({e})"));
                }
            }
        }
        let states = if states.is_empty() {
            String::new()
        } else {
            format!(" [read from the servers: {}]", states.join("; "))
        };
        (every_source_serves, states)
    }

    /// The journal can no longer be written: before the point of no return the run is rolled
    /// back (every source serving again, read from the servers), after it the run stops with
    /// the promoted targets serving. The records are kept in memory for the error the run
    /// ends with.
    async fn journal_lost(&mut self) -> Result<Outcome, StateError> {
        if self.past_ponr {
            let (_, states) = self.servers_now().await;
            self.record(Entry::RunFinished {
                outcome: Outcome::Failed,
                summary: format!("stopped after the point of no return, nothing undone{states}"),
                resumable: true,
                reverse_next: false,
            })?;
            return Ok(Outcome::Failed);
        }
        self.roll_back_all("the journal could not be written").await
    }

    async fn failed(&mut self, step: &Step, error: StepError) -> Result<Outcome, StateError> {
        if self.past_ponr {
            let summary = match step.kind {
                Kind::Check(_) if !self.reverse => {
                    self.check_failed = true;
                    if self.plan.migration.auto_rollback && !self.plan.files.is_empty() {
                        format!(
                            "a health check failed after the point of no return ({error}); the new primaries serve. Not reversed automatically: the plan's file trees would be left behind (a reverse cutover that leaves the files behind moves the databases back without them)"
                        )
                    } else if self.plan.migration.auto_rollback {
                        format!(
                            "a health check failed after the point of no return ({error}); the new primaries serve: reversing the cutover (auto_rollback)"
                        )
                    } else {
                        format!(
                            "a health check failed after the point of no return ({error}); the new primaries serve and the old ones stay fenced, kept current by reverse replication. auto_rollback is off: a reverse cutover moves back"
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
                "failed at `{}` ({error}); auto_rollback is off, so nothing was undone: resuming the run rolls back, resuming it to continue goes on",
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
        self.roll_back_all(&error.to_string()).await
    }

    /// Rolls back every pair whose fence began, then runs the on-rollback hooks if the window
    /// had opened.
    pub(super) async fn roll_back_all(&mut self, reason: &str) -> Result<Outcome, StateError> {
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
                if let Err(e) = actions::db::keep_fenced(self.plan, db).await {
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
        for text in actions::files::stop_all(self.plan).await {
            self.record(Entry::Note { text })?;
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
        let undone = all_serve;
        let (every_source_serves, states) = self.servers_now().await;
        let every_source_serves = undone && every_source_serves;
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

    pub(super) fn report(&self) -> RunReport {
        report_of(self.plan, &self.steps, &self.records)
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
