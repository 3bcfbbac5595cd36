//! A lab nginx: one HTTP server on a free loopback port proxying to `upstream app`, whose one
//! server line lives in its own include file (what a `[[proxy]]` route with `kind = "nginx"`
//! rewrites), everything (pid, logs, temporary files) under its directory, started with `-p`
//! and `-c` so `nginx -t` and `nginx -s reload` reach this instance and no other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::{free_port, private_dir};
use super::process::{PortRetry, ServerProcess, Spawn, Supervision, tcp_open, wait_until};
use super::{LabError, find_program};

/// The upstream's name in the lab configuration.
pub const UPSTREAM: &str = "app";

/// A running lab nginx.
pub struct Nginx {
    /// Where clients connect.
    pub port: u16,
    /// Its prefix directory (`-p`).
    pub dir: PathBuf,
    /// Its main configuration (`-c`).
    pub config: PathBuf,
    /// The include file holding `upstream app`.
    pub include: PathBuf,
    /// A second include file of the `http` block, for tests that break the configuration.
    pub extra: PathBuf,
    /// The program.
    pub program: PathBuf,
    process: ServerProcess,
}

impl Nginx {
    /// Starts nginx in `root/name` with `upstream app` pointing at `backend`.
    pub async fn start(
        root: &Path,
        name: &str,
        backend: SocketAddr,
        supervision: Supervision,
    ) -> Result<Nginx, LabError> {
        let program = find_program("nginx", "package nginx")?;
        let dir = root.join(name);
        private_dir(&dir, None)?;
        // The workers (user nobody) pass through the prefix to their temporary directories.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| LabError::io(&dir, e))?;
        }
        let include = dir.join("upstream.conf");
        let extra = dir.join("extra.conf");
        let config = dir.join("nginx.conf");
        std::fs::write(
            &include,
            format!("upstream {UPSTREAM} {{\n    server {backend};\n}}\n"),
        )
        .map_err(|e| LabError::io(&include, e))?;
        std::fs::write(&extra, "# more of the http block\n")
            .map_err(|e| LabError::io(&extra, e))?;
        let mut retry = PortRetry::default();
        loop {
            let port = free_port()?;
            let d = dir.display();
            let text = format!(
                "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 128; }}\n\
                 http {{\n    access_log off;\n    client_body_temp_path {d}/tmp-body;\n    proxy_temp_path {d}/tmp-proxy;\n    fastcgi_temp_path {d}/tmp-fastcgi;\n    uwsgi_temp_path {d}/tmp-uwsgi;\n    scgi_temp_path {d}/tmp-scgi;\n\
                 \x20   include {include};\n    include {extra};\n\
                 \x20   server {{\n        listen 127.0.0.1:{port};\n        location / {{ proxy_pass http://{UPSTREAM}; }}\n    }}\n}}\n",
                include = include.display(),
                extra = extra.display(),
            );
            std::fs::write(&config, text).map_err(|e| LabError::io(&config, e))?;
            let spawn = Spawn {
                name: format!("nginx {name}"),
                program: &program,
                args: vec![
                    "-p".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    config.display().to_string(),
                ],
                log: dir.join("nginx.log"),
                run_as: None,
                stop_signal: libc::SIGQUIT,
                supervision,
            };
            let mut process = spawn.start()?;
            match wait_until(&mut process, Duration::from_secs(20), || tcp_open(port)).await {
                Ok(()) => {
                    return Ok(Nginx {
                        port,
                        dir: dir.clone(),
                        config: config.clone(),
                        include: include.clone(),
                        extra: extra.clone(),
                        program: program.clone(),
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
