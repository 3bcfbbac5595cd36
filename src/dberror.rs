//! The error every database module reports: which server, what cutover was doing, and the
//! server's own message. PostgreSQL and MySQL/MariaDB share it (`PgError`, `MyError`).

use std::time::Duration;

use crate::secret::SecretError;

/// What can go wrong talking to a database server (or its client programs).
#[derive(Debug, thiserror::Error)]
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
}
