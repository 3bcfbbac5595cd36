//! A throwaway BIND9 server with one zone that accepts RFC 2136 updates signed with a TSIG key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use rand::RngCore;

use super::env::{free_port, private_dir, write_secret};
use super::plan::APP_RECORD_TTL;
use super::process::{PortRetry, ServerProcess, Spawn, Supervision, tcp_open, wait_until};
use super::state::ServerEntry;
use super::{LabError, find_program};
use crate::secret::Secret;

/// The zone the lab's BIND serves.
pub const ZONE: &str = "dyn.example.com";
/// The TSIG key allowed to update it.
pub const TSIG_KEY_NAME: &str = "cutover-lab";
/// The TSIG algorithm.
pub const TSIG_ALGORITHM: &str = "hmac-sha256";

/// A running lab BIND9 server.
pub struct Bind {
    /// DNS port (UDP and TCP) on 127.0.0.1.
    pub port: u16,
    /// The server's directory (config, zone file, journal).
    pub dir: PathBuf,
    /// File holding the base64 TSIG secret (mode 0600).
    pub tsig_secret_file: PathBuf,
    tsig_secret: Secret,
    process: ServerProcess,
}

fn named_conf(dir: &Path, port: u16, secret: &str) -> String {
    let d = dir.display();
    format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{
    algorithm {TSIG_ALGORITHM};
    secret "{secret}";
}};
zone "{ZONE}" {{
    type primary;
    file "{d}/{ZONE}.zone";
    update-policy {{ grant {TSIG_KEY_NAME} zonesub ANY; }};
}};
"#
    )
}

fn zone_file() -> String {
    format!(
        "$TTL 300\n\
         @ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n\
         @ IN NS ns1.{ZONE}.\n\
         ns1 IN A 127.0.0.1\n\
         app {APP_RECORD_TTL} IN A 127.0.0.1\n"
    )
}

impl Bind {
    /// Writes a config and zone in `root/name` and starts `named` in the foreground.
    pub async fn start(
        root: &Path,
        name: &str,
        supervision: Supervision,
    ) -> Result<Bind, LabError> {
        let named = find_program("named", "package bind9")?;
        let dir = root.join(name);
        private_dir(&dir, None)?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let tsig_secret = Secret::new(base64::engine::general_purpose::STANDARD.encode(raw));
        let tsig_secret_file = root.join("secrets").join(format!("{name}.tsig"));
        write_secret(&tsig_secret_file, tsig_secret.expose(), None)?;
        let zone_path = dir.join(format!("{ZONE}.zone"));
        std::fs::write(&zone_path, zone_file()).map_err(|e| LabError::io(&zone_path, e))?;

        let mut retry = PortRetry::default();
        loop {
            let port = free_port()?;
            let conf = dir.join("named.conf");
            write_secret(&conf, &named_conf(&dir, port, tsig_secret.expose()), None)?;
            let spawn = Spawn {
                name: format!("bind {name}"),
                program: &named,
                args: vec!["-g".into(), "-c".into(), conf.display().to_string()],
                log: dir.join("server.log"),
                run_as: None,
                stop_signal: libc::SIGTERM,
                supervision,
            };
            let mut process = spawn.start()?;
            let log = dir.join("server.log");
            match wait_until(&mut process, Duration::from_secs(30), || {
                tcp_open(port)
                    && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("all zones loaded"))
            })
            .await
            {
                Ok(()) => {
                    return Ok(Bind {
                        port,
                        dir,
                        tsig_secret_file,
                        tsig_secret,
                        process,
                    });
                }
                Err(e) => retry.after(e)?,
            }
        }
    }

    /// The base64 TSIG secret.
    pub fn tsig_secret(&self) -> &Secret {
        &self.tsig_secret
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
