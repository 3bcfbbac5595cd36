//! A record's value now, as the plan expects it before the switch (`expect_current`): every
//! authoritative server is asked, by preflight and again right before the switch, so a run does
//! not overwrite a record that no longer points at the source (switched by hand, or by another
//! migration) without a word. A server that already serves the plan's new values passes too:
//! a resumed run may find its own switch done.

use cutover_providers::RecordSet;

use super::probe::{self, Question, Served};
use super::{DnsError, Target};

/// Checks every authoritative server of `target` against the plan's `expect_current`; all that
/// differ are named in one refusal. Nothing to check when the plan names no current value.
pub async fn check_current(target: &Target<'_>) -> Result<(), DnsError> {
    let plan = target.plan;
    if plan.expect_current.is_empty() {
        return Ok(());
    }
    let canonical =
        |values: &[String]| RecordSet::new(&plan.name, plan.record_type, 0, values).values;
    let (expected, wanted) = (canonical(&plan.expect_current), canonical(&plan.values));
    let questions: Vec<Question> = target
        .servers
        .iter()
        .map(|s| Question::new(&plan.name, plan.record_type, s.addr, false))
        .collect();
    let answers = probe::ask_all(&questions).await;
    let differing: Vec<String> = target
        .servers
        .iter()
        .zip(&answers)
        .filter(|(_, served)| !served.serves(&expected, true) && !served.serves(&wanted, true))
        .map(|(server, served)| format!("{server} answers {}", describe(served)))
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(DnsError::Unexpected {
        record: target.label(),
        detail: format!(
            "expected to hold {} (`expect_current`) before the switch, but {}; something else changed it (by hand, or another migration), and switching would overwrite that unseen; nothing was changed. fix: find out who changed it; then set `expect_current` to what it should hold now, or remove the key",
            expected.join(","),
            differing.join("; ")
        ),
    })
}

fn describe(served: &Served) -> String {
    served.describe()
}
