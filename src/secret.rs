//! Secrets: where they come from (environment or file) and a value type that never prints itself.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use cutover_providers::Secret;

/// Crates whose debug and trace lines print SQL text or bound values (`CREATE SUBSCRIPTION ...
/// password=...`, `CHANGE MASTER TO ... MASTER_PASSWORD=...`) or request headers; the binary
/// drops their lines below INFO whatever the log filter asks for.
const CHATTY_CLIENTS: [&str; 7] = [
    "tokio_postgres",
    "postgres_protocol",
    "mysql_async",
    "mysql_common",
    "reqwest",
    "hyper",
    "hyper_util",
];

/// Whether a log line from `target` at `level` could carry a secret (and must not be printed).
pub fn may_log_secrets(target: &str, level: tracing::Level) -> bool {
    level > tracing::Level::INFO
        && CHATTY_CLIENTS
            .iter()
            .any(|c| target == *c || (target.starts_with(c) && target[c.len()..].starts_with("::")))
}

/// Where a secret is read from. A plan never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    /// An environment variable's value.
    Env(String),
    /// The first line of a file.
    File(PathBuf),
}

/// Reading a secret failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or not UTF-8.
    #[error("environment variable `{0}` is not set (export it before running cutover)")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file `{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::sync::Arc<std::io::Error>,
    },
    /// The variable or file is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Builds a reference from a plan's `*_env` / `*_file` pair (the env one wins; validation
    /// rejects plans that set both).
    pub fn from_pair(env: &Option<String>, file: &Option<PathBuf>) -> Option<SecretRef> {
        match (env, file) {
            (Some(name), _) => Some(SecretRef::Env(name.clone())),
            (None, Some(path)) => Some(SecretRef::File(path.clone())),
            (None, None) => None,
        }
    }

    /// Reads the secret now.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?
            }
            SecretRef::File(path) => read_first_line(path)?,
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(Secret::new(value))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "environment variable `{name}`"),
            SecretRef::File(path) => write!(f, "file `{}`", path.display()),
        }
    }
}

fn read_first_line(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.to_owned(),
        source: source.into(),
    })?;
    Ok(text.lines().next().unwrap_or("").trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_reads_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\nsecond line\n").unwrap();
        let secret = SecretRef::File(path).read().unwrap();
        assert_eq!(secret.expose(), "s3cret");
    }

    #[test]
    fn missing_env_names_the_variable() {
        let err = SecretRef::Env("CUTOVER_TEST_SURELY_UNSET".into())
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("CUTOVER_TEST_SURELY_UNSET"));
    }
}

#[cfg(test)]
mod log_tests {
    use super::may_log_secrets;
    use tracing::Level;

    #[test]
    fn database_clients_are_quiet_below_info_whatever_the_filter() {
        assert!(may_log_secrets("tokio_postgres::query", Level::DEBUG));
        assert!(may_log_secrets("tokio_postgres", Level::TRACE));
        assert!(may_log_secrets("mysql_async::conn", Level::DEBUG));
        assert!(!may_log_secrets("tokio_postgres", Level::WARN));
        assert!(!may_log_secrets("tokio_postgres_rustls_like", Level::DEBUG));
        assert!(!may_log_secrets("cutover::postgres", Level::TRACE));
    }
}

/// libpq's and the mysql client's rule for a private key file (a TLS client key): it must not
/// be readable by group or world. The refusal says so in their words, with the fix.
pub fn check_private_file(key: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(key)
        .map_err(|err| format!("{}: cannot read it ({err})", key.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "private key file {} has group or world access; permissions should be u=rw (0600) or less (fix: chmod 600 {})",
            key.display(),
            key.display()
        ));
    }
    Ok(())
}

/// The runner's variables a command cutover starts (a hook, a check, a proxy adapter's
/// command) inherits: what finding programs, a locale, a home and the ssh agent need.
/// Everything else (passwords and tokens the plan's `*_env` keys name) stays with the runner.
pub const PASSED_THROUGH: [&str; 9] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SSH_AUTH_SOCK",
];

/// [`PASSED_THROUGH`]'s variables that are set, with their values.
pub fn passed_through() -> Vec<(String, String)> {
    PASSED_THROUGH
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect()
}
