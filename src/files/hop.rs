//! The running host's ssh connection to the other host, kept open from one pass to the next.
//!
//! rsync on the running host opens ssh to the other host for every pass: a key exchange and a
//! login each time (a quarter of a second on loopback, more across a WAN). Inside the window,
//! after a change log has cut the copy down to the paths that changed, that handshake would be
//! most of the final pass. So the first warm pass makes a private directory on the running
//! host (`mktemp -d`: mode 0700, a name nobody can guess or take first) for an ssh control
//! socket, and every pass's ssh shares one connection through it (`ControlMaster=auto`,
//! `ControlPersist`): the final pass reuses the connection the warm pass opened when it is
//! still up, and opens one otherwise. The trust is unchanged: the socket only reaches a host
//! the running host's user can already log in to, and only that user can open it.
//!
//! If the directory has gone (a reboot, a `/tmp` cleaner), ssh cannot bind the socket and
//! fails; the pass then runs once more without sharing, so a lost directory costs a
//! handshake, never a pass.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::remote::on_host;
use super::{Entry, FilesError};

/// How long the shared connection outlives its last use. Covers the usual gap between the
/// warm pass and the window; a longer gap costs one handshake in the final pass.
pub const PERSIST: Duration = Duration::from_secs(2 * 3600);

const TIMEOUT: Duration = Duration::from_secs(60);

/// The shared connection of one `[[files]]` entry (kept in the state directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hop {
    /// The running host (its `ssh` destination), so a plan whose `runs_on` changed is not
    /// handed another host's directory.
    pub host: String,
    /// The private directory on the running host that holds the control socket.
    pub dir: String,
}

/// ssh options that share the running host's connection through `dir`.
pub fn options(dir: &str) -> Vec<String> {
    vec![
        "-o".into(),
        "ControlMaster=auto".into(),
        "-o".into(),
        format!("ControlPath={dir}/%C"),
        "-o".into(),
        format!("ControlPersist={}", PERSIST.as_secs()),
    ]
}

/// Whether a pass that used the shared connection failed only because its socket could not
/// be used (ssh's words for a vanished directory or a stale socket, with ssh's exit 255 or, for
/// rsync, the broken stream it saw first: exit 12, whichever rsync noticed first): the pass
/// then runs once more on a connection of its own.
pub fn lost(code: Option<i32>, stderr: &str) -> bool {
    matches!(code, Some(255) | Some(12)) && broken(stderr)
}

/// Whether ssh's error output says the control socket could not be used (the directory
/// vanished, or a socket there is stale).
pub fn broken(stderr: &str) -> bool {
    [
        "unix_listener",
        "ControlSocket",
        "mux_client",
        "control socket",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

fn state_file(state_dir: &Path, entry: &str) -> PathBuf {
    crate::state::StateDir::new(state_dir)
        .files()
        .join(format!("{entry}.hop.json"))
}

/// The entry's shared connection directory, if a warm pass made one for the running host.
/// Read-only: an unreadable record is the same as none (the pass opens its own connection).
pub fn load(state_dir: &Path, entry: &Entry) -> Option<String> {
    let text = std::fs::read_to_string(state_file(state_dir, &entry.plan.name)).ok()?;
    let hop: Hop = serde_json::from_str(&text).ok()?;
    let (runner, _) = entry.runner_and_peer();
    (hop.host == runner.ssh).then_some(hop.dir)
}

/// Makes the private directory on the running host unless the entry has one, and records it.
/// `None` when the running host cannot make one: passes then open their own connections, as
/// they would without this (the reason is logged).
pub async fn open(entry: &Entry, state_dir: &Path) -> Result<Option<String>, FilesError> {
    if let Some(dir) = load(state_dir, entry) {
        return Ok(Some(dir));
    }
    let (runner, _) = entry.runner_and_peer();
    let out = on_host(
        runner,
        &["mktemp", "-d", "/tmp/cutover-ssh.XXXXXXXXXX"],
        TIMEOUT,
    )
    .await?;
    let dir = out.stdout.trim();
    if !out.ok() || !dir.starts_with("/tmp/cutover-ssh.") || dir.contains(char::is_whitespace) {
        tracing::warn!(
            entry = %entry.plan.name,
            stderr = %super::tail(&out.stderr, 2),
            "no shared ssh connection on the running host: every pass opens its own"
        );
        return Ok(None);
    }
    let hop = Hop {
        host: runner.ssh.clone(),
        dir: dir.to_owned(),
    };
    let bytes = serde_json::to_vec_pretty(&hop).expect("serializable");
    crate::state::write_atomic(&state_file(state_dir, &entry.plan.name), &bytes)
        .map_err(|e| FilesError::State(e.to_string()))?;
    Ok(Some(hop.dir))
}

/// Closes the shared connection and removes its directory on the running host, then forgets
/// it. Best effort on the host (a connection already gone is fine).
pub async fn close(entry: &Entry, state_dir: &Path) -> Result<(), FilesError> {
    let Some(dir) = load(state_dir, entry) else {
        return Ok(());
    };
    let (runner, peer) = entry.runner_and_peer();
    let mut exit = super::rsync::peer_ssh(peer, Some(&dir));
    exit.extend(["-O".into(), "exit".into(), peer.ssh.clone()]);
    let exit: Vec<&str> = exit.iter().map(String::as_str).collect();
    let _ = on_host(runner, &exit, TIMEOUT).await?;
    let _ = on_host(runner, &["rm", "-rf", "--", &dir], TIMEOUT).await?;
    match std::fs::remove_file(state_file(state_dir, &entry.plan.name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FilesError::State(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_socket_directory_is_recognised() {
        assert!(broken(
            "unix_listener: cannot bind to path /tmp/cutover-ssh.x/abc.XXXX: No such file or directory"
        ));
        assert!(!broken("Permission denied (publickey)."));
        // rsync reports the same loss as its own broken stream, or as ssh's exit.
        let said = "unix_listener: cannot bind to path /tmp/cutover-ssh.x/a.b: No such file or directory\nrsync: connection unexpectedly closed (0 bytes received so far) [Receiver]";
        assert!(lost(Some(12), said) && lost(Some(255), said));
        assert!(!lost(Some(12), "rsync: connection unexpectedly closed"));
        assert!(!lost(Some(23), said));
        let o = options("/tmp/cutover-ssh.abc");
        assert!(o.contains(&"ControlPath=/tmp/cutover-ssh.abc/%C".to_owned()));
    }
}
