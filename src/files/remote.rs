//! Commands on a host over ssh, as argument vectors from end to end.
//!
//! ssh sends a remote command as one string that the remote user's shell splits again, so an
//! argv is only safe there once every argument is quoted for a POSIX shell: each one is wrapped
//! in single quotes (with `'` written as `'\''`), which no shell expands. Locally nothing ever
//! goes through a shell: `tokio::process::Command` gets the argv as is.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::plan::{Host, Hosts};
use crate::space::Reach;

use super::FilesError;

/// How long ssh may take to connect before it gives up (BatchMode never prompts).
pub const CONNECT_TIMEOUT_SECONDS: u32 = 10;

/// `arg` quoted for a POSIX shell.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// One remote command line from an argv.
pub fn remote_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// ssh options for `host` (never prompting, bounded connect), without the destination.
pub fn ssh_options(host: &Host) -> Vec<String> {
    let mut args = vec![
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_SECONDS}"),
    ];
    if let Some(config) = &host.ssh_config {
        args.push("-F".into());
        args.push(config.display().to_string());
    }
    if let Some(port) = host.port {
        args.push("-p".into());
        args.push(port.to_string());
    }
    if let Some(identity) = &host.identity_file {
        args.push("-i".into());
        args.push(identity.display().to_string());
    }
    args
}

/// A private directory (0700, owned by this user, not a link) for ssh's control sockets, or
/// `None` when it cannot be had safely.
fn control_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("cutover-ssh-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0).then_some(dir)
}

/// [`ssh_options`] plus connection sharing for commands cutover itself sends to a host: one
/// connection per host, kept for ten minutes after its last use, since a final pass makes
/// several short trips and each new connection costs a key exchange (a run opens them just
/// before its window, see `sync::ready`). The sockets live in a private directory.
pub fn operator_ssh_options(host: &Host) -> Vec<String> {
    let mut args = ssh_options(host);
    if let Some(dir) = control_dir() {
        args.extend([
            "-o".to_owned(),
            "ControlMaster=auto".to_owned(),
            "-o".to_owned(),
            format!("ControlPath={}/%C", dir.display()),
            "-o".to_owned(),
            "ControlPersist=600".to_owned(),
        ]);
    }
    args
}

/// The full ssh argv that runs `argv` on `host`.
pub fn ssh_argv(host: &Host, argv: &[String]) -> Vec<String> {
    let mut args = vec!["ssh".to_owned()];
    args.extend(operator_ssh_options(host));
    args.push(host.ssh.clone());
    args.push("--".into());
    args.push(remote_command(argv));
    args
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `argv` (locally; use [`ssh_argv`] for a host), bounded by `timeout`.
pub async fn run(argv: &[String], timeout: Duration) -> Result<Output, FilesError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| FilesError::Spawn("empty command".into()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| FilesError::Timeout {
            what: format!("`{program}` ({})", argv.join(" ")),
            after: timeout,
        })?
        .map_err(|e| FilesError::Spawn(format!("{program}: {e}")))?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `argv` on `host` over ssh. The command is built at once, so the future borrows nothing.
pub fn on_host(
    host: &Host,
    argv: &[&str],
    timeout: Duration,
) -> impl std::future::Future<Output = Result<Output, FilesError>> + Send + 'static {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let full = ssh_argv(host, &argv);
    async move { run(&full, timeout).await }
}

/// The `[hosts]` entry for the machine a database server named `server_host` (as the plan
/// names it) runs on: the one whose ssh destination resolves to that name (`ssh -G`, so
/// aliases of its ssh config count; two loopback names match each other).
pub async fn machine_of<'a>(hosts: Option<&'a Hosts>, server_host: &str) -> Option<&'a Host> {
    let hosts = hosts?;
    let wanted = server_host.trim_start_matches('[').trim_end_matches(']');
    for host in [&hosts.target, &hosts.source] {
        let mut argv = vec!["ssh".to_owned(), "-G".to_owned()];
        argv.extend(ssh_options(host));
        argv.push(host.ssh.clone());
        let Ok(out) = run(&argv, Duration::from_secs(5)).await else {
            continue;
        };
        let resolved = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("hostname "))
            .map(str::trim);
        if let Some(name) = resolved
            && (name.eq_ignore_ascii_case(wanted)
                || (crate::plan::is_loopback(name) && crate::plan::is_loopback(wanted)))
        {
            return Some(host);
        }
    }
    None
}

/// Free bytes an unprivileged writer has on the filesystem holding `dir` on `host`, read with
/// POSIX `df -P -k` over ssh.
pub async fn free_space(host: &Host, dir: &str) -> Result<u64, String> {
    let out = on_host(
        host,
        &["df", "-P", "-k", "--", dir],
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| e.to_string())?;
    if !out.ok() {
        return Err(format!("df failed: {}", out.stderr.trim()));
    }
    crate::space::parse_df(&out.stdout)
}

/// How the free space of a database target at `server_host` is read: over ssh when a
/// `[hosts]` entry is its machine and its data directory `dir` is known, else here when it
/// runs on this machine, else not at all.
pub async fn reach(hosts: Option<&Hosts>, server_host: &str, dir: Option<&str>) -> Reach {
    let local = crate::plan::is_loopback(server_host);
    if let (Some(host), Some(dir)) = (machine_of(hosts, server_host).await, dir) {
        match free_space(host, dir).await {
            // The same machine: what this one reads is as true.
            Err(_) if local => return Reach::Here,
            free => {
                return Reach::Ssh {
                    destination: host.ssh.clone(),
                    free,
                };
            }
        }
    }
    if local { Reach::Here } else { Reach::Elsewhere }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_words_survive_the_remote_shell() {
        assert_eq!(shell_quote("/var/lib/app/"), "/var/lib/app/");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            remote_command(&["rsync".into(), "--exclude".into(), "*.tmp; x".into()]),
            "rsync --exclude '*.tmp; x'"
        );
    }

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        let nasty = [
            "plain",
            "two words",
            "it's",
            "$HOME",
            "`id`",
            "a\"b",
            "*",
            "\n",
            "",
        ];
        let argv: Vec<String> = std::iter::once("printf".to_owned())
            .chain(std::iter::once("%s\\0".to_owned()))
            .chain(nasty.iter().map(|s| s.to_string()))
            .collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(remote_command(&argv))
            .output()
            .unwrap();
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split('\0')
            .collect();
        assert_eq!(&got[..nasty.len()], &nasty[..]);
    }
}
