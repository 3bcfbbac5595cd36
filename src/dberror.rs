//! The one error every database module and the engine contract report: which server, what
//! cutover was doing, and the server's own message, or which refusal it is. PostgreSQL and
//! MySQL/MariaDB share it (`PgError`, `MyError`), and [`crate::engine`]'s phases return it as
//! it is, so a caller matches the engine's own variant (a refusal, a timeout, a failed
//! statement on a named server), never a copy flattened into words.

use std::time::Duration;

use crate::secret::SecretError;

/// What can go wrong talking to a database server (or its client programs), or in a phase of
/// a pair's life. JSON: `{"kind": "refused", "message": "..."}` (the kind in kebab case, the
/// message as displayed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The server could not be reached or refused the login.
    #[error("{server}: cannot connect: {message}")]
    Connect {
        /// Which server.
        server: String,
        /// Why.
        message: String,
    },
    /// The password could not be read.
    #[error("{server}: {source}")]
    Secret {
        /// Which server.
        server: String,
        /// Why.
        source: SecretError,
    },
    /// A statement failed.
    #[error("{server}: {context}: {message}")]
    Sql {
        /// Which server.
        server: String,
        /// What cutover was doing.
        context: String,
        /// The server's message and SQLSTATE.
        message: String,
    },
    /// A client program (`pg_dump`, `psql`, `mariadb-dump`, `mysql`…) failed.
    #[error("{program}: {message}")]
    Tool {
        /// The program.
        program: String,
        /// Why, with the end of its stderr.
        message: String,
    },
    /// The servers are not in a state that allows the command.
    #[error("{0}")]
    Refused(String),
    /// Refused because replication for the pair was never set up (or not by cutover).
    #[error("{0}")]
    NotStarted(String),
    /// Refused because an earlier cutover of the pair was interrupted inside its window: it
    /// must be resumed (finished or rolled back) first.
    #[error("{0}")]
    Interrupted(String),
    /// Refused: replication is behind a fixed ceiling (`max_lag`, `max_lag_bytes`); waiting
    /// may cure it (the adaptive gate waits on it).
    #[error("{0}")]
    Behind(String),
    /// Something took longer than allowed.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// Something else failed; the words say what and why.
    #[error("{0}")]
    Failed(String),
}

impl DbError {
    /// A failure with `context` in front of the cause's own message.
    pub fn failed(context: &str, e: impl std::fmt::Display) -> DbError {
        DbError::Failed(format!("{context}: {e}"))
    }

    /// The variant's name, as the JSON output gives it.
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::Connect { .. } => "connect",
            DbError::Secret { .. } => "secret",
            DbError::Sql { .. } => "sql",
            DbError::Tool { .. } => "tool",
            DbError::Refused(_) => "refused",
            DbError::NotStarted(_) => "not-started",
            DbError::Interrupted(_) => "interrupted",
            DbError::Behind(_) => "behind",
            DbError::Timeout { .. } => "timeout",
            DbError::Failed(_) => "failed",
        }
    }
}

impl serde::Serialize for DbError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DbError", 2)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::DbError;

    /// Every variant serialises (an internally tagged enum of strings does not: it once
    /// turned a failed cutover's error into `null` in the JSON output).
    #[test]
    fn every_variant_serialises_with_its_kind_and_words() {
        let all = [
            DbError::Refused("no".into()),
            DbError::NotStarted("not set up".into()),
            DbError::Interrupted("mid-window".into()),
            DbError::Behind("2 s".into()),
            DbError::Timeout {
                what: "catch-up".into(),
                after: std::time::Duration::from_secs(3),
            },
            DbError::Failed("boom".into()),
            DbError::Sql {
                server: "a:1".into(),
                context: "read".into(),
                message: "denied".into(),
            },
        ];
        for e in all {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["kind"], e.kind());
            assert_eq!(v["message"], e.to_string());
        }
        let v = serde_json::to_value(DbError::NotStarted("x".into())).unwrap();
        assert_eq!(v["kind"], "not-started");
    }
}
