//! rsync's command line, its exit codes and its progress, as cutover uses them.
//!
//! The copy itself is rsync's job; cutover decides the flags (faithful by default:
//! `-aHAX --numeric-ids --delete`, no `-z` on a LAN), which host runs it (one of the two,
//! talking to the other directly, never through the operator's machine), and what its exit
//! code means for the run: 24 (files vanished while a warm pass walked a live tree) is only a
//! warning then, and every other failure gets a sentence that says what to do.

use serde::Serialize;

use crate::plan::{FileSync, FilesRunsOn, Host};

use super::remote::ssh_options;

/// What one rsync exit code means for cutover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitMeaning {
    /// The code.
    pub code: i32,
    /// Whether the pass still counts as done (with a warning).
    pub acceptable: bool,
    /// What happened and what to do, in words.
    pub text: String,
}

/// Reads rsync's exit code. `warm`: the service still runs, so files vanishing mid-walk are
/// expected and the next pass picks the tree up again.
/// `stderr` is rsync's error output: a 23 in a warm pass whose every error is a file changing
/// under rsync (see [`only_live_tree_changes`]) is a warning too.
pub fn exit_meaning(code: i32, warm: bool, stderr: &str) -> ExitMeaning {
    let (acceptable, text) = match code {
        0 => (true, "done".to_owned()),
        23 if warm && only_live_tree_changes(stderr) => (
            true,
            "some files changed while rsync read the live tree (rsync exit 23); the next pass copies what is there then".to_owned(),
        ),
        24 if warm => (
            true,
            "some files vanished while rsync walked the live tree (rsync exit 24); the next pass copies what is there then".to_owned(),
        ),
        24 => (
            false,
            "files vanished during the final pass (rsync exit 24): something still writes to the tree; stop the service on the source first".to_owned(),
        ),
        23 => (
            false,
            "some files could not be copied (rsync exit 23: partial transfer); the lines above name them, usually a permission the ssh user lacks on one side".to_owned(),
        ),
        12 => (
            false,
            "the rsync data stream broke (rsync exit 12): the other end died, ran out of space, or its rsync is too old; see the lines above".to_owned(),
        ),
        30 => (
            false,
            "rsync timed out sending or receiving data (rsync exit 30): the link stalled; retry, and check the network between the hosts".to_owned(),
        ),
        255 => (
            false,
            "ssh failed (exit 255): the host is unreachable or refused the key; the files preflight tells which".to_owned(),
        ),
        127 => (
            false,
            "rsync is not installed where it must run (exit 127): install rsync on both hosts".to_owned(),
        ),
        1 => (false, "rsync rejected its arguments (exit 1): check `rsync_args` in the plan".to_owned()),
        2 => (false, "the two rsync versions cannot talk (exit 2): upgrade the older one".to_owned()),
        11 => (false, "a file could not be read or written (rsync exit 11): see the lines above".to_owned()),
        20 => (false, "rsync was interrupted (exit 20)".to_owned()),
        other => (false, format!("rsync failed with exit code {other}; see the lines above")),
    };
    ExitMeaning {
        code,
        acceptable,
        text,
    }
}

/// Whether every error rsync printed is a file changing under it while it read a live tree
/// (read past a shrinking file's end: `No data available`; a file that vanished or changed
/// during the transfer), so that its exit 23 in a warm pass means "the next pass copies it",
/// not a fault. A permission, space or any other error keeps 23 an error.
pub fn only_live_tree_changes(stderr: &str) -> bool {
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("rsync:") || l.starts_with("file has vanished"))
        .collect();
    !errors.is_empty()
        && errors.iter().all(|l| {
            l.starts_with("file has vanished")
                || l.contains("No data available (61)")
                || l.contains("failed verification")
                || l.contains("changed during")
        })
}

/// `path` with one trailing slash: rsync then copies the directory's contents.
pub fn dir(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    format!("{}/", text.trim_end_matches('/'))
}

/// The ssh command (without the destination) the running host uses to reach `peer`, sharing
/// the connection through `hop` (see [`super::hop`]) when there is one.
pub fn peer_ssh(peer: &Host, hop: Option<&str>) -> Vec<String> {
    std::iter::once("ssh".to_owned())
        .chain(ssh_options(peer))
        .chain(hop.map(super::hop::options).unwrap_or_default())
        .collect()
}

/// [`peer_ssh`] as rsync's `-e` value. rsync splits that value itself, on whitespace outside
/// quotes: each word is quoted where it needs to be ([`rsync_word`]), so an ssh config or key
/// path with a space or a quote stays one argument.
pub fn peer_shell(peer: &Host, hop: Option<&str>) -> String {
    peer_ssh(peer, hop)
        .iter()
        .map(|w| rsync_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word of rsync's `-e` value: as it is when it holds only safe characters, else in single
/// quotes (rsync's own splitter: no escapes inside them, so a quote is closed, given in double
/// quotes, and reopened).
pub fn rsync_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\"'\"'"))
}

/// Passed to every rsync with a remote path: the path goes to the remote rsync as it is, never
/// through the remote shell (which would split it on spaces and expand `*`, `$`, `~`). rsync
/// 3.0.0 and later take it; preflight refuses an older one.
pub const PROTECT_ARGS: &str = "--protect-args";

/// The oldest rsync cutover runs (the first with `--protect-args`).
pub const MIN_RSYNC: (u32, u32, u32) = (3, 0, 0);

/// The version in `rsync --version`'s first line (`rsync  version 3.2.7  protocol version 31`).
pub fn rsync_version(line: &str) -> Option<(u32, u32, u32)> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "version")?;
    let v = words.next()?;
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Which host runs rsync for `entry`, and which one it talks to.
pub fn hosts<'a>(entry: &FileSync, source: &'a Host, target: &'a Host) -> (&'a Host, &'a Host) {
    match entry.runs_on {
        FilesRunsOn::Target => (target, source),
        FilesRunsOn::Source => (source, target),
    }
}

/// Flags every pass uses (faithful copy, the plan's excludes and limits).
pub fn common_flags(entry: &FileSync) -> Vec<String> {
    let mut args: Vec<String> = vec!["-aHAX".into(), "--numeric-ids".into()];
    if entry.delete {
        args.push("--delete".into());
    }
    if entry.compress {
        args.push("-z".into());
    }
    if let Some(limit) = &entry.bwlimit {
        args.push(format!("--bwlimit={limit}"));
    }
    for pattern in &entry.exclude {
        args.push(format!("--exclude={pattern}"));
    }
    // SQLite databases travel as online backups (`files::sqlite`), never as live files.
    for db in &entry.sqlite {
        let db = db.trim_start_matches('/');
        args.push(format!("--exclude=/{db}"));
        for companion in ["-wal", "-shm", "-journal"] {
            args.push(format!("--exclude=/{db}{companion}"));
        }
    }
    args.extend(entry.rsync_args.iter().cloned());
    args
}

/// The rsync argv run on the running host: `flags`, then the remote shell to the peer (through
/// the shared connection `hop`, if any), then source and destination (one of them `peer:path`).
pub fn argv(
    entry: &FileSync,
    source: &Host,
    target: &Host,
    flags: &[String],
    hop: Option<&str>,
) -> Vec<String> {
    let (_, peer) = hosts(entry, source, target);
    let mut args = vec!["rsync".to_owned()];
    args.extend(flags.iter().cloned());
    args.push(PROTECT_ARGS.into());
    args.push("-e".into());
    args.push(peer_shell(peer, hop));
    let (from, to) = match entry.runs_on {
        FilesRunsOn::Target => (
            format!("{}:{}", source.ssh, dir(&entry.source_path)),
            dir(&entry.target_path),
        ),
        FilesRunsOn::Source => (
            dir(&entry.source_path),
            format!("{}:{}", target.ssh, dir(&entry.target_path)),
        ),
    };
    args.push(from);
    args.push(to);
    args
}

/// Figures from `--stats` and `--info=progress2` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Files in the tree (`Number of files`).
    pub files: u64,
    /// Regular files transferred.
    pub files_transferred: u64,
    /// Size of the tree in bytes.
    pub total_bytes: u64,
    /// Bytes of the files transferred.
    pub transferred_bytes: u64,
    /// Bytes that went over the wire (sent + received).
    pub wire_bytes: u64,
}

fn number_after(line: &str, label: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix(label)?;
    let digits: String = rest
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Reads rsync's `--stats` block.
pub fn parse_stats(text: &str) -> Figures {
    let mut f = Figures::default();
    let mut sent = 0;
    let mut received = 0;
    for line in text.lines() {
        if let Some(n) = number_after(line, "Number of files:") {
            f.files = n;
        } else if let Some(n) = number_after(line, "Number of regular files transferred:") {
            f.files_transferred = n;
        } else if let Some(n) = number_after(line, "Total file size:") {
            f.total_bytes = n;
        } else if let Some(n) = number_after(line, "Total transferred file size:") {
            f.transferred_bytes = n;
        } else if let Some(n) = number_after(line, "Total bytes sent:") {
            sent = n;
        } else if let Some(n) = number_after(line, "Total bytes received:") {
            received = n;
        }
    }
    f.wire_bytes = sent + received;
    f
}

/// One `--info=progress2` update: bytes so far and the percentage of the whole.
pub fn parse_progress(line: &str) -> Option<(u64, u8)> {
    let mut words = line.split_whitespace();
    let bytes: u64 = words.next()?.replace(',', "").parse().ok()?;
    let percent: u8 = words.next()?.strip_suffix('%')?.parse().ok()?;
    Some((bytes, percent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn entry(runs_on: FilesRunsOn) -> FileSync {
        FileSync {
            name: "uploads".into(),
            source_path: PathBuf::from("/srv/app/data"),
            target_path: PathBuf::from("/srv/app/data/"),
            exclude: vec!["*.tmp".into()],
            delete: true,
            rsync_args: vec![],
            runs_on,
            bwlimit: Some("20M".into()),
            compress: false,
            change_log: false,
            sqlite: vec![],
            replace_target: false,
        }
    }

    fn host(ssh: &str) -> Host {
        Host {
            ssh: ssh.into(),
            port: Some(2222),
            ssh_config: None,
            identity_file: Some(PathBuf::from("/root/.ssh/id_migrate")),
        }
    }

    #[test]
    fn the_remote_shell_words_survive_rsyncs_own_splitting_and_versions_parse() {
        assert_eq!(rsync_word("-oBatchMode=yes"), "-oBatchMode=yes");
        assert_eq!(rsync_word("/home/op/my keys/id"), "'/home/op/my keys/id'");
        assert_eq!(rsync_word("it's"), "'it'\"'\"'s'");
        assert_eq!(rsync_word(""), "''");
        assert_eq!(
            rsync_version("rsync  version 3.2.7  protocol version 31"),
            Some((3, 2, 7))
        );
        assert_eq!(
            rsync_version("rsync  version v3.4.1  protocol version 32"),
            Some((3, 4, 1))
        );
        assert!(rsync_version("rsync  version 2.6.9  protocol version 29").unwrap() < MIN_RSYNC);
        assert_eq!(rsync_version("nonsense"), None);
    }

    #[test]
    fn pulls_on_the_target_server_to_server_with_faithful_flags() {
        let (s, t) = (host("root@old"), host("root@new"));
        let e = entry(FilesRunsOn::Target);
        let args = argv(&e, &s, &t, &common_flags(&e), None);
        assert_eq!(
            args,
            [
                "rsync",
                "-aHAX",
                "--numeric-ids",
                "--delete",
                "--bwlimit=20M",
                "--exclude=*.tmp",
                "--protect-args",
                "-e",
                "ssh -o BatchMode=yes -o ConnectTimeout=10 -p 2222 -i /root/.ssh/id_migrate",
                "root@old:/srv/app/data/",
                "/srv/app/data/"
            ]
        );
        assert!(!args.iter().any(|a| a == "-z"), "no compression on a LAN");
        let e = entry(FilesRunsOn::Source);
        let args = argv(&e, &s, &t, &common_flags(&e), None);
        assert_eq!(
            &args[args.len() - 2..],
            ["/srv/app/data/", "root@new:/srv/app/data/"]
        );
    }

    #[test]
    fn a_live_tree_changing_under_a_warm_pass_is_told_from_a_fault() {
        let live = "rsync: [sender] read errors mapping \"/srv/app/app.log\": No data available (61)\nfile has vanished: \"/srv/app/x\"\nrsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1956) [generator=3.5.0]\n";
        assert!(only_live_tree_changes(live));
        let denied = "rsync: [sender] send_files failed to open \"/srv/app/secret\": Permission denied (13)\nrsync error: some files/attrs were not transferred (code 23)\n";
        assert!(!only_live_tree_changes(denied));
        assert!(!only_live_tree_changes(""));
    }

    #[test]
    fn exit_codes_say_what_happened() {
        assert!(exit_meaning(24, true, "").acceptable);
        assert!(!exit_meaning(24, false, "").acceptable);
        for code in [23, 12, 30, 255] {
            let m = exit_meaning(code, true, "");
            assert!(!m.acceptable && m.text.contains(&code.to_string()), "{m:?}");
        }
    }

    #[test]
    fn stats_and_progress_are_read() {
        let stats = "Number of files: 1,204 (reg: 1,000, dir: 204)\nNumber of regular files transferred: 12\nTotal file size: 5,242,880 bytes\nTotal transferred file size: 61,440 bytes\nTotal bytes sent: 70,000\nTotal bytes received: 1,234\n";
        assert_eq!(
            parse_stats(stats),
            Figures {
                files: 1204,
                files_transferred: 12,
                total_bytes: 5_242_880,
                transferred_bytes: 61_440,
                wire_bytes: 71_234
            }
        );
        assert_eq!(
            parse_progress("      1,234,567  45%   12.34MB/s    0:00:12 (xfr#12, to-chk=34/100)"),
            Some((1_234_567, 45))
        );
        assert_eq!(parse_progress("sending incremental file list"), None);
    }
}
