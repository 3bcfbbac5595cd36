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

use std::path::Path;

use super::changelog::{self, Changes};
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
    /// How the pass chose its files: `full` walks the whole tree, `change-log` sends only the
    /// paths the change log recorded.
    pub method: &'static str,
    /// Paths the change log listed (with `change-log`).
    pub changed_paths: Option<usize>,
    /// Why a final pass with a change log configured walked the whole tree instead.
    pub fallback: Option<String>,
    /// SQLite databases copied as online backups (integrity-checked in the final pass).
    pub sqlite: Vec<String>,
    /// rsync's warnings that did not fail the pass (vanished files during a warm pass).
    pub warnings: Vec<String>,
}

/// Runs `argv` on the running host, feeding `--info=progress2` updates to `progress`, and
/// returns (exit code, all output, stderr).
async fn stream(
    argv: Vec<String>,
    input: Option<Vec<u8>>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(Option<i32>, String, String), FilesError> {
    let (program, args) = argv.split_first().expect("ssh argv");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| FilesError::Spawn(format!("{program}: {e}")))?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // ssh hands this to rsync on the running host (`--files-from=-`).
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        });
    }
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

/// Runs rsync for `entry` with `extra` flags (and `input` on its stdin).
async fn rsync_pass(
    entry: &Entry,
    kind: PassKind,
    extra: &[&str],
    input: Option<Vec<u8>>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(Figures, Vec<String>), FilesError> {
    let mut flags = rsync::common_flags(&entry.plan);
    if extra.contains(&NO_DELETE) {
        flags.retain(|f| f != "--delete");
    }
    flags.extend(
        extra
            .iter()
            .filter(|f| **f != NO_DELETE)
            .map(|f| f.to_string()),
    );
    flags.extend(["--info=progress2".into(), "--stats".into()]);
    let argv = rsync::argv(&entry.plan, &entry.source, &entry.target, &flags);
    let (runner, _) = entry.runner_and_peer();
    let run = stream(ssh_argv(runner, &argv), input, progress);
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
    let warnings = if meaning.code != 0 {
        vec![meaning.text]
    } else {
        Vec::new()
    };
    Ok((rsync::parse_stats(&out), warnings))
}

/// Marker in `extra`: leave `--delete` out (passes that do not recurse).
const NO_DELETE: &str = "<no --delete>";

/// NUL-separated list for `--files-from=- --from0`.
fn nul_list<'a>(paths: impl Iterator<Item = &'a String>) -> Vec<u8> {
    let mut list = Vec::new();
    for path in paths {
        list.extend_from_slice(path.as_bytes());
        list.push(0);
    }
    list
}

/// Every directory above `paths` (relative, not the root itself).
fn parent_dirs(
    paths: &std::collections::BTreeMap<String, bool>,
) -> std::collections::BTreeSet<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for path in paths.keys() {
        let mut p = Path::new(path).parent();
        while let Some(dir) = p {
            if dir.as_os_str().is_empty() {
                break;
            }
            dirs.insert(dir.display().to_string());
            p = dir.parent();
        }
    }
    dirs
}

fn add(total: &mut Figures, more: &Figures) {
    total.files = total.files.max(more.files);
    total.files_transferred += more.files_transferred;
    total.total_bytes = total.total_bytes.max(more.total_bytes);
    total.transferred_bytes += more.transferred_bytes;
    total.wire_bytes += more.wire_bytes;
}

/// One rsync run over the paths in `list` (`--files-from=- --from0` plus `flags`), its
/// figures and warnings added to the pass's.
async fn files_from(
    entry: &Entry,
    flags: &[&str],
    list: Vec<u8>,
    figures: &mut Figures,
    warnings: &mut Vec<String>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(), FilesError> {
    let mut all = vec!["--files-from=-", "--from0"];
    all.extend_from_slice(flags);
    let (f, w) = rsync_pass(entry, PassKind::Final, &all, Some(list), progress).await?;
    add(figures, &f);
    warnings.extend(w);
    Ok(())
}

/// Sets the metadata (times, modes) of `dirs` (relative) and, with `root`, of the tree's root
/// on the target from the source, without touching their contents: entries that came and went
/// moved their times.
async fn dir_metadata(
    entry: &Entry,
    dirs: &std::collections::BTreeSet<String>,
    root: bool,
    figures: &mut Figures,
    warnings: &mut Vec<String>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(), FilesError> {
    // Listed without `-r`, a directory is sent as itself; `.` (the root) also brings the
    // root's own entries along one level deep, which the quick check finds unchanged.
    let mut list: Vec<String> = dirs.iter().cloned().collect();
    if root {
        list.insert(0, ".".into());
    }
    if list.is_empty() {
        return Ok(());
    }
    files_from(
        entry,
        &[NO_DELETE, "--ignore-missing-args"],
        nul_list(list.iter()),
        figures,
        warnings,
        progress,
    )
    .await
}

/// Copies the entry's SQLite databases as online backups, then restores the metadata of the
/// directories that hold them.
async fn sqlite_copies(
    entry: &Entry,
    kind: PassKind,
    figures: &mut Figures,
    warnings: &mut Vec<String>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<Vec<String>, FilesError> {
    let copied = super::sqlite::copy(entry, kind == PassKind::Final).await?;
    if !copied.is_empty() {
        let dbs: std::collections::BTreeMap<String, bool> = copied
            .iter()
            .map(|db| (db.trim_start_matches('/').to_owned(), false))
            .collect();
        let root = dbs.keys().any(|db| !db.contains('/'));
        dir_metadata(entry, &parent_dirs(&dbs), root, figures, warnings, progress).await?;
    }
    Ok(copied)
}

/// One pass of `entry` over the whole tree, with no change log involved.
pub async fn pass(
    entry: &Entry,
    kind: PassKind,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    let started = Instant::now();
    let (mut figures, mut warnings) = rsync_pass(entry, kind, &[], None, progress).await?;
    let sqlite = sqlite_copies(entry, kind, &mut figures, &mut warnings, progress).await?;
    Ok(PassReport {
        entry: entry.plan.name.clone(),
        kind,
        figures,
        seconds: started.elapsed().as_secs_f64(),
        method: "full",
        changed_paths: None,
        fallback: None,
        sqlite,
        warnings,
    })
}

/// A warm pass; with `change_log` set, the watcher on the source is started first (once), so
/// every change from the start of this pass on is logged.
pub async fn warm(
    entry: &Entry,
    state_dir: &Path,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    let mut watch = if entry.plan.change_log {
        Some(changelog::start(entry, state_dir).await?)
    } else {
        None
    };
    let report = pass(entry, PassKind::Warm, progress).await?;
    if let Some(watch) = &mut watch {
        changelog::count_pass(state_dir, &entry.plan.name, watch)?;
    }
    Ok(report)
}

/// The final pass: only the logged changes when the change log can be trusted, else the whole
/// tree, saying why. The watcher is stopped afterwards.
pub async fn final_pass(
    entry: &Entry,
    state_dir: &Path,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    let watch = changelog::load(state_dir, &entry.plan.name)?;
    let changes = match (&watch, entry.plan.change_log) {
        (Some(w), _) => changelog::changes(entry, w).await?,
        (None, true) => Changes::Untrusted {
            reason: "no change log was started: no warm pass ran with `change_log` set".into(),
        },
        (None, false) => Changes::Untrusted {
            reason: String::new(),
        },
    };
    let started = Instant::now();
    let mut report = match changes {
        Changes::Trusted { mut paths } => {
            // SQLite databases and their companions travel as online backups, never by name:
            // rsync refuses a listed name its own filter excludes.
            paths.retain(|path, _| {
                !entry.plan.sqlite.iter().any(|db| {
                    path == db
                        || crate::files::sqlite::COMPANIONS
                            .iter()
                            .any(|c| *path == format!("{db}{c}"))
                })
            });
            // A changed file with other hard links changed them too, under names the log
            // never saw: they travel together or `-H` would split them on the target.
            for sibling in changelog::hard_link_siblings(entry, &paths).await? {
                paths.entry(sibling).or_insert(false);
            }
            let mut figures = Figures::default();
            let mut warnings = Vec::new();
            if paths.values().any(|whole| *whole) {
                // New or moved-in directories: they are sent whole (`-r`), then the parents'
                // and the root's own metadata in a second pass that does not recurse.
                files_from(
                    entry,
                    &["-r", "--delete-missing-args", "--force"],
                    nul_list(paths.keys()),
                    &mut figures,
                    &mut warnings,
                    progress,
                )
                .await?;
                dir_metadata(
                    entry,
                    &parent_dirs(&paths),
                    true,
                    &mut figures,
                    &mut warnings,
                    progress,
                )
                .await?;
            } else if !paths.is_empty() {
                // Only files and directories' own entries: one pass, no recursion. The changed
                // paths, then their parent directories and the root as themselves (their times
                // moved when entries came and went); vanished paths deleted on the target.
                let mut list: Vec<String> = vec![".".into()];
                list.extend(parent_dirs(&paths));
                list.extend(paths.keys().cloned());
                files_from(
                    entry,
                    &[NO_DELETE, "--delete-missing-args", "--force"],
                    nul_list(list.iter()),
                    &mut figures,
                    &mut warnings,
                    progress,
                )
                .await?;
            }
            let sqlite = sqlite_copies(
                entry,
                PassKind::Final,
                &mut figures,
                &mut warnings,
                progress,
            )
            .await?;
            PassReport {
                entry: entry.plan.name.clone(),
                kind: PassKind::Final,
                figures,
                seconds: 0.0,
                method: "change-log",
                changed_paths: Some(paths.len()),
                fallback: None,
                sqlite,
                warnings,
            }
        }
        Changes::Untrusted { reason } => {
            let mut r = pass(entry, PassKind::Final, progress).await?;
            if !reason.is_empty() {
                r.warnings
                    .push(format!("the final pass walked the whole tree: {reason}"));
                r.fallback = Some(reason);
            }
            r
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    if let Some(w) = &watch {
        changelog::stop(entry, state_dir, w).await?;
    }
    Ok(report)
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
    let mut differences: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| itemized(l))
        .map(str::to_owned)
        .collect();
    differences.extend(super::sqlite::differences(entry).await?);
    Ok(VerifyReport {
        entry: entry.plan.name.clone(),
        differences,
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
