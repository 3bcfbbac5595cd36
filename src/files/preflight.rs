//! Checks on both hosts before anything moves; every failure names the host and the fix.
//!
//! Free space: the target's filesystem must hold what the source tree holds beyond what the
//! target path already has, plus a margin of a tenth of the tree or 64 MiB, whichever is more
//! (rsync writes each changed file beside the old one before renaming it).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::plan::{FilesRunsOn, Host};

use super::remote::{Output, on_host, remote_command, ssh_options};
use super::{Entry, FilesError, tail};

/// Bound on each check's command.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Clock skew between the hosts worth a warning.
pub const SKEW_WARNING_SECONDS: f64 = 1.0;
/// The smallest free-space margin.
const MIN_MARGIN_BYTES: u64 = 64 << 20;

/// What preflight found for one entry.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The `[[files]]` entry.
    pub entry: String,
    /// Everything found.
    pub findings: Vec<Finding>,
    /// rsync's version line per host (source, target), where it answered.
    pub rsync_versions: (Option<String>, Option<String>),
    /// Size of the source tree in bytes.
    pub source_bytes: Option<u64>,
    /// Bytes already under the target path.
    pub target_bytes: Option<u64>,
    /// Bytes available on the target path's filesystem.
    pub target_available: Option<u64>,
    /// Bytes the sync needs there (tree - already there + margin).
    pub target_needed: Option<u64>,
    /// Target clock minus source clock, in seconds.
    pub clock_skew_seconds: Option<f64>,
}

impl Report {
    /// No errors.
    pub fn passed(&self) -> bool {
        crate::finding::passed(&self.findings)
    }
}

fn label(side: &str, host: &Host) -> String {
    format!("{side} {}", host.ssh)
}

/// The free space needed for a tree of `source` bytes when `existing` are already there.
pub fn needed(source: u64, existing: u64) -> u64 {
    source.saturating_sub(existing) + (source / 10).max(MIN_MARGIN_BYTES)
}

/// How far `remote` (seconds since the epoch, read between `before` and `after` on this
/// machine) is ahead of this machine's clock, taking the read to happen half way.
pub fn offset(before: SystemTime, remote: f64, after: SystemTime) -> f64 {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    remote - (secs(before) + secs(after)) / 2.0
}

fn first_number(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Column `column` of the second line of `df -P` output.
fn df_column(text: &str, column: usize) -> Option<u64> {
    text.lines()
        .nth(1)?
        .split_whitespace()
        .nth(column)?
        .parse()
        .ok()
}

async fn clock(host: &Host) -> Result<Option<f64>, FilesError> {
    let before = SystemTime::now();
    let out = on_host(host, &["date", "+%s.%N"], CHECK_TIMEOUT).await?;
    let after = SystemTime::now();
    Ok(out
        .ok()
        .then(|| out.stdout.trim().parse::<f64>().ok())
        .flatten()
        .map(|remote| offset(before, remote, after)))
}

/// Unreachable hosts and missing programs, in words.
fn ssh_failure(out: &Output, side: &str, host: &Host, what: &str) -> (String, String) {
    match out.code {
        Some(255) => (
            format!(
                "cannot reach {side} host `{}` over ssh non-interactively: {}",
                host.ssh,
                tail(&out.stderr, 2)
            ),
            "check `ssh` / `port` / `ssh_config` / `identity_file` under [hosts] and that the key is accepted without a prompt (cutover uses BatchMode)".to_owned(),
        ),
        Some(127) => (
            format!("`{what}` is not installed on the {side} host"),
            format!("install it there (Debian: apt-get install {what})"),
        ),
        code => (
            format!(
                "`{what}` failed on the {side} host (exit {}): {}",
                code.map_or("signal".to_owned(), |c| c.to_string()),
                tail(&out.stderr, 2)
            ),
            "run it by hand over ssh to see why".to_owned(),
        ),
    }
}

/// Checks one entry. Changes nothing on either host.
pub async fn run(entry: &Entry) -> Result<Report, FilesError> {
    let (source, target) = (&entry.source, &entry.target);
    let mut findings = Vec::new();
    let mut add = |side: &str, host: &Host, severity, problem: String, fix: String| {
        findings.push(Finding {
            check: String::new(),
            server: label(side, host),
            severity,
            problem,
            fix,
        })
    };
    let src = entry.plan.source_path.display().to_string();
    let dst = entry.plan.target_path.display().to_string();
    let parent = Path::new(dst.trim_end_matches('/'))
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());

    let (s_rsync, t_rsync, s_du, t_exists, t_du, t_parent, t_df, s_clock, t_clock) = tokio::join!(
        on_host(source, &["rsync", "--version"], CHECK_TIMEOUT),
        on_host(target, &["rsync", "--version"], CHECK_TIMEOUT),
        on_host(source, &["du", "-sb", &src], CHECK_TIMEOUT),
        on_host(target, &["test", "-d", &dst], CHECK_TIMEOUT),
        on_host(target, &["du", "-sb", &dst], CHECK_TIMEOUT),
        on_host(
            target,
            &["test", "-d", &parent, "-a", "-w", &parent],
            CHECK_TIMEOUT
        ),
        on_host(target, &["df", "-P", "-B1", &parent], CHECK_TIMEOUT),
        clock(source),
        clock(target),
    );
    let mut versions = (None, None);
    let mut reachable = (true, true);
    for (side, host, out, version, up) in [
        (
            "source",
            source,
            s_rsync?,
            &mut versions.0,
            &mut reachable.0,
        ),
        (
            "target",
            target,
            t_rsync?,
            &mut versions.1,
            &mut reachable.1,
        ),
    ] {
        if out.ok() {
            *version = out.stdout.lines().next().map(|l| l.trim().to_owned());
            let min = super::rsync::MIN_RSYNC;
            if let Some(v) = version.as_deref().and_then(super::rsync::rsync_version)
                && v < min
            {
                add(
                    side,
                    host,
                    Severity::Error,
                    format!(
                        "rsync {}.{}.{} on the {side} is older than {}.{}.{}: it has no `--protect-args`, so paths would go through the remote shell, split on spaces and expanded",
                        v.0, v.1, v.2, min.0, min.1, min.2
                    ),
                    format!(
                        "install rsync {}.{}.{} or later on the {side}",
                        min.0, min.1, min.2
                    ),
                );
            }
        } else {
            *up = out.code != Some(255);
            let (problem, fix) = ssh_failure(&out, side, host, "rsync");
            add(side, host, Severity::Error, problem, fix);
        }
    }
    if !(reachable.0 && reachable.1) {
        // Everything else would only repeat that a host cannot be reached.
        return Ok(Report {
            entry: entry.plan.name.clone(),
            findings,
            rsync_versions: versions,
            source_bytes: None,
            target_bytes: None,
            target_available: None,
            target_needed: None,
            clock_skew_seconds: None,
        });
    }

    let s_du = s_du?;
    let source_bytes = if s_du.ok() {
        first_number(&s_du.stdout)
    } else {
        add(
            "source",
            source,
            Severity::Error,
            format!(
                "`{src}` cannot be read on the source host: {}",
                tail(&s_du.stderr, 1)
            ),
            "correct `source_path`, or give the ssh user read access to the whole tree".into(),
        );
        None
    };
    let t_du = t_du?;
    let t_exists_dir = t_exists?.ok();
    let target_bytes = if !t_exists_dir {
        Some(0)
    } else if t_du.ok() {
        first_number(&t_du.stdout)
    } else {
        None
    };
    if !t_parent?.ok() {
        add(
            "target",
            target,
            Severity::Error,
            format!(
                "`{parent}` (the parent of `target_path`) does not exist or is not writable on the target host"
            ),
            format!("create it there (mkdir -p {parent}) and give the ssh user write access"),
        );
    }
    let t_df = t_df?;
    let available = if t_df.ok() {
        df_column(&t_df.stdout, 3)
    } else {
        None
    };
    let need = source_bytes.map(|s| needed(s, target_bytes.unwrap_or(0)));
    if let (Some(avail), Some(need)) = (available, need)
        && avail < need
    {
        add(
            "target",
            target,
            Severity::Error,
            format!(
                "{avail} bytes are free on the target's filesystem for `{dst}`; the tree needs {need} (its {} bytes beyond what is there, plus a margin of max(10%, 64 MiB))",
                source_bytes.unwrap_or(0)
            ),
            "free space on the target, or grow its filesystem".into(),
        );
    }

    let skew = match (s_clock?, t_clock?) {
        (Some(s), Some(t)) => Some(t - s),
        _ => None,
    };
    if let Some(skew) = skew
        && skew.abs() > SKEW_WARNING_SECONDS
    {
        add(
            "target",
            target,
            Severity::Warning,
            format!(
                "the target's clock is {skew:+.1} s off the source's: safe DNS times and the report's timings would be off"
            ),
            "run NTP (chrony or systemd-timesyncd) on both hosts".into(),
        );
    }

    // The change log's needs: inotifywait on the source and a watch per directory.
    if entry.plan.change_log {
        let (tool, dirs, limit) = tokio::join!(
            on_host(source, &["inotifywait", "--help"], CHECK_TIMEOUT),
            on_host(
                source,
                &["find", &src, "-xdev", "-type", "d", "-printf", "x"],
                CHECK_TIMEOUT
            ),
            on_host(
                source,
                &["cat", "/proc/sys/fs/inotify/max_user_watches"],
                CHECK_TIMEOUT
            ),
        );
        if tool?.code == Some(127) {
            add(
                "source",
                source,
                Severity::Error,
                "`change_log = true` needs inotifywait on the source host, and it is not installed".into(),
                "install inotify-tools there, or set `change_log = false` (the final pass then walks the whole tree)".into(),
            );
        }
        let dirs = dirs?.stdout.len() as u64;
        if let Some(limit) = first_number(&limit?.stdout)
            && dirs > limit / 2
        {
            add(
                "source",
                source,
                if dirs > limit {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                format!(
                    "the tree has {dirs} directories and fs.inotify.max_user_watches is {limit}: the change log needs one watch per directory, shared with every other watcher of that user"
                ),
                format!(
                    "raise it on the source host: sysctl fs.inotify.max_user_watches={}",
                    (dirs * 4).max(524_288)
                ),
            );
        }
    }

    // The target tree: this migration's to copy onto (not live, not another migration's), and
    // nothing there the first pass would delete or overwrite unless the plan allows it.
    let claim = match super::claim::read(entry).await {
        Ok(claim) => claim,
        Err(e) => {
            add(
                "target",
                target,
                Severity::Error,
                e.to_string(),
                "see the message".into(),
            );
            None
        }
    };
    if let Some(why) = claim.as_ref().and_then(|c| super::claim::refusal(entry, c)) {
        let (problem, fix) = why
            .split_once(" Fix: ")
            .map(|(p, f)| (p.to_owned(), f.to_owned()))
            .unwrap_or((why.clone(), "see the message".into()));
        add("target", target, Severity::Error, problem, fix);
    } else if claim.is_none()
        && t_exists_dir
        && !entry.plan.replace_target
        && let Some(why) = foreign_content_refusal(entry).await?
    {
        let (problem, fix) = why
            .split_once(" Fix: ")
            .map(|(p, f)| (p.to_owned(), f.to_owned()))
            .unwrap_or((why.clone(), String::new()));
        add("target", target, Severity::Error, problem, fix);
    }

    // Server to server: the running host must reach the other one by itself.
    let (runner, peer) = entry.runner_and_peer();
    let (runner_side, peer_side) = match entry.plan.runs_on {
        FilesRunsOn::Target => ("target", "source"),
        FilesRunsOn::Source => ("source", "target"),
    };
    let mut hop: Vec<String> = vec!["ssh".into()];
    hop.extend(ssh_options(peer));
    hop.push(peer.ssh.clone());
    hop.push("--".into());
    hop.push(remote_command(&["rsync".into(), "--version".into()]));
    let hop: Vec<&str> = hop.iter().map(String::as_str).collect();
    let out = on_host(runner, &hop, CHECK_TIMEOUT).await?;
    if !out.ok() {
        add(
            runner_side,
            runner,
            Severity::Error,
            format!(
                "the {runner_side} host runs rsync (`runs_on = \"{runner_side}\"`) but cannot reach the {peer_side} host `{}` over ssh by itself: {}",
                peer.ssh,
                tail(&out.stderr, 2)
            ),
            format!(
                "give the {runner_side} host's ssh user a key the {peer_side} host accepts (and the [hosts.{peer_side}] ssh_config / identity_file paths on the {runner_side} host), or set `runs_on` to the other host"
            ),
        );
    }

    Ok(Report {
        entry: entry.plan.name.clone(),
        findings,
        rsync_versions: versions,
        source_bytes,
        target_bytes,
        target_available: available,
        target_needed: need,
        clock_skew_seconds: skew,
    })
}

/// Why the first pass must not run onto the target tree: it holds paths the source lacks or
/// files that differ (from a dry run of the pass), which the pass would delete or overwrite.
/// `None` when it holds nothing of the kind (or does not exist).
pub async fn foreign_content_refusal(entry: &Entry) -> Result<Option<String>, FilesError> {
    let dst = entry.plan.target_path.display().to_string();
    if !on_host(&entry.target, &["test", "-d", &dst], CHECK_TIMEOUT)
        .await?
        .ok()
    {
        return Ok(None);
    }
    let (deleted, overwritten) = foreign_content(entry).await?;
    if deleted.is_empty() && overwritten.is_empty() {
        return Ok(None);
    }
    let sample = |v: &[String]| {
        let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(" and {} more", v.len() - 5));
        }
        s
    };
    let mut what = Vec::new();
    if !deleted.is_empty() {
        what.push(format!(
            "{} path(s) the source lacks, which the first pass would delete ({})",
            deleted.len(),
            sample(&deleted)
        ));
    }
    if !overwritten.is_empty() {
        what.push(format!(
            "{} file(s) that differ from the source's, which it would overwrite ({})",
            overwritten.len(),
            sample(&overwritten)
        ));
    }
    Ok(Some(format!(
        "`{dst}` on the target host is not empty and no migration claimed it: it holds {}. Fix: if it may be replaced, set `replace_target = true` on this [[files]] entry; otherwise point `target_path` at an empty or new directory",
        what.join("; ")
    )))
}

/// What the first pass would delete and overwrite on the target, from a dry run of it
/// (`rsync -n -i` with the pass's own flags, server to server as the pass runs).
async fn foreign_content(entry: &Entry) -> Result<(Vec<String>, Vec<String>), FilesError> {
    let mut flags = super::rsync::common_flags(&entry.plan);
    flags.extend(["-n".into(), "-i".into()]);
    let (runner, _) = entry.runner_and_peer();
    let argv = entry.rsync_argv(&flags);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = on_host(runner, &argv, Duration::from_secs(600)).await?;
    let (mut deleted, mut overwritten) = itemized(&out.stdout);
    // SQLite databases travel as backups over whatever the target holds at their path.
    for db in &entry.plan.sqlite {
        let path = entry.plan.target_path.join(db.trim_start_matches('/'));
        let path = path.display().to_string();
        if on_host(&entry.target, &["test", "-e", &path], CHECK_TIMEOUT)
            .await?
            .ok()
        {
            overwritten.push(db.clone());
        }
    }
    deleted.sort();
    overwritten.sort();
    Ok((deleted, overwritten))
}

/// Reads `rsync -i` output: paths it would delete, and existing files it would change.
fn itemized(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut deleted, mut overwritten) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("*deleting") {
            deleted.push(path.trim().to_owned());
        } else if let Some((code, path)) = line.split_once(' ')
            && code.len() == 11
            && (code.starts_with(">f") || code.starts_with("<f"))
            && !code[2..].starts_with('+')
        {
            overwritten.push(path.trim().to_owned());
        }
    }
    (deleted, overwritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itemized_output_names_deletions_and_overwrites_not_new_files() {
        let text = "*deleting   notes/old.txt\n>f+++++++++ new.txt\n>f.st...... app.db\ncd+++++++++ dir/\n.d..t...... ./\n<f..t...... pushed.txt\n";
        let (deleted, overwritten) = itemized(text);
        assert_eq!(deleted, ["notes/old.txt"]);
        assert_eq!(overwritten, ["app.db", "pushed.txt"]);
    }

    #[test]
    fn space_needed_counts_what_is_there_and_a_margin() {
        assert_eq!(needed(1 << 30, 0), (1 << 30) + (1 << 30) / 10);
        assert_eq!(needed(1000, 0), 1000 + MIN_MARGIN_BYTES);
        assert_eq!(needed(1000, 5000), MIN_MARGIN_BYTES);
    }

    #[test]
    fn clock_offset_takes_the_middle_of_the_round_trip() {
        let before = UNIX_EPOCH + Duration::from_secs(100);
        let after = UNIX_EPOCH + Duration::from_secs(102);
        assert!((offset(before, 103.5, after) - 2.5).abs() < 1e-9);
        assert!((offset(before, 101.0, after)).abs() < 1e-9);
    }

    #[test]
    fn df_and_du_output_are_read() {
        let df =
            "Filesystem 1B-blocks Used Available Capacity Mounted on\n/dev/vda 270 100 170 38% /\n";
        assert_eq!(df_column(df, 3), Some(170));
        assert_eq!(first_number("4096\t/srv/app\n"), Some(4096));
    }
}
