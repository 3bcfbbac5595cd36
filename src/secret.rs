//! Secrets: where they come from (environment or file) and a value type that never prints itself.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use cutover_providers::Secret;

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
#[derive(Debug, thiserror::Error)]
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
        source: std::io::Error,
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
        source,
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
