//! The state file of a kept lab (`cutover lab up`), and stopping it (`cutover lab down`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::LabError;
use super::sys;

/// File name of the state file inside the lab directory.
pub const STATE_FILE: &str = "lab.json";

/// One detached server of a kept lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerEntry {
    /// Name, e.g. `pg-source`.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Signal for a clean stop.
    pub stop_signal: i32,
}

/// What `lab up` started, so `lab down` can stop exactly that.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// The lab directory.
    pub dir: PathBuf,
    /// The servers, in start order.
    pub servers: Vec<ServerEntry>,
    /// The generated plan.
    pub plan: PathBuf,
}

impl LabState {
    /// Writes the state file.
    pub fn save(&self) -> Result<(), LabError> {
        let path = self.dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::io(&path, e.into()))?;
        std::fs::write(&path, text).map_err(|e| LabError::io(&path, e))
    }

    /// Reads the state file of the lab in `dir`.
    pub fn load(dir: &Path) -> Result<LabState, LabError> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| LabError::State {
            dir: dir.to_owned(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        serde_json::from_str(&text).map_err(|e| LabError::State {
            dir: dir.to_owned(),
            reason: format!("{} is damaged: {e}", path.display()),
        })
    }
}

/// True when `pid` is a process started for the lab in `dir` (guards against reused pids).
fn belongs_to_lab(pid: u32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains(&*dir.to_string_lossy())
}

/// Stops every server of the kept lab in `dir` and removes the directory. Returns the names of
/// the servers that were still running.
pub fn stop_detached(dir: &Path) -> Result<Vec<String>, LabError> {
    let state = LabState::load(dir)?;
    let mut stopped = Vec::new();
    let running: Vec<&ServerEntry> = state
        .servers
        .iter()
        .filter(|s| sys::alive(s.pid) && belongs_to_lab(s.pid, dir))
        .collect();
    for s in &running {
        // sshd's per-connection processes would keep clients' shared connections open.
        let children = if s.name.starts_with("sshd") {
            sys::children(s.pid)
        } else {
            Vec::new()
        };
        sys::signal(s.pid, s.stop_signal);
        for c in children {
            sys::signal(c, s.stop_signal);
        }
        stopped.push(s.name.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while running.iter().any(|s| sys::alive(s.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in running.iter().filter(|s| sys::alive(s.pid)) {
        sys::signal(s.pid, libc::SIGKILL);
    }
    std::fs::remove_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    Ok(stopped)
}
