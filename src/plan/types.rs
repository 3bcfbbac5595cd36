//! The plan itself and its shared sections (`[migration]`, hosts, files, hooks, checks): exactly
//! what a user may write, nothing more. The engines', proxies' and DNS sections are in their
//! own files beside this one.
//!
//! Every struct denies unknown keys, so a typo is an error and never a silently ignored setting.
//! Secrets are never values here: only the name of an environment variable (`*_env`) or the path
//! of a file (`*_file`) that holds them.

use std::path::PathBuf;
use std::time::Duration;

pub use cutover_providers::{ProviderKind, RecordType};
use serde::{Deserialize, Serialize};

use super::dns::*;
use super::proxy::*;
use super::{MysqlPair, PostgresPair};

/// A whole migration plan.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Name, state directory and run-wide settings.
    pub migration: Migration,
    /// The old and the new host, as ssh destinations.
    #[serde(default)]
    pub hosts: Option<Hosts>,
    /// PostgreSQL logical-replication pairs.
    #[serde(default)]
    pub postgres: Vec<PostgresPair>,
    /// MySQL/MariaDB binlog-replication pairs.
    #[serde(default)]
    pub mysql: Vec<MysqlPair>,
    /// Directory trees copied with rsync.
    #[serde(default)]
    pub files: Vec<FileSync>,
    /// DNS records switched at cutover.
    #[serde(default)]
    pub dns: Vec<DnsRecord>,
    /// Reverse-proxy routes switched from the source to the target after promotion.
    #[serde(default)]
    pub proxy: Vec<ProxyRoute>,
    /// Commands run at named points of a run.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Health checks that decide whether the new host serves correctly.
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// `[migration]`: what this migration is called and where its journal lives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// Short identifier (lowercase letters, digits, `-`, `_`); used in slot and publication names.
    pub name: String,
    /// Absolute directory for the journal, the lock and saved DNS state.
    pub state_dir: PathBuf,
    /// Free text shown in status output.
    #[serde(default)]
    pub description: Option<String>,
    /// Roll back automatically when a step fails before the point of no return.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// The longest the window may stay open (from the window-open hooks to the last
    /// promotion); exceeded before the point of no return, the run rolls back.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_timeout: Option<Duration>,
    /// The plan accepts that a rollback after promotion would lose the new primary's writes
    /// (a pair without `reverse_replication`); without it such a run is refused.
    #[serde(default)]
    pub accept_one_way: bool,
    /// The adaptive gate: each pair's gate samples the replication backlog and both rates,
    /// and fences only once the predicted window (catch-up plus the fence's and promotion's
    /// fixed cost) fits this budget. Default 100 ms; `"off"` (`None`) lets the gate pass on
    /// the fixed ceilings alone.
    #[serde(default = "default_window_budget", with = "budget")]
    pub window_budget: Option<Duration>,
    /// How long the adaptive gate waits for the prediction to fit before it refuses (nothing
    /// fenced).
    #[serde(default = "default_gate_timeout", with = "duration")]
    pub gate_timeout: Duration,
}

pub(super) fn default_window_budget() -> Option<Duration> {
    Some(Duration::from_millis(100))
}

/// `window_budget`: a duration, or `"off"`.
pub(crate) mod budget {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            D::Error::custom(
                "expected a duration string or \"off\"; fix: write e.g. \"100ms\", \"1s\", or \"off\" to let the gate pass on the fixed ceilings alone",
            )
        })?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            D::Error::custom(format!(
                "`{text}` is not a duration ({e}); fix: write e.g. \"100ms\" or \"1s\", or \"off\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_str(&humantime::format_duration(*v).to_string()),
            None => s.serialize_str("off"),
        }
    }
}

pub(super) fn default_gate_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `[hosts]`: the machines the service moves between.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hosts {
    /// The host the service runs on today.
    pub source: Host,
    /// The host the service moves to.
    pub target: Host,
}

/// One host, reached over ssh.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// ssh destination: `user@host`, `host`, or an alias from an ssh config file.
    pub ssh: String,
    /// ssh port, when not 22 and not set in the ssh config.
    #[serde(default)]
    pub port: Option<u16>,
    /// An ssh config file (`ssh -F`), e.g. one that defines the alias used in `ssh`.
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
    /// Private key to log in with (`ssh -i`).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

/// `[[files]]`: a directory tree copied from the source host to the target host with rsync.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Name, unique among `[[files]]`.
    pub name: String,
    /// Absolute path on the source host.
    pub source_path: PathBuf,
    /// Absolute path on the target host.
    pub target_path: PathBuf,
    /// rsync `--exclude` patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Delete files on the target that are gone from the source (`--delete`).
    #[serde(default = "default_true")]
    pub delete: bool,
    /// Further rsync arguments, one per element (never a shell string).
    #[serde(default)]
    pub rsync_args: Vec<String>,
    /// Which host runs rsync: `target` pulls from the source, `source` pushes to the target.
    /// Either way the two hosts talk directly, never through the operator's machine.
    #[serde(default)]
    pub runs_on: FilesRunsOn,
    /// rsync `--bwlimit` (e.g. `"50M"`), to spare a link the service also uses.
    #[serde(default)]
    pub bwlimit: Option<String>,
    /// Compress on the wire (`-z`): only worth it on slow links.
    #[serde(default)]
    pub compress: bool,
    /// Keep a change log (inotify on the source) from the first warm pass, so the final pass
    /// copies only what changed.
    #[serde(default)]
    pub change_log: bool,
    /// SQLite database files in the tree (paths relative to it): copied as online backups,
    /// never as live files, and integrity-checked on the target by the final pass.
    #[serde(default)]
    pub sqlite: Vec<String>,
    /// The target tree already holds files the source lacks or that differ: let the passes
    /// delete or overwrite them (preflight refuses such a target otherwise, as the databases
    /// refuse a target with rows).
    #[serde(default)]
    pub replace_target: bool,
}

/// Which host of a `[[files]]` entry runs rsync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesRunsOn {
    /// The target pulls (it needs ssh access to the source).
    #[default]
    Target,
    /// The source pushes (it needs ssh access to the target).
    Source,
}

/// Points in a run at which hooks can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    /// The cutover window opens: e.g. stop the app on the old host.
    WindowOpen,
    /// The target has been promoted (point of no return passed).
    AfterPromote,
    /// DNS has been switched: e.g. reload a proxy, start the app on the new host.
    AfterSwitch,
    /// Health checks passed.
    AfterVerify,
    /// A rollback finished: e.g. start the app on the old host again.
    OnRollback,
}

impl HookPoint {
    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::WindowOpen => "window-open",
            HookPoint::AfterPromote => "after-promote",
            HookPoint::AfterSwitch => "after-switch",
            HookPoint::AfterVerify => "after-verify",
            HookPoint::OnRollback => "on-rollback",
        }
    }
}

/// Where a hook or command check runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOn {
    /// On the machine running cutover.
    #[default]
    Local,
    /// Over ssh on `hosts.source`.
    Source,
    /// Over ssh on `hosts.target`.
    Target,
}

impl RunOn {
    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOn::Local => "local",
            RunOn::Source => "source",
            RunOn::Target => "target",
        }
    }
}

/// `[[hooks]]`: a command run at a named point of a run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// When it runs.
    pub at: HookPoint,
    /// Where it runs.
    #[serde(default)]
    pub on: RunOn,
    /// Program and arguments, one per element (never a shell string).
    pub command: Vec<String>,
    /// How long it may take.
    #[serde(default = "default_hook_timeout", with = "duration")]
    pub timeout: Duration,
    /// A failing hook does not fail the run.
    #[serde(default)]
    pub allow_failure: bool,
}

/// `[[checks]]`: a health check that must pass on the new host; `kind` selects the check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Check {
    /// An HTTP request that must answer with the expected status.
    Http {
        /// Name shown in reports.
        name: String,
        /// URL to request.
        url: String,
        /// Expected HTTP status.
        #[serde(default = "default_http_status")]
        expect_status: u16,
        /// Text the body must contain.
        #[serde(default)]
        body_contains: Option<String>,
        /// How long to keep retrying until the check passes.
        #[serde(default = "default_check_within", with = "duration")]
        within: Duration,
        /// How long one request may take.
        #[serde(default = "default_check_timeout", with = "duration")]
        timeout: Duration,
        /// Pause between tries.
        #[serde(default = "default_check_interval", with = "duration")]
        interval: Duration,
        /// Consecutive successes needed to pass.
        #[serde(default = "default_one")]
        success_threshold: u32,
        /// Consecutive failures that fail the check at once (default: keep trying until
        /// `within`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_threshold: Option<u32>,
    },
    /// A command that must exit 0.
    Command {
        /// Name shown in reports.
        name: String,
        /// Where it runs.
        #[serde(default)]
        on: RunOn,
        /// Program and arguments, one per element (never a shell string).
        command: Vec<String>,
        /// How long to keep retrying until the check passes.
        #[serde(default = "default_check_within", with = "duration")]
        within: Duration,
        /// How long one run of the command may take.
        #[serde(default = "default_check_timeout", with = "duration")]
        timeout: Duration,
        /// Pause between tries.
        #[serde(default = "default_check_interval", with = "duration")]
        interval: Duration,
        /// Consecutive successes needed to pass.
        #[serde(default = "default_one")]
        success_threshold: u32,
        /// Consecutive failures that fail the check at once (default: keep trying until
        /// `within`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_threshold: Option<u32>,
    },
}

impl Check {
    /// The check's name.
    pub fn name(&self) -> &str {
        match self {
            Check::Http { name, .. } | Check::Command { name, .. } => name,
        }
    }
}

pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_cutover_ttl() -> u32 {
    60
}
pub(super) fn default_propagation_timeout() -> Duration {
    Duration::from_secs(600)
}
pub(super) fn default_pdns_server_id() -> String {
    "localhost".to_owned()
}
pub(super) fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
}
pub(super) fn default_aws_key_id_env() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}
pub(super) fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_http_status() -> u16 {
    200
}
pub(super) fn default_check_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_one() -> u32 {
    1
}
pub(super) fn default_check_within() -> Duration {
    Duration::from_secs(60)
}

/// An optional duration, written like [`duration`].
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::duration::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

/// Durations written as `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            D::Error::custom(
                "expected a duration string; fix: write a quoted duration such as \"30s\", \"5m\" or \"250ms\"",
            )
        })?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "`{text}` is not a duration ({e}); fix: write e.g. \"30s\", \"5m\" or \"250ms\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}
