//! What `cutover pg` and `cutover mysql` share: load the plan, select the pairs, run one step
//! on each in turn (a cutover stops at the first pair that fails), print one JSON document.

use std::future::Future;
use std::path::PathBuf;

use serde_json::json;

use super::plan::{check_pair, load_or_report};
use super::{DbCommand, EXIT_FAILED, EXIT_INVALID, EXIT_OK, Output, report, runtime};
use crate::engine::Reports;
use crate::finding::{Finding, Severity};

pub use crate::run::single::PairStep as DbStep;

impl DbCommand {
    /// The step this command runs.
    pub fn step(&self) -> DbStep {
        match self {
            DbCommand::Preflight(_) => DbStep::Preflight,
            DbCommand::Start(_) => DbStep::Start,
            DbCommand::Status(_) => DbStep::Status,
            DbCommand::Cutover(a) if a.resume => DbStep::Resume { go_on: a.go_on },
            DbCommand::Cutover(_) => DbStep::Cutover,
            DbCommand::Verify(_) => DbStep::Verify,
            DbCommand::Cleanup(_) => DbStep::Cleanup,
            DbCommand::Resync(_) => DbStep::Resync,
        }
    }
}

/// How the CLI prints an engine's own reports (`start`, `status`): the formatters live here,
/// the typed reports in the engine ([`Reports`]).
pub trait Printed: Reports {
    /// `start`'s report, for a person.
    fn print_started(report: &Self::Started);
    /// `status`'s report, for a person.
    fn print_status(status: &Self::Status);
}

/// What `resync` (the one step whose repair is an engine's own) needs besides its pair.
#[derive(Debug, Clone)]
pub struct ResyncContext {
    /// Output format.
    pub output: Output,
    /// The migration's state directory.
    pub state_dir: PathBuf,
    /// `--table`s.
    pub tables: Vec<String>,
}

/// Runs `cmd` on the plan's pairs of engine `P`: every step through the engine contract
/// (start and status through its typed [`Reports`]), and `resync` for the repair only some
/// engines have; each returns (success, JSON). Returns the exit status.
pub fn run_pairs<P, Fut>(cmd: &DbCommand, resync: impl Fn(P, ResyncContext) -> Fut) -> u8
where
    P: Printed,
    Fut: Future<Output = (bool, serde_json::Value)>,
{
    let args = cmd.args();
    let plan = match load_or_report(&args.plan, args.output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    if let Some(name) = &args.pair
        && let Err(code) = check_pair::<P>(&args.plan, &plan, name)
    {
        return code;
    }
    let pairs = P::select(&plan, args.pair.as_deref());
    if pairs.is_empty() {
        errln!(
            "{}: the plan has no [[{}]] pairs",
            args.plan.display(),
            P::SECTION
        );
        return EXIT_INVALID;
    }
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let step = cmd.step();
    let _lease = match step.lease(&plan, P::COMMAND) {
        Ok(lease) => lease,
        Err(e) => {
            errln!("{}: {e}", args.plan.display());
            return EXIT_FAILED;
        }
    };
    let state_dir = plan.migration.state_dir.clone();
    let output = args.output;
    let tables = match cmd {
        DbCommand::Resync(a) => a.tables.clone(),
        _ => Vec::new(),
    };
    rt.block_on(async move {
        // The servers' lease too: another state directory's run or command is refused.
        let leases = if step.changes_servers() {
            let purpose = format!("{} {}", P::COMMAND, step.verb());
            match crate::run::single::ServerLeases::take(
                &plan,
                &purpose,
                pairs.iter().map(|p| p as &dyn crate::engine::Pair),
            )
            .await
            {
                Ok(leases) => Some(leases),
                Err(e) => {
                    errln!("{}: {e}", args.plan.display());
                    return EXIT_FAILED;
                }
            }
        } else {
            None
        };
        let results = crate::run::single::each_pair(step, pairs, |pair| {
            let context = ResyncContext {
                output,
                state_dir: state_dir.clone(),
                tables: tables.clone(),
            };
            let resync = &resync;
            async move {
                match step {
                    DbStep::Preflight => preflight_pair(&pair, output).await,
                    DbStep::Start => report(output, pair.started().await, P::print_started),
                    DbStep::Status => {
                        let status = pair.status(&context.state_dir).await;
                        let healthy = status.as_ref().is_ok_and(P::healthy);
                        let (_, value) = report(output, status, P::print_status);
                        (healthy, value)
                    }
                    DbStep::Cutover => cutover_pair(&pair, pair.name(), P::COMMAND, output).await,
                    DbStep::Resume { go_on } => {
                        let window = pair.window(true).await;
                        resume_pair(window, pair.name(), output, go_on).await
                    }
                    DbStep::Verify => verify_pair(&pair, output).await,
                    DbStep::Cleanup => cleanup_pair(&pair, output).await,
                    DbStep::Resync => resync(pair, context).await,
                }
            }
        })
        .await;
        let all_ok = results.iter().all(|(ok, _)| *ok);
        let code = if all_ok { EXIT_OK } else { EXIT_FAILED };
        // A cutover or resume that failed may have stopped mid-window: its record stays, so
        // only this state directory takes the migration on.
        if let Some(leases) = leases {
            if all_ok || matches!(step, DbStep::Start | DbStep::Cleanup) {
                leases.release().await;
            } else {
                leases.keep_records();
            }
        }
        if output == Output::Json {
            let results: Vec<_> = results.into_iter().map(|(_, v)| v).collect();
            outln!("{}", json!({ "pairs": results }));
        }
        code
    })
}

/// `cutover --resume` of one pair: the library decides from the servers' state; this prints
/// each server's state before and after, and what was done.
pub async fn resume_pair(
    window: Result<Box<dyn crate::engine::Window>, crate::engine::DbError>,
    name: &str,
    output: Output,
    go_on: bool,
) -> (bool, serde_json::Value) {
    let human = output == Output::Human;
    let mut w = match window {
        Ok(w) => w,
        Err(e) => {
            if human {
                errln!("pair {name}: cannot reach its servers: {e}; nothing was done");
            }
            return (
                false,
                json!({ "pair": name, "ok": false, "error": e.to_string() }),
            );
        }
    };
    match crate::engine::resume(w.as_mut(), go_on).await {
        Ok(r) => {
            if human {
                outln!("pair {name}: before: {}", r.before.serving());
                for l in &r.before.lines {
                    outln!("  {l}");
                }
                outln!("  {}", r.action);
                if let Some(rb) = &r.rollback {
                    match rb {
                        crate::engine::Rollback::Failed { error } => {
                            errln!("  ROLLBACK FAILED: {error}")
                        }
                        other => outln!("  rolled back: {other}"),
                    }
                }
                if let Some(f) = &r.finished {
                    match f.old_primary_clean {
                        Some(true) => {
                            outln!("  checked: the old primary took no write after the fence")
                        }
                        Some(false) => {
                            errln!("  WRITES LOST: the old primary took writes after the fence")
                        }
                        None => outln!(
                            "  NOT CHECKED whether the old primary took writes after the fence"
                        ),
                    }
                    for w in &f.warnings {
                        outln!("  warning: {w}");
                    }
                }
                if let Some(e) = &r.error {
                    errln!("  FAILED: {e}");
                }
                if let Some(after) = &r.after {
                    outln!("  now: {}", after.serving());
                    for l in &after.lines {
                        outln!("  {l}");
                    }
                }
            }
            let (ok, mut v) = super::with_ok(&r, r.ok());
            v["pair"] = json!(name);
            (ok, v)
        }
        Err(e) => {
            if human {
                errln!("pair {name}: cannot read its servers' state: {e}; nothing was done");
            }
            (
                false,
                json!({ "pair": name, "ok": false, "error": e.to_string() }),
            )
        }
    }
}

/// A cutover's events: printed as they happen (human output, with the time since the start)
/// and kept for the JSON document.
pub struct EventLog {
    began: std::time::Instant,
    human: bool,
    pair: String,
    events: Vec<serde_json::Value>,
}

impl EventLog {
    /// An empty log for `pair`.
    pub fn new(pair: &str, output: Output) -> EventLog {
        EventLog {
            began: std::time::Instant::now(),
            human: output == Output::Human,
            pair: pair.to_owned(),
            events: Vec::new(),
        }
    }

    /// Records one event; `describe` is only called for human output.
    pub fn record<E: serde::Serialize>(&mut self, event: &E, describe: impl FnOnce(&E) -> String) {
        let ms = self.began.elapsed().as_secs_f64() * 1000.0;
        if self.human {
            outln!("  {ms:>9.1} ms  {}: {}", self.pair, describe(event));
        }
        self.events
            .push(json!({ "at_ms": ms, "detail": json!(event) }));
    }

    /// The events as a JSON array.
    pub fn to_json(&self) -> serde_json::Value {
        json!(self.events)
    }
}

/// `cutover` of one pair (either engine), through the engine contract's single-pair driver:
/// prints each phase as it completes, then what the pair's servers now do.
pub async fn cutover_pair(
    pair: &dyn crate::engine::Pair,
    name: &str,
    group: &str,
    output: Output,
) -> (bool, serde_json::Value) {
    use crate::engine::{DbError, Event, Rollback};
    let human = output == Output::Human;
    let mut log = EventLog::new(name, output);
    let mut on_event = |event: &Event| log.record(event, describe_event);
    let result = crate::engine::cutover(pair, &mut on_event).await;
    let events = log.to_json();
    match result {
        Ok(r) => {
            let f = &r.finished;
            if human {
                outln!(
                    "pair {name}: cut over. Writes were unavailable for {} (fence -> target writable).",
                    r.promoted
                        .write_unavailable_ms
                        .map_or("an unmeasured time".to_owned(), |ms| format!("{ms:.1} ms"))
                );
                for w in &f.warnings {
                    outln!("  warning: {w}");
                }
                match (f.old_primary_clean, &f.lost) {
                    (Some(true), _) => outln!(
                        "  checked: the old primary took no write after the fence; it stays fenced"
                    ),
                    (Some(false), lost) => errln!(
                        "  WRITES LOST: {}. The new primary is live; copy them over by hand, and fence or exempt whoever wrote them",
                        lost.as_deref()
                            .unwrap_or("the old primary took writes after the fence")
                    ),
                    (None, _) => outln!(
                        "  NOT CHECKED whether the old primary took writes after the fence (see the warning above); it stays fenced"
                    ),
                }
                outln!("  `cutover {group} cleanup` removes replication objects when you are done");
            }
            let (ok, mut v) = super::with_ok(&r, r.ok());
            v["pair"] = json!(name);
            v["write_unavailable_ms"] = json!(r.promoted.write_unavailable_ms);
            v["events"] = events;
            (ok, v)
        }
        Err(failed) => {
            if human {
                errln!("pair {name}: {failed}");
                match &failed.rollback {
                    Rollback::NotNeeded => errln!("  this command changed nothing"),
                    Rollback::SourceReopened { detail } => {
                        errln!("  rolled back: the source serves writes again ({detail})")
                    }
                    Rollback::AfterPromotion => errln!(
                        "  the target was already promoted and is the primary; the source stays fenced"
                    ),
                    Rollback::Failed { error } => errln!("  ROLLBACK FAILED: {error}"),
                }
                match &failed.error {
                    DbError::Interrupted(_) => errln!(
                        "  fix: `cutover {group} status` shows each server's state; `cutover {group} cutover --resume --pair {name}` rolls the interrupted cutover back (add --continue to finish it)"
                    ),
                    DbError::NotStarted(_) => errln!(
                        "  fix: run `cutover {group} start` first (and `cutover {group} status` to watch it)"
                    ),
                    _ => {}
                }
            }
            let v = json!({
                "pair": name,
                "ok": false,
                "phase": failed.phase,
                "error": failed.error.to_string(),
                "error_kind": failed.error.kind(),
                "rollback": failed.rollback,
                "events": events,
            });
            (false, v)
        }
    }
}

fn describe_event(event: &crate::engine::Event) -> String {
    use crate::engine::Event;
    match event {
        Event::GateWaiting { text } => text.clone(),
        Event::GateWaited { waited } => format!(
            "the window fits after {:.1} s: {}",
            waited.waited_ms / 1000.0,
            waited.prediction.words()
        ),
        Event::GatePassed { lag } => format!("gate passed (lag {lag})"),
        Event::Fenced {
            sessions_ended,
            scope,
        } => {
            format!(
                "source fenced ({sessions_ended} app session(s) ended; {})",
                scope.join(", ")
            )
        }
        Event::CaughtUp { position } => {
            format!("target has everything the source committed before the fence ({position})")
        }
        Event::Promoted { .. } => "target promoted and writable".to_owned(),
        Event::RollingBack { reason } => format!("FAILED: {reason}; rolling back"),
    }
}

/// `preflight` of one pair (either engine): the servers, every finding with its fix, the
/// verdict the engine reached.
pub async fn preflight_pair(
    pair: &dyn crate::engine::Pair,
    output: Output,
) -> (bool, serde_json::Value) {
    match pair.preflight().await {
        Ok(r) => {
            if output == Output::Human {
                outln!(
                    "pair {}: {}, {} tables in scope",
                    r.pair,
                    r.summary,
                    r.tables
                );
                print_findings(&r.findings);
                for note in &r.notes {
                    outln!("  {note}");
                }
                let errors = r
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .count();
                if r.passed() {
                    outln!("  preflight passed");
                } else {
                    outln!("  preflight failed: {errors} problem(s) to fix first");
                }
            }
            let mut value = r.detail.clone();
            value["ok"] = serde_json::json!(r.passed());
            (r.passed(), value)
        }
        Err(e) => {
            if output == Output::Human {
                errln!("pair {}: {e}", pair.name());
            }
            (
                false,
                serde_json::json!({ "pair": pair.name(), "ok": false, "error": e.to_string() }),
            )
        }
    }
}

/// Findings, one each with its fix under it (every component's preflight).
pub fn print_findings(findings: &[Finding]) {
    for f in findings {
        let mark = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "note",
        };
        let check = if f.check.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.check)
        };
        outln!(
            "  {mark}{check}: [{}] {}\n      fix: {}",
            f.server,
            f.problem,
            f.fix
        );
    }
}

/// `verify` of one pair (either engine): every table chunk by chunk, and the objects besides.
pub async fn verify_pair(
    pair: &dyn crate::engine::Pair,
    output: Output,
) -> (bool, serde_json::Value) {
    match pair.verify().await {
        Ok(r) => {
            if output == Output::Human {
                outln!("pair {}:", r.pair);
                for t in &r.tables {
                    outln!(
                        "  {:<40} {} source rows, {} target rows, {} chunk(s){}: {}",
                        t.table,
                        t.source_rows,
                        t.target_rows,
                        t.chunks,
                        if t.whole_table {
                            " (no single-column key: whole table)"
                        } else {
                            ""
                        },
                        if t.matches() { "match" } else { "DIFFER" }
                    );
                    for d in &t.differing {
                        outln!(
                            "    {}: {} source rows, {} target rows",
                            d.keys,
                            d.source_rows,
                            d.target_rows
                        );
                    }
                }
                for d in &r.differences {
                    outln!("  DIFFER: {d}");
                }
                outln!(
                    "  {}",
                    if r.matches() {
                        "every table and object matches"
                    } else {
                        "source and target differ"
                    }
                );
            }
            super::with_ok(&r, r.matches())
        }
        Err(e) => {
            if output == Output::Human {
                errln!("pair {}: {e}", pair.name());
            }
            (
                false,
                json!({ "pair": pair.name(), "ok": false, "error": e.to_string() }),
            )
        }
    }
}

/// `cleanup` of one pair (either engine): what was removed and what stays on purpose.
pub async fn cleanup_pair(
    pair: &dyn crate::engine::Pair,
    output: Output,
) -> (bool, serde_json::Value) {
    match pair.cleanup().await {
        Ok(r) => {
            if output == Output::Human {
                outln!("pair {}:", r.pair);
                if r.done.is_empty() {
                    outln!("  nothing to clean up");
                }
                for line in &r.done {
                    outln!("  {line}");
                }
                for line in &r.kept {
                    outln!("  kept: {line}");
                }
            }
            super::with_ok(&r, true)
        }
        Err(e) => {
            if output == Output::Human {
                errln!("pair {}: {e}", pair.name());
            }
            (
                false,
                json!({ "pair": pair.name(), "ok": false, "error": e.to_string() }),
            )
        }
    }
}
