//! `cutover run` and `cutover status`: renders the run's journal records as they are written,
//! and the report; the sequencing and every decision live in `run`.

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::plan::load_or_report;
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Output, RunArgs, runtime};
use crate::run::{self, Entry, Outcome, Record, RunError, RunReport};

/// `cutover run PLAN`.
pub fn run(args: RunArgs) -> u8 {
    if args.dry_run {
        return super::plan::check(&args.plan, Output::Human);
    }
    let plan = match load_or_report(&args.plan, args.output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let human = args.output == Output::Human;
    let opts = run::Options {
        force: args.force,
        resume: args.resume,
        go_on: args.go_on,
        rollback: args.rollback,
        leave_files: args.leave_files,
    };
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        let began = Instant::now();
        if opts.resume
            && human
            && let Ok((_, differs)) = run::kept_plan::for_resume(&plan)
            && !differs.is_empty()
        {
            outln!(
                "note: the plan file differs from the plan the interrupted run began with ({}); resuming with the one it began with, kept in {}",
                differs.join("; "),
                run::kept_plan::path(&plan).display()
            );
        }
        // Every record renders on its own: the step list is the one the run journals.
        let mut observer = |r: &Record| {
            if human {
                render(r, began);
            }
        };
        match run::run(&plan, &opts, cancel, &mut observer).await {
            Ok((outcome, report)) => {
                if human {
                    print_report(&report);
                } else {
                    print_json(&report);
                }
                match outcome {
                    Outcome::Completed => EXIT_OK,
                    Outcome::RolledBack | Outcome::Failed => EXIT_FAILED,
                }
            }
            Err(e) => {
                let code = match e {
                    RunError::Refused(_)
                    | RunError::Interrupted(_)
                    | RunError::Moved(_)
                    | RunError::FilesNotCarried(_) => EXIT_INVALID,
                    RunError::State(_) | RunError::Held(_) | RunError::Unjournalled { .. } => {
                        EXIT_FAILED
                    }
                };
                let advice = advice(&e, &args.plan);
                if human {
                    errln!("cutover run: {e}{advice}");
                } else {
                    outln!(
                        "{}",
                        json!({ "ok": false, "error": format!("{e}{advice}") })
                    );
                }
                code
            }
        }
    })
}

/// The CLI's words for what to do next.
fn advice(e: &RunError, plan: &Path) -> String {
    let plan = plan.display();
    match e {
        RunError::Interrupted(_) => format!(
            "\n  fix: `cutover status {plan}` shows where it stopped; `cutover run --resume {plan}` finishes or rolls it back"
        ),
        RunError::Moved(_) => {
            format!("\n  to move back: `cutover run --rollback {plan}` (a reverse cutover)")
        }
        RunError::FilesNotCarried(_) => format!(
            "\n  to move the databases back and leave the trees on the new host: `cutover run --rollback --leave-files {plan}`"
        ),
        RunError::Unjournalled { .. } => format!(
            "\n  fix: free space where the state directory is, then `cutover status {plan}` and `cutover run --resume {plan}`"
        ),
        RunError::Refused(_) | RunError::State(_) | RunError::Held(_) => String::new(),
    }
}

/// SIGINT and SIGTERM cancel the run (it rolls back before the point of no return and ignores
/// them after it).
fn spawn_signal_handler(cancel: CancellationToken) {
    super::cancel_on_signal(
        cancel,
        "cutover: signal received: rolling back if before the point of no return, otherwise finishing the switch",
    );
}

pub(super) fn render(r: &Record, began: Instant) {
    let t = began.elapsed().as_secs_f64();
    match &r.entry {
        Entry::RunStarted {
            migration,
            steps,
            reverse,
        } => outln!(
            "{} {} of `{migration}`: {} steps",
            if *reverse { "reverse cutover" } else { "run" },
            r.run,
            steps.len()
        ),
        Entry::Resumed { decision, states } => {
            outln!("resuming run {}", r.run);
            for s in states {
                outln!("  {s}");
            }
            outln!("  decision: {decision}");
        }
        Entry::StepBegin {
            step,
            phase,
            component,
            action,
        } => outln!(
            "{t:>8.2}s  [{}] {}. {component}: {action}",
            phase.as_str(),
            step + 1
        ),
        Entry::StepDone { ms, summary, .. } => {
            outln!("{t:>8.2}s      done ({ms:.1} ms): {summary}")
        }
        Entry::StepFailed { ms, error, .. } => {
            errln!("{t:>8.2}s      FAILED ({ms:.1} ms): {error}")
        }
        Entry::PointOfNoReturn => {
            outln!("{t:>8.2}s  -- point of no return: from here the run only goes forward --")
        }
        Entry::RollbackBegin { reason } => errln!("{t:>8.2}s  ROLLING BACK: {reason}"),
        Entry::RolledBack { component, outcome } => match outcome {
            crate::engine::Rollback::Failed { error } => {
                errln!("{t:>8.2}s      {component}: ROLLBACK FAILED: {error}")
            }
            other => outln!("{t:>8.2}s      {component}: {other}"),
        },
        Entry::Note { text } => outln!("{t:>8.2}s  note: {text}"),
        Entry::Progress { text } => outln!("{t:>8.2}s      ... {text}"),
        Entry::RunFinished {
            summary, resumable, ..
        } => {
            outln!("\n{summary}");
            if *resumable {
                outln!(
                    "  next: `cutover run --resume PLAN` takes it over (add --continue to go on where it would roll back); `cutover status PLAN` shows what it would do"
                );
            }
        }
    }
}

pub(super) fn print_report(r: &RunReport) {
    outln!("\nreport (run {}):", r.run);
    for (db, ms) in &r.write_unavailable_ms {
        outln!("  {db}: writes unavailable for {ms:.1} ms (fence -> target writable)");
    }
    if let Some(ms) = r.joint_write_unavailable_ms {
        outln!("  all databases: first fence -> last promotion {ms:.0} ms");
    }
    if let Some(ms) = r.window_ms {
        outln!("  window: opened -> last promotion {ms:.0} ms");
    }
    for f in &r.files {
        if f.get("kind").and_then(|k| k.as_str()) == Some("final") {
            outln!(
                "  files {}: final pass {} in {:.2} s{}",
                f.get("entry").and_then(|v| v.as_str()).unwrap_or("?"),
                f.get("method").and_then(|v| v.as_str()).unwrap_or("?"),
                f.get("seconds")
                    .and_then(|v| v.as_f64())
                    .unwrap_or_default(),
                f.get("fallback")
                    .and_then(|v| v.as_str())
                    .map_or(String::new(), |w| format!(" (full pass: {w})"))
            );
        }
    }
    for (pair, g) in &r.gates {
        outln!(
            "  {pair}: the gate waited {:.1} s; predicted catch-up {}, actual {}",
            g.waited_ms / 1000.0,
            g.prediction
                .catch_up_ms
                .map_or("unbounded".to_owned(), |ms| format!("{ms:.0} ms")),
            r.catch_up_ms
                .get(pair)
                .map_or("not reached".to_owned(), |ms| format!("{ms:.0} ms"))
        );
    }
    for (route, p) in &r.proxies {
        if p.already {
            outln!("  {route}: already pointed at {}", p.current);
        } else {
            outln!(
                "  {route}: {} -> {} in {:.1} ms (read back from the proxy)",
                p.previous,
                p.current,
                p.ms
            );
        }
        if let Some(ms) = p.first_answer_ms {
            outln!(
                "  {route}: first request through the proxy answered by {} {ms:.1} ms after the read-back",
                p.current
            );
        }
    }
    for (record, ms) in &r.dns_propagation_ms {
        outln!("  dns {record}: served everywhere {ms:.0} ms after the switch");
    }
    for (db, clean) in &r.old_primary_clean {
        match clean {
            Some(true) => outln!("  {db}: checked: the old primary took no write after the fence"),
            Some(false) => errln!("  {db}: WRITES LOST on the old primary after the fence"),
            None => {
                outln!("  {db}: NOT CHECKED whether the old primary took writes after the fence")
            }
        }
    }
    for (entry, after) in &r.files_after_final {
        use crate::files::changelog::AfterFinal;
        match after {
            AfterFinal::Unchanged => outln!(
                "  files {entry}: checked: nothing changed on the old host after the final pass"
            ),
            AfterFinal::Changed { paths } => errln!(
                "  files {entry}: FILES NOT CARRIED: {} path(s) changed on the old host after the final pass: {}",
                paths.len(),
                paths
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            AfterFinal::Unproven { reason } => outln!(
                "  files {entry}: NOT CHECKED whether anything changed after the final pass ({reason})"
            ),
        }
    }
    for w in &r.warnings {
        outln!("  warning: {w}");
    }
    outln!("  total {:.1} s", r.total_ms / 1000.0);
}

/// `cutover status PLAN`: the journal, the lease and each pair's servers; writes nothing.
pub fn status(path: &Path, output: Output) -> u8 {
    let plan = match load_or_report(path, output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    match rt.block_on(run::status(&plan)) {
        Ok(s) => {
            match output {
                Output::Json => print_json(&s),
                Output::Human => {
                    outln!("migration `{}`", plan.migration.name);
                    match &s.run {
                        None => outln!("  no run yet"),
                        Some(run) => {
                            outln!(
                                "  last run {run}: {} ({} of {} steps done{})",
                                match s.outcome {
                                    Some(o) => o.word(),
                                    None if s.holder.is_some() => "running",
                                    None => "INTERRUPTED",
                                },
                                s.steps_done,
                                s.steps_total,
                                if s.past_point_of_no_return {
                                    ", past the point of no return"
                                } else {
                                    ""
                                }
                            );
                            if let Some(step) = &s.last_step {
                                outln!("  last step begun: {step}");
                            }
                            if let Some(waiting) = &s.waiting {
                                outln!("  it said last: {waiting}");
                            }
                        }
                    }
                    if let Some(h) = &s.holder {
                        outln!("  held by {h}");
                    }
                    if !s.plan_differs.is_empty() {
                        outln!(
                            "  the plan file differs from the plan the interrupted run began with ({}); status and --resume use the one it began with, kept in {}",
                            s.plan_differs.join("; "),
                            crate::run::kept_plan::path(&plan).display()
                        );
                    }
                    for (component, state) in &s.pairs {
                        outln!("  {component}: {state}");
                    }
                    for (route, pointing) in &s.proxies {
                        match pointing {
                            Ok(p) => outln!("  {route}: {}", p.words()),
                            Err(e) => outln!("  {route}: unreadable: {e}"),
                        }
                    }
                    outln!(
                        "  `cutover run --resume {}` would: {}",
                        path.display(),
                        s.resume_would
                    );
                }
            }
            EXIT_OK
        }
        Err(e) => {
            errln!("cutover status: {e}");
            EXIT_FAILED
        }
    }
}

/// One JSON document on stdout; one that cannot be rendered says so on stderr.
fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => outln!("{text}"),
        Err(e) => errln!("error: cannot render the result as JSON: {e}"),
    }
}
