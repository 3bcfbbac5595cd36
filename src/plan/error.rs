//! Plan errors: every problem found, each with its place in the file and how to fix it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Key path, e.g. `postgres[0].source.port`; empty for the file as a whole.
    pub key: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// 1-based column, where known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to change.
    pub fix: String,
}

/// A plan could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plan file `{}`: {}", path.display(), read_words(source))]
    Read {
        /// The plan file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read and is wrong in one or more places.
    #[error("{}", render(file, problems))]
    Invalid {
        /// The plan file.
        file: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl PlanError {
    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            PlanError::Read { .. } => &[],
            PlanError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    let n = problems.len();
    let _ = fmt::write(
        &mut out,
        format_args!(
            "plan `{}` has {n} problem{}:",
            file.display(),
            if n == 1 { "" } else { "s" }
        ),
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&file.display().to_string());
        if let (Some(line), Some(col)) = (p.line, p.column) {
            out.push_str(&format!(":{line}:{col}"));
        }
        if !p.key.is_empty() {
            out.push_str(&format!(": `{}`", p.key));
        }
        out.push_str(&format!(": {}\n    fix: {}", p.message, p.fix));
    }
    out
}

/// Why a plan file could not be read, and the fix.
fn read_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => format!("{e} (fix: check the path)"),
        ErrorKind::IsADirectory => "it is a directory (fix: give the plan file inside it)".into(),
        ErrorKind::InvalidData => {
            "it is not UTF-8 text (fix: save it as UTF-8, e.g. `iconv -t UTF-8`)".into()
        }
        ErrorKind::PermissionDenied => format!("{e} (fix: make it readable by this user)"),
        _ => e.to_string(),
    }
}
