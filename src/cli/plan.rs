//! `cutover plan check`: validate a plan and print the run it describes.

use std::path::Path;

use serde_json::json;

use super::{EXIT_INVALID, EXIT_OK, Output};
use crate::plan::{self, Plan, PlanError};
use crate::run::{self, Step};

/// Loads a plan, printing every problem on failure; the error is the exit status.
pub fn load_or_report(path: &Path, output: Output) -> Result<Plan, u8> {
    match plan::load(path) {
        Ok(plan) => Ok(plan),
        Err(err) => {
            // Both are the plan's fault, not a failed migration: scripts tell them apart by 2.
            let code = match err {
                PlanError::Read { .. } | PlanError::Invalid { .. } => EXIT_INVALID,
            };
            match output {
                Output::Human => errln!("{err}"),
                Output::Json => outln!(
                    "{}",
                    json!({
                        "file": path,
                        "valid": false,
                        "error": err.to_string(),
                        "problems": err.problems(),
                    })
                ),
            }
            Err(code)
        }
    }
}

/// `plan check`.
pub fn check(path: &Path, output: Output) -> u8 {
    let plan = match load_or_report(path, output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let steps = run::steps(&plan);
    let rollback = run::rollback_summary(&plan);
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "file": path,
                "valid": true,
                "migration": plan.migration,
                "steps": steps,
                "rollback_before_point_of_no_return": rollback,
                "warnings": plan::warnings(&plan),
            })
        ),
        Output::Human => out!("{}", render(path, &plan, &steps, &rollback)),
    }
    EXIT_OK
}

fn render(path: &Path, plan: &Plan, steps: &[Step], rollback: &str) -> String {
    let mut out = format!(
        "{}: valid\nmigration `{}`, journal in {}\n",
        path.display(),
        plan.migration.name,
        plan.migration.state_dir.display()
    );
    if let Some(hosts) = &plan.hosts {
        out.push_str(&format!(
            "moving from `{}` to `{}`\n",
            hosts.source.ssh, hosts.target.ssh
        ));
    }
    for w in plan::warnings(plan) {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str("\nA run would, in order:\n");
    let width = steps.len().to_string().len();
    let mut phase = None;
    for (i, step) in steps.iter().enumerate() {
        if phase != Some(step.phase) {
            out.push_str(&format!("  [{}]\n", step.phase.as_str()));
            phase = Some(step.phase);
        }
        out.push_str(&format!(
            "  {:>width$}. {}: {}{}\n",
            i + 1,
            step.component,
            step.action,
            if step.point_of_no_return {
                "   <- point of no return"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!(
        "\nA failure before the point of no return rolls back: {rollback}.\n"
    ));
    out
}

/// Checks that `--pair NAME` names a pair of engine `P`; prints the choices when not.
pub fn check_pair<P: crate::engine::Reports>(
    path: &Path,
    plan: &Plan,
    name: &str,
) -> Result<(), u8> {
    let section = P::SECTION;
    let pairs = P::select(plan, None);
    let names: Vec<&str> = pairs.iter().map(|p| p.name()).collect();
    if names.contains(&name) {
        return Ok(());
    }
    errln!(
        "{}: no [[{section}]] pair named `{name}`; pairs: {}",
        path.display(),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    );
    Err(EXIT_INVALID)
}
