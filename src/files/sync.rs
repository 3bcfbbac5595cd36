//! A pass over one tree, and the check that both trees are the same.
//!
//! A warm pass runs while the service still writes (files vanishing mid-walk are expected);
//! a full pass runs in the window once the service on the source is stopped. Verify asks rsync
//! itself, dry-run with `--checksum --itemize-changes`: any line it would act on is a
//! difference.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::remote::ssh_argv;
use super::rsync::{self, Figures};
use super::{Entry, FilesError, tail};

/// Longest a pass may run.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Which pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassKind {
    /// While the service runs; may repeat.
    Warm,
    /// Inside the window, the service on the source stopped: the tree must not change.
    Final,
}

/// What a pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// The `[[files]]` entry.
    pub entry: String,
    /// Which pass.
    pub kind: PassKind,
    /// Files and bytes, from rsync's statistics.
    pub figures: Figures,
    /// Wall time.
    pub seconds: f64,
    /// How the final pass chose its files: `full` walks the whole tree.
    pub method: &'static str,
    /// rsync's warnings that did not fail the pass (vanished files during a warm pass).
    pub warnings: Vec<String>,
}

/// Runs `argv` on the running host, feeding `--info=progress2` updates to `progress`, and
/// returns (exit code, all output, stderr).
async fn stream(
    argv: Vec<String>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(Option<i32>, String, String), FilesError> {
    let (program, args) = argv.split_first().expect("ssh argv");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| FilesError::Spawn(format!("{program}: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut all = String::new();
    let mut pending = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdout
            .read(&mut buf)
            .await
            .map_err(|e| FilesError::Spawn(format!("reading rsync's output: {e}")))?;
        if n == 0 {
            break;
        }
        let chunk = String::from_utf8_lossy(&buf[..n]);
        all.push_str(&chunk);
        pending.push_str(&chunk);
        // progress2 rewrites one line with `\r`; statistics end lines with `\n`.
        while let Some(at) = pending.find(['\r', '\n']) {
            let line: String = pending.drain(..=at).collect();
            if let Some((bytes, percent)) = rsync::parse_progress(&line) {
                progress(bytes, percent);
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| FilesError::Spawn(format!("rsync: {e}")))?;
    Ok((status.code(), all, errors.await.unwrap_or_default()))
}

/// One pass of `entry`, the whole tree.
pub async fn pass(
    entry: &Entry,
    kind: PassKind,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    let mut flags = rsync::common_flags(&entry.plan);
    flags.extend(["--info=progress2".into(), "--stats".into()]);
    let argv = rsync::argv(&entry.plan, &entry.source, &entry.target, &flags);
    let (runner, _) = entry.runner_and_peer();
    let started = Instant::now();
    let run = stream(ssh_argv(runner, &argv), progress);
    let (code, out, err) = tokio::time::timeout(PASS_TIMEOUT, run)
        .await
        .map_err(|_| FilesError::Timeout {
            what: format!("the rsync pass of {}", entry.plan.name),
            after: PASS_TIMEOUT,
        })??;
    let meaning = rsync::exit_meaning(code.unwrap_or(-1), kind == PassKind::Warm);
    if !meaning.acceptable {
        return Err(FilesError::Rsync {
            entry: entry.plan.name.clone(),
            code: meaning.code,
            text: meaning.text,
            stderr: tail(&err, 8),
        });
    }
    let mut warnings = Vec::new();
    if meaning.code != 0 {
        warnings.push(meaning.text);
    }
    Ok(PassReport {
        entry: entry.plan.name.clone(),
        kind,
        figures: rsync::parse_stats(&out),
        seconds: started.elapsed().as_secs_f64(),
        method: "full",
        warnings,
    })
}

/// Paths that differ between the two trees, as rsync itemizes them (content by checksum,
/// metadata, files only on one side).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The `[[files]]` entry.
    pub entry: String,
    /// `itemize-changes` lines: what rsync would change on the target, and where.
    pub differences: Vec<String>,
}

impl VerifyReport {
    /// Both trees are the same.
    pub fn matches(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Whether `line` is one of rsync's `--itemize-changes` lines (`>f.st......`, `*deleting`).
fn itemized(line: &str) -> bool {
    let bytes = line.as_bytes();
    line.starts_with("*deleting")
        || (bytes.len() > 12
            && b"<>ch.*".contains(&bytes[0])
            && b"fdLDS".contains(&bytes[1])
            && bytes[11] == b' ')
}

/// Compares both trees by checksum without changing anything.
pub async fn verify(entry: &Entry) -> Result<VerifyReport, FilesError> {
    let mut flags = rsync::common_flags(&entry.plan);
    flags.extend([
        "--dry-run".into(),
        "--checksum".into(),
        "--itemize-changes".into(),
    ]);
    let argv = rsync::argv(&entry.plan, &entry.source, &entry.target, &flags);
    let (runner, _) = entry.runner_and_peer();
    let out = super::remote::run(&ssh_argv(runner, &argv), PASS_TIMEOUT).await?;
    let meaning = rsync::exit_meaning(out.code.unwrap_or(-1), false);
    if !meaning.acceptable {
        return Err(FilesError::Rsync {
            entry: entry.plan.name.clone(),
            code: meaning.code,
            text: meaning.text,
            stderr: tail(&out.stderr, 8),
        });
    }
    Ok(VerifyReport {
        entry: entry.plan.name.clone(),
        differences: out
            .stdout
            .lines()
            .filter(|l| itemized(l))
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::itemized;

    #[test]
    fn itemized_lines_are_told_from_the_rest() {
        assert!(itemized(">f.st...... uploads/a.txt"));
        assert!(itemized("cd+++++++++ new-dir/"));
        assert!(itemized(".f...p..... mode-changed"));
        assert!(itemized("*deleting   gone.txt"));
        assert!(!itemized("sending incremental file list"));
        assert!(!itemized(""));
    }
}
