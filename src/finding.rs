//! What a check found, in the words every component uses: where (which server or host), how
//! serious, what is wrong, and what to change there.
//!
//! The files component and the MySQL engine speak it as is; PostgreSQL's findings add the side
//! (source or target) they are about and share the severity. What a run needs from both engines
//! (phases, their results, rollback outcomes, the servers' state) is in `engine`; the engines'
//! own reports and events stay theirs, for the single-pair commands that print them.

use serde::Serialize;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The step would fail or lose data; it is refused.
    Error,
    /// Works, but worth knowing.
    Warning,
    /// What cutover will do about it.
    Info,
}

/// One thing found on one server or host.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The named check that found it (`privileges`, `fence-scope`); empty where a component
    /// has no named checks.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub check: String,
    /// Which server or host (`source lab-source`, `target 127.0.0.1:5432`).
    pub server: String,
    /// How serious.
    pub severity: Severity,
    /// What is wrong.
    pub problem: String,
    /// What to change, there.
    pub fix: String,
}

impl Finding {
    /// `[check] ` in front of a finding's server, or nothing.
    pub fn label(&self) -> String {
        if self.check.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.check)
        }
    }
}

/// True when none of `findings` is an error.
pub fn passed(findings: &[Finding]) -> bool {
    !findings.iter().any(|f| f.severity == Severity::Error)
}

/// The errors among `findings`, one indented block each with its fix.
pub fn errors_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| {
            format!(
                "  {}{}: {}\n    fix: {}",
                f.label(),
                f.server,
                f.problem,
                f.fix
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
