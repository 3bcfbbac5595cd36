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
        super::steps::databases(p)
            .into_iter()
            .map(|(_, name)| name)
            .chain(p.files.iter().map(|x| format!("files {}", x.name)))
            .chain(p.dns.iter().map(|x| format!("dns {}", x.name)))
            .chain(p.proxy.iter().map(|x| format!("proxy {}", x.name)))
            .collect()
    };
    let (now, then) = (names(file), names(kept));
    for gone in then.iter().filter(|n| !now.contains(n)) {
        out.push(format!("{gone} is no longer in the plan file"));
    }
    for new in now.iter().filter(|n| !then.contains(n)) {
        out.push(format!("{new} was added to the plan file"));
    }
    // Every section of either plan, so one added to the plan's types is compared too.
    let sections: std::collections::BTreeSet<&String> = [&a, &b]
        .into_iter()
        .filter_map(|v| v.as_object())
        .flat_map(|o| o.keys())
        .collect();
    for section in sections {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        crate::plan::parse_str(&text, &path).unwrap()
    }

    #[test]
    fn differences_name_every_component_and_section_the_file_changed() {
        let kept = example("haproxy-route.toml");
        assert!(differences(&kept, &kept).is_empty());

        let mut file = kept.clone();
        file.postgres.clear();
        file.proxy[0].target = "127.0.0.1:1".into();
        let said = differences(&file, &kept);
        assert!(
            said.contains(&"postgres wiki-db is no longer in the plan file".to_owned()),
            "{said:?}"
        );
        // A section the names do not cover is compared whole: each one the plan has.
        assert!(said.contains(&"[proxy] changed".to_owned()), "{said:?}");

        let mut file = kept.clone();
        file.proxy[0].name = "other".into();
        let said = differences(&file, &kept);
        assert!(
            said.contains(&"proxy wiki-web is no longer in the plan file".to_owned())
                && said.contains(&"proxy other was added to the plan file".to_owned()),
            "{said:?}"
        );
    }
}
