//! SQLite databases inside a tree are never copied as files while in use: a file copied mid-
//! write, or without its `-wal`, arrives corrupt or stale (Vaultwarden, Headscale, Gitea...).
//!
//! Every pass leaves them (and `-wal`, `-shm`, `-journal`) out of rsync's walk and copies an
//! online backup instead (`sqlite3 .backup` on the source host: a consistent snapshot even
//! while the service writes). The target's stale `-wal`/`-shm` are removed first, or SQLite
//! would replay an old log over the new file. In the final pass the service must have
//! stopped: the database and its WAL must not change while the backup is taken, else the pass
//! is refused. The copy is then checked on the target with `PRAGMA integrity_check`, and verify
//! compares the databases' content hashes (`.sha3sum`), not their bytes.

use std::time::Duration;

use super::remote::{on_host, ssh_argv};
use super::rsync::{dir, peer_shell};
use super::{Entry, FilesError, tail};
use crate::plan::FilesRunsOn;

const TIMEOUT: Duration = Duration::from_secs(3600);

/// The companions SQLite keeps beside a database file.
pub const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// An `immutable` URI for `path`: read without locks and without creating `-wal`/`-shm`
/// beside it (their coming and going would move the directory's time).
fn immutable(path: &str) -> String {
    let encoded: String = path
        .chars()
        .map(|c| match c {
            '?' => "%3f".to_owned(),
            '#' => "%23".to_owned(),
            '%' => "%25".to_owned(),
            c => c.to_string(),
        })
        .collect();
    format!("file:{encoded}?immutable=1")
}

fn source_file(entry: &Entry, db: &str) -> String {
    format!(
        "{}{}",
        dir(&entry.plan.source_path),
        db.trim_start_matches('/')
    )
}

fn target_file(entry: &Entry, db: &str) -> String {
    format!(
        "{}{}",
        dir(&entry.plan.target_path),
        db.trim_start_matches('/')
    )
}

/// Size and modification time of the database and its WAL on the source (what a writer moves;
/// cutover's own backup only reads, though SQLite's opening and closing of the file raise
/// inotify events on it and its `-shm`).
pub async fn fingerprint(entry: &Entry, db: &str) -> Result<String, FilesError> {
    let file = source_file(entry, db);
    let wal = format!("{file}-wal");
    let out = on_host(
        &entry.source,
        &["stat", "--printf", "%s %.9Y\\n", &file, &wal],
        Duration::from_secs(60),
    )
    .await?;
    Ok(out.stdout)
}

/// Where `entry`'s backups are spooled on the source host (a `mktemp -d` template without its
/// `X`s; entry names are plain, checked by the plan).
fn spool_prefix(entry: &Entry) -> String {
    format!("/tmp/cutover-{}-sqlite.", entry.plan.name)
}

/// Removes spool directories a crashed pass of `entry` left on the source host (older than ten
/// minutes: a pass of the same entry cannot run beside this one, the lease sees to that, and
/// the age keeps a slow one's directory safe all the same).
async fn clear_leftovers(entry: &Entry) {
    let prefix = spool_prefix(entry);
    let name = format!("{}*", prefix.trim_start_matches("/tmp/"));
    let cleared = on_host(
        &entry.source,
        &[
            "find",
            "/tmp",
            "-maxdepth",
            "1",
            "-type",
            "d",
            "-name",
            &name,
            "-mmin",
            "+10",
            "-exec",
            "rm",
            "-rf",
            "--",
            "{}",
            "+",
        ],
        TIMEOUT,
    )
    .await;
    if let Err(e) = cleared {
        tracing::warn!(entry = %entry.plan.name, error = %e, "leftover backup directories were not cleared");
    }
}

/// Copies each database of `entry` as an online backup. `final_pass`: the service must have
/// stopped (refused otherwise), and the copy is integrity-checked on the target.
pub async fn copy(entry: &Entry, final_pass: bool) -> Result<Vec<String>, FilesError> {
    let mut copied = Vec::new();
    if !entry.plan.sqlite.is_empty() {
        clear_leftovers(entry).await;
    }
    for db in &entry.plan.sqlite {
        let file = source_file(entry, db);
        let target = target_file(entry, db);
        // A private directory (mktemp: 0700) on the source, removed on every path below; one
        // a crashed pass left is removed by the next pass (`clear_leftovers`).
        let made = on_host(
            &entry.source,
            &["mktemp", "-d", &format!("{}XXXXXXXX", spool_prefix(entry))],
            TIMEOUT,
        )
        .await?;
        let spool = made.stdout.trim().to_owned();
        if !made.ok() || !spool.starts_with(&spool_prefix(entry)) {
            return Err(FilesError::Sqlite(format!(
                "{}: no private directory for the backup of {file} on the source host (mktemp -d in /tmp): {}",
                entry.plan.name,
                tail(&made.stderr, 2)
            )));
        }
        let backup = format!("{spool}/backup.sqlite3");
        let before = fingerprint(entry, db).await?;
        let out = on_host(
            &entry.source,
            // `.timeout`: the service's writers hold locks for a moment at a time; without a
            // busy timeout the backup gives up at the first one ("database is locked").
            &[
                "sqlite3",
                "-bail",
                "-cmd",
                ".timeout 10000",
                &file,
                &format!(".backup {backup}"),
            ],
            TIMEOUT,
        )
        .await?;
        if !out.ok() {
            let _ = on_host(&entry.source, &["rm", "-rf", "--", &spool], TIMEOUT).await;
            return Err(FilesError::Sqlite(format!(
                "{}: the online backup of {file} failed on the source host: {}{}",
                entry.plan.name,
                tail(&out.stderr, 2),
                if out.code == Some(127) {
                    " (install the sqlite3 command-line tool there)"
                } else {
                    ""
                }
            )));
        }
        if final_pass && fingerprint(entry, db).await? != before {
            let _ = on_host(&entry.source, &["rm", "-rf", "--", &spool], TIMEOUT).await;
            return Err(FilesError::Sqlite(format!(
                "{}: {file} (or its -wal) changed during the final pass: the service still writes it, and there is no consistent copy of a live database in the window. Stop the service on the source host, then run the final pass again",
                entry.plan.name
            )));
        }
        // A stale WAL beside the new file would be replayed over it.
        let stale: Vec<String> = COMPANIONS.iter().map(|c| format!("{target}{c}")).collect();
        let mut rm = vec!["rm", "-f", "--"];
        rm.extend(stale.iter().map(String::as_str));
        on_host(&entry.target, &rm, TIMEOUT).await?;
        let (runner, peer) = entry.runner_and_peer();
        let (from, to) = match entry.plan.runs_on {
            FilesRunsOn::Target => (format!("{}:{backup}", entry.source.ssh), target.clone()),
            FilesRunsOn::Source => (backup.clone(), format!("{}:{target}", entry.target.ssh)),
        };
        // `--ignore-times`: a new backup can have the size and, to the second, the time of
        // the copy already on the target (two passes within one second), and rsync's quick
        // check would then keep the old copy.
        let argv = vec![
            "rsync".to_owned(),
            "-a".to_owned(),
            "--ignore-times".to_owned(),
            "--numeric-ids".to_owned(),
            super::rsync::PROTECT_ARGS.to_owned(),
            "-e".to_owned(),
            peer_shell(peer, entry.hop.as_deref()),
            from,
            to,
        ];
        let sent = super::remote::run(&ssh_argv(runner, &argv), TIMEOUT).await?;
        let _ = on_host(&entry.source, &["rm", "-rf", "--", &spool], TIMEOUT).await;
        if !sent.ok() {
            return Err(FilesError::Sqlite(format!(
                "{}: copying the backup of {file} failed: {}",
                entry.plan.name,
                tail(&sent.stderr, 3)
            )));
        }
        if final_pass {
            let check = on_host(
                &entry.target,
                &[
                    "sqlite3",
                    "-bail",
                    &immutable(&target),
                    "PRAGMA integrity_check",
                ],
                TIMEOUT,
            )
            .await?;
            if check.stdout.trim() != "ok" {
                return Err(FilesError::Sqlite(format!(
                    "{}: PRAGMA integrity_check on the target's {target} says: {}{}",
                    entry.plan.name,
                    check.stdout.trim(),
                    tail(&check.stderr, 2)
                )));
            }
        }
        copied.push(db.clone());
    }
    Ok(copied)
}

/// The databases whose content differs between the hosts (`.sha3sum` of each side).
pub async fn differences(entry: &Entry) -> Result<Vec<String>, FilesError> {
    let mut out = Vec::new();
    for db in &entry.plan.sqlite {
        let (s, t) = tokio::join!(
            on_host(
                &entry.source,
                &["sqlite3", &immutable(&source_file(entry, db)), ".sha3sum"],
                TIMEOUT
            ),
            on_host(
                &entry.target,
                &["sqlite3", &immutable(&target_file(entry, db)), ".sha3sum"],
                TIMEOUT
            ),
        );
        let (s, t) = (s?, t?);
        if !s.ok() || !t.ok() || s.stdout.trim() != t.stdout.trim() {
            out.push(format!(
                "sqlite {db}: content differs (source {}, target {})",
                s.stdout.trim(),
                if t.ok() {
                    t.stdout.trim().to_owned()
                } else {
                    tail(&t.stderr, 1)
                }
            ));
        }
    }
    Ok(out)
}
