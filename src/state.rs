//! The migration's state directory: one owner for its layout, its atomic writes, and the lock
//! that keeps two runners off one migration.
//!
//! Layout (under `[migration] state_dir`):
//! - `run/lock`: held (flock) by the runner for its whole life; the kernel drops it on `kill -9`,
//!   so a crashed runner never blocks the resume.
//! - `run/lease.json`: who holds the lease and its epoch. Every acquisition bumps the epoch, and
//!   every journal append checks it: a runner whose lease was taken over cannot write on.
//! - `run/journal.jsonl`: append-only, one fsync'd JSON record a line. A torn last line (a crash
//!   mid-append) is skipped by reads and cut back by the next append, which says so in the
//!   journal (`journal-repaired`).
//! - `run/report.json`: the last run's report.
//! - `dns/`, `files/`: what the DNS and files components keep between commands (the TTL job's
//!   per-record state and event log; change-log watchers and shared ssh connections).
//! - `postgres/`: the retained-WAL samples `status` compares to warn of a slot that keeps
//!   growing.
//!
//! Writes that replace a file go to a temporary file that is fsync'd, renamed over the old one,
//! and the directory fsync'd: a crash leaves the old or the new version, never half of one.
//! Read-only commands (status, check) only read; nothing here creates a directory on a read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What can go wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A record could not be turned into JSON (never written as a silent `null`).
    #[error("a record of the run could not be written as JSON: {0}")]
    Encode(String),
    /// Another runner holds the migration.
    #[error(
        "another runner holds this migration ({holder}); wait for it to finish, or stop it first"
    )]
    Held {
        /// Who holds it, from the lease file.
        holder: String,
    },
    /// This runner's lease was taken over; it must stop writing.
    #[error(
        "this runner lost its lease (epoch {mine}, now {current}): another runner took the migration over; stopping without writing"
    )]
    LeaseLost {
        /// The epoch this runner held.
        mine: u64,
        /// The epoch in the lease file.
        current: u64,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

/// Writes `bytes` to `path` atomically and durably (temporary file, fsync, rename, fsync of the
/// directory). Creates the parent directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| io(path, e))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    sync_dir(dir)
}

/// Appends `line` and a newline to `path` and fsyncs it (creating the file and its directory,
/// the directory fsync'd when the file is new): an event log that survives a crash up to its
/// last complete line.
pub fn append_line(path: &Path, line: &str) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| io(path, e))?;
    file.sync_data().map_err(|e| io(path, e))?;
    if new {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// The state directory of one migration.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (nothing is created).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_owned(),
        }
    }

    /// Its path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `dns/`.
    pub fn dns(&self) -> PathBuf {
        self.root.join("dns")
    }

    /// `files/`.
    pub fn files(&self) -> PathBuf {
        self.root.join("files")
    }

    /// `run/`.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `postgres/`.
    pub fn postgres(&self) -> PathBuf {
        self.root.join("postgres")
    }
}

/// Who holds a lease, as written in `run/lease.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Bumped by every acquisition.
    pub epoch: u64,
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// What the holder is doing (`run`, `run --resume`, `pg cutover`...).
    pub purpose: String,
    /// When it was taken (RFC 3339).
    pub since: String,
}

impl std::fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` as pid {} on {} since {}, epoch {}",
            self.purpose, self.pid, self.host, self.since, self.epoch
        )
    }
}

/// A held lease: the lock stays held while this lives.
#[derive(Debug)]
pub struct Lease {
    /// What was written to the lease file.
    pub info: LeaseInfo,
    _lock: File,
}

/// Takes the lease of the migration whose state directory is `state_dir`, for a command that
/// changes a server, a tree or a record (`purpose` names it for whoever is refused meanwhile).
pub fn take_lease(state_dir: &Path, purpose: &str) -> Result<Lease, StateError> {
    FileStore::new(&StateDir::new(state_dir)).acquire(purpose)
}

/// Where a run's journal and lease live. The file store is the default; a store shared by a
/// team (a PostgreSQL table with the epoch checked in each insert) fits the same interface.
pub trait Store: Send + Sync {
    /// Takes the migration's lease, bumping the epoch; refused while another runner holds it.
    fn acquire(&self, purpose: &str) -> Result<Lease, StateError>;
    /// Appends `record` durably, after checking that `lease` is still the current one.
    fn append(&self, lease: &Lease, record: &serde_json::Value) -> Result<(), StateError> {
        self.append_all(lease, std::slice::from_ref(record))
    }
    /// Appends `records` in order, durable together (one flush to the disk for all of them:
    /// the records of one window phase, which must all be durable before the phase acts).
    fn append_all(&self, lease: &Lease, records: &[serde_json::Value]) -> Result<(), StateError>;
    /// Every journal record, oldest first (read-only).
    fn journal(&self) -> Result<Vec<serde_json::Value>, StateError>;
    /// The current lease holder, if the lock is held right now (read-only).
    fn holder(&self) -> Result<Option<LeaseInfo>, StateError>;
    /// Saves the run's report (checks the lease).
    fn save_report(&self, lease: &Lease, report: &serde_json::Value) -> Result<(), StateError>;
    /// The last saved report (read-only).
    fn report(&self) -> Result<Option<serde_json::Value>, StateError>;
}

/// The file store: everything under `<state_dir>/run/`.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// The store of the migration whose state directory is `state`.
    pub fn new(state: &StateDir) -> FileStore {
        FileStore { dir: state.run() }
    }

    fn lease_path(&self) -> PathBuf {
        self.dir.join("lease.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    fn read_lease(&self) -> Result<Option<LeaseInfo>, StateError> {
        let path = self.lease_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io(&path, format!("unreadable lease ({e})"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn check(&self, lease: &Lease) -> Result<(), StateError> {
        let current = self.read_lease()?.map(|l| l.epoch).unwrap_or_default();
        if current != lease.info.epoch {
            return Err(StateError::LeaseLost {
                mine: lease.info.epoch,
                current,
            });
        }
        Ok(())
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The journal's type for the line that says a torn tail was cut (the run's reader skips it;
/// `status` reports it).
pub const JOURNAL_REPAIRED: &str = "journal-repaired";

/// A crash mid-append leaves a last line without its newline. Appending straight after it
/// would merge the next record into it and, one append later, leave an unreadable line in the
/// middle of the journal. So before an append: a complete record that only lacks its newline
/// gets it; anything else after the last newline is cut off (and the cut made durable), and a
/// `journal-repaired` line saying what was cut goes in front of the new record.
fn repair_tail(path: &Path, lease: &Lease) -> Result<Option<Vec<u8>>, StateError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    if bytes.last().is_none_or(|b| *b == b'\n') {
        return Ok(None);
    }
    let start = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let tail = &bytes[start..];
    if serde_json::from_slice::<serde_json::Value>(tail).is_ok() {
        return Ok(Some(b"\n".to_vec()));
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    file.set_len(start as u64).map_err(|e| io(path, e))?;
    file.sync_data().map_err(|e| io(path, e))?;
    let shown: String = String::from_utf8_lossy(tail).chars().take(200).collect();
    let note = serde_json::json!({
        "type": JOURNAL_REPAIRED,
        "epoch": lease.info.epoch,
        "at_ms": SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
        "cut_bytes": tail.len(),
        "cut": shown,
        "text": format!(
            "a torn last line of {} bytes (a crash mid-append) was cut before this append",
            tail.len()
        ),
    });
    let mut line = serde_json::to_vec(&note).map_err(|e| io(path, e))?;
    line.push(b'\n');
    tracing::warn!(path = %path.display(), cut_bytes = tail.len(), "cut a torn journal line");
    Ok(Some(line))
}

impl Store for FileStore {
    fn acquire(&self, purpose: &str) -> Result<Lease, StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.lock_path();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = self
                    .read_lease()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "unknown holder".to_owned());
                return Err(StateError::Held { holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, e)),
        }
        let epoch = self.read_lease()?.map(|l| l.epoch).unwrap_or_default() + 1;
        let info = LeaseInfo {
            epoch,
            pid: std::process::id(),
            host: host_name(),
            purpose: purpose.to_owned(),
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let text = serde_json::to_vec_pretty(&info).map_err(|e| io(&self.lease_path(), e))?;
        write_atomic(&self.lease_path(), &text)?;
        Ok(Lease { info, _lock: lock })
    }

    fn append_all(&self, lease: &Lease, records: &[serde_json::Value]) -> Result<(), StateError> {
        self.check(lease)?;
        let path = self.journal_path();
        let new = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let mut out = Vec::new();
        if !new && let Some(repair) = repair_tail(&path, lease)? {
            out.extend_from_slice(&repair);
        }
        for record in records {
            let mut line = serde_json::to_vec(record).map_err(|e| io(&path, e))?;
            line.push(b'\n');
            out.extend_from_slice(&line);
        }
        // All or nothing: a batch that could not be written whole (a full disk) is cut back
        // off, so no complete line of it (a point of no return, say) is read later as done.
        let before = file.metadata().map_err(|e| io(&path, e))?.len();
        let written = file
            .write_all(&out)
            .and_then(|()| file.sync_data())
            .map_err(|e| io(&path, e));
        if let Err(e) = written {
            // Nothing to cut when nothing was written (a read-only filesystem refuses both).
            let now = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if now == before {
                return Err(e);
            }
            let cut = file.set_len(before).and_then(|()| file.sync_data());
            return Err(match cut {
                Ok(()) => e,
                Err(c) => io(
                    &path,
                    format!("{e}; and cutting the partial write back off failed too: {c}"),
                ),
            });
        }
        if new {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn journal(&self) -> Result<Vec<serde_json::Value>, StateError> {
        let path = self.journal_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path, e)),
        };
        let mut out = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(v) => out.push(v),
                // A torn last line (a crash mid-append) is ignored; one in the middle is not.
                Err(_) if n + 1 == lines.len() => {}
                Err(e) => {
                    return Err(io(&path, format!("line {}: {e}", n + 1)));
                }
            }
        }
        Ok(out)
    }

    fn holder(&self) -> Result<Option<LeaseInfo>, StateError> {
        let path = self.lock_path();
        let Ok(file) = File::open(&path) else {
            return Ok(None);
        };
        // A shared probe: succeeds (and is dropped at once) only when nobody holds the lock.
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(std::fs::TryLockError::WouldBlock) => self.read_lease(),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&path, e)),
        }
    }

    fn save_report(&self, lease: &Lease, report: &serde_json::Value) -> Result<(), StateError> {
        self.check(lease)?;
        let path = self.dir.join("report.json");
        let text = serde_json::to_vec_pretty(report).map_err(|e| io(&path, e))?;
        write_atomic(&path, &text)
    }

    fn report(&self) -> Result<Option<serde_json::Value>, StateError> {
        let path = self.dir.join("report.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_runner_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&StateDir::new(dir.path()));
        let first = store.acquire("run").unwrap();
        assert_eq!(first.info.epoch, 1);
        let err = store.acquire("run --resume").unwrap_err();
        assert!(
            matches!(&err, StateError::Held { holder } if holder.contains("`run`") && holder.contains("epoch 1")),
            "{err}"
        );
        assert_eq!(store.holder().unwrap().unwrap().epoch, 1);
        drop(first);
        assert_eq!(store.holder().unwrap(), None);
        assert_eq!(store.acquire("run --resume").unwrap().info.epoch, 2);
    }

    #[test]
    fn records_appended_together_read_back_in_order_after_the_single_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&StateDir::new(dir.path()));
        let lease = store.acquire("run").unwrap();
        store.append(&lease, &serde_json::json!({"n": 1})).unwrap();
        let batch: Vec<_> = (2..=4).map(|n| serde_json::json!({ "n": n })).collect();
        store.append_all(&lease, &batch).unwrap();
        store.append(&lease, &serde_json::json!({"n": 5})).unwrap();
        let ns: Vec<_> = store
            .journal()
            .unwrap()
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_runner_whose_lease_was_taken_over_cannot_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&StateDir::new(dir.path()));
        let old = store.acquire("run").unwrap();
        store.append(&old, &serde_json::json!({"n": 1})).unwrap();
        // Another store (a takeover after a lost lock, e.g. a shared store's expiry) bumps the
        // epoch; the old holder's next write is refused.
        let mut info = old.info.clone();
        info.epoch = 7;
        write_atomic(&store.lease_path(), &serde_json::to_vec(&info).unwrap()).unwrap();
        let err = store
            .append(&old, &serde_json::json!({"n": 2}))
            .unwrap_err();
        assert!(matches!(
            err,
            StateError::LeaseLost {
                mine: 1,
                current: 7
            }
        ));
        assert_eq!(store.journal().unwrap().len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_reads_never_create_anything() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&dir.path().join("state"));
        let store = FileStore::new(&state);
        assert!(store.journal().unwrap().is_empty());
        assert!(store.holder().unwrap().is_none());
        assert!(store.report().unwrap().is_none());
        assert!(!state.root().exists(), "a read created the state directory");
        let lease = store.acquire("run").unwrap();
        store.append(&lease, &serde_json::json!({"n": 1})).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(store.journal_path())
            .unwrap();
        f.write_all(b"{\"n\": 2, \"tor").unwrap();
        assert_eq!(store.journal().unwrap(), vec![serde_json::json!({"n": 1})]);
    }

    #[test]
    fn appends_after_a_torn_tail_cut_it_first_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&StateDir::new(dir.path()));
        let lease = store.acquire("run").unwrap();
        store.append(&lease, &serde_json::json!({"n": 1})).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(store.journal_path())
            .unwrap();
        f.write_all(b"{\"n\": 2, \"tor").unwrap();
        drop(f);
        store.append(&lease, &serde_json::json!({"n": 3})).unwrap();
        store.append(&lease, &serde_json::json!({"n": 4})).unwrap();
        let journal = store.journal().unwrap();
        let ns: Vec<_> = journal.iter().filter_map(|v| v.get("n")).collect();
        assert_eq!(
            ns,
            [
                &serde_json::json!(1),
                &serde_json::json!(3),
                &serde_json::json!(4)
            ]
        );
        let repaired: Vec<_> = journal
            .iter()
            .filter(|v| v["type"] == JOURNAL_REPAIRED)
            .collect();
        assert_eq!(repaired.len(), 1, "{journal:?}");
        assert_eq!(repaired[0]["cut_bytes"], 13);
        // Every line of the file parses: nothing torn is left in the middle.
        let text = std::fs::read_to_string(store.journal_path()).unwrap();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn a_complete_last_record_without_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&StateDir::new(dir.path()));
        let lease = store.acquire("run").unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::write(store.journal_path(), b"{\"n\":1}\n{\"n\":2}").unwrap();
        store.append(&lease, &serde_json::json!({"n": 3})).unwrap();
        let ns: Vec<_> = store
            .journal()
            .unwrap()
            .iter()
            .map(|v| v["n"].clone())
            .collect();
        assert_eq!(
            ns,
            [
                serde_json::json!(1),
                serde_json::json!(2),
                serde_json::json!(3)
            ]
        );
    }
}
