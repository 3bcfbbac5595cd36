//! The files component against a real sshd and rsync: both hosts are the lab sshd under two
//! aliases, each tree in its own directory.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cutover::files::sync::{self, PassKind};
use cutover::files::{Entry, preflight};
use cutover::finding::Severity;
use cutover::lab::{LabDir, Sshd, Supervision};
use cutover::plan;

struct Fixture {
    dir: LabDir,
    sshd: Sshd,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = LabDir::temporary().expect("lab dir");
        let sshd = Sshd::start(dir.path(), "sshd", Supervision::Owned)
            .await
            .expect("sshd starts");
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        Fixture { dir, sshd }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn dst(&self) -> PathBuf {
        self.dir.path().join("dst")
    }

    /// An entry from a plan text whose `[hosts]` are the lab aliases; `extra` goes into the
    /// `[[files]]` entry, `source_port` overrides the source host's port.
    fn entry(&self, extra: &str, source_port: Option<u16>, target_path: &Path) -> Entry {
        let config = self.sshd.ssh_config.display();
        let port = source_port
            .map(|p| format!("port = {p}\n"))
            .unwrap_or_default();
        let text = format!(
            "[migration]\nname = \"files\"\nstate_dir = \"{state}\"\n\n\
             [hosts.source]\nssh = \"lab-source\"\nssh_config = \"{config}\"\n{port}\n\
             [hosts.target]\nssh = \"lab-target\"\nssh_config = \"{config}\"\n\n\
             [[files]]\nname = \"tree\"\nsource_path = \"{src}/\"\ntarget_path = \"{dst}/\"\n{extra}\n",
            state = self.dir.path().join("state").display(),
            src = self.src().display(),
            dst = target_path.display(),
        );
        let plan = plan::parse_str(&text, Path::new("files.toml")).expect("valid plan");
        Entry::select(&plan, None).unwrap().remove(0)
    }
}

/// Everything about a tree that a faithful copy keeps: per relative path, its kind, mode,
/// content (or link target), and which paths share an inode (hard links).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, String>,
        inodes: &mut BTreeMap<u64, String>,
    ) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out, inodes);
                format!("dir {mode:o}")
            } else {
                let first = inodes
                    .entry(meta.ino())
                    .or_insert_with(|| rel.clone())
                    .clone();
                let content = std::fs::read(&path).unwrap();
                format!(
                    "file {mode:o} {} bytes {:x} linked-with {first}",
                    content.len(),
                    content
                        .iter()
                        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))
                )
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

/// Creates, appends, deletes, renames files and whole directories, links, modes: one round.
fn mutate(root: &Path, round: u32) {
    let d = root.join(format!("dir{}", round % 5));
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join(format!("f{round}.txt")), format!("round {round}\n")).unwrap();
    let log = root.join("app.log");
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    text.push_str(&format!("line {round}\n"));
    std::fs::write(&log, text).unwrap();
    if round.is_multiple_of(3) {
        let _ = std::fs::remove_file(d.join(format!("f{}.txt", round.saturating_sub(3))));
    }
    if round % 4 == 1 {
        let from = root.join(format!("dir{}", (round + 1) % 5));
        let to = root.join(format!("moved{round}"));
        if from.exists() {
            std::fs::rename(&from, &to).unwrap();
        }
    }
    if round % 5 == 2 {
        let link = root.join(format!("link{round}"));
        let _ = symlink(format!("dir{}", round % 5), &link);
        let hard = root.join(format!("hard{round}"));
        let _ = std::fs::hard_link(&log, &hard);
        std::fs::set_permissions(
            d.join(format!("f{round}.txt")),
            PermissionsExt::from_mode(0o640),
        )
        .unwrap();
    }
}

/// Runs `mutate` continuously on `src` until the returned stop function is called.
fn keep_mutating(src: PathBuf, from: u32) -> impl FnOnce() -> u32 {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = from;
            while !stop.load(Ordering::SeqCst) {
                mutate(&src, round);
                round += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            round
        })
    };
    move || {
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap()
    }
}

/// Warm passes over a tree the service keeps changing, then the final pass once it stopped:
/// the copy is exact (rsync's verify and an independent walk agree). Returns the final report.
async fn mutated_tree_ends_identical(f: &Fixture, entry: &Entry) -> sync::PassReport {
    let (src, state) = (f.src(), f.dir.path().join("state"));
    for round in 0..20 {
        mutate(&src, round);
    }
    let first = sync::warm(entry, &state, &mut |_, _| {}).await.unwrap();
    assert!(first.figures.files_transferred > 0, "{first:?}");
    let stop = keep_mutating(src.clone(), 20);
    for _ in 0..2 {
        sync::warm(entry, &state, &mut |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("a warm pass over a live tree: {e}"));
    }
    assert!(stop() > 20);
    // The service is stopped: the final pass makes the copy exact.
    let mut updates = 0;
    let last = sync::final_pass(entry, &state, &mut |_, _| updates += 1)
        .await
        .unwrap();
    assert_eq!(last.kind, PassKind::Final);
    let verified = cutover::files::verify::verify(entry).await.unwrap();
    assert!(verified.matches(), "{:?}", verified.differences);
    assert_eq!(
        snapshot(&src),
        snapshot(&f.dst()),
        "checked independently of rsync"
    );
    if last.figures.files_transferred > 0 {
        assert!(updates > 0, "progress was reported");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tree_mutated_during_warm_passes_ends_identical_after_a_full_final_pass() {
    let f = Fixture::new().await;
    let entry = f.entry("", None, &f.dst());
    let last = mutated_tree_ends_identical(&f, &entry).await;
    assert_eq!((last.method, last.fallback.as_deref()), ("full", None));

    // Verify notices a changed byte, a new file and a deleted one.
    let src = f.src();
    std::fs::write(src.join("app.log"), "changed\n").unwrap();
    std::fs::write(src.join("late.txt"), "late\n").unwrap();
    let verified = cutover::files::verify::verify(&entry).await.unwrap();
    let text = verified.differences.join("\n");
    assert!(
        text.contains("app.log") && text.contains("late.txt"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_change_log_the_final_pass_sends_only_what_changed_and_is_exact() {
    let f = Fixture::new().await;
    let entry = f.entry("change_log = true", None, &f.dst());
    let last = mutated_tree_ends_identical(&f, &entry).await;
    assert_eq!(last.method, "change-log", "{last:?}");
    assert!(last.fallback.is_none(), "{last:?}");
    assert!(last.changed_paths.is_some_and(|n| n > 0), "{last:?}");
    // The watcher is gone and forgotten after the final pass.
    let state = f.dir.path().join("state");
    assert!(
        cutover::files::changelog::load(&state, "tree")
            .unwrap()
            .is_none()
    );
    // The final pass closed the running host's shared connection itself.
    assert!(cutover::files::hop::load(&state, &entry).is_none());
    // A pass keeps that connection to the other host in a private directory; once closed,
    // the directory is gone and forgotten.
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    let dir = cutover::files::hop::load(&state, &entry).expect("a shared connection");
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{dir}");
    cutover::files::hop::close(&entry, &state).await.unwrap();
    assert!(!Path::new(&dir).exists());
    assert!(cutover::files::hop::load(&state, &entry).is_none());
    // That warm pass started a change-log watcher again (a daemon on the source host, so it
    // outlives a crash): stopped here, or it outlives the test too.
    let watch = cutover::files::changelog::load(&state, "tree")
        .unwrap()
        .expect("a warm pass with change_log starts a watcher");
    cutover::files::changelog::stop(&entry, &state, &watch)
        .await
        .unwrap();
    // Gone, or dead and waiting for its parent to collect it (`Z` in its stat); a signal takes
    // a moment to end it.
    let running = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", watch.pid)).unwrap_or_default();
        let up = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        up.then_some(stat)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running().is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        running(),
        None,
        "the watcher (pid {}) still runs",
        watch.pid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_connection_directory_costs_a_handshake_not_the_pass() {
    let f = Fixture::new().await;
    let state = f.dir.path().join("state");
    std::fs::write(f.src().join("a.txt"), "a\n").unwrap();
    let entry = f.entry("", None, &f.dst());
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    // A /tmp cleaner (or a reboot) removes the directory the next pass expects.
    let dir = cutover::files::hop::load(&state, &entry).expect("a shared connection");
    let _ = std::process::Command::new("ssh")
        .args([
            "-F",
            &f.sshd.ssh_config.display().to_string(),
            "-o",
            &format!("ControlPath={dir}/%C"),
            "-O",
            "exit",
            "lab-source",
        ])
        .output();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(f.src().join("b.txt"), "b\n").unwrap();
    let entry = f.entry("", None, &f.dst());
    assert_eq!(entry.hop.as_deref(), Some(dir.as_str()));
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.method, "full");
    assert!(
        cutover::files::verify::verify(&entry)
            .await
            .unwrap()
            .matches()
    );
    assert_eq!(snapshot(&f.src()), snapshot(&f.dst()));
}

/// rsync's quick check (size, and time to the second) cannot see a file rewritten at its old
/// size within the second of its warm copy; files rewritten in place are written in place on
/// the target, where a hard link the source has since broken must not carry the write over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_the_quick_check_misses_and_links_the_source_broke_arrive_exactly() {
    let f = Fixture::new().await;
    let state = f.dir.path().join("state");
    let src = f.src();
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::create_dir_all(src.join("e")).unwrap();
    std::fs::write(src.join("d/same-size.txt"), "AAAA").unwrap();
    std::fs::write(src.join("d/replaced-same-size.txt"), "CCCC").unwrap();
    // Three names of one file; the source will replace one of them (breaking its link) and
    // rewrite the file in place under another.
    std::fs::write(src.join("d/x.txt"), "shared\n").unwrap();
    std::fs::hard_link(src.join("d/x.txt"), src.join("e/y.txt")).unwrap();
    std::fs::hard_link(src.join("d/x.txt"), src.join("e/w.txt")).unwrap();
    // Two names of another file; the source replaces one and leaves the other alone.
    std::fs::write(src.join("d/p.txt"), "p\n").unwrap();
    std::fs::hard_link(src.join("d/p.txt"), src.join("e/q.txt")).unwrap();
    let entry = f.entry("change_log = true", None, &f.dst());
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    assert_eq!(snapshot(&src), snapshot(&f.dst()));

    let old_time = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    // In place, same size, and the warm copy's time given back.
    let path = src.join("d/same-size.txt");
    let t = old_time(&path);
    std::fs::write(&path, "BBBB").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(t)
        .unwrap();
    // Replaced by a new file of the same size and time.
    let path = src.join("d/replaced-same-size.txt");
    let t = old_time(&path);
    std::fs::write(src.join("d/.tmp"), "DDDD").unwrap();
    std::fs::File::options()
        .write(true)
        .open(src.join("d/.tmp"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    std::fs::rename(src.join("d/.tmp"), &path).unwrap();
    // y.txt replaced (its own file now), x.txt rewritten in place (w.txt, still its link,
    // sees the write on the source and must on the target; y.txt must not).
    std::fs::write(src.join("e/.y"), "y alone\n").unwrap();
    std::fs::rename(src.join("e/.y"), src.join("e/y.txt")).unwrap();
    std::fs::write(src.join("d/x.txt"), "rewritten in place\n").unwrap();
    std::fs::write(src.join("e/.q"), "q alone\n").unwrap();
    std::fs::rename(src.join("e/.q"), src.join("e/q.txt")).unwrap();

    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.method, "change-log", "{last:?}");
    let dst = f.dst();
    let read = |p: &str| std::fs::read_to_string(dst.join(p)).unwrap();
    assert_eq!(read("d/same-size.txt"), "BBBB");
    assert_eq!(read("d/replaced-same-size.txt"), "DDDD");
    assert_eq!(read("d/x.txt"), "rewritten in place\n");
    assert_eq!(read("e/w.txt"), "rewritten in place\n");
    assert_eq!(read("e/y.txt"), "y alone\n");
    assert_eq!(
        read("d/p.txt"),
        "p\n",
        "a write to a replaced name reached its old link"
    );
    assert_eq!(read("e/q.txt"), "q alone\n");
    assert_eq!(snapshot(&src), snapshot(&dst), "contents, modes and links");
    assert!(
        cutover::files::verify::verify(&entry)
            .await
            .unwrap()
            .matches()
    );
}

/// Without a change log the final pass has only rsync's quick check: a rewrite at the same size
/// within the second of the warm copy must still be found (nanosecond times).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_final_pass_finds_a_same_size_rewrite_within_the_second() {
    let f = Fixture::new().await;
    let state = f.dir.path().join("state");
    let src = f.src();
    std::fs::write(src.join("state.bin"), "AAAA").unwrap();
    let entry = f.entry("", None, &f.dst());
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    // Rewritten, and its time set one microsecond after the warm copy's, in the same second.
    let path = src.join("state.bin");
    let old = std::fs::metadata(&path).unwrap().modified().unwrap();
    let since = old.duration_since(std::time::UNIX_EPOCH).unwrap();
    let same_second = if since.subsec_nanos() < 999_000_000 {
        old + Duration::from_micros(1)
    } else {
        old - Duration::from_micros(1)
    };
    std::fs::write(&path, "BBBB").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(same_second)
        .unwrap();
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.method, "full");
    assert_eq!(
        std::fs::read_to_string(f.dst().join("state.bin")).unwrap(),
        "BBBB"
    );
    assert_eq!(snapshot(&src), snapshot(&f.dst()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_watcher_makes_the_final_pass_walk_the_whole_tree_and_say_so() {
    let f = Fixture::new().await;
    let state = f.dir.path().join("state");
    let entry = f.entry("change_log = true", None, &f.dst());
    mutate(&f.src(), 0);
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    let watch = cutover::files::changelog::load(&state, "tree")
        .unwrap()
        .unwrap();
    // The watcher dies (OOM killer, reboot, an operator): what changes next is not logged.
    let killed = std::process::Command::new("kill")
        .arg(watch.pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    for round in 1..8 {
        mutate(&f.src(), round);
    }
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.method, "full");
    let reason = last.fallback.clone().unwrap_or_default();
    assert!(reason.contains("no longer running"), "{last:?}");
    assert!(
        last.warnings.iter().any(|w| w.contains("whole tree")),
        "{last:?}"
    );
    assert!(
        cutover::files::verify::verify(&entry)
            .await
            .unwrap()
            .matches()
    );
    assert_eq!(snapshot(&f.src()), snapshot(&f.dst()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_passes_on_good_hosts_and_names_each_problem() {
    let f = Fixture::new().await;
    std::fs::write(f.src().join("a.txt"), "a\n").unwrap();
    let good = preflight::run(&f.entry("", None, &f.dst())).await.unwrap();
    assert!(good.passed(), "{:#?}", good.findings);
    assert!(
        good.rsync_versions
            .0
            .as_deref()
            .is_some_and(|v| v.contains("rsync"))
    );
    assert!(good.source_bytes.is_some() && good.target_available.is_some());
    assert!(
        good.clock_skew_seconds.is_some_and(|s| s.abs() < 1.0),
        "{good:?}"
    );
    let with_log = preflight::run(&f.entry("change_log = true", None, &f.dst()))
        .await
        .unwrap();
    assert!(with_log.passed(), "{:#?}", with_log.findings);

    // An unreachable source host: named, with the fix, and nothing else piled on.
    let closed = cutover::lab::free_port().unwrap();
    let down = preflight::run(&f.entry("", Some(closed), &f.dst()))
        .await
        .unwrap();
    assert!(!down.passed());
    let e = &down.findings[0];
    assert_eq!(e.severity, Severity::Error);
    assert!(e.server.starts_with("source lab-source"), "{e:?}");
    assert!(e.problem.contains("cannot reach source host"), "{e:?}");
    assert!(e.fix.contains("BatchMode"), "{e:?}");

    // A target path whose parent does not exist.
    let orphan = f.dir.path().join("no").join("such").join("dir");
    let bad = preflight::run(&f.entry("", None, &orphan)).await.unwrap();
    let e = bad
        .findings
        .iter()
        .find(|f| f.problem.contains("does not exist or is not writable"))
        .unwrap_or_else(|| panic!("{:#?}", bad.findings));
    assert!(e.server.starts_with("target"), "{e:?}");
    assert!(e.fix.contains("mkdir -p"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_source_can_push_instead_and_rsync_failures_say_what_they_mean() {
    let f = Fixture::new().await;
    std::fs::write(f.src().join("a.txt"), "a\n").unwrap();
    let push = f.entry("runs_on = \"source\"", None, &f.dst());
    sync::pass(&push, PassKind::Warm, &mut |_, _| {})
        .await
        .unwrap();
    assert!(
        cutover::files::verify::verify(&push)
            .await
            .unwrap()
            .matches()
    );
    // A target under a path that cannot be created: an error, with rsync's words and ours.
    let blocked = f.dir.path().join("a-file");
    std::fs::write(&blocked, "not a directory").unwrap();
    let entry = f.entry("", None, &blocked.join("dst"));
    let err = sync::pass(&entry, PassKind::Final, &mut |_, _| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tree:") && text.contains("rsync"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_sqlite_database_arrives_consistent_and_complete() {
    use std::io::Write;
    let f = Fixture::new().await;
    let data = f.src().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("attachment.bin"), "file beside the database\n").unwrap();
    let db = data.join("db.sqlite3");
    // The service: one long-lived connection in WAL mode, committing a row every 2 ms.
    let mut service = std::process::Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sqlite3 CLI");
    let mut stdin = service.stdin.take().unwrap();
    writeln!(
        stdin,
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                writeln!(stdin, "INSERT INTO t (v) VALUES ('row {n}');").unwrap();
                stdin.flush().unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (n, stdin)
        })
    };
    let state = f.dir.path().join("state");
    // What a pass that crashed 20 minutes ago left in /tmp: the next pass removes it.
    let leftover =
        Path::new("/tmp").join(format!("cutover-tree-sqlite.crashed{}", std::process::id()));
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("backup.sqlite3"), "half a backup").unwrap();
    let old = std::process::Command::new("touch")
        .args(["-d", "20 minutes ago"])
        .arg(&leftover)
        .status()
        .unwrap();
    assert!(old.success());
    let entry = f.entry("sqlite = [\"data/db.sqlite3\"]", None, &f.dst());
    for _ in 0..2 {
        let warm = sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
        assert_eq!(warm.sqlite, ["data/db.sqlite3"], "{warm:?}");
    }
    assert!(
        db.with_file_name("db.sqlite3-wal").exists(),
        "the source runs in WAL mode"
    );
    assert!(
        !leftover.exists(),
        "a crashed pass's backup directory is removed"
    );
    // Each pass's own private directory is gone too (no backup lingers in /tmp).
    let lingering: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cutover-tree-sqlite."))
        .collect();
    assert!(lingering.is_empty(), "{lingering:?}");
    // The final pass refuses while the service still writes.
    let err = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .expect_err("no consistent copy of a live database in the window");
    assert!(err.to_string().contains("still writes"), "{err}");

    // The service stops; the final pass copies it, checked on the target.
    stop.store(true, Ordering::SeqCst);
    let (written, stdin) = writer.join().unwrap();
    drop(stdin);
    assert!(service.wait().unwrap().success());
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.sqlite, ["data/db.sqlite3"]);
    // Read without creating -wal/-shm beside it (which would move the directory's time).
    let copy = format!(
        "file:{}?immutable=1",
        f.dst().join("data").join("db.sqlite3").display()
    );
    let sql = |q: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&copy)
            .arg(q)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(sql("PRAGMA integrity_check"), "ok");
    assert_eq!(
        sql("SELECT count(*) FROM t"),
        written.to_string(),
        "every committed row"
    );
    assert_eq!(sql("SELECT max(id) FROM t"), written.to_string());
    let verified = cutover::files::verify::verify(&entry).await.unwrap();
    assert!(verified.matches(), "{:?}", verified.differences);
    assert!(f.dst().join("data").join("attachment.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_and_deleted_files_alone_are_sent_in_one_pass_and_exactly() {
    let f = Fixture::new().await;
    let state = f.dir.path().join("state");
    let src = f.src();
    for i in 0..30 {
        std::fs::create_dir_all(src.join(format!("d{}", i % 3))).unwrap();
        std::fs::write(src.join(format!("d{}/f{i}", i % 3)), format!("{i}\n")).unwrap();
    }
    let entry = f.entry("change_log = true", None, &f.dst());
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    std::fs::write(src.join("d0/f0"), "changed\n").unwrap();
    std::fs::remove_file(src.join("d1/f1")).unwrap();
    std::fs::write(src.join("d2/new"), "new\n").unwrap();
    std::fs::set_permissions(src.join("d2/f2"), PermissionsExt::from_mode(0o600)).unwrap();
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.method, "change-log");
    assert_eq!(last.changed_paths, Some(4), "{last:?}");
    assert_eq!(
        last.figures.files_transferred, 2,
        "only the changed and the new file: {last:?}"
    );
    assert!(
        cutover::files::verify::verify(&entry)
            .await
            .unwrap()
            .matches()
    );
    assert_eq!(snapshot(&src), snapshot(&f.dst()));
}

impl Fixture {
    /// A files-only plan file `name.toml` for a whole `cutover run`, its own state directory,
    /// the tree moving from `src` to `target`; `hooks` goes after the entry.
    fn run_plan(&self, name: &str, target: &Path, entry: &str, hooks: &str) -> PathBuf {
        let config = self.sshd.ssh_config.display();
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[migration]\nname = \"{name}\"\nstate_dir = \"{state}\"\n\n\
                 [hosts.source]\nssh = \"lab-source\"\nssh_config = \"{config}\"\n\n\
                 [hosts.target]\nssh = \"lab-target\"\nssh_config = \"{config}\"\n\n\
                 [[files]]\nname = \"tree\"\nsource_path = \"{src}/\"\ntarget_path = \"{dst}/\"\nchange_log = true\n{entry}\n{hooks}\n",
                state = self.dir.path().join(format!("state-{name}")).display(),
                src = self.src().display(),
                dst = target.display(),
            ),
        )
        .unwrap();
        path
    }
}

/// The binary's exit code and its output (stdout and stderr together).
fn cutover(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether a change-log watcher for a tree under `root` still runs on this machine (both lab
/// hosts are this machine).
fn watcher_running(root: &Path) -> bool {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("inotifywait.*{}", root.display())])
        .output()
        .unwrap();
    out.status.success()
}

/// A completed files-only migration is the live side: running it again (same state
/// directory) is refused by its journal, and a runner with another state directory is refused
/// by the target's own claim, each with nothing changed on the target (an upload made on the
/// new host stays) and nothing left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_files_migration_is_not_run_again_from_any_state_directory() {
    let f = Fixture::new().await;
    std::fs::write(f.src().join("a.txt"), "a\n").unwrap();
    let stop = "[[hooks]]\nat = \"window-open\"\ncommand = [\"true\"]\n";
    let plan = f.run_plan("moved", &f.dst(), "", stop);
    let plan_arg = plan.to_str().unwrap();
    let (code, out) = cutover(&["plan", "check", plan_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("warning:"),
        "a window-open hook is there: {out}"
    );
    let (code, out) = cutover(&["run", plan_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("checked: nothing changed on the old host after the final pass"),
        "{out}"
    );
    assert!(!watcher_running(&f.src()), "the run stopped its watcher");
    // The service writes on the new host.
    std::fs::write(f.dst().join("upload.txt"), "new host\n").unwrap();

    let (code, out) = cutover(&["run", plan_arg]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("this migration already moved"), "{out}");
    // A reverse cutover would leave the upload behind: refused unless the operator says so.
    let (code, out) = cutover(&["run", "--rollback", plan_arg]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("does not carry them back") && out.contains("--leave-files"),
        "{out}"
    );
    assert!(f.dst().join("upload.txt").exists(), "the upload stays");

    let other = f.run_plan("moved-again", &f.dst(), "", stop);
    let (code, out) = cutover(&["run", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("live side of migration `moved`"), "{out}");
    assert!(
        out.contains("cutover-claim.json"),
        "the fix names the claim: {out}"
    );
    assert!(f.dst().join("upload.txt").exists(), "the upload stays");
    assert!(
        !watcher_running(&f.src()),
        "the refused run left nothing running"
    );
    let (code, out) = cutover(&["files", "sync", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("live side"), "{out}");
    assert!(f.dst().join("upload.txt").exists(), "the upload stays");
}

/// A target tree nobody claimed that holds something else: preflight lists what the first
/// pass would delete and overwrite and refuses; so does a warm pass; `replace_target` lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_with_content_cutover_did_not_put_there_is_refused_until_the_plan_allows_it() {
    let f = Fixture::new().await;
    std::fs::write(f.src().join("a.txt"), "a\n").unwrap();
    std::fs::create_dir_all(f.dst()).unwrap();
    std::fs::write(f.dst().join("unrelated.txt"), "keep me\n").unwrap();
    std::fs::write(f.dst().join("a.txt"), "another a\n").unwrap();
    let report = preflight::run(&f.entry("", None, &f.dst())).await.unwrap();
    assert!(!report.passed());
    let e = report
        .findings
        .iter()
        .find(|x| x.problem.contains("not empty"))
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert!(
        e.problem.contains("unrelated.txt") && e.problem.contains("delete"),
        "{e:?}"
    );
    assert!(
        e.problem.contains("a.txt") && e.problem.contains("overwrite"),
        "{e:?}"
    );
    assert!(e.fix.contains("replace_target = true"), "{e:?}");
    let state = f.dir.path().join("state");
    let err = sync::warm(&f.entry("", None, &f.dst()), &state, &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("replace_target"), "{err}");
    assert_eq!(
        std::fs::read_to_string(f.dst().join("unrelated.txt")).unwrap(),
        "keep me\n"
    );
    let allowed = f.entry("replace_target = true", None, &f.dst());
    assert!(preflight::run(&allowed).await.unwrap().passed());
    sync::warm(&allowed, &state, &mut |_, _| {}).await.unwrap();
    assert!(!f.dst().join("unrelated.txt").exists());
    assert!(
        cutover::files::verify::verify(&allowed)
            .await
            .unwrap()
            .matches()
    );
}

/// Nothing stops the tree's writer before the final pass (no window-open hook): `plan check`
/// warns, and the run names every path that changed on the old host after its final pass,
/// exits 1, and says so in the report. Every file the new host lacks is among those named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_written_after_the_final_pass_are_named_as_not_carried() {
    let f = Fixture::new().await;
    std::fs::write(f.src().join("a.txt"), "a\n").unwrap();
    let plan = f.run_plan("busy", &f.dst(), "", "");
    let plan_arg = plan.to_str().unwrap().to_owned();
    let (code, out) = cutover(&["plan", "check", &plan_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning:") && out.contains("window-open"),
        "{out}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, src) = (stop.clone(), f.src());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                std::fs::write(src.join(format!("w{n:05}.txt")), format!("{n}\n")).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        })
    };
    let (code, out) = tokio::task::spawn_blocking(move || cutover(&["run", &plan_arg]))
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer wrote");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FILES NOT CARRIED"), "{out}");
    let store = cutover::state::FileStore::new(&cutover::state::StateDir::new(
        &f.dir.path().join("state-busy"),
    ));
    use cutover::state::Store;
    let report = store.report().unwrap().expect("a report");
    let paths: std::collections::BTreeSet<String> = report["files_after_final"]["tree"]["paths"]
        .as_array()
        .unwrap_or_else(|| panic!("{report:#}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    // The writer's names sort in the order it wrote them. The run's last look at the log named
    // everything up to `last`; every file up to it that the new host lacks is among them.
    let last = paths.iter().next_back().cloned().expect("paths were named");
    let missing: Vec<String> = std::fs::read_dir(f.src())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !f.dst().join(n).exists())
        .collect();
    assert!(!missing.is_empty(), "the writer outran the final pass");
    for name in missing.iter().filter(|n| n.as_str() <= last.as_str()) {
        assert!(
            paths.contains(name),
            "{name} is missing on the new host and not named: {paths:?}"
        );
    }
    assert!(!watcher_running(&f.src()), "the run stopped its watcher");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paths_with_spaces_quotes_and_shell_characters_arrive_as_they_are() {
    let f = Fixture::new().await;
    // The ssh config under a directory with a space and a quote in its name, and trees whose
    // names a remote shell would split and expand.
    let odd_dir = f.dir.path().join("op's ssh dir");
    std::fs::create_dir_all(&odd_dir).unwrap();
    let config = odd_dir.join("ssh config");
    std::fs::copy(&f.sshd.ssh_config, &config).unwrap();
    let src = f.dir.path().join("src tree $HOME *");
    let dst = f.dir.path().join("dst tree `id` ~");
    std::fs::create_dir_all(src.join("a dir")).unwrap();
    std::fs::write(src.join("a dir").join("file with spaces.txt"), "one\n").unwrap();
    std::fs::write(src.join("$(touch pwned)"), "two\n").unwrap();
    let text = format!(
        "[migration]\nname = \"files\"\nstate_dir = \"{state}\"\n\n\
         [hosts.source]\nssh = \"lab-source\"\nssh_config = \"{config}\"\n\n\
         [hosts.target]\nssh = \"lab-target\"\nssh_config = \"{config}\"\n\n\
         [[files]]\nname = \"tree\"\nsource_path = \"{src}/\"\ntarget_path = \"{dst}/\"\n",
        state = f.dir.path().join("state").display(),
        config = config.display().to_string().replace('\\', "\\\\"),
        src = src.display(),
        dst = dst.display(),
    );
    let plan = plan::parse_str(&text, Path::new("files.toml")).expect("valid plan");
    let entry = Entry::select(&plan, None).unwrap().remove(0);
    let state = f.dir.path().join("state");
    let pass = sync::warm(&entry, &state, &mut |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("a pass over odd paths: {e}"));
    assert!(pass.figures.files_transferred >= 2, "{pass:?}");
    assert_eq!(snapshot(&src), snapshot(&dst));
    assert!(
        !std::path::Path::new("pwned").exists() && !f.dir.path().join("pwned").exists(),
        "nothing was run by a shell"
    );
    let verified = cutover::files::verify::verify(&entry).await.unwrap();
    assert!(verified.matches(), "{:?}", verified.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_change_log_carries_any_byte_in_a_name_or_says_it_cannot() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new().await;
    let (src, state) = (f.src(), f.dir.path().join("state"));
    std::fs::write(src.join("seed"), "seed\n").unwrap();
    // Names a line-based log misreads (a newline, a tab, a backslash), copied by the warm
    // pass, then written in place: only their own records say they changed.
    let names = ["new\nline.txt", "tab\there.txt", "back\\slash.txt"];
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for name in names {
        std::fs::write(src.join("sub").join(name), "before\n").unwrap();
    }
    let entry = f.entry("change_log = true", None, &f.dst());
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    for name in names {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(src.join("sub").join(name))
            .unwrap();
        writeln!(file, "after: {name}").unwrap();
    }
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (last.method, last.fallback.as_deref()),
        ("change-log", None),
        "{last:?}"
    );
    assert_eq!(
        snapshot(&src),
        snapshot(&f.dst()),
        "every name arrived exactly"
    );

    // A name that is not UTF-8: the log cannot carry it exactly, so the final pass walks the
    // whole tree and says why; the file arrives all the same.
    let f = Fixture::new().await;
    let (src, state) = (f.src(), f.dir.path().join("state"));
    std::fs::write(src.join("seed"), "seed\n").unwrap();
    let odd = std::path::Path::new("sub").join(std::ffi::OsStr::from_bytes(b"latin1-caf\xe9.txt"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join(&odd), "before\n").unwrap();
    let entry = f.entry("change_log = true", None, &f.dst());
    sync::warm(&entry, &state, &mut |_, _| {}).await.unwrap();
    std::fs::write(src.join(&odd), "bytes\n").unwrap();
    let last = sync::final_pass(&entry, &state, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(last.method, "full", "{last:?}");
    assert!(
        last.fallback
            .as_deref()
            .is_some_and(|w| w.contains("UTF-8")),
        "{last:?}"
    );
    assert_eq!(
        std::fs::read(f.dst().join(&odd)).unwrap(),
        b"bytes\n",
        "the file arrived under its own name"
    );
}
