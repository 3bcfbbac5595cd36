//! What the lab needs from the machine: a directory, programs, system users, ports, secrets.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use rand::Rng;
use rand::distr::Alphanumeric;

use super::LabError;
use super::sys;

/// The directory a lab lives in: a temporary one removed on drop, or a kept one (`lab up`).
pub struct LabDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl LabDir {
    /// A fresh temporary directory, removed when dropped.
    pub fn temporary() -> Result<LabDir, LabError> {
        let temp = tempfile::Builder::new()
            .prefix("cutover-lab-")
            .tempdir_in(std::env::temp_dir())
            .map_err(|e| LabError::io(&std::env::temp_dir(), e))?;
        let path = temp.path().to_owned();
        open_for_service_users(&path)?;
        Ok(LabDir {
            path,
            _temp: Some(temp),
        })
    }

    /// A directory that is kept (created if missing).
    pub fn kept(path: &Path) -> Result<LabDir, LabError> {
        fs::create_dir_all(path).map_err(|e| LabError::io(path, e))?;
        open_for_service_users(path)?;
        Ok(LabDir {
            path: path.to_owned(),
            _temp: None,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Servers that run as their own system user (postgres) must be able to traverse the lab root.
fn open_for_service_users(path: &Path) -> Result<(), LabError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(|e| LabError::io(path, e))
}

/// Creates `dir` (mode 0700) owned by `owner` when given.
pub(crate) fn private_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), LabError> {
    fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| LabError::io(dir, e))?;
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid)).map_err(|e| LabError::io(dir, e))?;
    }
    Ok(())
}

/// Writes a secret to a file readable only by its owner.
pub(crate) fn write_secret(
    path: &Path,
    value: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), LabError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
    }
    fs::write(path, format!("{value}\n")).map_err(|e| LabError::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| LabError::io(path, e))?;
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid)).map_err(|e| LabError::io(path, e))?;
    }
    Ok(())
}

/// Finds a program on PATH or in the sbin directories (which non-login shells may lack).
pub fn find_program(name: &str, package_hint: &'static str) -> Result<PathBuf, LabError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(LabError::MissingProgram {
            program: name.to_owned(),
            hint: package_hint,
        })
}

/// The (uid, gid) to run a server as: the named system user when we are root, else ourselves.
pub(crate) fn service_user(name: &str) -> Result<Option<(u32, u32)>, LabError> {
    if sys::euid() != 0 {
        return Ok(None);
    }
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| LabError::io(Path::new("/etc/passwd"), e))?;
    passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .find_map(|(uid, gid)| Some(Some((uid?, gid?))))
        .ok_or_else(|| LabError::MissingUser(name.to_owned()))
}

/// The login name of the current user (for ssh).
pub(crate) fn current_user_name() -> String {
    let uid = sys::euid().to_string();
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
            })
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_owned())
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that is free now and not handed out before by this process.
pub fn free_port() -> Result<u16, LabError> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| LabError::io(Path::new("127.0.0.1:0"), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| LabError::io(Path::new("127.0.0.1:0"), e))?
            .port();
        // The DNS servers also bind UDP on the same port.
        let udp_free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if udp_free && handed.insert(port) {
            return Ok(port);
        }
    }
    Err(LabError::io(
        Path::new("127.0.0.1"),
        std::io::Error::other("no free port found"),
    ))
}

/// A random alphanumeric string, for passwords and API keys.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Runs a set-up command to completion; fails with its output.
pub(crate) fn run_checked(mut cmd: Command) -> Result<String, LabError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|source| LabError::Spawn {
        program: PathBuf::from(cmd.get_program()),
        source,
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(LabError::Command {
            command: shown,
            status: out.status.to_string(),
            output: text,
        });
    }
    Ok(text)
}
