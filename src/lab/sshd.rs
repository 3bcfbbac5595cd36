//! A throwaway sshd on 127.0.0.1 that accepts one generated key, plus an ssh config that names
//! it `lab-source` and `lab-target`, so plans and rsync use it like two real hosts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::env::{current_user_name, free_port, private_dir, run_checked};
use super::process::{PortRetry, ServerProcess, Spawn, Supervision, tcp_open, wait_until};
use super::state::ServerEntry;
use super::sys;
use super::{LabError, find_program};

/// ssh aliases the lab's ssh config defines, both pointing at this sshd.
pub const ALIASES: [&str; 2] = ["lab-source", "lab-target"];

/// A running lab sshd.
pub struct Sshd {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's directory (keys, configs).
    pub dir: PathBuf,
    /// Client ssh config defining [`ALIASES`]; use with `ssh -F`.
    pub ssh_config: PathBuf,
    /// The user the aliases log in as.
    pub user: String,
    process: ServerProcess,
}

fn keygen(path: &Path, comment: &str) -> Result<(), LabError> {
    let mut cmd = Command::new(find_program("ssh-keygen", "package openssh-client")?);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path);
    run_checked(cmd).map(drop)
}

fn read(path: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(path).map_err(|e| LabError::io(path, e))
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|e| LabError::io(path, e))
}

impl Sshd {
    /// Generates keys and configs in `root/name` and starts sshd in the foreground.
    pub async fn start(
        root: &Path,
        name: &str,
        supervision: Supervision,
    ) -> Result<Sshd, LabError> {
        let sshd = find_program("sshd", "package openssh-server")?;
        let dir = root.join(name);
        private_dir(&dir, None)?;
        if sys::euid() == 0 {
            // sshd refuses to start as root without its privilege separation directory.
            let privsep = Path::new("/run/sshd");
            std::fs::create_dir_all(privsep).map_err(|e| LabError::io(privsep, e))?;
        }
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        keygen(&host_key, "cutover-lab-host")?;
        keygen(&client_key, "cutover-lab-client")?;
        let authorized = dir.join("authorized_keys");
        write(&authorized, &read(&client_key.with_extension("pub"))?)?;
        let user = current_user_name();

        let mut retry = PortRetry::default();
        loop {
            let port = free_port()?;
            let d = dir.display();
            let config = dir.join("sshd_config");
            // `SetEnv SHLVL=1`: bash skips ~/.bashrc for commands run by sshd when it is not
            // a top-level shell. The lab hosts are this machine's own user, whose ~/.bashrc
            // may load a developer's environment (here `pyenv init`, ~0.12 s per command);
            // a server's non-interactive shell does not, and every files pass, hook and
            // benchmark trip would otherwise pay it.
            write(
                &config,
                &format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n\
                     Subsystem sftp internal-sftp\nSetEnv SHLVL=1\n"
                ),
            )?;
            let host_pub = read(&host_key.with_extension("pub"))?;
            let key_fields: Vec<&str> = host_pub.split_whitespace().take(2).collect();
            write(
                &dir.join("known_hosts"),
                &format!("[127.0.0.1]:{port} {}\n", key_fields.join(" ")),
            )?;
            let ssh_config = dir.join("ssh_config");
            write(
                &ssh_config,
                &format!(
                    "Host {}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                     IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  \
                     UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  \
                     BatchMode yes\n  LogLevel ERROR\n",
                    ALIASES.join(" ")
                ),
            )?;
            let spawn = Spawn {
                name: format!("sshd {name}"),
                program: &sshd,
                args: vec![
                    "-D".into(),
                    "-e".into(),
                    "-f".into(),
                    config.display().to_string(),
                ],
                log: dir.join("server.log"),
                run_as: None,
                stop_signal: libc::SIGTERM,
                supervision,
            };
            let mut process = spawn.start()?;
            process.also_stop_children();
            match wait_until(&mut process, Duration::from_secs(15), || tcp_open(port)).await {
                Ok(()) => {
                    return Ok(Sshd {
                        port,
                        dir,
                        ssh_config,
                        user,
                        process,
                    });
                }
                Err(e) => retry.after(e)?,
            }
        }
    }

    /// The server process.
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Lets the server outlive this handle (for `lab up`).
    pub fn release(self) -> ServerEntry {
        self.process.release()
    }
}
