//! A throwaway PowerDNS authoritative server: sqlite3 backend, HTTP API guarded by an API key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::env::{free_port, private_dir, random_token, run_checked, write_secret};
use super::process::{PortRetry, ServerProcess, Spawn, Supervision, tcp_open, wait_until};
use super::state::ServerEntry;
use super::{LabError, find_program};
use crate::secret::Secret;

/// The schema Debian's pdns-backend-sqlite3 ships.
const SCHEMA_PATHS: [&str; 2] = [
    "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
    "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
];

/// A running lab PowerDNS server.
pub struct PowerDns {
    /// DNS port (UDP and TCP) on 127.0.0.1.
    pub dns_port: u16,
    /// HTTP API port on 127.0.0.1.
    pub api_port: u16,
    /// The server's directory.
    pub dir: PathBuf,
    /// File holding the API key (mode 0600).
    pub api_key_file: PathBuf,
    api_key: Secret,
    process: ServerProcess,
}

impl PowerDns {
    /// Creates an empty sqlite3 database in `root/name` and starts the server.
    pub async fn start(
        root: &Path,
        name: &str,
        supervision: Supervision,
    ) -> Result<PowerDns, LabError> {
        let server = find_program("pdns_server", "package pdns-server")?;
        let sqlite = find_program("sqlite3", "package sqlite3")?;
        let schema = SCHEMA_PATHS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or(LabError::MissingProgram {
                program: "schema.sqlite3.sql".into(),
                hint: "package pdns-backend-sqlite3",
            })?;
        let dir = root.join(name);
        private_dir(&dir, None)?;
        let db = dir.join("pdns.sqlite3");
        let mut cmd = Command::new(sqlite);
        cmd.arg(&db).arg(format!(".read {}", schema.display()));
        run_checked(cmd)?;

        let api_key = Secret::new(random_token(32));
        let api_key_file = root.join("secrets").join(format!("{name}.api-key"));
        write_secret(&api_key_file, api_key.expose(), None)?;

        let mut retry = PortRetry::default();
        loop {
            let (dns_port, api_port) = (free_port()?, free_port()?);
            let args = vec![
                "--no-config".to_owned(),
                "--daemon=no".into(),
                "--guardian=no".into(),
                "--disable-syslog".into(),
                "--write-pid=no".into(),
                format!("--socket-dir={}", dir.display()),
                "--launch=gsqlite3".into(),
                format!("--gsqlite3-database={}", db.display()),
                "--local-address=127.0.0.1".into(),
                format!("--local-port={dns_port}"),
                "--api=yes".into(),
                format!("--api-key={}", api_key.expose()),
                "--webserver=yes".into(),
                "--webserver-address=127.0.0.1".into(),
                format!("--webserver-port={api_port}"),
                "--webserver-allow-from=127.0.0.0/8,::1/128".into(),
                "--cache-ttl=0".into(),
                "--negquery-cache-ttl=0".into(),
                "--query-cache-ttl=0".into(),
                "--zone-cache-refresh-interval=0".into(),
                "--loglevel=4".into(),
            ];
            let spawn = Spawn {
                name: format!("powerdns {name}"),
                program: &server,
                args,
                log: dir.join("server.log"),
                run_as: None,
                stop_signal: libc::SIGTERM,
                supervision,
            };
            let mut process = spawn.start()?;
            match wait_until(&mut process, Duration::from_secs(30), || {
                tcp_open(api_port) && tcp_open(dns_port)
            })
            .await
            {
                Ok(()) => {
                    return Ok(PowerDns {
                        dns_port,
                        api_port,
                        dir,
                        api_key_file,
                        api_key,
                        process,
                    });
                }
                Err(e) => retry.after(e)?,
            }
        }
    }

    /// Base URL of the HTTP API.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The API key.
    pub fn api_key(&self) -> &Secret {
        &self.api_key
    }

    /// Creates a native zone with `ns1.<zone>` (127.0.0.1) as its nameserver and `records`
    /// (`(name, type, ttl, values)`), through the HTTP API.
    pub async fn create_zone(
        &self,
        zone: &str,
        records: &[(&str, &str, u32, Vec<String>)],
    ) -> Result<(), LabError> {
        let ns = format!("ns1.{zone}.");
        let mut rrsets = vec![serde_json::json!({
            "name": ns, "type": "A", "ttl": 300, "changetype": "REPLACE",
            "records": [{ "content": "127.0.0.1", "disabled": false }],
        })];
        for (name, rtype, ttl, values) in records {
            rrsets.push(serde_json::json!({
                "name": format!("{}.", name.trim_end_matches('.')), "type": rtype, "ttl": ttl,
                "changetype": "REPLACE",
                "records": values.iter()
                    .map(|v| serde_json::json!({ "content": v, "disabled": false }))
                    .collect::<Vec<_>>(),
            }));
        }
        let body = serde_json::json!({
            "name": format!("{zone}."),
            "kind": "Native",
            "nameservers": [ns],
            "rrsets": rrsets,
        });
        let url = format!("{}/api/v1/servers/localhost/zones", self.api_url());
        let failed = |message: String| LabError::Sql {
            server: "powerdns".into(),
            context: format!("create zone {zone}"),
            message,
        };
        let response = reqwest::Client::new()
            .post(&url)
            .header("X-API-Key", self.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(failed(format!(
                "{status}: {}",
                response.text().await.unwrap_or_default()
            )));
        }
        Ok(())
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
