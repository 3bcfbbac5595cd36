//! Database pairs as steps, through the engine contract: preflight, start and the wait until
//! replication is ready, the window's phases, what follows the promotion, and a reverse
//! cutover's preparation. No engine is named here: the pair or its window does the work.

use std::time::{Duration, Instant};

use super::{Detail, Done, StepError};
use crate::engine::Window;
use crate::engine::gate::{self, Budget};
use crate::plan::Plan;
use crate::run::pairs::pair;
use crate::run::steps::{Db, Kind};

/// How long the warm phase may wait for replication to be ready.
const WARM_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a long wait says where it stands.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// Pause between readings while replication gets ready.
const READY_POLL: Duration = Duration::from_millis(200);

/// Both servers checked; nothing changed.
pub(in crate::run) async fn preflight(plan: &Plan, db: Db) -> Result<Done, StepError> {
    let r = pair(plan, db).preflight().await?;
    if !r.passed() {
        return Err(format!(
            "preflight failed:\n{}",
            crate::finding::errors_text(&r.findings)
        )
        .into());
    }
    Ok((
        format!("passed, {} tables in scope", r.tables),
        Detail::None,
    ))
}

/// Replication started, then waited for (bounded) until it is ready for a window; `note`
/// journals where it stands every [`PROGRESS_EVERY`].
pub(in crate::run) async fn start(
    plan: &Plan,
    db: Db,
    note: &mut (dyn FnMut(String) -> Result<(), crate::state::StateError> + Send),
) -> Result<Done, StepError> {
    let p = pair(plan, db);
    p.start().await?;
    let mut probe = p.probe().await?;
    let deadline = Instant::now() + WARM_TIMEOUT;
    let mut last_note = Instant::now();
    loop {
        let reading = probe.read().await?;
        if reading.ready {
            return Ok((reading.words, Detail::None));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "replication was not ready within {}: {}",
                humantime::format_duration(WARM_TIMEOUT),
                reading.words
            )
            .into());
        }
        if last_note.elapsed() >= PROGRESS_EVERY {
            last_note = Instant::now();
            note(format!("{}: {}", p.component(), reading.words))?;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// The gate of an opened window: the engine's own checks, then (with a `window_budget`) the
/// adaptive wait until the predicted window fits; `note` hears what it waits for.
pub(in crate::run) async fn gate(
    w: &mut dyn Window,
    budget: Option<Budget>,
    note: &mut (dyn FnMut(String) + Send),
) -> Result<Done, StepError> {
    let (g, waited) = gate::gate(w, budget, note).await?;
    Ok(match (budget, waited) {
        (Some(budget), Some(waited)) => (
            format!(
                "passed, lag {}; waited {:.1} s for the window to fit {}: {}",
                g.lag,
                waited.waited_ms / 1000.0,
                humantime::format_duration(budget.window),
                waited.prediction.words()
            ),
            Detail::Gated(waited),
        ),
        (Some(_), None) => (
            format!(
                "passed, lag {}; this pair's backlog cannot be sampled (MySQL GTID sets, or the applier in an older binlog file): the fixed ceilings decided",
                g.lag
            ),
            Detail::None,
        ),
        (None, _) => (format!("passed, lag {}", g.lag), Detail::None),
    })
}

/// One window phase (fence, catch-up or promotion) of `w`.
pub(in crate::run) async fn phase(w: &mut dyn Window, kind: Kind) -> Result<Done, StepError> {
    match kind {
        Kind::Fence(_) => w.fence().await.map_err(StepError::from).map(|f| {
            (
                format!(
                    "fenced ({}), {} session(s) ended",
                    f.scope.join(", "),
                    f.sessions_ended
                ),
                Detail::None,
            )
        }),
        Kind::CatchUp(_) => w.catch_up().await.map_err(StepError::from).map(|c| {
            (
                format!("target has everything up to {}", c.position),
                Detail::None,
            )
        }),
        Kind::Promote(_) => w.promote().await.map_err(StepError::from).map(|p| {
            (
                "the target is the writable primary".to_owned(),
                Detail::Promoted(p),
            )
        }),
        other => Err(format!("{other:?} is not a window phase").into()),
    }
}

/// After the promotion: the old primary audited, replication back set up, tidied.
/// `reverse`: the fenced side is the run's new primary.
pub(in crate::run) async fn finish(w: &mut dyn Window, reverse: bool) -> Result<Done, StepError> {
    let f = w.finish().await;
    let fenced = if reverse {
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
            "{clean}{}{}",
            if f.links.is_empty() {
                String::new()
            } else {
                format!("; {}", f.links.join(", "))
            },
            if f.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", f.warnings.join("; "))
            }
        ),
        Detail::Finished(Box::new(f)),
    ))
}

/// A reverse cutover's first database step: the old primary's fence made liftable.
pub(in crate::run) async fn prepare_reverse(plan: &Plan, db: Db) -> Result<Done, StepError> {
    let words = pair(plan, db).prepare_reverse().await?;
    Ok((words, Detail::None))
}

/// A rolled-back reverse cutover: the old primary's fence is for good again.
pub(in crate::run) async fn keep_fenced(plan: &Plan, db: Db) -> Result<(), StepError> {
    Ok(pair(plan, db).keep_fenced().await?)
}
