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

use super::changed::{copy, dir_metadata, parent_dirs};
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
pub(super) async fn rsync_pass(
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
pub(super) const NO_DELETE: &str = "<no --delete>";

pub(super) fn add(total: &mut Figures, more: &Figures) {
    total.files = total.files.max(more.files);
    total.files_transferred += more.files_transferred;
    total.total_bytes = total.total_bytes.max(more.total_bytes);
    total.transferred_bytes += more.transferred_bytes;
    total.wire_bytes += more.wire_bytes;
}

/// Copies the entry's SQLite databases as online backups, then restores the metadata of the
/// directories that hold them.
pub(super) async fn sqlite_copies(
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
    let pass = final_pass_then(entry, state_dir, false, progress).await;
    // The running host's shared connection has done its work: nothing follows a final pass.
    if let Err(e) = super::hop::close(entry, state_dir).await {
        tracing::warn!(entry = %entry.plan.name, error = %e, "the running host's shared ssh connection was not closed");
    }
    pass
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
