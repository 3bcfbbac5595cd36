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
    let (runner, _) = entry.runner_and_peer();
    let mut hop = entry.hop.clone();
    let (code, out, err) = loop {
        let argv = rsync::argv(
            &entry.plan,
            &entry.source,
            &entry.target,
            &flags,
            hop.as_deref(),
        );
        let run = stream(ssh_argv(runner, &argv), input.clone(), progress);
        let (code, out, err) = tokio::time::timeout(PASS_TIMEOUT, run)
            .await
            .map_err(|_| FilesError::Timeout {
                what: format!("the rsync pass of {}", entry.plan.name),
                after: PASS_TIMEOUT,
            })??;
        // The shared connection's directory is gone: once more with a connection of its own.
        if hop.is_some() && super::hop::lost(code, &err) {
            tracing::warn!(entry = %entry.plan.name, "the shared ssh connection on the running host is gone; this pass opens its own");
            hop = None;
            continue;
        }
        break (code, out, err);
    };
    let meaning = rsync::exit_meaning(code.unwrap_or(-1), kind == PassKind::Warm, &err);
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
    // A final pass over the whole tree has only rsync's quick check to find what changed, and
    // by default it compares times to the second: a file rewritten at the same size within
    // the second of its warm copy would stay behind. Nanoseconds narrow that to one tick of
    // the kernel's file clock (an rsync older than 3.1.3 on the target never finds times equal
    // and sends every file: slower, never wrong).
    let extra: &[&str] = match kind {
        PassKind::Final => &["--modify-window=-1"],
        PassKind::Warm => &[],
    };
    let (mut figures, mut warnings) = rsync_pass(entry, kind, extra, None, progress).await?;
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
    // Before anything starts: the target tree must be this migration's to copy onto.
    super::claim::take(entry).await?;
    let (watch, hop) = tokio::join!(
        async {
            match entry.plan.change_log {
                true => changelog::start(entry, state_dir).await.map(Some),
                false => Ok(None),
            }
        },
        super::hop::open(entry, state_dir)
    );
    let mut watch = watch?;
    let entry = &Entry {
        hop: hop?,
        ..entry.clone()
    };
    let report = pass(entry, PassKind::Warm, progress).await?;
    if let Some(watch) = &mut watch {
        changelog::count_pass(state_dir, &entry.plan.name, watch)?;
    }
    Ok(report)
}

/// Opens, or keeps open, the ssh connections the final pass will use, so that the window does
/// not pay for a handshake: this machine's to both hosts, and the running host's to the other
/// one (through the entry's shared connection, see [`super::hop`]). Run just before the
/// window opens; a failure here only costs the final pass its handshakes (it is logged).
pub async fn ready(entry: &Entry) {
    let (runner, peer) = entry.runner_and_peer();
    let mut hop = rsync::peer_ssh(peer, entry.hop.as_deref());
    hop.extend([peer.ssh.clone(), "--".into(), "true".into()]);
    let hop: Vec<&str> = hop.iter().map(String::as_str).collect();
    let (through, direct) = tokio::join!(
        super::remote::on_host(runner, &hop, Duration::from_secs(30)),
        super::remote::on_host(peer, &["true"], Duration::from_secs(30))
    );
    for (what, out) in [
        ("the running host's hop", through),
        ("the other host", direct),
    ] {
        match out {
            Ok(o) if o.ok() => {}
            Ok(o) => {
                tracing::warn!(entry = %entry.plan.name, stderr = %tail(&o.stderr, 2), "could not open {what} ahead of the window")
            }
            Err(e) => {
                tracing::warn!(entry = %entry.plan.name, error = %e, "could not open {what} ahead of the window")
            }
        }
    }
}

/// The final pass: only the logged changes when the change log can be trusted, else the whole
/// tree, saying why. The watcher's work ends once its log is read: it is stopped while the
/// copy runs (a final pass that fails is followed by a full one, or by a new warm pass).
pub async fn final_pass(
    entry: &Entry,
    state_dir: &Path,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    super::claim::check(entry).await?;
    final_pass_then(entry, state_dir, false, progress).await
}

/// The final pass of a run: as [`final_pass`] (without its claim check: the run's warm pass
/// took the claim, and the window pays for no extra trip), but the watcher keeps watching the source tree
/// to the end of the run, with the point the pass read the log up to remembered, so the run
/// can tell whether anything changed there afterwards ([`changelog::after_final`]): the files'
/// counterpart of the databases' proof that the old primary took no write after its fence.
pub async fn final_pass_watching(
    entry: &Entry,
    state_dir: &Path,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    final_pass_then(entry, state_dir, true, progress).await
}

async fn final_pass_then(
    entry: &Entry,
    state_dir: &Path,
    keep_watching: bool,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    let started = Instant::now();
    let mut watch = changelog::load(state_dir, &entry.plan.name)?;
    let changes = match (&mut watch, entry.plan.change_log) {
        (Some(w), _) if keep_watching => {
            let (changes, marker) = changelog::changes_marked(entry, w).await?;
            w.final_marker = marker;
            changelog::save(state_dir, &entry.plan.name, w)?;
            changes
        }
        (Some(w), _) => changelog::changes(entry, w).await?,
        (None, true) => Changes::Untrusted {
            reason: "no change log is running: no warm pass with `change_log` set ran since the last final pass".into(),
        },
        (None, false) => Changes::Untrusted {
            reason: String::new(),
        },
    };
    let stop = async {
        match &watch {
            Some(w) if !keep_watching => changelog::stop(entry, state_dir, w).await,
            _ => Ok(()),
        }
    };
    let (report, stopped) = tokio::join!(copy(entry, changes, progress), stop);
    let mut report = report?;
    stopped?;
    if keep_watching && let Some(w) = &mut watch {
        for db in &entry.plan.sqlite {
            let print = super::sqlite::fingerprint(entry, db).await?;
            w.sqlite_after_final.insert(db.clone(), print);
        }
        changelog::save(state_dir, &entry.plan.name, w)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Most rsync runs the paths of a final pass are split into. A run walks its list one file
/// at a time, waiting on each file's reads and writes on both hosts; a few runs side by side
/// keep the disks and both cores busy (measured here on 1,000 changed files: 0.31 s in one
/// run, 0.15 s in four; 0.70 s and 0.48 s with a cold cache; eight were slower than four).
const PARALLEL_RUNS: usize = 4;
/// Fewest paths that make another run worth its start (an ssh session and two rsyncs).
const PATHS_PER_RUN: usize = 100;

/// Splits `paths` into at most `runs` lists of at least `min` paths (when there are that many),
/// keeping every path with its siblings: a directory's direct entries change its time, which
/// the run that changes them sets again afterwards, so no two runs change one directory. A
/// listed directory keeps the listed paths under it too (a directory deleted with its entries
/// is deleted by one run).
fn by_parent(paths: Vec<&String>, runs: usize, min: usize) -> Vec<Vec<&String>> {
    let listed: std::collections::HashSet<&str> = paths.iter().map(|p| p.as_str()).collect();
    let parent = |p: &'_ str| -> String {
        // The parent of the highest listed directory above `p` (or of `p` itself).
        let top = Path::new(p)
            .ancestors()
            .filter(|a| listed.contains(a.to_str().unwrap_or_default()))
            .last()
            .and_then(|a| a.to_str())
            .unwrap_or(p);
        top.rsplit_once('/')
            .map_or(String::new(), |(dir, _)| dir.to_owned())
    };
    let mut groups: std::collections::BTreeMap<String, Vec<&String>> = Default::default();
    for path in paths {
        groups.entry(parent(path)).or_default().push(path);
    }
    let total: usize = groups.values().map(Vec::len).sum();
    let n = runs.min(total.div_ceil(min.max(1))).max(1);
    let mut lists: Vec<Vec<&String>> = vec![Vec::new(); n];
    // Largest groups first, each into the shortest list.
    let mut groups: Vec<Vec<&String>> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    for group in groups {
        let shortest = lists
            .iter_mut()
            .min_by_key(|l| l.len())
            .expect("at least one list");
        shortest.extend(group);
    }
    lists.retain(|l| !l.is_empty());
    lists
}

/// The progress of runs side by side, reported as one: bytes added up, the percentages
/// averaged.
struct Progress<'a> {
    parts: Vec<(u64, u8)>,
    report: &'a mut (dyn FnMut(u64, u8) + Send),
}

impl Progress<'_> {
    fn update(&mut self, run: usize, bytes: u64, percent: u8) {
        if let Some(part) = self.parts.get_mut(run) {
            *part = (bytes, percent);
        }
        let bytes = self.parts.iter().map(|p| p.0).sum();
        let percent =
            self.parts.iter().map(|p| u64::from(p.1)).sum::<u64>() / self.parts.len().max(1) as u64;
        (self.report)(bytes, percent as u8);
    }
}

/// Every logged file is sent, whatever its size and time: rsync's quick check compares times
/// to the second, so a file rewritten at the same size within the second its warm copy was
/// taken would look unchanged and be left behind. The log says it changed.
const IGNORE_TIMES: &str = "--ignore-times";

/// Flags of the run over files rewritten in place on the source: written in place on the
/// target too. Without a temporary file and a rename, a changed file costs one write instead
/// of a new file, a rename over the old one and (on ext4) the flush a rename over a file
/// triggers: the final pass of the benchmark went from 0.22 s to 0.13 s.
const IN_PLACE: &str = "--inplace";

/// rsync options that cannot go with `--inplace` (rsync refuses the combination).
const NOT_WITH_IN_PLACE: [&str; 3] = ["--partial-dir", "--delay-updates", "--backup-dir"];

/// `lists` sent side by side, each with `flags`; figures added up, progress reported as one.
async fn side_by_side(
    entry: &Entry,
    flags: &[&str],
    lists: Vec<Vec<&String>>,
    figures: &mut Figures,
    warnings: &mut Vec<String>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(), FilesError> {
    let shared = std::sync::Mutex::new(Progress {
        parts: vec![(0, 0); lists.len()],
        report: progress,
    });
    let runs = lists.into_iter().enumerate().map(|(i, list)| {
        let shared = &shared;
        async move {
            let mut figures = Figures::default();
            let mut warnings = Vec::new();
            let mut progress = |bytes, percent| {
                if let Ok(mut p) = shared.lock() {
                    p.update(i, bytes, percent);
                }
            };
            let bytes = nul_list(list.into_iter());
            let sent = files_from(
                entry,
                flags,
                bytes.clone(),
                &mut figures,
                &mut warnings,
                &mut progress,
            )
            .await;
            match sent {
                // A file the running user may not write to (not root, a read-only file)
                // cannot be rewritten in place: the same run again, the usual way.
                Err(FilesError::Rsync { code: 23, .. }) if flags.contains(&IN_PLACE) => {
                    let usual: Vec<&str> =
                        flags.iter().copied().filter(|f| *f != IN_PLACE).collect();
                    figures = Figures::default();
                    warnings.clear();
                    files_from(
                        entry,
                        &usual,
                        bytes,
                        &mut figures,
                        &mut warnings,
                        &mut progress,
                    )
                    .await?;
                }
                other => other?,
            }
            Ok::<_, FilesError>((figures, warnings))
        }
    });
    let mut sum = Figures::default();
    for (f, w) in futures::future::try_join_all(runs).await? {
        sum.files += f.files;
        sum.files_transferred += f.files_transferred;
        sum.total_bytes += f.total_bytes;
        sum.transferred_bytes += f.transferred_bytes;
        sum.wire_bytes += f.wire_bytes;
        warnings.extend(w);
    }
    add(figures, &sum);
    Ok(())
}

/// Sends the logged `paths` (`true`: a directory to send whole).
///
/// rsync sends the directories above each listed path along with it (`--relative`'s implied
/// directories, with their own metadata, set again after their entries changed), so parents
/// whose entries came and went need no listing. (The root is no such directory: see
/// [`copy`].)
///
/// Three steps, one after the other: (1) names that came, went or were renamed, and
/// directories as themselves; (2) directories created or moved in, whole (`-r`), apart so that
/// a directory listed as itself (a chmod) is not walked; (3) files only rewritten in place on
/// the source (`rewritten`), in place on the target. A file's inode on the target may still be
/// shared with a name the source has since replaced or removed; such a name is in the log, is
/// never written in place, and is sent again whatever its size and time, so after (1) the
/// write in place reaches only the names that share the file on the source too (a test
/// breaks this on purpose). Each step sets again the times of the directories it changed.
async fn copy_paths(
    entry: &Entry,
    paths: &std::collections::BTreeMap<String, bool>,
    rewritten: &std::collections::BTreeSet<String>,
    metadata_only: &std::collections::BTreeSet<String>,
    figures: &mut Figures,
    warnings: &mut Vec<String>,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<(), FilesError> {
    let in_place = !entry
        .plan
        .rsync_args
        .iter()
        .any(|a| NOT_WITH_IN_PLACE.iter().any(|n| a.starts_with(n)));
    let whole: Vec<&String> = paths.iter().filter(|(_, w)| **w).map(|(p, _)| p).collect();
    let (later, single): (Vec<&String>, Vec<&String>) = paths
        .iter()
        .filter(|(_, w)| !**w)
        .map(|(p, _)| p)
        .partition(|p| (in_place && rewritten.contains(*p)) || metadata_only.contains(*p));
    if !single.is_empty() {
        side_by_side(
            entry,
            &[NO_DELETE, IGNORE_TIMES, "--delete-missing-args", "--force"],
            by_parent(single, PARALLEL_RUNS, PATHS_PER_RUN),
            figures,
            warnings,
            progress,
        )
        .await?;
    }
    if !whole.is_empty() {
        files_from(
            entry,
            &["-r", IGNORE_TIMES, "--delete-missing-args", "--force"],
            nul_list(whole.into_iter()),
            figures,
            warnings,
            progress,
        )
        .await?;
    }
    // Files whose metadata alone changed are not sent again (`--ignore-times` would read and
    // compare their whole content on both hosts): rsync sets what differs. No data, no new
    // files, no directory times moved, so that run goes beside the in-place one.
    let (attrs, later): (Vec<&String>, Vec<&String>) =
        later.into_iter().partition(|p| metadata_only.contains(*p));
    let mut attr_figures = Figures::default();
    let mut attr_warnings = Vec::new();
    let (written, attributes) = tokio::join!(
        async {
            if later.is_empty() {
                return Ok(());
            }
            side_by_side(
                entry,
                &[
                    NO_DELETE,
                    IGNORE_TIMES,
                    "--delete-missing-args",
                    "--force",
                    IN_PLACE,
                ],
                by_parent(later, PARALLEL_RUNS, PATHS_PER_RUN),
                figures,
                warnings,
                progress,
            )
            .await
        },
        async {
            if attrs.is_empty() {
                return Ok(());
            }
            files_from(
                entry,
                &[NO_DELETE, "--delete-missing-args", "--force"],
                nul_list(attrs.into_iter()),
                &mut attr_figures,
                &mut attr_warnings,
                &mut |_, _| {},
            )
            .await
        }
    );
    written?;
    attributes?;
    add(figures, &attr_figures);
    warnings.extend(attr_warnings);
    Ok(())
}

/// The copy of a final pass: the logged paths, or the whole tree.
async fn copy(
    entry: &Entry,
    changes: Changes,
    progress: &mut (dyn FnMut(u64, u8) + Send),
) -> Result<PassReport, FilesError> {
    let (mut paths, root, rewritten) = match changes {
        Changes::Trusted {
            paths,
            root,
            rewritten,
            metadata_only,
        } => (paths, root, (rewritten, metadata_only)),
        Changes::Untrusted { reason } => {
            let mut r = pass(entry, PassKind::Final, progress).await?;
            if !reason.is_empty() {
                r.warnings
                    .push(format!("the final pass walked the whole tree: {reason}"));
                r.fallback = Some(reason);
            }
            return Ok(r);
        }
    };
    // SQLite databases and their companions travel as online backups, never by name: rsync
    // refuses a listed name its own filter excludes.
    paths.retain(|path, _| {
        !entry.plan.sqlite.iter().any(|db| {
            path == db
                || crate::files::sqlite::COMPANIONS
                    .iter()
                    .any(|c| *path == format!("{db}{c}"))
        })
    });
    let mut figures = Figures::default();
    let mut warnings = Vec::new();
    // A changed file with other hard links changed them too, under names the log never saw.
    // They are looked up on the source while the copy runs; if there are any, one more run
    // sends them with the file they share, so `-H` links them again on the target.
    let (siblings, copied) = tokio::join!(
        changelog::hard_link_siblings(entry, &paths),
        copy_paths(
            entry,
            &paths,
            &rewritten.0,
            &rewritten.1,
            &mut figures,
            &mut warnings,
            progress
        )
    );
    let (linked, siblings) = siblings?;
    copied?;
    if !siblings.is_empty() {
        let list: std::collections::BTreeSet<&String> = linked.iter().chain(&siblings).collect();
        files_from(
            entry,
            &[NO_DELETE, IGNORE_TIMES],
            nul_list(list.into_iter()),
            &mut figures,
            &mut warnings,
            progress,
        )
        .await?;
    }
    // The root is no implied directory: its own metadata goes last, listed as `.` (which,
    // without `-r`, brings its entries one level deep for a quick check), when its entries
    // came and went or one of them was sent.
    if root || paths.keys().chain(&siblings).any(|p| !p.contains('/')) {
        files_from(
            entry,
            &[NO_DELETE],
            nul_list(std::iter::once(&".".to_owned())),
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
    Ok(PassReport {
        entry: entry.plan.name.clone(),
        kind: PassKind::Final,
        figures,
        seconds: 0.0,
        method: "change-log",
        changed_paths: Some(paths.len() + siblings.len()),
        fallback: None,
        sqlite,
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
    let (runner, _) = entry.runner_and_peer();
    let mut out =
        super::remote::run(&ssh_argv(runner, &entry.rsync_argv(&flags)), PASS_TIMEOUT).await?;
    if entry.hop.is_some() && super::hop::lost(out.code, &out.stderr) {
        let own = Entry {
            hop: None,
            ..entry.clone()
        };
        out = super::remote::run(&ssh_argv(runner, &own.rsync_argv(&flags)), PASS_TIMEOUT).await?;
    }
    let meaning = rsync::exit_meaning(out.code.unwrap_or(-1), false, &out.stderr);
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
    fn runs_side_by_side_never_share_a_directory() {
        let paths: Vec<String> = (0..1000)
            .map(|i| format!("d{:02}/f{i}.txt", i % 40))
            .chain([".".to_owned(), "top.txt".to_owned()])
            .collect();
        let lists = super::by_parent(paths.iter().collect(), 4, 100);
        assert_eq!(lists.len(), 4);
        assert_eq!(lists.iter().map(Vec::len).sum::<usize>(), paths.len());
        let parent = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        for (i, a) in lists.iter().enumerate() {
            for b in &lists[i + 1..] {
                assert!(a.iter().all(|p| !b.iter().any(|q| parent(p) == parent(q))));
            }
        }
        // A listed directory keeps what is listed under it.
        let nested: Vec<String> = ["a/b", "a/b/x", "a/b/c/y"]
            .into_iter()
            .map(str::to_owned)
            .chain((0..300).map(|i| format!("z{i}/f")))
            .collect();
        let split = super::by_parent(nested.iter().collect(), 4, 100);
        let with_dir = split
            .iter()
            .find(|l| l.iter().any(|p| *p == "a/b"))
            .unwrap();
        assert!(with_dir.iter().any(|p| *p == "a/b/x") && with_dir.iter().any(|p| *p == "a/b/c/y"));
        // `.` stays with the root's own entries; a few paths make one run.
        let with_dot = lists.iter().find(|l| l.iter().any(|p| *p == ".")).unwrap();
        assert!(with_dot.iter().any(|p| *p == "top.txt"));
        assert_eq!(
            super::by_parent(paths[..50].iter().collect(), 4, 100).len(),
            1
        );
    }

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
