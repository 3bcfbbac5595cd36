//! Admission and resume policy: whether a run may start (an interrupted one must be resumed
//! first, a moved migration is not moved again, a reverse cutover needs a forward one and
//! reverse replication), what a resume does (forward past the point of no return or when a
//! target was promoted, otherwise roll back, or go on with `--continue`), and the reverse
//! cutover that follows a failed health check. The runner then executes the steps.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::journal::{
    Entry, Outcome, Progress, Record, dns_before, last_run, run_before, step_line,
};
use super::report::{RunReport, report_of};
use super::runner::Runner;
use super::single::ServerLeases;
use super::steps::{databases, reverse_steps, steps};
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
    #[error("{0}")]
    Held(String),
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
    let pairs: Vec<Box<dyn crate::engine::Pair>> = databases(plan)
        .into_iter()
        .map(|(db, _)| super::pairs::pair(plan, db))
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
            .and_then(|r| super::report::from_json(&r))
            .map(|r| r.run);
        if current.as_deref() != Some(previous[0].run.as_str()) {
            let steps_of_run = if previous_reverse {
                reverse_steps(plan)
            } else {
                super::steps::steps(plan)
            };
            let report = report_of(plan, &steps_of_run, &previous);
            store.save_report(&lease, &super::report::to_json(&report)?)?;
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
            return Err(RunError::Interrupted(format!(
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
                return Err(RunError::FilesNotCarried(format!(
                    "the plan moves file trees ({}), and a reverse cutover does not carry them back: the old host lacks every file (and SQLite write) made on the new host since the move, so serving from it again would lose them. Copy them back first (a plan with source and target swapped, files only), or say they may be left behind (leave files)",
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
                return Err(RunError::Moved(format!(
                    "this migration already moved: its last run ({}) {}, so its targets are the live side now, and running it again would copy the old sources over them. Nothing was changed. To move back, reverse the cutover; to move again, write a plan with a new migration name (and source and target as they are now)",
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
            "continue (as asked): before the point of no return; going on from the first step not done".to_owned()
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
    runner
        .store
        .save_report(&runner.lease, &super::report::to_json(&report)?)?;
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
