//! The change log: what changed in the source tree since the first warm pass, so the final pass
//! copies those paths instead of walking the whole tree inside the window.
//!
//! An `inotifywait` daemon on the source host (`-d`, its own process there, so it outlives the
//! command that started it) writes one line per event to a file outside the tree. It starts
//! *before* the first warm pass, so anything that changes while a pass walks the tree is in the
//! log. The log is only trusted when nothing can have been missed: the daemon is still alive,
//! the kernel's queue never overflowed (`Q_OVERFLOW`), the watched root was never removed
//! (`IGNORED` on it), and a warm pass ran after the daemon started. Otherwise the final pass
//! walks the whole tree and the report says why.
//!
//! Reading the log right after the service stopped could race the watcher: the last writes'
//! events may still sit in the kernel's queue or in inotifywait. So the final pass first
//! creates a marker file in a directory the same watcher watches (beside the log, outside the
//! tree) and reads the log until the marker's event is in it: events of one inotify instance
//! come out in order, so every change made before the marker is in the log by then.
//!
//! The final pass feeds the changed paths to `rsync --files-from`, which neither recurses nor
//! deletes by itself: directories created or moved in are listed and sent recursively (`-r`),
//! paths that are gone are deleted on the target (`--delete-missing-args`), and entries under a
//! directory sent whole or gone are dropped (it carries them, or they went with it); a
//! directory listed for any other reason (a chmod) keeps its changed entries listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::remote::on_host;
use super::{Entry, FilesError, tail};

/// Events that change what a copy must hold.
pub const EVENTS: &str = "modify,attrib,close_write,create,delete,moved_from,moved_to";
/// Bound on each watcher command.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final pass waits for the watcher to log its marker.
const MARKER_WAIT: Duration = Duration::from_secs(5);

/// What cutover remembers about a running watcher (in the state directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Watch {
    /// The log file on the source host.
    pub log: String,
    /// The watcher's private directory on the source host (holds the log, and the marker
    /// directory `b/` it also watches). `None` for a watcher started without one.
    #[serde(default)]
    pub sidecar: Option<String>,
    /// The daemon's pid on the source host.
    pub pid: u32,
    /// The watched root, with a trailing slash, as inotifywait prints it.
    pub root: String,
    /// Warm passes run since the watcher started.
    pub passes: u32,
    /// The marker the final pass read the log up to, when the watcher was kept running after
    /// it: every line after that marker's is a change the final pass did not carry.
    #[serde(default)]
    pub final_marker: Option<String>,
    /// Per SQLite database of the tree, its fingerprint right after the final pass copied it
    /// (size and time of the file and its WAL): SQLite's own opening of the file for the backup
    /// raises events, so whether the service wrote it afterwards is read from these instead.
    #[serde(default)]
    pub sqlite_after_final: BTreeMap<String, String>,
}

/// What the source tree did after the final pass (the watcher kept running to the end of the
/// run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "after_final", rename_all = "kebab-case")]
pub enum AfterFinal {
    /// Nothing changed: the target has everything.
    Unchanged,
    /// These paths (relative to the root) changed on the source during or after the final
    /// pass: the target may lack them.
    Changed {
        /// The paths.
        paths: Vec<String>,
    },
    /// It cannot be told.
    Unproven {
        /// Why.
        reason: String,
    },
}

/// The changes since the watcher started, or why they cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "log", rename_all = "kebab-case")]
pub enum Changes {
    /// Every path that changed (relative to the root), `true` for a directory to send whole.
    Trusted {
        /// Changed paths.
        paths: BTreeMap<String, bool>,
        /// The root's own metadata may have changed (an entry came, went or was renamed
        /// directly in it, or the root itself was changed): it must be sent as itself.
        root: bool,
        /// Files among `paths` that were only written to (or had their metadata changed)
        /// under the same name since the log started: the same file, rewritten in place on
        /// the source, never created, removed or renamed.
        rewritten: BTreeSet<String>,
        /// Files among `rewritten` whose content was not written at all (only `ATTRIB`: a
        /// mode, owner, time or extended attribute changed).
        metadata_only: BTreeSet<String>,
    },
    /// The log may have missed changes.
    Untrusted {
        /// Why.
        reason: String,
    },
}

/// Where the state of `entry`'s watcher is kept.
pub fn state_file(state_dir: &Path, entry: &str) -> PathBuf {
    crate::state::StateDir::new(state_dir)
        .files()
        .join(format!("{entry}.watch.json"))
}

/// The watcher's state, if one was started.
pub fn load(state_dir: &Path, entry: &str) -> Result<Option<Watch>, FilesError> {
    let path = state_file(state_dir, entry);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| FilesError::State(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FilesError::State(format!("{}: {e}", path.display()))),
    }
}

/// Writes the watcher's state atomically.
pub fn save(state_dir: &Path, entry: &str, watch: &Watch) -> Result<(), FilesError> {
    let bytes = serde_json::to_vec_pretty(watch).expect("serializable");
    crate::state::write_atomic(&state_file(state_dir, entry), &bytes)
        .map_err(|e| FilesError::State(e.to_string()))
}

fn forget(state_dir: &Path, entry: &str) -> Result<(), FilesError> {
    match std::fs::remove_file(state_file(state_dir, entry)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FilesError::State(e.to_string())),
    }
}

/// Starts the watcher on the source host (unless one runs already) and returns its state.
pub async fn start(entry: &Entry, state_dir: &Path) -> Result<Watch, FilesError> {
    if let Some(watch) = load(state_dir, &entry.plan.name)? {
        return Ok(watch);
    }
    let source = &entry.source;
    let root = super::rsync::dir(&entry.plan.source_path);
    // A private directory (0700, an unguessable name) for the log and the marker directory.
    let made = on_host(
        source,
        &["mktemp", "-d", "/tmp/cutover-watch.XXXXXXXXXX"],
        TIMEOUT,
    )
    .await?;
    let sidecar = made.stdout.trim().to_owned();
    if !made.ok() || !sidecar.starts_with("/tmp/cutover-watch.") {
        return Err(FilesError::Watch(format!(
            "cannot make a directory for the change log under /tmp on the source host: {}",
            tail(&made.stderr, 2)
        )));
    }
    let log = format!("{sidecar}/log");
    let markers = format!("{sidecar}/b");
    // inotifywait's `-o` wants its file to exist.
    let (dir, file) = tokio::join!(
        on_host(source, &["mkdir", "--", &markers], TIMEOUT),
        on_host(source, &["touch", "--", &log], TIMEOUT)
    );
    for created in [dir?, file?] {
        if !created.ok() {
            return Err(FilesError::Watch(format!(
                "cannot create the change log's files in {sidecar} on the source host: {}",
                tail(&created.stderr, 2)
            )));
        }
    }
    let started = on_host(
        source,
        &[
            "inotifywait",
            "-d",
            "-o",
            &log,
            "-r",
            // One record per event, ended by NUL: a name may hold any byte but NUL, a newline
            // included.
            "--no-newline",
            "--format",
            "%e\t%w%f%0",
            "-e",
            EVENTS,
            &root,
            &markers,
        ],
        TIMEOUT,
    )
    .await?;
    if !started.ok() {
        let why = tail(&started.stderr, 3);
        let fix = if why.contains("upper limit") || why.contains("max_user_watches") {
            "raise the watch limit on the source host (sysctl fs.inotify.max_user_watches=524288)"
        } else if started.code == Some(127) {
            "install inotify-tools on the source host"
        } else {
            "see the message; without a change log the final pass walks the whole tree"
        };
        return Err(FilesError::Watch(format!(
            "the change-log watcher did not start on the source host: {why}; fix: {fix}"
        )));
    }
    let pids = on_host(source, &["pgrep", "-f", "--", &log], TIMEOUT).await?;
    let pid = pids
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .next()
        .ok_or_else(|| {
            FilesError::Watch(format!(
                "the change-log watcher for {log} is not running on the source host"
            ))
        })?;
    let watch = Watch {
        log,
        sidecar: Some(sidecar),
        pid,
        root,
        passes: 0,
        final_marker: None,
        sqlite_after_final: BTreeMap::new(),
    };
    save(state_dir, &entry.plan.name, &watch)?;
    Ok(watch)
}

/// Records a warm pass that ran while the watcher was up.
pub fn count_pass(state_dir: &Path, entry: &str, watch: &mut Watch) -> Result<(), FilesError> {
    watch.passes += 1;
    save(state_dir, entry, watch)
}

/// Reads the log and decides whether it can be trusted.
pub async fn changes(entry: &Entry, watch: &Watch) -> Result<Changes, FilesError> {
    if watch.passes == 0 {
        return Ok(Changes::Untrusted {
            reason: "no warm pass ran after the change log started".into(),
        });
    }
    Ok(match read_to_marker(entry, watch).await? {
        Ok((log, _)) => parse(&log, &watch.root),
        Err(reason) => Changes::Untrusted { reason },
    })
}

/// [`changes`], and the marker the log was read up to (to tell later what came after it).
pub async fn changes_marked(
    entry: &Entry,
    watch: &Watch,
) -> Result<(Changes, Option<String>), FilesError> {
    if watch.passes == 0 {
        return Ok((
            Changes::Untrusted {
                reason: "no warm pass ran after the change log started".into(),
            },
            None,
        ));
    }
    Ok(match read_to_marker(entry, watch).await? {
        Ok((log, marker)) => (parse(&log, &watch.root), marker),
        Err(reason) => (Changes::Untrusted { reason }, None),
    })
}

/// What changed on the source after the final pass read the log, read from the same watcher
/// (up to a new marker), which is then stopped.
pub async fn after_final(entry: &Entry, state_dir: &Path) -> Result<AfterFinal, FilesError> {
    let Some(watch) = load(state_dir, &entry.plan.name)? else {
        return Ok(AfterFinal::Unproven {
            reason: if entry.plan.change_log {
                "no change log watched the tree after the final pass".into()
            } else {
                "`change_log` is off, so nothing watched the tree after the final pass".into()
            },
        });
    };
    let read = read_to_marker(entry, &watch).await;
    let stopped = stop(entry, state_dir, &watch).await;
    let outcome = match (read?, &watch.final_marker) {
        (Err(reason), _) => AfterFinal::Unproven { reason },
        (Ok(_), None) => AfterFinal::Unproven {
            reason: "the final pass did not read the change log (it walked the whole tree), so there is no point to compare with".into(),
        },
        (Ok((log, _)), Some(first)) => {
            let after = records(&log)
                .skip_while(|line| line.split_once('\t').is_none_or(|(_, p)| p != first))
                .skip(1)
                .map(|r| format!("{r}\0"))
                .collect::<String>();
            match parse(&after, &watch.root) {
                Changes::Trusted { paths, root, .. } => {
                    let sqlite: BTreeSet<String> = entry
                        .plan
                        .sqlite
                        .iter()
                        .flat_map(|db| {
                            let db = db.trim_start_matches('/').to_owned();
                            std::iter::once(db.clone()).chain(
                                super::sqlite::COMPANIONS
                                    .iter()
                                    .map(move |c| format!("{db}{c}")),
                            )
                        })
                        .collect();
                    let mut paths: Vec<String> = paths
                        .into_keys()
                        .filter(|p| !sqlite.contains(p))
                        .collect();
                    for db in &entry.plan.sqlite {
                        let now = super::sqlite::fingerprint(entry, db).await?;
                        if watch.sqlite_after_final.get(db) != Some(&now) {
                            paths.push(db.trim_start_matches('/').to_owned());
                        }
                    }
                    paths.sort();
                    if root && paths.is_empty() {
                        paths.push(".".into());
                    }
                    if paths.is_empty() {
                        AfterFinal::Unchanged
                    } else {
                        AfterFinal::Changed { paths }
                    }
                }
                Changes::Untrusted { reason } => AfterFinal::Unproven { reason },
            }
        }
    };
    stopped?;
    Ok(outcome)
}

/// Puts a marker in the watched marker directory and reads the log until the marker is in it:
/// `Ok(Ok((log, marker)))`, or `Ok(Err(why))` when the log cannot be trusted.
async fn read_to_marker(
    entry: &Entry,
    watch: &Watch,
) -> Result<Result<(String, Option<String>), String>, FilesError> {
    let source = &entry.source;
    // The marker: once its event is in the log, so is every change made before it.
    let marker = watch
        .sidecar
        .as_ref()
        .map(|dir| format!("{dir}/b/{}", super::token()));
    if let Some(marker) = &marker {
        let made = on_host(source, &["touch", "--", marker], TIMEOUT).await?;
        if !made.ok() {
            return Ok(Err(format!(
                "the change log's marker {marker} could not be created on the source host: {}",
                tail(&made.stderr, 1)
            )));
        }
    }
    let deadline = std::time::Instant::now() + MARKER_WAIT;
    loop {
        // One trip: the watcher's command line (proof it is alive and is ours) and the log.
        let out = on_host(
            source,
            &["cat", &format!("/proc/{}/cmdline", watch.pid), &watch.log],
            TIMEOUT,
        )
        .await?;
        let (cmdline, log) = split_cmdline(&out.stdout, watch);
        if !cmdline.contains(&watch.log) {
            return Ok(Err(format!(
                "the watcher (pid {} on the source host) is no longer running, so changes may be missing from the log",
                watch.pid
            )));
        }
        if !out.ok() {
            return Ok(Err(format!(
                "the change log {} cannot be read: {}",
                watch.log,
                tail(&out.stderr, 1)
            )));
        }
        let caught_up = marker.as_ref().is_none_or(|m| {
            records(log).any(|line| line.split_once('\t').is_some_and(|(_, path)| path == m))
        });
        if caught_up {
            return Ok(Ok((log.to_owned(), marker)));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Err(format!(
                "the watcher (pid {}) did not log its marker within {} s: it is stalled, and the log may lack the last changes",
                watch.pid,
                MARKER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The log's records: NUL-ended (`EVENTS\tPATH\0`), or lines in a log a watcher of an earlier
/// cutover wrote (no NUL in it).
pub fn records(text: &str) -> impl Iterator<Item = &str> {
    let sep = if text.contains('\0') { '\0' } else { '\n' };
    text.split(sep).filter(|r| !r.is_empty())
}

/// `/proc/PID/cmdline` followed by the log, as one `cat` gives them, split where the
/// watcher's argv ends: at its last argument (the marker directory, or the root for a watcher
/// started without one). Records never hold an argv (each starts with an event name and a tab).
fn split_cmdline<'a>(out: &'a str, watch: &Watch) -> (&'a str, &'a str) {
    let last = watch
        .sidecar
        .as_ref()
        .map(|dir| format!("{dir}/b"))
        .unwrap_or_else(|| watch.root.clone());
    let mut at = 0;
    for field in out.split('\0') {
        at += field.len() + 1;
        if field == last {
            return (&out[..at.min(out.len())], &out[at.min(out.len())..]);
        }
        if at >= out.len() {
            break;
        }
    }
    // Not the watcher's argv (another process, or none): nothing of it is trusted.
    ("", out)
}

/// Reads inotifywait's `EVENTS\tPATH` records into the paths to send.
pub fn parse(text: &str, root: &str) -> Changes {
    let root_bare = root.trim_end_matches('/');
    let mut paths: BTreeMap<String, bool> = BTreeMap::new();
    let mut root_changed = false;
    let mut structural: std::collections::HashSet<String> = Default::default();
    let mut written: std::collections::HashSet<String> = Default::default();
    // Directories removed or moved away (if one came back under its name, it is sent whole).
    let mut gone: std::collections::HashSet<String> = Default::default();
    for line in records(text) {
        // The log is read as text: a name that is not UTF-8 arrives altered, and sending the
        // altered name would miss the change. The whole tree is walked instead.
        if line.contains('\u{FFFD}') {
            return Changes::Untrusted {
                reason: "a changed name is not valid UTF-8 (or holds U+FFFD), which the change log cannot carry exactly".into(),
            };
        }
        if line.starts_with("Q_OVERFLOW") {
            return Changes::Untrusted {
                reason: "the kernel's event queue overflowed (fs.inotify.max_queued_events): changes were dropped".into(),
            };
        }
        let Some((events, path)) = line.split_once('\t') else {
            continue;
        };
        let events: Vec<&str> = events.split(',').collect();
        if events.contains(&"Q_OVERFLOW") {
            return Changes::Untrusted {
                reason: "the kernel's event queue overflowed (fs.inotify.max_queued_events): changes were dropped".into(),
            };
        }
        if path.trim_end_matches('/') == root_bare
            && ["IGNORED", "DELETE_SELF", "MOVE_SELF", "UNMOUNT"]
                .iter()
                .any(|e| events.contains(e))
        {
            return Changes::Untrusted {
                reason: "the watched root itself was removed, moved or unmounted".into(),
            };
        }
        let Some(rel) = path
            .strip_prefix(root)
            .or_else(|| (path == root_bare).then_some(""))
            .map(|r| r.trim_end_matches('/'))
        else {
            continue;
        };
        if rel.is_empty() {
            // The root itself (a mode, owner or time of its own).
            root_changed = true;
            continue;
        }
        if !rel.contains('/')
            && ["CREATE", "DELETE", "MOVED_FROM", "MOVED_TO"]
                .iter()
                .any(|e| events.contains(e))
        {
            root_changed = true;
        }
        let dir = events.contains(&"ISDIR");
        let whole = dir && (events.contains(&"CREATE") || events.contains(&"MOVED_TO"));
        let e = paths.entry(rel.to_owned()).or_insert(false);
        *e |= whole;
        // Anything but writes to, or metadata of, an existing file: the name was created,
        // removed or renamed, or it is a directory.
        if dir
            || !events
                .iter()
                .all(|e| ["MODIFY", "CLOSE_WRITE", "CLOSE", "ATTRIB"].contains(e))
        {
            structural.insert(rel.to_owned());
        }
        if events.iter().any(|e| *e != "ATTRIB") {
            written.insert(rel.to_owned());
        }
        if dir && (events.contains(&"DELETE") || events.contains(&"MOVED_FROM")) {
            gone.insert(rel.to_owned());
        }
    }
    // Entries under a directory sent whole go with it, and entries under a directory that went
    // away went with it (listed, rsync would look for the missing directory above them and
    // call it vanished). A directory listed as itself for any other reason (a chmod) carries
    // nothing: its changed entries stay listed.
    let whole: std::collections::HashSet<String> = paths
        .iter()
        .filter(|(p, whole)| **whole || gone.contains(p.as_str()))
        .map(|(p, _)| p.clone())
        .collect();
    if !whole.is_empty() {
        paths.retain(|p, _| {
            !Path::new(p)
                .ancestors()
                .skip(1)
                .any(|a| whole.contains(a.to_str().unwrap_or_default()))
        });
    }
    let rewritten: BTreeSet<String> = paths
        .iter()
        .filter(|(p, whole)| !**whole && !structural.contains(p.as_str()))
        .map(|(p, _)| p.clone())
        .collect();
    Changes::Trusted {
        metadata_only: rewritten
            .iter()
            .filter(|p| !written.contains(p.as_str()))
            .cloned()
            .collect(),
        rewritten,
        paths,
        root: root_changed,
    }
}

/// Hard links of changed regular files, found on the source: the log names a file by the path
/// it was written through, never by its other links. Returns the changed files that have
/// other links and those other links (relative). Walks the tree only when a changed file has
/// more than one link.
pub async fn hard_link_siblings(
    entry: &Entry,
    paths: &BTreeMap<String, bool>,
) -> Result<(Vec<String>, Vec<String>), FilesError> {
    let source = &entry.source;
    let root = super::rsync::dir(&entry.plan.source_path);
    let mut linked = Vec::new();
    let files: Vec<String> = paths.keys().map(|p| format!("{root}{p}")).collect();
    // Well under the kernel's argument limit; one trip for a typical final pass.
    for chunk in files.chunks(5000) {
        let mut argv: Vec<&str> = vec!["stat", "--printf", "%h\\t%F\\t%n\\0", "--"];
        argv.extend(chunk.iter().map(String::as_str));
        // Paths that are gone make stat exit non-zero; what it printed for the rest counts.
        let out = on_host(source, &argv, TIMEOUT).await?;
        for record in out.stdout.split('\0') {
            let mut fields = record.splitn(3, '\t');
            let (Some(links), Some(kind), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if kind.starts_with("regular") && links.parse::<u64>().unwrap_or(1) > 1 {
                linked.push(path.to_owned());
            }
        }
    }
    let mut siblings = Vec::new();
    for chunk in linked.chunks(100) {
        let mut argv: Vec<String> = vec!["find".into(), root.clone(), "-xdev".into(), "(".into()];
        for (i, path) in chunk.iter().enumerate() {
            if i > 0 {
                argv.push("-o".into());
            }
            argv.push("-samefile".into());
            argv.push(path.clone());
        }
        argv.extend([")".into(), "-print0".into()]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = on_host(source, &argv, Duration::from_secs(3600)).await?;
        siblings.extend(
            out.stdout
                .split('\0')
                .filter_map(|p| p.strip_prefix(root.as_str()))
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
    }
    let linked = linked
        .iter()
        .filter_map(|p| p.strip_prefix(root.as_str()))
        .map(str::to_owned)
        .collect();
    Ok((linked, siblings))
}

/// Stops the watcher and removes its log; forgets its state.
pub async fn stop(entry: &Entry, state_dir: &Path, watch: &Watch) -> Result<(), FilesError> {
    let source = &entry.source;
    let pid = watch.pid.to_string();
    let remove: Vec<&str> = match &watch.sidecar {
        Some(dir) => vec!["rm", "-rf", "--", dir],
        None => vec!["rm", "-f", "--", &watch.log],
    };
    let (killed, removed) = tokio::join!(
        on_host(source, &["kill", &pid], TIMEOUT),
        on_host(source, &remove, TIMEOUT)
    );
    killed?;
    removed?;
    forget(state_dir, &entry.plan.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/srv/app/";

    fn trusted(text: &str) -> BTreeMap<String, bool> {
        match parse(text, ROOT) {
            Changes::Trusted { paths, .. } => paths,
            other => panic!("{other:?}"),
        }
    }

    fn root_changed(text: &str) -> bool {
        match parse(text, ROOT) {
            Changes::Trusted { root, .. } => root,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_root_is_sent_only_when_its_own_entries_or_metadata_changed() {
        assert!(!root_changed(
            "MODIFY\t/srv/app/sub/a.txt\nCREATE\t/srv/app/sub/b\n"
        ));
        assert!(!root_changed("MODIFY\t/srv/app/top.txt\n"));
        assert!(root_changed("CREATE\t/srv/app/new.txt\n"));
        assert!(root_changed("MOVED_FROM,ISDIR\t/srv/app/old\n"));
        assert!(root_changed("ATTRIB,ISDIR\t/srv/app/\n"));
        // Lines about the marker directory are not the tree's.
        assert!(trusted("CREATE\t/tmp/cutover-watch.x/b/abc\n").is_empty());
    }

    #[test]
    fn files_directories_and_renames_become_paths_to_send() {
        let log = "CREATE\t/srv/app/a.txt\nMODIFY\t/srv/app/a.txt\n\
                   CREATE,ISDIR\t/srv/app/new\nCREATE\t/srv/app/new/x\n\
                   MOVED_FROM,ISDIR\t/srv/app/old\nMOVED_TO,ISDIR\t/srv/app/renamed\n\
                   DELETE\t/srv/app/old/inner.txt\nDELETE\t/srv/app/gone.txt\n\
                   ATTRIB\t/srv/app/sub/mode.txt\n";
        let paths = trusted(log);
        let expect: BTreeMap<String, bool> = [
            ("a.txt", false),
            ("gone.txt", false),
            ("new", true),
            ("old", false),
            ("renamed", true),
            ("sub/mode.txt", false),
        ]
        .into_iter()
        .map(|(p, w)| (p.to_owned(), w))
        .collect();
        assert_eq!(paths, expect);
    }

    #[test]
    fn files_written_in_place_are_told_from_names_that_came_or_went() {
        let log = "MODIFY\t/srv/app/db.bin\nCLOSE_WRITE,CLOSE\t/srv/app/db.bin\n\
                   ATTRIB\t/srv/app/mode.txt\n\
                   CREATE\t/srv/app/new.txt\nMODIFY\t/srv/app/new.txt\n\
                   MOVED_TO\t/srv/app/replaced.txt\nMODIFY\t/srv/app/replaced.txt\n\
                   ATTRIB,ISDIR\t/srv/app/sub\n";
        let Changes::Trusted {
            rewritten,
            metadata_only,
            ..
        } = parse(log, ROOT)
        else {
            panic!("trusted")
        };
        assert_eq!(
            rewritten.iter().map(String::as_str).collect::<Vec<_>>(),
            ["db.bin", "mode.txt"]
        );
        assert_eq!(
            metadata_only.iter().map(String::as_str).collect::<Vec<_>>(),
            ["mode.txt"]
        );
    }

    #[test]
    fn a_directory_listed_as_itself_does_not_swallow_its_changed_entries() {
        let paths = trusted("ATTRIB,ISDIR\t/srv/app/sub\nMODIFY\t/srv/app/sub/a.txt\n");
        assert_eq!(
            paths.keys().map(String::as_str).collect::<Vec<_>>(),
            ["sub", "sub/a.txt"]
        );
        // Under a directory sent whole, and not under a neighbour that shares its prefix.
        let paths =
            trusted("CREATE,ISDIR\t/srv/app/new\nCREATE\t/srv/app/new/x\nCREATE\t/srv/app/new-b\n");
        assert_eq!(
            paths.keys().map(String::as_str).collect::<Vec<_>>(),
            ["new", "new-b"]
        );
    }

    #[test]
    fn an_overflow_or_a_lost_root_means_the_log_cannot_be_trusted() {
        assert!(matches!(
            parse("CREATE\t/srv/app/a\nQ_OVERFLOW\t\n", ROOT),
            Changes::Untrusted { .. }
        ));
        assert!(matches!(
            parse("DELETE_SELF\t/srv/app/\n", ROOT),
            Changes::Untrusted { .. }
        ));
    }
}
