//! A throwaway PostgreSQL 15 cluster with `wal_level=logical`, run as the `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::LabError;
use super::env::{free_port, private_dir, random_token, run_checked, service_user, write_secret};
use super::process::{PortRetry, ServerProcess, Spawn, Supervision, wait_until};
use super::state::ServerEntry;
use crate::postgres::db::{error_message as pg_error_message, ident as quote_ident};
use crate::secret::Secret;

/// The superuser the lab creates in every cluster.
pub const SUPERUSER: &str = "postgres";

/// A running lab PostgreSQL cluster.
pub struct Postgres {
    /// Name, e.g. `pg-source`.
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The cluster's directory (data, socket, log).
    pub dir: PathBuf,
    /// File holding the superuser's password (mode 0600).
    pub password_file: PathBuf,
    password: Secret,
    process: ServerProcess,
}

/// Where the PostgreSQL 15 server binaries are: `CUTOVER_PG_BIN`, Debian's layout, or PATH.
fn bin_dir() -> Result<PathBuf, LabError> {
    if let Some(dir) = std::env::var_os("CUTOVER_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin");
    if debian.join("postgres").is_file() {
        return Ok(debian.to_owned());
    }
    let initdb = super::find_program("initdb", "package postgresql-15")?;
    Ok(initdb.parent().unwrap_or(Path::new("/")).to_owned())
}

impl Postgres {
    /// Creates a cluster in `root/name` and starts it on a free port.
    pub async fn start(
        root: &Path,
        name: &str,
        supervision: Supervision,
    ) -> Result<Postgres, LabError> {
        Postgres::start_with(root, name, supervision, None).await
    }

    /// [`Postgres::start`], taking TCP connections over TLS only when `tls` is given
    /// (`hostssl` lines alone; local socket connections stay trusted).
    pub async fn start_with(
        root: &Path,
        name: &str,
        supervision: Supervision,
        tls: Option<&super::tls::ServerTls<'_>>,
    ) -> Result<Postgres, LabError> {
        let bin = bin_dir()?;
        let owner = service_user("postgres")?;
        let dir = root.join(name);
        private_dir(&dir, owner)?;
        let data = dir.join("data");
        let password = Secret::new(random_token(24));

        // initdb reads the password from a file the postgres user can read; it is removed after.
        let pwfile = dir.join("initdb.pw");
        write_secret(&pwfile, password.expose(), owner)?;
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            SUPERUSER,
            "-A",
            "scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        initdb.arg(format!("--pwfile={}", pwfile.display()));
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let initdb_result = run_checked(initdb);
        let _ = std::fs::remove_file(&pwfile);
        initdb_result?;

        let password_file = root.join("secrets").join(format!("{name}.password"));
        write_secret(&password_file, password.expose(), None)?;

        let mut tls_args: Vec<String> = Vec::new();
        if let Some(tls) = tls {
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            let names: Vec<&str> = tls.names.iter().map(String::as_str).collect();
            tls.ca.issue(&names, &cert, &key, owner)?;
            let ca = dir.join("client-ca.crt");
            std::fs::copy(&tls.ca.ca_file, &ca).map_err(|e| LabError::io(&ca, e))?;
            let option = if tls.client_cert {
                " clientcert=verify-full"
            } else {
                ""
            };
            let hba = data.join("pg_hba.conf");
            std::fs::write(
                &hba,
                format!(
                    "local all all trust\nlocal replication all trust\n\
                     hostssl all all 127.0.0.1/32 scram-sha-256{option}\n\
                     hostssl replication all 127.0.0.1/32 scram-sha-256{option}\n"
                ),
            )
            .map_err(|e| LabError::io(&hba, e))?;
            for setting in [
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", cert.display()),
                format!("ssl_key_file={}", key.display()),
                format!("ssl_ca_file={}", ca.display()),
            ] {
                tls_args.push("-c".into());
                tls_args.push(setting);
            }
        }

        Postgres::run(
            &bin,
            name,
            dir,
            &data,
            owner,
            &tls_args,
            (password_file, password),
            supervision,
        )
        .await
    }

    /// A streaming standby of `primary` in `root/name`: `pg_basebackup -R` over the primary's
    /// socket into a fresh data directory, replicating through the physical slot `slot`
    /// (created by the copy), started on a free port. Its superuser and password are the
    /// primary's.
    pub async fn start_standby(
        root: &Path,
        name: &str,
        primary: &Postgres,
        slot: &str,
        supervision: Supervision,
    ) -> Result<Postgres, LabError> {
        let bin = bin_dir()?;
        let owner = service_user("postgres")?;
        let dir = root.join(name);
        private_dir(&dir, owner)?;
        let data = dir.join("data");
        let mut copy = Command::new(bin.join("pg_basebackup"));
        copy.arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-C", "-S", slot, "--no-sync", "-h"])
            .arg(&primary.dir)
            .args(["-p", &primary.port.to_string(), "-U", SUPERUSER]);
        if let Some((uid, gid)) = owner {
            copy.uid(uid).gid(gid);
        }
        run_checked(copy)?;
        Postgres::run(
            &bin,
            name,
            dir,
            &data,
            owner,
            &[],
            (primary.password_file.clone(), primary.password.clone()),
            supervision,
        )
        .await
    }

    /// Starts the cluster in `data` on a free port (another one when the port was taken).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        bin: &Path,
        name: &str,
        dir: PathBuf,
        data: &Path,
        owner: Option<(u32, u32)>,
        tls_args: &[String],
        (password_file, password): (PathBuf, Secret),
        supervision: Supervision,
    ) -> Result<Postgres, LabError> {
        let mut retry = PortRetry::default();
        loop {
            let port = free_port()?;
            let spawn = Spawn {
                name: format!("postgres {name}"),
                program: &bin.join("postgres"),
                args: vec![
                    "-D".into(),
                    data.display().to_string(),
                    "-p".into(),
                    port.to_string(),
                    "-k".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    "listen_addresses=127.0.0.1".into(),
                    "-c".into(),
                    "wal_level=logical".into(),
                    "-c".into(),
                    "max_replication_slots=16".into(),
                    "-c".into(),
                    "max_wal_senders=16".into(),
                    "-c".into(),
                    "max_logical_replication_workers=8".into(),
                    // Room for the daemon's fleet benchmark: one session per database for
                    // 300 pairs on one cluster.
                    "-c".into(),
                    "max_connections=400".into(),
                    "-c".into(),
                    "shared_buffers=32MB".into(),
                    "-c".into(),
                    "fsync=off".into(),
                    "-c".into(),
                    "synchronous_commit=off".into(),
                    "-c".into(),
                    "full_page_writes=off".into(),
                    // So tests can leave a prepared transaction open for preflight to find.
                    "-c".into(),
                    "max_prepared_transactions=4".into(),
                ]
                .into_iter()
                .chain(tls_args.iter().cloned())
                .collect(),
                log: dir.join("server.log"),
                run_as: owner,
                // SIGQUIT: immediate shutdown; the cluster is thrown away anyway.
                stop_signal: libc::SIGQUIT,
                supervision,
            };
            let mut process = spawn.start()?;
            let pid_file = data.join("postmaster.pid");
            match wait_until(&mut process, Duration::from_secs(30), || {
                postmaster_ready(&pid_file)
            })
            .await
            {
                Ok(()) => {
                    return Ok(Postgres {
                        name: name.to_owned(),
                        port,
                        dir,
                        password_file: password_file.clone(),
                        password: password.clone(),
                        process,
                    });
                }
                Err(e) => retry.after(e)?,
            }
        }
    }

    /// The superuser password.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// libpq connection parameters for `dbname` over TCP, without the password.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={dbname}",
            self.port
        )
    }

    /// tokio-postgres configuration for `dbname`, with the password.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(self.password.expose())
            .dbname(dbname)
            .application_name("cutover-lab")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects as the superuser to `dbname`; the connection task runs in the background.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, LabError> {
        // TLS when the server offers it (a TLS-only lab server), unverified: the lab made it.
        let (client, connection) = self
            .config(dbname)
            .connect(crate::postgres::tls::encrypt_only())
            .await
            .map_err(|e| self.sql_error("connect", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "lab postgres connection closed");
            }
        });
        Ok(client)
    }

    /// Creates a database (for tests that share a cluster).
    pub async fn create_database(&self, dbname: &str) -> Result<(), LabError> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(dbname)))
            .await
            .map_err(|e| self.sql_error(&format!("create database {dbname}"), &e))
    }

    /// The server process (tests use it to stop or kill the server).
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Lets the server outlive this handle (for `lab up`).
    pub fn release(self) -> ServerEntry {
        self.process.release()
    }

    fn sql_error(&self, context: &str, e: &tokio_postgres::Error) -> LabError {
        LabError::Sql {
            server: self.name.clone(),
            context: context.to_owned(),
            message: pg_error_message(e),
        }
    }
}

/// PostgreSQL writes `ready` into line 8 of postmaster.pid once it accepts connections.
fn postmaster_ready(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .map(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        .unwrap_or(false)
}
