//! Reverse-proxy routes as steps: read before the run, switched to the target right after
//! the promotion (read back), and switched back to the source by a reverse cutover.

use super::{Detail, Done, StepError};
use crate::plan::Plan;
use crate::proxy;

/// Route `i` answers, may be changed, and points at the source (or already at the target).
pub(in crate::run) async fn preflight(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let words = proxy::preflight(&plan.proxy[i]).await?;
    Ok((words, Detail::None))
}

/// Points route `i` at the target (`reverse`: back at the source), read back.
pub(in crate::run) async fn switch(
    plan: &Plan,
    i: usize,
    reverse: bool,
) -> Result<Done, StepError> {
    let switched = proxy::switch(&plan.proxy[i], reverse).await?;
    let mut words = if switched.already {
        format!("already points at {} (nothing changed)", switched.current)
    } else {
        format!(
            "{} -> {} (read back, {:.1} ms)",
            switched.previous, switched.current, switched.ms
        )
    };
    if let Some(ms) = switched.first_answer_ms {
        words.push_str(&format!(
            "; first answer from {} through the proxy {ms:.1} ms later",
            switched.current
        ));
    }
    Ok((words, Detail::ProxySwitched(switched)))
}
