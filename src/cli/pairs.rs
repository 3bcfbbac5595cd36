//! What `cutover pg` and `cutover mysql` share: load the plan, select the pairs, run one step
//! on each in turn (a cutover stops at the first pair that fails), print one JSON document.

use std::future::Future;
use std::path::PathBuf;

use serde_json::json;

use super::plan::{check_pair, load_or_report};
use super::{DbCommand, EXIT_FAILED, EXIT_INVALID, EXIT_OK, Output, PairKind, runtime};
use crate::plan::Plan;

/// One step of the per-pair database commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbStep {
    /// `preflight`
    Preflight,
    /// `start`
    Start,
    /// `status`
    Status,
    /// `cutover`
    Cutover,
    /// `verify`
    Verify,
    /// `cleanup`
    Cleanup,
}

impl DbCommand {
    /// The step this command runs.
    pub fn step(&self) -> DbStep {
        match self {
            DbCommand::Preflight(_) => DbStep::Preflight,
            DbCommand::Start(_) => DbStep::Start,
            DbCommand::Status(_) => DbStep::Status,
            DbCommand::Cutover(_) => DbStep::Cutover,
            DbCommand::Verify(_) => DbStep::Verify,
            DbCommand::Cleanup(_) => DbStep::Cleanup,
        }
    }
}

/// What a step needs besides its pair.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// Which step.
    pub step: DbStep,
    /// Output format.
    pub output: Output,
    /// The migration's state directory.
    pub state_dir: PathBuf,
}

/// Runs `cmd` on the plan's pairs of `kind` (selected by `select`); `each` runs one pair and
/// returns (success, JSON). Returns the exit status.
pub fn run_pairs<P, Fut>(
    cmd: &DbCommand,
    kind: PairKind,
    select: impl Fn(&Plan, Option<&str>) -> Vec<P>,
    each: impl Fn(P, StepContext) -> Fut,
) -> u8
where
    Fut: Future<Output = (bool, serde_json::Value)>,
{
    let args = cmd.args();
    let plan = match load_or_report(&args.plan, args.output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    if let Some(name) = &args.pair
        && let Err(code) = check_pair(&args.plan, &plan, kind, name)
    {
        return code;
    }
    let pairs = select(&plan, args.pair.as_deref());
    if pairs.is_empty() {
        let section = match kind {
            PairKind::Postgres => "postgres",
            PairKind::Mysql => "mysql",
        };
        errln!(
            "{}: the plan has no [[{section}]] pairs",
            args.plan.display()
        );
        return EXIT_INVALID;
    }
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let context = StepContext {
        step: cmd.step(),
        output: args.output,
        state_dir: plan.migration.state_dir.clone(),
    };
    rt.block_on(async move {
        let mut results = Vec::new();
        let mut code = EXIT_OK;
        for pair in pairs {
            let (ok, value) = each(pair, context.clone()).await;
            results.push(value);
            if !ok {
                code = EXIT_FAILED;
                // A cutover stops at the first pair that fails; the others are left untouched.
                if context.step == DbStep::Cutover {
                    break;
                }
            }
        }
        if context.output == Output::Json {
            outln!("{}", json!({ "pairs": results }));
        }
        code
    })
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
        self.events.push(json!({ "at_ms": ms, "detail": event }));
    }

    /// The events as a JSON array.
    pub fn to_json(&self) -> serde_json::Value {
        json!(self.events)
    }
}
