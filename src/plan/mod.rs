//! The TOML plan: its types, loading with every problem reported at once, and validation.
//!
//! ```text
//! text --DeTable::parse--> span tree --inline secrets removed--> serde (retried per error)
//!      --> Plan --validate--> Plan or PlanError::Invalid { problems }
//! ```

mod error;
mod parse;
mod types;
mod validate;

use std::path::Path;

use toml::de::DeTable;

pub use error::{PlanError, Problem};
pub use types::*;
pub use validate::MAX_NAME_LEN;

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
        Collected::Partial(partial) => {
            // Check what did parse; a plan-wide "nothing to migrate" would be wrong here, as the
            // sections that failed are missing from `partial`.
            let mut semantic = validate::validate(&partial, &src, original);
            semantic.retain(|p| !p.key.is_empty());
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
    /// The top level; sections that failed are empty.
    Partial(Plan),
    /// Not even the top level.
    Nothing,
}

/// Deserializes the plan section by section, so each `[[...]]` entry is checked on its own.
/// On failure, returns what parsed if the top level did: the sections that parsed completely,
/// and the others empty.
fn collect_plan(
    src: &SourceText<'_>,
    original: &DeTable<'_>,
    mut root: toml::Spanned<DeTable<'_>>,
    problems: &mut Vec<Problem>,
) -> Collected {
    let table = root.get_mut();
    let postgres = parse::collect_section(src, original, table, "postgres", problems);
    let mysql = parse::collect_section(src, original, table, "mysql", problems);
    let files = parse::collect_section(src, original, table, "files", problems);
    let dns = parse::collect_section(src, original, table, "dns", problems);
    let hooks = parse::collect_section(src, original, table, "hooks", problems);
    let checks = parse::collect_section(src, original, table, "checks", problems);
    let top: Option<Plan> = parse::deserialize_collecting(src, original, &[], root, problems);
    match (top, postgres, mysql, files, dns, hooks, checks) {
        (
            Some(top),
            Some(postgres),
            Some(mysql),
            Some(files),
            Some(dns),
            Some(hooks),
            Some(checks),
        ) => Collected::Complete(Plan {
            postgres,
            mysql,
            files,
            dns,
            hooks,
            checks,
            ..top
        }),
        (None, ..) => Collected::Nothing,
        (Some(top), postgres, mysql, files, dns, hooks, checks) => Collected::Partial(Plan {
            postgres: postgres.unwrap_or_default(),
            mysql: mysql.unwrap_or_default(),
            files: files.unwrap_or_default(),
            dns: dns.unwrap_or_default(),
            hooks: hooks.unwrap_or_default(),
            checks: checks.unwrap_or_default(),
            ..top
        }),
    }
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
