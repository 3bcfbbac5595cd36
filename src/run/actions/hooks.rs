//! Hooks and health checks as steps: what ran, how long, and whether a failure is allowed.

use super::{Detail, Done, HookRan, StepError};
use crate::plan::Plan;
use crate::run::hooks;

/// Runs hook `i` of `plan` at `phase` (`reverse`: inside a reverse cutover).
pub(in crate::run) async fn hook(
    plan: &Plan,
    i: usize,
    phase: &str,
    reverse: bool,
) -> Result<Done, StepError> {
    let (outcome, warning) = hooks::run_hook(plan, &plan.hooks[i], phase, reverse).await?;
    Ok((
        match &warning {
            Some(w) => format!("FAILED, allowed: {w}"),
            None => format!("exited 0 in {:.0} ms", outcome.ms),
        },
        Detail::Hook(HookRan {
            code: outcome.code,
            output: outcome.output,
            ms: outcome.ms,
            allowed_failure: warning,
        }),
    ))
}

/// Runs health check `i` of `plan` with its retries.
pub(in crate::run) async fn check(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let outcome = hooks::run_check(plan, &plan.checks[i]).await;
    let detail = Detail::record(&outcome)?;
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
        )
        .into())
    }
}
