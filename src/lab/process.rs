//! Starting and stopping lab server processes.
//!
//! An [`Owned`](Supervision::Owned) process dies with the thread that started it (the kernel sends
//! it SIGKILL through `PR_SET_PDEATHSIG`) and is stopped when its handle is dropped, so a panicking
//! test never leaves servers behind. A [`Detached`](Supervision::Detached) one (for `cutover lab up`)
//! gets its own session and outlives the command; `cutover lab down` stops it by pid.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::LabError;
use super::state::ServerEntry;
use super::sys;

/// Whether a server lives with its handle or outlives the process that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervision {
    /// Killed when the handle is dropped or the starting thread dies.
    Owned,
    /// Keeps running; stopped later by pid.
    Detached,
}

/// A running server process.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    stop_signal: i32,
    children_too: bool,
}

/// What to run, as an argv array, and as whom.
pub struct Spawn<'a> {
    /// Name shown in errors (`postgres source`).
    pub name: String,
    /// The program.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// stdout and stderr go here.
    pub log: PathBuf,
    /// Run as this (uid, gid) instead of the current user.
    pub run_as: Option<(u32, u32)>,
    /// Signal for a quick clean stop.
    pub stop_signal: i32,
    /// Owned or detached.
    pub supervision: Supervision,
}

impl Spawn<'_> {
    /// Starts the process.
    pub fn start(self) -> Result<ServerProcess, LabError> {
        let log_file = File::create(&self.log).map_err(|e| LabError::io(&self.log, e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| LabError::io(&self.log, e))?;
        let mut cmd = Command::new(self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            // Its own directory as HOME, not root's, which it cannot read: PostgreSQL's libpq
            // (a subscription's connection) looks for `~/.postgresql/` client certificates and
            // fails on a directory it may not enter.
            if let Some(own) = self.log.parent() {
                cmd.env("HOME", own);
            }
        }
        let supervision = self.supervision;
        // SAFETY: the closure only calls async-signal-safe libc functions.
        unsafe {
            cmd.pre_exec(move || {
                match supervision {
                    Supervision::Owned => sys::die_with_parent()?,
                    Supervision::Detached => sys::new_session()?,
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            program: self.program.to_owned(),
            source,
        })?;
        tracing::debug!(name = %self.name, pid = child.id(), "started lab server");
        Ok(ServerProcess {
            name: self.name,
            pid: child.id(),
            child: Some(child),
            log: self.log,
            stop_signal: self.stop_signal,
            children_too: false,
        })
    }
}

impl ServerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The signal that stops it cleanly.
    pub fn stop_signal(&self) -> i32 {
        self.stop_signal
    }

    /// The file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails with the end of the log if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<(), LabError> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(LabError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log_tail: log_tail(&self.log),
            });
        }
        Ok(())
    }

    /// An error that says the server did not become ready, with the end of its log.
    pub fn not_ready(&self, waited: Duration) -> LabError {
        LabError::NotReady {
            name: self.name.clone(),
            waited,
            log_tail: log_tail(&self.log),
        }
    }

    /// Makes [`stop`](Self::stop) signal the process's children too: a server that forks a
    /// process per connection (sshd) leaves those running when only the listener stops, and
    /// with them every client connection kept open to it.
    pub fn also_stop_children(&mut self) {
        self.children_too = true;
    }

    /// Stops the process: its stop signal, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let children = if self.children_too {
            sys::children(self.pid)
        } else {
            Vec::new()
        };
        sys::signal(self.pid, self.stop_signal);
        for c in children {
            sys::signal(c, self.stop_signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Lets a detached process run on after this handle is gone; returns what `lab down`
    /// needs to stop it later.
    pub fn release(mut self) -> ServerEntry {
        self.child.take();
        ServerEntry {
            name: self.name.clone(),
            pid: self.pid,
            stop_signal: self.stop_signal,
        }
    }
}

impl Drop for ServerProcess {
    /// A handle that was not [released](ServerProcess::release) stops its server, detached or
    /// not, so a lab that fails half-way through starting leaves nothing running.
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Waits until `ready()` is true, the process exits, or `timeout` passes.
pub async fn wait_until(
    process: &mut ServerProcess,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LabError> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        process.ensure_running()?;
        if start.elapsed() > timeout {
            return Err(process.not_ready(timeout));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn tcp_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// True when something accepts connections on the Unix socket at `path`.
///
/// The file existing is not enough: a server creates it with `bind()` and only accepts after
/// `listen()`; a connection in between is refused (seen as MariaDB's "Connection refused"
/// right after start on a loaded machine).
pub fn unix_listening(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Decides whether a failed server start is worth another try on another port.
///
/// Ports are picked free, but another program can take one between our check and the server's
/// bind. That failure is retried (three attempts in all); any other failure is returned at once,
/// so a broken configuration fails fast instead of timing out three times.
#[derive(Debug, Default)]
pub struct PortRetry {
    failures: u32,
}

impl PortRetry {
    /// Attempts in all, the first included.
    const ATTEMPTS: u32 = 3;

    /// Records a failed attempt: `Ok` to try again on a new port, or the error to give up with.
    pub fn after(&mut self, error: LabError) -> Result<(), LabError> {
        self.failures += 1;
        if self.failures < Self::ATTEMPTS && port_clash(&error) {
            tracing::debug!(%error, "lab server lost its port; retrying on another");
            Ok(())
        } else {
            Err(error)
        }
    }
}

fn port_clash(error: &LabError) -> bool {
    match error {
        LabError::Exited { log_tail, .. } | LabError::NotReady { log_tail, .. } => {
            let log = log_tail.to_ascii_lowercase();
            log.contains("address already in use") || log.contains("address in use")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(log_tail: &str) -> LabError {
        LabError::Exited {
            name: "server".into(),
            status: "exit status: 1".into(),
            log_tail: log_tail.into(),
        }
    }

    #[test]
    fn only_port_clashes_are_retried_and_at_most_twice() {
        let mut retry = PortRetry::default();
        assert!(retry.after(exited("bind: Address already in use")).is_ok());
        assert!(
            retry
                .after(exited("could not bind: address in use"))
                .is_ok()
        );
        assert!(retry.after(exited("Address already in use")).is_err());

        let mut retry = PortRetry::default();
        assert!(
            retry
                .after(exited("FATAL: invalid value for parameter"))
                .is_err()
        );
    }
}
