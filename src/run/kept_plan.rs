//! The plan a run started with, kept in its state directory (`run/plan.json`), so an
//! interrupted run is resumed and reported with the pairs it began even when the plan file was
//! edited meanwhile (a pair dropped from the file would otherwise stay fenced with no command
//! left that knows it). The plan holds secrets by reference only (inline passwords are refused
//! by validation), so the copy holds none.

use std::path::PathBuf;

use crate::plan::Plan;
use crate::state::{StateDir, StateError, write_atomic};

/// Where the copy lives.
pub fn path(plan: &Plan) -> PathBuf {
    StateDir::new(&plan.migration.state_dir)
        .run()
        .join("plan.json")
}

/// Keeps `plan` as the one the run starting now began with (atomic, fsync'd).
pub fn keep(plan: &Plan) -> Result<(), StateError> {
    let text = serde_json::to_vec_pretty(plan).map_err(|e| StateError::Io {
        path: path(plan),
        detail: format!("cannot serialise the plan: {e}"),
    })?;
    write_atomic(&path(plan), &text)
}

/// The plan the last run began with, if kept.
pub fn read(plan: &Plan) -> Result<Option<Plan>, StateError> {
    let at = path(plan);
    match std::fs::read(&at) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Io {
                path: at,
                detail: format!("unreadable kept plan ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io {
            path: at,
            detail: e.to_string(),
        }),
    }
}

/// What differs between the file's plan and the kept one, in words (empty: nothing).
pub fn differences(file: &Plan, kept: &Plan) -> Vec<String> {
    let (a, b) = match (serde_json::to_value(file), serde_json::to_value(kept)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return vec![format!("cannot compare the plans: {e}")],
    };
    if a == b {
        return Vec::new();
    }
    let mut out = Vec::new();
    let names = |p: &Plan| -> Vec<String> {
        p.postgres
            .iter()
            .map(|x| format!("postgres {}", x.name))
            .chain(p.mysql.iter().map(|x| format!("mysql {}", x.name)))
            .chain(p.files.iter().map(|x| format!("files {}", x.name)))
            .chain(p.dns.iter().map(|x| format!("dns {}", x.name)))
            .collect()
    };
    let (now, then) = (names(file), names(kept));
    for gone in then.iter().filter(|n| !now.contains(n)) {
        out.push(format!("{gone} is no longer in the plan file"));
    }
    for new in now.iter().filter(|n| !then.contains(n)) {
        out.push(format!("{new} was added to the plan file"));
    }
    for section in [
        "migration",
        "hosts",
        "postgres",
        "mysql",
        "files",
        "dns",
        "hooks",
        "checks",
    ] {
        if a.get(section) != b.get(section) && out.iter().all(|o| !o.starts_with(section)) {
            out.push(format!("[{section}] changed"));
        }
    }
    out
}

/// The plan an interrupted run is resumed (and reported) with: the kept one when there is one,
/// else the file's; and what the file changed since, in words.
pub fn for_resume(file: &Plan) -> Result<(Plan, Vec<String>), StateError> {
    Ok(match read(file)? {
        Some(kept) => {
            let differs = differences(file, &kept);
            (kept, differs)
        }
        None => (file.clone(), Vec::new()),
    })
}
