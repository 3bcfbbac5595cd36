//! Whether both trees are the same: rsync itself asked, dry-run with `--checksum
//! --itemize-changes`; any line it would act on is a difference.

use serde::Serialize;

use super::remote::ssh_argv;
use super::rsync;
use super::sync::PASS_TIMEOUT;
use super::{Entry, FilesError, tail};

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
    fn itemized_lines_are_told_from_the_rest() {
        assert!(itemized(">f.st...... uploads/a.txt"));
        assert!(itemized("cd+++++++++ new-dir/"));
        assert!(itemized(".f...p..... mode-changed"));
        assert!(itemized("*deleting   gone.txt"));
        assert!(!itemized("sending incremental file list"));
        assert!(!itemized(""));
    }
}
