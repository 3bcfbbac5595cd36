//! The TOML plan: its types, loading with every problem reported at once, and validation.
//!
//! ```text
//! text --DeTable::parse--> span tree --inline secrets removed--> serde (retried per error)
//!      (a missing required key gets a stand-in, so the rest of its entry is still checked)
//!      --> Plan --validate--> Plan or PlanError::Invalid { problems }
//! ```
//!
//! One file per section, each with its keys' types and their checks: `proxy` (routes,
//! adapters, proofs), `dns` (records, providers); `types` holds the plan itself,
//! `[migration]`, hosts, files, hooks and checks; `validate` the rules across sections and the
//! checker every section reports to. Each database engine owns its section in its own folder
//! (`postgres/config.rs`: pairs and endpoints, TLS as libpq names it; `mysql/config.rs`: as
//! the MySQL client names it), written at this layer and re-exported here; the loader
//! delegates their checks to them.

mod dns;
mod error;
mod parse;
mod proxy;
pub(crate) mod types;
pub(crate) mod validate;

use std::path::Path;

use toml::de::DeTable;

pub use crate::mysql::config::*;
pub use crate::postgres::config::*;
pub use dns::*;
pub use error::{PlanError, Problem};
pub use proxy::*;
pub use types::*;
pub use validate::{MAX_NAME_LEN, is_loopback};

use parse::{Seg, SourceText};

/// Reads and validates a plan file.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, path)
}

/// Parses and validates plan text; `file` is only used in messages.
pub fn parse_str(text: &str, file: &Path) -> Result<Plan, PlanError> {
    let src = SourceText::new(text);
    let invalid = |problems: Vec<Problem>| PlanError::Invalid {
        file: file.to_owned(),
        problems,
    };

    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| {
                src.problem(
                    String::new(),
                    e.span(),
                    format!("TOML syntax error: {}", e.message().trim()),
                    "fix the TOML syntax at this position (strings need quotes, tables `[name]`, arrays of tables `[[name]]`)",
                )
            })
            .collect();
        return Err(invalid(problems));
    }

    let original: &DeTable<'_> = doc.get_ref();
    let mut stripped = doc.clone();
    let mut problems = Vec::new();
    parse::take_inline_secrets(
        &src,
        stripped.get_mut(),
        &mut Vec::<Seg>::new(),
        &mut problems,
    );

    let (plan, semantic) = match collect_plan(&src, original, stripped, &mut problems) {
        Collected::Complete(plan) => {
            let semantic = validate::validate(&plan, &src, original);
            (Some(plan), semantic)
        }
        Collected::Partial(partial, stand_ins) => {
            // Check what did parse; a plan-wide "nothing to migrate" would be wrong here, as the
            // entries that failed are missing from `partial`, and what a stand-in holds is not
            // the operator's (its key is reported missing already).
            let mut semantic = validate::validate(&partial, &src, original);
            semantic.retain(|p| !p.key.is_empty() && !stand_ins.iter().any(|s| under(&p.key, s)));
            (None, semantic)
        }
        Collected::Nothing => (None, Vec::new()),
    };
    // `app_role = [...]` is reported as "did you mean `app_roles`?"; saying that `app_roles` is
    // empty as well would only repeat it.
    let meant = suggested_keys(&problems);
    problems.extend(semantic.into_iter().filter(|p| !meant.contains(&p.key)));
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
    match plan {
        Some(plan) if problems.is_empty() => Ok(plan),
        _ => Err(invalid(problems)),
    }
}

/// How much of a plan deserialized.
enum Collected {
    /// All of it (semantic problems may remain).
    Complete(Plan),
    /// The top level; entries that failed are missing, entries with stand-ins for missing
    /// keys are present for checking their other keys (the stand-ins' paths listed).
    Partial(Plan, Vec<String>),
    /// Not even the top level.
    Nothing,
}

/// Deserializes the plan section by section, so each `[[...]]` entry is checked on its own.
/// On failure, returns what parsed if the top level did.
fn collect_plan(
    src: &SourceText<'_>,
    original: &DeTable<'_>,
    mut root: toml::Spanned<DeTable<'_>>,
    problems: &mut Vec<Problem>,
) -> Collected {
    let table = root.get_mut();
    let mut stand_ins = Vec::new();
    let postgres =
        parse::collect_section(src, original, table, "postgres", problems, &mut stand_ins);
    let mysql = parse::collect_section(src, original, table, "mysql", problems, &mut stand_ins);
    let files = parse::collect_section(src, original, table, "files", problems, &mut stand_ins);
    let dns = parse::collect_section(src, original, table, "dns", problems, &mut stand_ins);
    let proxy = parse::collect_section(src, original, table, "proxy", problems, &mut stand_ins);
    let hooks = parse::collect_section(src, original, table, "hooks", problems, &mut stand_ins);
    let checks = parse::collect_section(src, original, table, "checks", problems, &mut stand_ins);
    let Some((top, top_stand_ins)) =
        parse::deserialize_collecting::<Plan>(src, original, &[], root, problems)
    else {
        return Collected::Nothing;
    };
    stand_ins.extend(top_stand_ins);
    let complete = [
        postgres.complete,
        mysql.complete,
        files.complete,
        dns.complete,
        proxy.complete,
        hooks.complete,
        checks.complete,
    ]
    .iter()
    .all(|c| *c)
        && stand_ins.is_empty();
    let plan = Plan {
        postgres: postgres.items,
        mysql: mysql.items,
        files: files.items,
        dns: dns.items,
        proxy: proxy.items,
        hooks: hooks.items,
        checks: checks.items,
        ..top
    };
    if complete {
        Collected::Complete(plan)
    } else {
        Collected::Partial(plan, stand_ins)
    }
}

/// Whether problem key `key` is at or under `path`.
fn under(key: &str, path: &str) -> bool {
    key == path
        || key
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Key paths that unknown-key problems suggest instead ("did you mean `X`?").
fn suggested_keys(problems: &[Problem]) -> std::collections::HashSet<String> {
    problems
        .iter()
        .filter_map(|p| {
            let suggestion = p.fix.strip_prefix("did you mean `")?.split('`').next()?;
            let parent = p
                .key
                .rsplit_once('.')
                .map_or(String::new(), |(a, _)| format!("{a}."));
            Some(format!("{parent}{suggestion}"))
        })
        .collect()
}

/// What is valid but risky in `plan`: each a sentence with its fix, for `plan check` and the
/// run's preflight.
pub fn warnings(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let stops_writers = plan.hooks.iter().any(|h| h.at == HookPoint::WindowOpen);
    if !stops_writers {
        for f in &plan.files {
            out.push(format!(
                "[[files]] `{}`: no window-open hook stops the tree's writers before the final pass, so whatever they write after it stays on the old host (a run reports those paths as not carried and fails); fix: add a [[hooks]] entry with `at = \"window-open\"` that stops the service on the source host",
                f.name
            ));
        }
    }
    out
}
