//! `cutover files ...`: rendering only; the checks and passes live in `crate::files`.

use std::io::IsTerminal;

use serde_json::json;

use super::plan::load_or_report;
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, FilesCommand, Output, runtime};
use crate::files::sync::{self, PassKind};
use crate::files::{Action, Entry, preflight};

/// Runs a `files` command; returns the exit status.
pub fn run(cmd: FilesCommand) -> u8 {
    let (args, action) = match &cmd {
        FilesCommand::Preflight(a) => (a, Action::Preflight),
        FilesCommand::Sync(a) => (a, Action::Sync),
        FilesCommand::Final(a) => (a, Action::Final),
        FilesCommand::Verify(a) => (a, Action::Verify),
    };
    let plan = match load_or_report(&args.plan, args.output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let entries = match Entry::select(&plan, args.entry.as_deref()) {
        Ok(e) if !e.is_empty() => e,
        Ok(_) => {
            errln!(
                "{}: {}",
                args.plan.display(),
                match &args.entry {
                    Some(name) => format!(
                        "no [[files]] entry named `{name}` (entries: {})",
                        plan.files
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => "the plan has no [[files]] entries".to_owned(),
                }
            );
            return EXIT_INVALID;
        }
        Err(e) => {
            errln!("{}: {e}", args.plan.display());
            return EXIT_INVALID;
        }
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let human = args.output == Output::Human;
    let state_dir = plan.migration.state_dir.clone();
    rt.block_on(async {
        // What may change a tree holds the leases the library's rule names.
        let guard = match action.changes() {
            Some(purpose) => match crate::run::single::ChangeGuard::take(&plan, purpose).await {
                Ok(g) => Some(g),
                Err(e) => {
                    errln!("{}: {e}", args.plan.display());
                    return EXIT_FAILED;
                }
            },
            None => None,
        };
        let mut code = EXIT_OK;
        let mut results = Vec::new();
        for entry in &entries {
            let (ok, value) = match action {
                Action::Preflight => run_preflight(entry, human).await,
                Action::Verify => run_verify(entry, human).await,
                Action::Final => run_pass(entry, PassKind::Final, &state_dir, human).await,
                Action::Sync => run_pass(entry, PassKind::Warm, &state_dir, human).await,
            };
            if !ok {
                code = EXIT_FAILED;
            }
            results.push(value);
        }
        if !human {
            outln!("{}", json!({ "entries": results }));
        }
        if let Some(guard) = guard {
            guard.release().await;
        }
        code
    })
}

async fn run_preflight(entry: &Entry, human: bool) -> (bool, serde_json::Value) {
    match preflight::run(entry).await {
        Ok(r) => {
            if human {
                outln!("files {}:", r.entry);
                if let (Some(s), Some(t)) = (&r.rsync_versions.0, &r.rsync_versions.1) {
                    outln!("  rsync: source {s}; target {t}");
                }
                if let (Some(size), Some(avail), Some(need)) =
                    (r.source_bytes, r.target_available, r.target_needed)
                {
                    outln!("  tree {size} bytes; target has {avail} bytes free, needs {need}");
                }
                if let Some(skew) = r.clock_skew_seconds {
                    outln!("  clock skew target - source: {skew:+.3} s");
                }
                super::pairs::print_findings(&r.findings);
                outln!(
                    "  {}",
                    if r.passed() {
                        "preflight passed"
                    } else {
                        "preflight failed"
                    }
                );
            }
            super::with_ok(&r, r.passed())
        }
        Err(e) => failed(entry, human, &e),
    }
}

async fn run_pass(
    entry: &Entry,
    kind: PassKind,
    state_dir: &std::path::Path,
    human: bool,
) -> (bool, serde_json::Value) {
    let bar = (human && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(entry.plan.name.clone());
        bar
    });
    let mut progress = |bytes: u64, percent: u8| {
        if let Some(bar) = &bar {
            bar.set_position(percent.into());
            bar.set_message(format!("{bytes} bytes"));
        }
    };
    let result = match kind {
        PassKind::Warm => sync::warm(entry, state_dir, &mut progress).await,
        PassKind::Final => sync::final_pass(entry, state_dir, &mut progress).await,
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(r) => {
            if human {
                outln!(
                    "files {}: {} pass ({}) in {:.2} s: {} of {} files transferred, {} bytes ({} on the wire)",
                    r.entry,
                    match r.kind {
                        PassKind::Warm => "warm",
                        PassKind::Final => "final",
                    },
                    r.method,
                    r.seconds,
                    r.figures.files_transferred,
                    r.figures.files,
                    r.figures.transferred_bytes,
                    r.figures.wire_bytes
                );
                if let Some(n) = r.changed_paths {
                    outln!("  {n} path(s) from the change log");
                }
                for w in &r.warnings {
                    outln!("  warning: {w}");
                }
            }
            super::with_ok(&r, true)
        }
        Err(e) => failed(entry, human, &e),
    }
}

async fn run_verify(entry: &Entry, human: bool) -> (bool, serde_json::Value) {
    match crate::files::verify::verify(entry).await {
        Ok(r) => {
            if human {
                outln!("files {}:", r.entry);
                for d in &r.differences {
                    outln!("  DIFFER: {d}");
                }
                outln!(
                    "  {}",
                    if r.matches() {
                        "source and target trees are identical (checksums)".to_owned()
                    } else {
                        format!("{} path(s) differ", r.differences.len())
                    }
                );
            }
            super::with_ok(&r, r.matches())
        }
        Err(e) => failed(entry, human, &e),
    }
}

fn failed(entry: &Entry, human: bool, e: &crate::files::FilesError) -> (bool, serde_json::Value) {
    if human {
        errln!("files {}: {e}", entry.plan.name);
    }
    (
        false,
        json!({ "entry": entry.plan.name, "ok": false, "error": e.to_string() }),
    )
}
