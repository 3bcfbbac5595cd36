//! File trees as steps: checked, copied warm, copied for the last time inside the window, and
//! at the end proven unchanged on the old host since that last pass (or named), claimed live on
//! the new host, and the shared ssh connections closed.

use std::collections::BTreeMap;

use super::{Detail, Done, StepError, WrapUp};
use crate::files;
use crate::plan::Plan;

pub(in crate::run) fn entry(plan: &Plan, i: usize) -> Result<files::Entry, StepError> {
    files::Entry::select(plan, Some(&plan.files[i].name))?
        .pop()
        .ok_or_else(|| format!("no files entry {i}").into())
}

/// Both hosts reachable, the trees readable and writable, the target's disk large enough.
pub(in crate::run) async fn preflight(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let entry = entry(plan, i)?;
    let r = files::preflight::run(&entry).await?;
    if !r.passed() {
        return Err(format!(
            "preflight failed:\n{}",
            crate::finding::errors_text(&r.findings)
        )
        .into());
    }
    let warnings: Vec<String> = crate::plan::warnings(plan)
        .into_iter()
        .filter(|w| w.contains(&format!("`{}`", entry.plan.name)))
        .chain(
            r.findings
                .iter()
                .filter(|f| f.severity == crate::finding::Severity::Warning)
                .map(|f| format!("{} (fix: {})", f.problem, f.fix)),
        )
        .collect();
    Ok((
        format!(
            "passed; source tree {} bytes{}",
            r.source_bytes.unwrap_or_default(),
            warnings
                .iter()
                .map(|w| format!("; WARNING: {w}"))
                .collect::<String>()
        ),
        Detail::None,
    ))
}

/// A warm pass while the service runs (it starts the change log the final pass reads).
pub(in crate::run) async fn warm(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let entry = entry(plan, i)?;
    let r = files::sync::warm(&entry, &plan.migration.state_dir, &mut |_, _| {}).await?;
    Ok((
        format!(
            "{} files, {} bytes sent in {:.1} s",
            r.figures.files_transferred, r.figures.wire_bytes, r.seconds
        ),
        Detail::record(&r)?,
    ))
}

/// Opens every entry's connections, so the final pass does not spend the window on ssh
/// handshakes.
pub(in crate::run) async fn ready_all(plan: &Plan) {
    for i in 0..plan.files.len() {
        if let Ok(entry) = entry(plan, i) {
            files::sync::ready(&entry).await;
        }
    }
}

/// The final pass inside the window, from the change log where it is complete.
pub(in crate::run) async fn final_pass(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let entry = entry(plan, i)?;
    // The watcher keeps watching to the end of the run: the report proves that nothing
    // changed on the old host after this pass, or names what did.
    let r =
        files::sync::final_pass_watching(&entry, &plan.migration.state_dir, &mut |_, _| {}).await?;
    Ok((
        format!(
            "{} ({}), {} files, {} bytes sent in {:.2} s{}",
            r.method,
            r.changed_paths
                .map_or("whole tree".to_owned(), |n| format!("{n} changed paths")),
            r.figures.files_transferred,
            r.figures.wire_bytes,
            r.seconds,
            r.fallback
                .as_ref()
                .map_or(String::new(), |f| format!("; FULL PASS because {f}"))
        ),
        Detail::record(&r)?,
    ))
}

/// What ends the files' part of a run at its report: (forward only) what each old tree did
/// since its final pass, the new trees claimed live; every shared ssh connection closed.
/// Returns the report's detail and, per entry that changed after its final pass, the paths.
pub(in crate::run) async fn wrap_up(
    plan: &Plan,
    reverse: bool,
) -> Result<(WrapUp, Vec<String>), StepError> {
    let state_dir = &plan.migration.state_dir;
    let mut after = BTreeMap::new();
    let mut not_carried = Vec::new();
    for i in 0..plan.files.len() {
        let entry = entry(plan, i)?;
        if !reverse {
            // What the source tree did since the final pass (the watcher stops).
            let seen = files::changelog::after_final(&entry, state_dir)
                .await
                .unwrap_or_else(|e| files::changelog::AfterFinal::Unproven {
                    reason: e.to_string(),
                });
            if let files::changelog::AfterFinal::Changed { paths } = &seen {
                not_carried.push(format!(
                    "{}: {}{}",
                    entry.plan.name,
                    paths
                        .iter()
                        .take(20)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if paths.len() > 20 {
                        format!(" and {} more", paths.len() - 20)
                    } else {
                        String::new()
                    }
                ));
            }
            after.insert(entry.plan.name.clone(), seen);
            // The target tree is the live side now: no pass of any migration copies over it
            // again without the operator saying so.
            files::claim::write(&entry, files::claim::ClaimState::Live).await?;
        }
        // The running hosts' shared ssh connections have done their work.
        if let Err(e) = files::hop::close(&entry, state_dir).await {
            tracing::warn!(entry = %entry.plan.name, error = %e, "a shared ssh connection was not closed");
        }
    }
    Ok((
        WrapUp {
            files_after_final: after,
        },
        not_carried,
    ))
}

/// After a rollback, what the run started on the hosts goes: the change-log watchers and the
/// shared ssh connections (a next run starts its own). Returns what could not be stopped.
pub(in crate::run) async fn stop_all(plan: &Plan) -> Vec<String> {
    let state_dir = &plan.migration.state_dir;
    let mut notes = Vec::new();
    for i in 0..plan.files.len() {
        let Ok(entry) = entry(plan, i) else {
            continue;
        };
        if let Ok(Some(watch)) = files::changelog::load(state_dir, &entry.plan.name)
            && let Err(e) = files::changelog::stop(&entry, state_dir, &watch).await
        {
            notes.push(format!(
                "files {}: the change-log watcher (pid {} on the source host) could not be stopped: {e}",
                entry.plan.name, watch.pid
            ));
        }
        if let Err(e) = files::hop::close(&entry, state_dir).await {
            tracing::warn!(entry = %entry.plan.name, error = %e, "a shared ssh connection was not closed");
        }
    }
    notes
}
