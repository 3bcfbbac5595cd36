//! File trees moved between hosts with rsync, run on one host and talking to the other.
//!
//! Users copy state by hand with `rsync -avz old:/x new:/x`, which rsync cannot do (two remote
//! ends), sends everything through the operator's laptop when it can, and compresses on a LAN.
//! Here one of the two hosts runs rsync over ssh to the other (`runs_on`), with argv arrays from
//! end to end (see [`remote`]), faithful flags, and exit codes read for what they mean.
//!
//! - [`remote`]: commands on a host over ssh; quoting for the remote shell.
//! - [`rsync`]: the command line, exit codes, progress and statistics.
//! - [`preflight`]: both hosts reachable, rsync on both, the running host reaching the other,
//!   space, clock skew, the target's parent writable. Changes nothing.
//! - [`claim`]: which migration owns a target tree (a file beside it on the target host), so
//!   no pass copies over a tree that is live or that another migration is moving.
//! - [`changelog`]: the inotify change log kept on the source from the first warm pass.
//! - [`hop`]: the running host's ssh connection to the other host, shared from pass to pass.
//! - [`sqlite`]: SQLite databases in a tree copied as online backups, checked on the target.
//! - [`sync`]: a pass (warm while the service runs, final in the window: only the logged
//!   changes when the log can be trusted, else the whole tree).
//! - [`changed`]: the final pass's copy of the logged paths, in runs side by side.
//! - [`verify`]: whether both trees are the same, by checksum.

pub mod changed;
pub mod changelog;
pub mod claim;
pub mod hop;
pub mod preflight;
pub mod remote;
pub mod rsync;
pub mod sqlite;
pub mod sync;
pub mod verify;

use std::time::Duration;

use crate::plan::{FileSync, Host, Plan};

/// A files step failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A program could not be started.
    #[error("could not run {0}")]
    Spawn(String),
    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// The plan cannot be used for files (no `[hosts]`).
    #[error("{0}")]
    Plan(String),
    /// The local state (the change log's record) could not be read or written.
    #[error("files state: {0}")]
    State(String),
    /// The change-log watcher could not be started.
    #[error("{0}")]
    Watch(String),
    /// The target tree is live, or another migration's.
    #[error("{0}")]
    Claimed(String),
    /// A SQLite database could not be copied consistently.
    #[error("{0}")]
    Sqlite(String),
    /// rsync failed; `text` says what it means.
    #[error("{entry}: {text}\n{stderr}")]
    Rsync {
        /// The `[[files]]` entry.
        entry: String,
        /// rsync's exit code.
        code: i32,
        /// What it means and what to do.
        text: String,
        /// The end of rsync's own error output.
        stderr: String,
    },
}

/// One `[[files]]` entry with the hosts it moves between.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry as written in the plan.
    pub plan: FileSync,
    /// The source host.
    pub source: Host,
    /// The target host.
    pub target: Host,
    /// The running host's shared connection to the other host (a control socket directory
    /// there, see [`hop`]), once a warm pass has made one.
    pub hop: Option<String>,
    /// The migration the entry belongs to, as its target claim names it.
    pub owner: Owner,
}

/// Who runs a migration: what a target tree's claim records ([`claim`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// The migration's name.
    pub migration: String,
    /// Its state directory.
    pub state_dir: String,
    /// The host name of the machine that runs it.
    pub runner: String,
}

impl Entry {
    /// Every `[[files]]` entry of `plan`, or only `only`.
    pub fn select(plan: &Plan, only: Option<&str>) -> Result<Vec<Entry>, FilesError> {
        let hosts = plan.hosts.as_ref().ok_or_else(|| {
            FilesError::Plan("the plan has no [hosts] for its [[files]] entries".into())
        })?;
        Ok(plan
            .files
            .iter()
            .filter(|f| only.is_none_or(|name| f.name == name))
            .map(|f| {
                let mut entry = Entry {
                    plan: f.clone(),
                    source: hosts.source.clone(),
                    target: hosts.target.clone(),
                    hop: None,
                    owner: Owner {
                        migration: plan.migration.name.clone(),
                        state_dir: plan.migration.state_dir.display().to_string(),
                        runner: crate::state::host_name(),
                    },
                };
                entry.hop = hop::load(&plan.migration.state_dir, &entry);
                entry
            })
            .collect())
    }

    /// The host that runs rsync and the one it reaches.
    pub fn runner_and_peer(&self) -> (&Host, &Host) {
        rsync::hosts(&self.plan, &self.source, &self.target)
    }

    /// The rsync argv for this entry with `flags`, run on the running host.
    pub fn rsync_argv(&self, flags: &[String]) -> Vec<String> {
        rsync::argv(
            &self.plan,
            &self.source,
            &self.target,
            flags,
            self.hop.as_deref(),
        )
    }
}

/// A short random hex token, for names of temporary files cutover leaves on a host.
pub fn token() -> String {
    use rand::Rng;
    let bytes: [u8; 6] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last lines of a command's output, for error messages.
pub use crate::child::tail;

/// The `files` commands, for the one rule of which of them change a tree (and so hold the
/// migration's lease and its servers').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Check both hosts (changes nothing).
    Preflight,
    /// A warm pass (changes the target tree).
    Sync,
    /// The final pass (changes the target tree).
    Final,
    /// Compare both trees (changes nothing).
    Verify,
}

impl Action {
    /// The lease purpose when the command changes a tree; `None` when it only reads.
    pub fn changes(self) -> Option<&'static str> {
        match self {
            Action::Sync => Some("files sync"),
            Action::Final => Some("files final"),
            Action::Preflight | Action::Verify => None,
        }
    }
}
