//! What `status` says about a migration, read-only: the lease holder, the last run's progress
//! from the journal, every pair's state from its servers, and what a resume would do, decided
//! on the same readings the resume itself would make.

use serde::Serialize;

use super::admit::RunError;
use super::journal::{Entry, Outcome, Progress, last_run, step_line};
use super::steps::{Db, Phase, databases, steps_for};
use crate::engine::{DbError, PairState};
use crate::plan::Plan;
use crate::state::{FileStore, StateDir, Store};

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
    /// What the step begun last says it waits for (its last progress line), while the run
    /// has not ended.
    pub waiting: Option<String>,
    /// Past the point of no return.
    pub past_point_of_no_return: bool,
    /// Each pair's state, read from the servers.
    pub pairs: Vec<(String, String)>,
    /// The same readings as values (`None`: unreadable), for the daemon's gauges.
    #[serde(skip)]
    pub pair_states: Vec<(String, Option<PairState>)>,
    /// Where each proxy route points, read from the proxy (`None`: unreadable, with why).
    pub proxies: Vec<(String, Result<crate::proxy::Pointing, String>)>,
    /// What `run --resume` would do.
    pub resume_would: String,
    /// The last report saved.
    pub report: Option<super::report::RunReport>,
    /// How the plan file differs from the plan the unfinished run began with (which status
    /// and `--resume` use); empty when it does not.
    pub plan_differs: Vec<String>,
}

/// Where `status` reads each pair's state.
#[async_trait::async_trait]
pub trait States: Send {
    /// The servers' state of pair `db` of `plan`; `reverse`: seen backwards (a reverse
    /// cutover's resume reads them so).
    async fn state(&mut self, plan: &Plan, db: Db, reverse: bool) -> Result<PairState, DbError>;
}

/// Fresh connections for each reading, closed after it (the `status` command).
pub struct Connect;

#[async_trait::async_trait]
impl States for Connect {
    async fn state(&mut self, plan: &Plan, db: Db, reverse: bool) -> Result<PairState, DbError> {
        let mut pair = super::pairs::pair(plan, db);
        if reverse {
            pair = pair.reversed();
        }
        pair.watch().await?.state().await
    }
}

/// Reads the journal, the lease and the servers; writes nothing. An unfinished run is read
/// with the plan it began with (kept in the state directory), whatever the file says now.
pub async fn status(file_plan: &Plan) -> Result<Status, RunError> {
    status_with(file_plan, &mut Connect).await
}

/// [`status`], each pair's state read through `states` (the daemon's kept connections).
pub async fn status_with(file_plan: &Plan, reader: &mut dyn States) -> Result<Status, RunError> {
    let store = FileStore::new(&StateDir::new(&file_plan.migration.state_dir));
    let holder = store.holder()?.map(|h| h.to_string());
    let records = last_run(&store.journal()?);
    let progress = Progress::of(&records);
    let unfinished = !records.is_empty() && (progress.finished.is_none() || progress.resumable);
    let (kept, plan_differs) = if unfinished {
        super::kept_plan::for_resume(file_plan)?
    } else {
        (file_plan.clone(), Vec::new())
    };
    let plan = &kept;
    let steps = match records.first().map(|r| &r.entry) {
        Some(Entry::RunStarted { reverse: true, .. }) => steps_for(plan, true),
        _ => steps_for(plan, false),
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
            if let Ok(s) = reader.state(plan, db, true).await {
                any_promoted |= s.target_promoted && s.source_fenced;
            }
        }
    }
    for (db, component) in databases(plan) {
        match reader.state(plan, db, false).await {
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
    let mut proxies = Vec::new();
    for route in &plan.proxy {
        let read = crate::proxy::pointing(route)
            .await
            .map_err(|e| e.to_string());
        proxies.push((format!("proxy {}", route.name), read));
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
        "roll back the reverse cutover: the new primaries serve again (before its point of no return); continuing goes on instead".to_owned()
    } else {
        "roll back every fenced source (before the point of no return); continuing goes on instead"
            .to_owned()
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
        waiting: progress
            .waiting
            .clone()
            .filter(|_| progress.finished.is_none()),
        pairs,
        pair_states: states,
        proxies,
        resume_would,
        report: store.report()?.and_then(|r| super::report::from_json(&r)),
        plan_differs,
    })
}
