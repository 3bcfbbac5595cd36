//! A lab HAProxy: one HTTP frontend on a free loopback port, one backend `app` whose server
//! entry `web` points at the address given, and its runtime API on a Unix socket at `level
//! admin` (what a `[[proxy]]` route with `kind = "haproxy"` switches). Foreground (`-db`), its
//! log in its directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::{free_port, private_dir};
use super::process::{PortRetry, ServerProcess, Spawn, Supervision, tcp_open, wait_until};
use super::{LabError, find_program};

/// The backend's name in the lab configuration.
pub const BACKEND: &str = "app";
/// The server entry's name in that backend.
pub const SERVER: &str = "web";

/// A running lab HAProxy.
pub struct Haproxy {
    /// Where clients connect (the frontend).
    pub port: u16,
    /// The runtime API's socket.
    pub socket: PathBuf,
    process: ServerProcess,
}

impl Haproxy {
    /// Starts HAProxy in `root/name` with its one server entry pointing at `backend`.
    pub async fn start(
        root: &Path,
        name: &str,
        backend: SocketAddr,
        supervision: Supervision,
    ) -> Result<Haproxy, LabError> {
        let program = find_program("haproxy", "package haproxy")?;
        let dir = root.join(name);
        private_dir(&dir, None)?;
        let socket = dir.join("admin.sock");
        let config = dir.join("haproxy.cfg");
        let mut retry = PortRetry::default();
        loop {
            let port = free_port()?;
            let text = format!(
                "global\n    stats socket {socket} mode 600 level admin\n    stats timeout 10s\n\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\n\
                 frontend fe\n    bind 127.0.0.1:{port}\n    default_backend {BACKEND}\n\n\
                 backend {BACKEND}\n    server {SERVER} {backend}\n",
                socket = socket.display(),
            );
            std::fs::write(&config, text).map_err(|e| LabError::io(&config, e))?;
            let spawn = Spawn {
                name: format!("haproxy {name}"),
                program: &program,
                args: vec!["-db".into(), "-f".into(), config.display().to_string()],
                log: dir.join("haproxy.log"),
                run_as: None,
                stop_signal: libc::SIGUSR1,
                supervision,
            };
            let mut process = spawn.start()?;
            let sock = socket.clone();
            match wait_until(&mut process, Duration::from_secs(20), || {
                tcp_open(port) && sock.exists()
            })
            .await
            {
                Ok(()) => {
                    return Ok(Haproxy {
                        port,
                        socket,
                        process,
                    });
                }
                Err(e) => retry.after(e)?,
            }
        }
    }

    /// The process (tests stop or kill it).
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}
