//! A throwaway MariaDB 10.11 server: binlog on, ROW format, GTID strict mode, its own server_id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::env::{free_port, private_dir, random_token, run_checked, service_user, write_secret};
use super::process::{
    PortRetry, ServerProcess, Spawn, Supervision, tcp_open, unix_listening, wait_until,
};
use super::state::ServerEntry;
use super::{LabError, find_program};
use crate::secret::Secret;

/// The administrative user the lab creates, reachable over TCP with a password.
pub const ADMIN_USER: &str = "cutover";

/// The plan line every lab MariaDB pair needs: mariadb-install-db's `root@localhost` holds
/// `ALL PRIVILEGES` (so it can write the app's database) but logs in only over the socket as
/// the system's root; the lab never uses it after bootstrap, and the plan says so.
pub const PLAN_EXEMPT_USERS: &str = "exempt_users = { root = \"socket-only local admin (mariadb-install-db); the app never uses it\" }";

/// A running lab MariaDB server.
pub struct MariaDb {
    /// Name, e.g. `maria-source`.
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Its `server_id`.
    pub server_id: u32,
    /// The server's directory (data, socket, logs).
    pub dir: PathBuf,
    /// Unix socket (root may log in through it without a password).
    pub socket: PathBuf,
    /// File holding the admin user's password (mode 0600).
    pub password_file: PathBuf,
    password: Secret,
    process: ServerProcess,
    /// TCP connections must use TLS (the lab's own ones encrypt without checking).
    tls: bool,
}

/// TLS for the lab's own TCP connections to a server it started: encrypted, not checked.
fn lab_ssl(on: bool) -> Option<mysql_async::SslOpts> {
    on.then(|| {
        mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true)
    })
}

impl MariaDb {
    /// Creates a data directory in `root/name` and starts a server on a free port.
    pub async fn start(
        root: &Path,
        name: &str,
        server_id: u32,
        supervision: Supervision,
    ) -> Result<MariaDb, LabError> {
        MariaDb::start_with(root, name, server_id, supervision, None).await
    }

    /// [`MariaDb::start`], requiring secure transport over TCP when `tls` is given (a
    /// certificate from the lab's CA; the Unix socket stays as it is).
    pub async fn start_with(
        root: &Path,
        name: &str,
        server_id: u32,
        supervision: Supervision,
        tls: Option<&super::tls::ServerTls<'_>>,
    ) -> Result<MariaDb, LabError> {
        let server = find_program("mariadbd", "package mariadb-server")?;
        let install = find_program("mariadb-install-db", "package mariadb-server")?;
        let owner = service_user("mysql")?;
        let dir = root.join(name);
        private_dir(&dir, owner)?;
        let data = dir.join("data");
        // Each instance gets its own tmpdir: concurrent servers sharing /tmp clash over
        // temporary-table files (seen as "Unknown table 'mysql.tmp_user_sys'" in the bootstrap).
        let tmp = dir.join("tmp");
        private_dir(&tmp, owner)?;
        let tmpdir_arg = format!("--tmpdir={}", tmp.display());
        let run_user = if owner.is_some() { "mysql" } else { "" };

        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(&tmpdir_arg);
        if !run_user.is_empty() {
            cmd.arg(format!("--user={run_user}"));
        }
        run_checked(cmd)?;

        let socket = dir.join("mysqld.sock");
        let password = Secret::new(random_token(24));
        let password_file = root.join("secrets").join(format!("{name}.password"));
        write_secret(&password_file, password.expose(), None)?;

        let mut tls_args: Vec<String> = Vec::new();
        if let Some(tls) = tls {
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            let names: Vec<&str> = tls.names.iter().map(String::as_str).collect();
            tls.ca.issue(&names, &cert, &key, owner)?;
            tls_args.extend([
                format!("--ssl-cert={}", cert.display()),
                format!("--ssl-key={}", key.display()),
                format!("--ssl-ca={}", tls.ca.ca_file.display()),
                "--require-secure-transport=ON".to_owned(),
            ]);
            if tls.session_status {
                // Each session's TLS status, read from the source's side by the tests (the
                // replication session's cipher).
                tls_args.push("--performance-schema=ON".to_owned());
            }
        }

        let mut retry = PortRetry::default();
        loop {
            let port = free_port()?;
            let mut args = vec![
                "--no-defaults".to_owned(),
                format!("--datadir={}", data.display()),
                tmpdir_arg.clone(),
                format!("--socket={}", socket.display()),
                format!("--port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--server-id={server_id}"),
                format!("--log-bin={}", data.join("binlog").display()),
                "--binlog-format=ROW".into(),
                "--binlog-row-image=FULL".into(),
                "--gtid-strict-mode=1".into(),
                "--log-slave-updates=1".into(),
                format!("--gtid-domain-id=0"),
                "--skip-name-resolve".into(),
                format!("--pid-file={}", dir.join("mysqld.pid").display()),
                format!("--log-error={}", dir.join("error.log").display()),
                "--innodb-buffer-pool-size=64M".into(),
                "--innodb-log-file-size=32M".into(),
                "--innodb-flush-log-at-trx-commit=2".into(),
                "--sync-binlog=0".into(),
                "--max-connections=200".into(),
                "--character-set-server=utf8mb4".into(),
                "--collation-server=utf8mb4_general_ci".into(),
            ];
            if !run_user.is_empty() {
                args.push(format!("--user={run_user}"));
            }
            args.extend(tls_args.iter().cloned());
            let spawn = Spawn {
                name: format!("mariadb {name}"),
                program: &server,
                args,
                log: dir.join("server.log"),
                run_as: None,
                stop_signal: libc::SIGKILL,
                supervision,
            };
            let mut process = spawn.start()?;
            let ready = wait_until(&mut process, Duration::from_secs(60), || {
                unix_listening(&socket) && tcp_open(port)
            })
            .await;
            match ready {
                Ok(()) => {
                    let server = MariaDb {
                        name: name.to_owned(),
                        port,
                        server_id,
                        dir: dir.clone(),
                        socket: socket.clone(),
                        password_file: password_file.clone(),
                        password: password.clone(),
                        process,
                        tls: tls.is_some(),
                    };
                    server.create_admin_user().await?;
                    return Ok(server);
                }
                Err(e) => {
                    // The error log says why (often: port taken).
                    retry.after(match e {
                        LabError::Exited { name, status, .. } => LabError::Exited {
                            name,
                            status,
                            log_tail: super::process::log_tail(&dir.join("error.log")),
                        },
                        other => other,
                    })?;
                }
            }
        }
    }

    /// Over the root socket: drop the passwordless TCP root accounts mariadb-install-db makes and
    /// create the admin user. Not written to the binlog, so replicas never see it.
    async fn create_admin_user(&self) -> Result<(), LabError> {
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(self.socket.display().to_string()))
            .user(Some("root"));
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| self.sql_error("connect as root over the socket", &e))?;
        let run = async {
            conn.query_drop("SET SESSION sql_log_bin = 0").await?;
            let hosts: Vec<String> = conn
                .query("SELECT Host FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'")
                .await?;
            for host in hosts {
                conn.query_drop(format!("DROP USER 'root'@{}", quote_literal(&host)))
                    .await?;
            }
            for host in ["127.0.0.1", "::1", "localhost"] {
                conn.query_drop(format!(
                    "CREATE USER '{ADMIN_USER}'@{} IDENTIFIED BY {}",
                    quote_literal(host),
                    quote_literal(self.password.expose())
                ))
                .await?;
                conn.query_drop(format!(
                    "GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@{} WITH GRANT OPTION",
                    quote_literal(host)
                ))
                .await?;
            }
            conn.disconnect().await
        };
        run.await
            .map_err(|e| self.sql_error("create the admin user", &e))
    }

    /// The admin user's password.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// Connection options for the admin user over TCP, optionally selecting a database.
    pub fn opts(&self, database: Option<&str>) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(ADMIN_USER))
            .pass(Some(self.password.expose()))
            .db_name(database)
            .prefer_socket(false)
            .ssl_opts(lab_ssl(self.tls))
            .into()
    }

    /// Connection options for another user (e.g. the app's) over TCP, with `database` selected.
    pub fn user_opts(&self, user: &str, password: &str, database: &str) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .db_name(Some(database))
            .prefer_socket(false)
            .ssl_opts(lab_ssl(self.tls))
            .into()
    }

    /// Connects as the admin user over TCP.
    pub async fn connect(&self, database: Option<&str>) -> Result<mysql_async::Conn, LabError> {
        mysql_async::Conn::new(self.opts(database))
            .await
            .map_err(|e| self.sql_error("connect", &e))
    }

    /// The server process (tests use it to stop or kill the server).
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Lets the server outlive this handle (for `lab up`).
    pub fn release(self) -> ServerEntry {
        self.process.release()
    }

    fn sql_error(&self, context: &str, e: &mysql_async::Error) -> LabError {
        LabError::Sql {
            server: self.name.clone(),
            context: context.to_owned(),
            message: e.to_string(),
        }
    }
}

/// Quotes a string literal for MySQL/MariaDB (for statements that take no placeholders).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}
