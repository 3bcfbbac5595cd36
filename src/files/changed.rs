//! The final pass's copy of the paths the change log recorded: the lists rsync reads
//! (`--files-from`, NUL-separated), the directories whose times the copies moved, and runs
//! side by side that never share a directory.

use std::path::Path;

use super::changelog::{self, Changes};
use super::rsync::Figures;
use super::sync::{NO_DELETE, PassKind, PassReport, add, pass, rsync_pass, sqlite_copies};
use super::{Entry, FilesError};

/// NUL-separated list for `--files-from=- --from0`.
pub(super) fn nul_list<'a>(paths: impl Iterator<Item = &'a String>) -> Vec<u8> {
    let mut list = Vec::new();
    for path in paths {
        list.extend_from_slice(path.as_bytes());
        list.push(0);
    }
    list
}

/// Every directory above `paths` (relative, not the root itself).
pub(super) fn parent_dirs(
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

/// One rsync run over the paths in `list` (`--files-from=- --from0` plus `flags`), its
/// figures and warnings added to the pass's.
pub(super) async fn files_from(
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
pub(super) async fn dir_metadata(
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
pub(super) fn by_parent(paths: Vec<&String>, runs: usize, min: usize) -> Vec<Vec<&String>> {
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
pub(super) async fn copy(
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

#[cfg(test)]
mod tests {
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
}
