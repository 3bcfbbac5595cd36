//! Admission and resume policy: whether a run may start (an interrupted one must be resumed
//! first, a moved migration is not moved again, a reverse cutover needs a forward one and
//! reverse replication), what a resume does (forward past the point of no return or when a
//! target was promoted, otherwise roll back, or go on with `--continue`), and the reverse
//! cutover that follows a failed health check. The runner then executes the steps.
//!
//! Deciding is apart from doing: [`decide`] reads the plan, the last run's records and the
//! options and returns an [`Admission`] (no I/O); [`ResumeWay::of`] turns the journal and the
//! servers' state into the direction of a resume. `run_under` only carries them out.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::journal::{
    Entry, Outcome, Progress, Record, dns_before, last_run, run_before, step_line,
};
use super::report::{RunReport, report_of};
use super::runner::Runner;
use super::single::ServerLeases;
use super::steps::{databases, steps_for};
use crate::plan::Plan;
use crate::state::{FileStore, Lease, StateDir, StateError, Store};

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
    /// The migration's lease on a pair's servers is held by another process, or was left by
    /// a holder from another state directory that stopped mid-way (named). Nothing was changed.
    #[error(transparent)]
    Held(super::single::LeaseError),
    /// The run is refused before anything is changed.
    #[error("{0}")]
    Refused(String),
    /// Refused: an earlier run of the migration was interrupted; it must be resumed (it
    /// finishes or rolls back) before another starts. Nothing was changed.
    #[error("{0}")]
    Interrupted(String),
    /// Refused: the migration already moved (its targets are the live side); what is left is
    /// a reverse cutover, or a new migration. Nothing was changed.
    #[error("{0}")]
    Moved(String),
    /// Refused: a reverse cutover would leave the plan's file trees behind on the new host,
    /// and the operator has not said they may stay. Nothing was changed.
    #[error("{0}")]
    FilesNotCarried(String),
    /// The journal could not be written part-way (a full or failing disk): the run undid
    /// what it had done before the point of no return, or stopped after it; the journal on
    /// disk ends before that.
    #[error(
        "the run's journal could not be written ({cause}), so the run went no further: {summary}. The journal on disk ends before this: once the state directory has room, `cutover status` reads each server, and `cutover run --resume` finishes what is left (a rollback done again changes nothing)"
    )]
    Unjournalled {
        /// The write's error.
        cause: String,
        /// What the run did about it, with each server's state as read.
        summary: String,
    },
}

/// Refuses a plan whose rollback after promotion would lose writes, unless it says it accepts.
fn one_way_check(plan: &Plan) -> Result<(), RunError> {
    if plan.migration.accept_one_way {
        return Ok(());
    }
    let one_way: Vec<String> = super::pairs::all(plan)
        .into_iter()
        .filter(|(_, pair)| !pair.replicates_back())
        .map(|(_, pair)| pair.component())
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
    // A resume goes on with the plan the interrupted run began with, whatever the file says
    // now: a pair dropped from the file is still undone or finished.
    let kept;
    let plan = if opts.resume {
        kept = super::kept_plan::for_resume(plan)?.0;
        &kept
    } else {
        plan
    };
    // A runner from another state directory (another operator, another machine) is refused
    // here, naming the holder, before anything changes.
    let pairs: Vec<Box<dyn crate::engine::Pair>> = super::pairs::all(plan)
        .into_iter()
        .map(|(_, pair)| pair)
        .collect();
    // The state directory's lease first (it guards the journal; a second runner on it is told
    // so), then the servers' (they guard the servers from any other state directory).
    let store = FileStore::new(&StateDir::new(&plan.migration.state_dir));
    let lease = store.acquire(purpose(opts))?;
    let leases = ServerLeases::take(plan, purpose(opts), pairs.iter().map(|p| p.as_ref()))
        .await
        .map_err(RunError::Held)?;
    let result = run_under(plan, opts, cancel, observer, Some(lease)).await;
    // A run that ended (completed, rolled back) or was refused with nothing changed lets the
    // lease go; one that stopped with work left keeps its record on the servers, so only its
    // own journal (a resume from its state directory) takes the migration on.
    match &result {
        Ok((Outcome::Completed | Outcome::RolledBack, _))
        | Err(
            RunError::Refused(_)
            | RunError::Interrupted(_)
            | RunError::Moved(_)
            | RunError::FilesNotCarried(_),
        ) => leases.release().await,
        _ => leases.keep_records(),
    }
    result
}

fn purpose(opts: &Options) -> &'static str {
    match (opts.resume, opts.rollback) {
        (true, _) => "run --resume",
        (false, true) => "run --rollback",
        _ => "run",
    }
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

/// What admission decided, from the plan, the last run's journal records, the run id of the
/// report on disk and the options: no I/O (unit-tested over every case the sweeps found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A health check failed after the promotion and the process stopped before the reverse
    /// cutover it was to start: start it now.
    ReverseAfterFailedCheck,
    /// The last run ended and only its report is missing: rebuild it from the journal.
    RebuildReport {
        /// The run was a reverse cutover.
        reverse: bool,
        /// Its outcome.
        outcome: Outcome,
    },
    /// A new run.
    Start {
        /// A reverse cutover.
        reverse: bool,
    },
    /// The interrupted run is taken over (the servers' state then decides which way).
    Resume {
        /// It is a reverse cutover.
        reverse: bool,
    },
}

/// Decides whether and how a run may go: `previous` is the last run's records (empty: none),
/// `report_run` the run id of the report on disk.
pub fn decide(
    plan: &Plan,
    previous: &[Record],
    report_run: Option<&str>,
    opts: &Options,
) -> Result<Admission, RunError> {
    let progress = Progress::of(previous);
    let previous_reverse = matches!(
        previous.first().map(|r| &r.entry),
        Some(Entry::RunStarted { reverse: true, .. })
    );
    let previous_run = previous.first().map(|r| r.run.as_str()).unwrap_or_default();
    if opts.resume && progress.reverse_next && !previous_reverse {
        return Ok(Admission::ReverseAfterFailedCheck);
    }
    if opts.resume
        && !previous.is_empty()
        && progress.finished.is_some()
        && !progress.resumable
        && report_run != Some(previous_run)
    {
        return Ok(Admission::RebuildReport {
            reverse: previous_reverse,
            outcome: progress.finished.unwrap_or(Outcome::Failed),
        });
    }
    let unfinished = !previous.is_empty() && (progress.finished.is_none() || progress.resumable);
    if opts.resume {
        if !unfinished {
            return Err(RunError::Refused(match progress.finished {
                Some(o) => format!(
                    "nothing to resume: the last run ({previous_run}) ended {}",
                    o.word()
                ),
                None => "nothing to resume: this migration has no run in its journal".to_owned(),
            }));
        }
        let lines: Vec<String> = steps_for(plan, previous_reverse)
            .iter()
            .map(step_line)
            .collect();
        if let Some(Entry::RunStarted { steps: old, .. }) = previous.first().map(|r| &r.entry)
            && *old != lines
        {
            return Err(RunError::Refused(
                "the plan's steps changed since the interrupted run began; resume with the plan it was started with".to_owned(),
            ));
        }
        return Ok(Admission::Resume {
            reverse: previous_reverse,
        });
    }
    if unfinished {
        let lines: Vec<String> = steps_for(plan, previous_reverse)
            .iter()
            .map(step_line)
            .collect();
        return Err(RunError::Interrupted(format!(
            "an earlier run of this migration ({previous_run}) was interrupted {}; resume it (it finishes or rolls back) before starting another",
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
            return Err(RunError::FilesNotCarried(format!(
                "the plan moves file trees ({}), and a reverse cutover does not carry them back: the old host lacks every file (and SQLite write) made on the new host since the move, so serving from it again would lose them. Copy them back first (a plan with source and target swapped, files only), or say they may be left behind (leave files)",
                plan.files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some((_, pair)) = super::pairs::all(plan)
            .into_iter()
            .find(|(_, pair)| !pair.replicates_back())
        {
            return Err(RunError::Refused(format!(
                "{} has no reverse replication: its old primary lacks every write since the promotion, so promoting it back would lose them",
                pair.component()
            )));
        }
        return Ok(Admission::Start { reverse: true });
    }
    let forward_done = !previous_reverse
        && (progress.finished == Some(Outcome::Completed) || progress.past_point_of_no_return);
    if forward_done {
        return Err(RunError::Moved(format!(
            "this migration already moved: its last run ({previous_run}) {}, so its targets are the live side now, and running it again would copy the old sources over them. Nothing was changed. To move back, reverse the cutover; to move again, write a plan with a new migration name (and source and target as they are now)",
            match progress.finished {
                Some(Outcome::Completed) => "completed".to_owned(),
                _ => "passed its point of no return".to_owned(),
            }
        )));
    }
    one_way_check(plan)?;
    Ok(Admission::Start { reverse: false })
}

/// Which way a resumed run goes, from the journal and the servers' state: forward once the
/// point of no return was passed or a target was promoted over a fenced source; otherwise
/// roll back, or go on when asked (`--continue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeWay {
    /// Finish every remaining step.
    Forward,
    /// Go on from the first step not done (before the point of no return, as asked).
    Continue,
    /// Undo every window.
    RollBack,
}

impl ResumeWay {
    /// Decides. `any_serving`: some pair's source is not fenced and its target not promoted
    /// (as read from the servers): a journal that says the point of no return was passed but
    /// whose promotion never reached a server, with a source serving writes again, is not
    /// finished forward (promoting the target then would lose the source's new writes): it is
    /// rolled back.
    pub fn of(
        past_point_of_no_return: bool,
        any_promoted: bool,
        any_serving: bool,
        go_on: bool,
    ) -> ResumeWay {
        if any_promoted || (past_point_of_no_return && !any_serving) {
            ResumeWay::Forward
        } else if past_point_of_no_return {
            ResumeWay::RollBack
        } else if go_on {
            ResumeWay::Continue
        } else {
            ResumeWay::RollBack
        }
    }

    /// The journal's words for it.
    pub fn words(self) -> &'static str {
        match self {
            ResumeWay::Forward => {
                "forward: the point of no return was passed; finishing every remaining step"
            }
            ResumeWay::Continue => {
                "continue (as asked): before the point of no return; going on from the first step not done"
            }
            ResumeWay::RollBack => {
                "roll back: the run stopped before the point of no return, or no target was promoted and a source serves writes again"
            }
        }
    }
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
    let lease = match lease {
        Some(lease) => lease,
        None => store.acquire(purpose(opts))?,
    };
    let journal = store.journal()?;
    let previous = last_run(&journal);
    let report_run = store
        .report()?
        .and_then(|r| super::report::from_json(&r))
        .map(|r| r.run);
    let admission = decide(plan, &previous, report_run.as_deref(), opts)?;
    let reverse = match admission {
        Admission::ReverseAfterFailedCheck => {
            // Under this lease: no other runner steps in between.
            return reverse_after_failed_check(plan, opts.force, cancel, observer, lease).await;
        }
        Admission::RebuildReport { reverse, outcome } => {
            // A crash between the run's last record and the report's write: the report is
            // rebuilt from the journal, the spine it is made of.
            let report = report_of(plan, &steps_for(plan, reverse), &previous);
            store.save_report(&lease, &super::report::to_json(&report)?)?;
            return Ok((outcome, report));
        }
        Admission::Start { reverse } | Admission::Resume { reverse } => reverse,
    };
    let steps = steps_for(plan, reverse);
    let lines: Vec<String> = steps.iter().map(step_line).collect();
    // What the DNS records served before the forward run this one reverses.
    let forward_run = if opts.resume && reverse {
        run_before(&journal, &previous[0].run)
    } else {
        previous.clone()
    };
    let dns_previous = if reverse {
        dns_before(&forward_run, &steps_for(plan, false))
    } else {
        HashMap::new()
    };
    let seq = journal
        .iter()
        .filter_map(|v| v.get("seq").and_then(|s| s.as_u64()))
        .max()
        .unwrap_or_default();
    let progress = Progress::of(&previous);
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
        journal_error: None,
    };
    let outcome = if let Admission::Start { .. } = admission {
        runner.run = format!(
            "{}-{}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            std::process::id()
        );
        super::kept_plan::keep(plan)?;
        runner.record(Entry::RunStarted {
            migration: plan.migration.name.clone(),
            reverse,
            steps: lines,
        })?;
        if reverse && !plan.files.is_empty() {
            runner.record(Entry::Note {
                text: format!(
                    "files left behind (as asked): {} stay on the new host; the old host's trees are as they were at the move",
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
        runner.run = previous[0].run.clone();
        runner.records = previous;
        runner.past_ponr = progress.past_point_of_no_return;
        // The servers' own state decides with the journal: a promoted target means forward.
        let mut states = Vec::new();
        let mut any_promoted = false;
        let mut any_serving = false;
        let mut fenced = BTreeSet::new();
        for (db, component) in databases(plan) {
            match runner.window(db).await {
                Ok(w) => match w.state().await {
                    Ok(s) => {
                        any_promoted |= s.target_promoted && s.source_fenced;
                        any_serving |= !s.source_fenced && !s.target_promoted;
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
        let way = ResumeWay::of(runner.past_ponr, any_promoted, any_serving, opts.go_on);
        runner.record(Entry::Resumed {
            decision: way.words().to_owned(),
            states,
        })?;
        match way {
            ResumeWay::Forward | ResumeWay::Continue => {
                runner.past_ponr = way == ResumeWay::Forward;
                runner.go(&fenced).await?
            }
            ResumeWay::RollBack => {
                runner
                    .roll_back_all("resumed after an interruption before the point of no return")
                    .await?
            }
        }
    };
    if let Some(cause) = runner.journal_error.take() {
        let summary = runner
            .records
            .iter()
            .rev()
            .find_map(|r| match &r.entry {
                Entry::RunFinished { summary, .. } => Some(summary.clone()),
                _ => None,
            })
            .unwrap_or_default();
        return Err(RunError::Unjournalled { cause, summary });
    }
    let report = runner.report();
    crate::test_stop::maybe_stop_at_event("before-report");
    // The run is over whatever its report's file: one that cannot be written (a full disk)
    // is said, and rebuilt from the journal by the next `run --resume`.
    if let Err(e) = runner
        .store
        .save_report(&runner.lease, &super::report::to_json(&report)?)
    {
        tracing::error!(
            error = %e,
            "the run's report could not be saved; once there is room, `cutover run --resume` writes it again from the journal"
        );
    }
    if runner.check_failed
        && plan.migration.auto_rollback
        && !runner.reverse
        && !plan.files.is_empty()
    {
        // The reverse cutover would leave the trees behind: that is the operator's call, not
        // an automatic one. The new host keeps serving; the summary says what to do.
        runner.record(Entry::Note {
            text: "a health check failed, but the plan moves file trees, which a reverse cutover does not carry back: nothing was reversed automatically, the new host serves. A reverse cutover that leaves the files behind moves the databases back without them".to_owned(),
        })?;
    } else if runner.check_failed && plan.migration.auto_rollback && !runner.reverse {
        crate::test_stop::maybe_stop_at_event("before-reverse");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/forgejo-postgres.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        crate::plan::parse_str(&text, &path).unwrap()
    }

    fn run_of(plan: &Plan, reverse: bool, entries: Vec<Entry>) -> Vec<Record> {
        let steps: Vec<String> = steps_for(plan, reverse).iter().map(step_line).collect();
        std::iter::once(Entry::RunStarted {
            migration: plan.migration.name.clone(),
            reverse,
            steps,
        })
        .chain(entries)
        .enumerate()
        .map(|(i, entry)| Record {
            seq: i as u64 + 1,
            epoch: 1,
            run: "r1".into(),
            at_ms: i as u64,
            entry,
        })
        .collect()
    }

    /// A run that passed the point of no return and then ended with `end`.
    fn past_the_point(plan: &Plan, reverse: bool, end: Entry) -> Vec<Record> {
        run_of(plan, reverse, vec![Entry::PointOfNoReturn, end])
    }

    fn begin(step: usize) -> Entry {
        Entry::StepBegin {
            step,
            phase: super::super::steps::Phase::Preflight,
            component: "c".into(),
            action: String::new(),
        }
    }

    fn finished(outcome: Outcome, resumable: bool, reverse_next: bool) -> Entry {
        Entry::RunFinished {
            outcome,
            summary: String::new(),
            resumable,
            reverse_next,
        }
    }

    fn opts(resume: bool, rollback: bool, leave_files: bool) -> Options {
        Options {
            resume,
            rollback,
            leave_files,
            ..Options::default()
        }
    }

    #[test]
    fn admission_over_the_cases_the_sweeps_found() {
        let plan = plan();
        let fresh = opts(false, false, false);
        let resume = opts(true, false, false);
        let rollback = opts(false, true, false);
        // No run yet: a run starts; there is nothing to resume or roll back.
        assert_eq!(
            decide(&plan, &[], None, &fresh).unwrap(),
            Admission::Start { reverse: false }
        );
        assert!(
            matches!(decide(&plan, &[], None, &resume), Err(RunError::Refused(m)) if m.contains("no run in its journal"))
        );
        assert!(
            matches!(decide(&plan, &[], None, &rollback), Err(RunError::Refused(m)) if m.contains("nothing to roll back"))
        );

        // Interrupted before the point of no return: a new run is refused naming the step;
        // a resume takes it over, and rolls back unless told to go on.
        let cut = run_of(&plan, false, vec![begin(0)]);
        let step0 = step_line(&steps_for(&plan, false)[0]);
        assert!(
            matches!(decide(&plan, &cut, None, &fresh), Err(RunError::Interrupted(m)) if m.contains(&step0))
        );
        assert_eq!(
            decide(&plan, &cut, None, &resume).unwrap(),
            Admission::Resume { reverse: false }
        );
        assert_eq!(
            ResumeWay::of(false, false, false, false),
            ResumeWay::RollBack
        );
        assert_eq!(
            ResumeWay::of(false, false, false, true),
            ResumeWay::Continue
        );
        // A target promoted over a fenced source, or the point of no return: forward.
        assert_eq!(ResumeWay::of(false, true, false, false), ResumeWay::Forward);
        assert_eq!(ResumeWay::of(true, false, false, true), ResumeWay::Forward);
        // The journal says the point of no return was passed, but nothing was promoted and a
        // source serves writes again (its run was undone unjournalled): never forward.
        assert_eq!(ResumeWay::of(true, false, true, false), ResumeWay::RollBack);
        assert_eq!(ResumeWay::of(true, false, true, true), ResumeWay::RollBack);

        // Past the point of no return and interrupted: a new run is refused too.
        let past = run_of(
            &plan,
            false,
            vec![begin(0), Entry::PointOfNoReturn, begin(1)],
        );
        assert!(matches!(
            decide(&plan, &past, None, &fresh),
            Err(RunError::Interrupted(_))
        ));
        assert_eq!(
            decide(&plan, &past, None, &resume).unwrap(),
            Admission::Resume { reverse: false }
        );

        // Completed: moving again is refused, the report rebuilt if it is missing, and a
        // reverse cutover needs the files' say (this plan moves a tree).
        let done = run_of(
            &plan,
            false,
            vec![
                begin(0),
                Entry::PointOfNoReturn,
                finished(Outcome::Completed, false, false),
            ],
        );
        assert!(
            matches!(decide(&plan, &done, None, &fresh), Err(RunError::Moved(m)) if m.contains("completed"))
        );
        assert_eq!(
            decide(&plan, &done, None, &resume).unwrap(),
            Admission::RebuildReport {
                reverse: false,
                outcome: Outcome::Completed
            }
        );
        assert!(
            matches!(decide(&plan, &done, Some("r1"), &resume), Err(RunError::Refused(m)) if m.contains("ended completed"))
        );
        assert!(matches!(
            decide(&plan, &done, Some("r1"), &rollback),
            Err(RunError::FilesNotCarried(_))
        ));
        assert_eq!(
            decide(&plan, &done, Some("r1"), &opts(false, true, true)).unwrap(),
            Admission::Start { reverse: true }
        );

        // Failed past the point of no return: moved; a reverse cutover may follow.
        let failed_past = past_the_point(&plan, false, finished(Outcome::Failed, false, false));
        assert!(
            matches!(decide(&plan, &failed_past, Some("r1"), &fresh), Err(RunError::Moved(m)) if m.contains("point of no return"))
        );
        // Rolled back before it: a new run may start.
        let rolled = run_of(
            &plan,
            false,
            vec![begin(0), finished(Outcome::RolledBack, false, false)],
        );
        assert_eq!(
            decide(&plan, &rolled, Some("r1"), &fresh).unwrap(),
            Admission::Start { reverse: false }
        );

        // A health check failed after the promotion and the reverse cutover never began.
        let check_failed = past_the_point(&plan, false, finished(Outcome::Failed, true, true));
        assert_eq!(
            decide(&plan, &check_failed, None, &resume).unwrap(),
            Admission::ReverseAfterFailedCheck
        );

        // A completed reverse cutover: nothing to roll back again; the migration may move again.
        let back = past_the_point(&plan, true, finished(Outcome::Completed, false, false));
        assert!(
            matches!(decide(&plan, &back, Some("r1"), &opts(false, true, true)), Err(RunError::Refused(m)) if m.contains("nothing to roll back"))
        );
        assert_eq!(
            decide(&plan, &back, Some("r1"), &fresh).unwrap(),
            Admission::Start { reverse: false }
        );
        // An interrupted reverse cutover resumes as one.
        let back_cut = run_of(&plan, true, vec![begin(0)]);
        assert_eq!(
            decide(&plan, &back_cut, None, &resume).unwrap(),
            Admission::Resume { reverse: true }
        );

        // The plan's steps changed since the interrupted run began: refused.
        let mut other = cut.clone();
        other[0].entry = Entry::RunStarted {
            migration: plan.migration.name.clone(),
            reverse: false,
            steps: vec!["another plan's step".into()],
        };
        assert!(
            matches!(decide(&plan, &other, None, &resume), Err(RunError::Refused(m)) if m.contains("steps changed"))
        );
    }

    #[test]
    fn a_pair_without_reverse_replication_is_refused_unless_one_way_is_accepted() {
        let mut plan = plan();
        let fresh = opts(false, false, false);
        assert_eq!(
            decide(&plan, &[], None, &fresh).unwrap(),
            Admission::Start { reverse: false }
        );
        plan.postgres[0].reverse_replication = false;
        let name = plan.postgres[0].name.clone();
        assert!(
            matches!(decide(&plan, &[], None, &fresh), Err(RunError::Refused(m)) if m.contains(&format!("postgres {name} run(s) without reverse_replication"))),
        );
        plan.migration.accept_one_way = true;
        assert_eq!(
            decide(&plan, &[], None, &fresh).unwrap(),
            Admission::Start { reverse: false }
        );
        // Accepted one way, a reverse cutover after a completed run is still refused, naming
        // the pair whose old primary lacks the writes.
        let done = past_the_point(&plan, false, finished(Outcome::Completed, false, false));
        assert!(
            matches!(decide(&plan, &done, Some("r1"), &opts(false, true, true)), Err(RunError::Refused(m)) if m.contains(&format!("postgres {name} has no reverse replication")))
        );
    }
}
