//! Room on the target for a database's initial copy, checked before anything is copied.
//!
//! A copy that cannot fit fails on the target table by table ("No space left on device"),
//! retries for ever, and meanwhile the source keeps WAL or binary logs for it. The engines read
//! what will be copied (their tables' size on the source, indexes included) and where the
//! target server writes it (its data directory); this module reads that filesystem's free
//! space where it can (a server on this machine here, a host the plan reaches over ssh from
//! what `df -P` prints there) and decides with one rule for every engine.

use std::path::Path;

use crate::finding::Severity;

/// Room kept beyond the copy itself: WAL or redo logs written while loading, temporary files
/// of the index builds, and a server that must not be left with a full disk.
pub const FIXED_MARGIN: u64 = 64 << 20;

/// The free space a copy of `copy` bytes needs on the target: the copy, a fifth more (a
/// table rebuilt by its load is rarely smaller, and indexes grow while built), and
/// [`FIXED_MARGIN`].
pub fn required(copy: u64) -> u64 {
    copy.saturating_add(copy / 5).saturating_add(FIXED_MARGIN)
}

/// Bytes an unprivileged writer (the database server's own user) may still write on the
/// filesystem that holds `path` (root's reserved blocks do not count).
pub fn free(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    /// The copy fits with the margin.
    Enough { copy: u64, free: u64, required: u64 },
    /// It does not: refused.
    Short { copy: u64, free: u64, required: u64 },
    /// The free space could not be read (a server on another host, a data directory the
    /// account may not see); the size needed is said.
    Unknown {
        copy: u64,
        required: u64,
        why: String,
    },
}

/// Where the target server's filesystem can be read from.
#[derive(Debug, Clone)]
pub enum Reach {
    /// The server runs on this machine: its paths are this machine's.
    Here,
    /// Its host was read over ssh (the plan's `[hosts]` entry for it): the free bytes, or why
    /// they could not be read, and the ssh destination.
    Ssh {
        destination: String,
        free: Result<u64, String>,
    },
    /// Another host that no `[hosts]` entry names: nothing can read it.
    Elsewhere,
}

/// Decides for a copy of `copy` bytes into `dir` (the target server's data directory as that
/// server names it, when known), read as `reach` allows.
pub fn room(reach: &Reach, dir: Result<&Path, String>, copy: u64) -> Room {
    let required = required(copy);
    let unknown = |why: String| Room::Unknown {
        copy,
        required,
        why,
    };
    let dir = match dir {
        Ok(dir) => dir,
        Err(why) => return unknown(why),
    };
    let free = match reach {
        Reach::Elsewhere => {
            return unknown(
                "the target server runs on another host, and no `[hosts]` entry names it (with one, its free space is read over ssh)"
                    .to_owned(),
            );
        }
        Reach::Ssh {
            destination,
            free: Err(e),
        } => {
            return unknown(format!(
                "cannot read the free space of {} over ssh on {destination}: {e}",
                dir.display()
            ));
        }
        Reach::Ssh { free: Ok(free), .. } => *free,
        Reach::Here => match free(dir) {
            Ok(free) => free,
            Err(e) => {
                return unknown(format!(
                    "cannot read the free space of {}: {e}",
                    dir.display()
                ));
            }
        },
    };
    if free >= required {
        Room::Enough {
            copy,
            free,
            required,
        }
    } else {
        Room::Short {
            copy,
            free,
            required,
        }
    }
}

/// The bytes an unprivileged writer may still write, from the output of POSIX `df -P -k DIR`
/// (a header, then one line: file system, 1024-blocks, used, available, capacity, mount
/// point). The file system's and the mount point's names may hold spaces, so the figures are
/// found as three numbers followed by a percentage.
pub fn parse_df(output: &str) -> Result<u64, String> {
    let line = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| "df printed nothing".to_owned())?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |w: &str| w.parse::<u64>().ok();
    words
        .windows(4)
        .find_map(|w| {
            let percent = w[3].strip_suffix('%')?;
            number(percent).or(if percent == "-" { Some(0) } else { None })?;
            number(w[0])?;
            number(w[1])?;
            number(w[2])
        })
        .map(|kib| kib.saturating_mul(1024))
        .ok_or_else(|| format!("df printed no figures cutover can read: {line:?}"))
}

/// The whole check for a copy of `copy` bytes (`what`, in words) to a server whose data
/// directory is `dir` (or why it is not known), read as `reach` allows: the finding's
/// severity, problem and fix.
pub fn check(
    reach: &Reach,
    dir: Result<String, String>,
    copy: u64,
    what: &str,
) -> (Severity, String, String) {
    let shown = match (&dir, reach) {
        (Ok(dir), Reach::Ssh { destination, .. }) => format!("{dir} (on {destination}, over ssh)"),
        (Ok(dir), _) => dir.clone(),
        (Err(_), _) => "its data directory".to_owned(),
    };
    room(
        reach,
        dir.as_deref().map(Path::new).map_err(Clone::clone),
        copy,
    )
    .finding(what, &shown)
}

impl Room {
    /// The finding, in words: severity, problem, fix. `what` names the copy (`the initial
    /// copy of 3 tables`), `dir` the directory as the server names it.
    pub fn finding(&self, what: &str, dir: &str) -> (Severity, String, String) {
        match self {
            Room::Enough {
                copy,
                free,
                required,
            } => (
                Severity::Info,
                format!(
                    "{what} needs about {} on the target ({} with the margin); {dir} has {} free",
                    bytes(*copy),
                    bytes(*required),
                    bytes(*free)
                ),
                "nothing to do".to_owned(),
            ),
            Room::Short {
                copy,
                free,
                required,
            } => (
                Severity::Error,
                format!(
                    "{what} does not fit on the target: it needs about {} ({} with the margin for WAL and index builds), and {dir} has {} free; the copy would fail on a full disk and retry for ever while the source keeps its logs",
                    bytes(*copy),
                    bytes(*required),
                    bytes(*free)
                ),
                format!(
                    "free at least {} on the target's filesystem (or grow it, or narrow `tables`), then run it again",
                    bytes(required.saturating_sub(*free))
                ),
            ),
            Room::Unknown {
                copy,
                required,
                why,
            } => (
                Severity::Warning,
                format!(
                    "{what} needs about {} on the target ({} with the margin); its free space was not checked: {why}",
                    bytes(*copy),
                    bytes(*required)
                ),
                format!(
                    "make sure the target's data directory has at least {} free before starting",
                    bytes(*required)
                ),
            ),
        }
    }
}

/// `n` bytes in binary units, one decimal (`307.2 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (n as f64, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_fifth_plus_a_fixed_part_and_never_overflows() {
        assert_eq!(required(0), FIXED_MARGIN);
        assert_eq!(required(100 << 20), (120 << 20) + FIXED_MARGIN);
        assert_eq!(required(u64::MAX), u64::MAX);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(307 * (1 << 20) + (1 << 19)), "307.5 MiB");
    }

    #[test]
    fn a_remote_server_or_an_unreadable_directory_says_the_size_needed_and_refuses_nothing() {
        let remote = room(&Reach::Elsewhere, Ok(Path::new("/")), 10 << 20);
        assert!(matches!(remote, Room::Unknown { .. }));
        let (severity, problem, fix) = remote.finding("the copy", "/var/lib/x");
        assert_eq!(severity, Severity::Warning);
        assert!(problem.contains("10.0 MiB") && problem.contains("another host"));
        assert!(problem.contains("[hosts]"), "{problem}");
        assert!(fix.contains("76.0 MiB"), "{fix}");
        let hidden = room(&Reach::Here, Err("no privilege".into()), 1);
        assert!(matches!(hidden, Room::Unknown { ref why, .. } if why == "no privilege"));
    }

    #[test]
    fn this_machines_free_space_decides() {
        let dir = tempfile::tempdir().unwrap();
        let free = free(dir.path()).unwrap();
        assert!(free > 0);
        assert!(matches!(
            room(&Reach::Here, Ok(dir.path()), 0),
            Room::Enough { .. } | Room::Short { .. }
        ));
        let (severity, problem, _) =
            room(&Reach::Here, Ok(dir.path()), u64::MAX / 2).finding("x", "d");
        assert_eq!(severity, Severity::Error, "{problem}");
        assert!(matches!(
            room(&Reach::Here, Ok(Path::new("/nonexistent/cutover")), 0),
            Room::Unknown { .. }
        ));
    }

    #[test]
    fn a_hosts_df_output_is_read_whatever_its_names_hold() {
        let plain = "Filesystem     1024-blocks    Used Available Capacity Mounted on\n/dev/sda1         10000000 4000000   5000000      45% /\n";
        assert_eq!(parse_df(plain), Ok(5_000_000 * 1024));
        let spaced = "Filesystem 1024-blocks Used Available Capacity Mounted on\nmy disk 1 200 100 80 56% /mnt/my data\n";
        assert_eq!(parse_df(spaced), Ok(80 * 1024));
        assert!(parse_df("").is_err());
        assert!(parse_df("Filesystem 1024-blocks Used Available Capacity Mounted on\n").is_err());
        assert!(parse_df("df: /x: No such file or directory").is_err());
        // A real df on this machine agrees with statvfs to within what changed in between.
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("df")
            .args(["-P", "-k", "--"])
            .arg(dir.path())
            .output()
            .unwrap();
        let read = parse_df(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let here = free(dir.path()).unwrap();
        assert!(read.abs_diff(here) < 64 << 20, "df {read}, statvfs {here}");
        let over_ssh = Reach::Ssh {
            destination: "db2".into(),
            free: Ok(1 << 20),
        };
        let (severity, problem, _) = check(&over_ssh, Ok("/var/lib/x".into()), 1 << 30, "the copy");
        assert_eq!(severity, Severity::Error);
        assert!(
            problem.contains("/var/lib/x (on db2, over ssh) has 1.0 MiB free"),
            "{problem}"
        );
        let failed = Reach::Ssh {
            destination: "db2".into(),
            free: Err("Permission denied (publickey)".into()),
        };
        let (severity, problem, _) = check(&failed, Ok("/d".into()), 1, "the copy");
        assert_eq!(severity, Severity::Warning);
        assert!(
            problem.contains("over ssh on db2: Permission denied"),
            "{problem}"
        );
    }
}
