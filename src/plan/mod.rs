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

    let plan: Option<Plan> = parse::deserialize_collecting(&src, original, stripped, &mut problems);
    if let Some(plan) = &plan {
        problems.extend(validate::validate(plan, &src, original));
    }
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
    match plan {
        Some(plan) if problems.is_empty() => Ok(plan),
        _ => Err(invalid(problems)),
    }
}
