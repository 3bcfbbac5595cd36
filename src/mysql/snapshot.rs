//! The consistent snapshot: `mariadb-dump` / `mysqldump --single-transaction` of the source
//! streamed straight into the target's command-line client (no temporary file), with the
//! binlog coordinates and GTID position read from the dump's header as it passes through.
//! Passwords travel in the children's environment (`MYSQL_PWD`), never in argv. The target
//! loads with `sql_log_bin = 0`: the snapshot is not replayed to anyone reading its binlog.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::db::{Db, MyError, Server};
use super::dialect::Dialect;

/// Where the snapshot was taken in the source's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coordinates {
    /// Binlog file.
    pub file: Option<String>,
    /// Position in it.
    pub position: Option<u64>,
    /// GTID position (MariaDB `gtid_slave_pos`; MySQL `GTID_PURGED`).
    pub gtid: Option<String>,
}

/// The value of `KEY='value'` or `KEY=number` in a dump header line.
fn value_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = line[start..].trim_start_matches('=').trim_start();
    let rest = rest.strip_prefix('\'').unwrap_or(rest);
    let end = rest.find(['\'', ',', ';']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

impl Coordinates {
    /// Reads coordinates from one header line of a MariaDB or MySQL dump.
    pub fn read_line(&mut self, line: &str) {
        if line.contains("CHANGE MASTER TO") || line.contains("CHANGE REPLICATION SOURCE TO") {
            // `-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;` carries no coordinates.
            if let Some(file) = value_after(line, "MASTER_LOG_FILE")
                .or_else(|| value_after(line, "SOURCE_LOG_FILE"))
            {
                self.file = Some(file.to_owned());
            }
            if let Some(position) = value_after(line, "MASTER_LOG_POS")
                .or_else(|| value_after(line, "SOURCE_LOG_POS"))
                .and_then(|p| p.parse().ok())
            {
                self.position = Some(position);
            }
        }
        if line.contains("gtid_slave_pos=") || line.contains("gtid_slave_pos =") {
            self.gtid = value_after(line, "gtid_slave_pos").map(str::to_owned);
        }
        if line.contains("GTID_PURGED") {
            // `SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ 'uuid:1-5';`
            if let Some(q) = line.rfind("'") {
                let before = &line[..q];
                if let Some(open) = before.rfind('\'') {
                    self.gtid = Some(before[open + 1..].to_owned());
                }
            }
        }
    }

    /// Whether the dump told where replication must start.
    pub fn complete(&self) -> bool {
        self.file.is_some() && self.position.is_some()
    }
}

/// What streaming the snapshot did.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Coordinates of the snapshot.
    pub coordinates: Coordinates,
    /// Bytes streamed.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// The program `name`, or its other name (`mariadb-dump` / `mysqldump`, `mariadb` / `mysql`).
fn program(name: &str) -> Result<PathBuf, MyError> {
    let alternatives: &[&str] = match name {
        "mariadb-dump" => &["mariadb-dump", "mysqldump"],
        "mysqldump" => &["mysqldump", "mariadb-dump"],
        "mariadb" => &["mariadb", "mysql"],
        _ => &["mysql", "mariadb"],
    };
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for alt in alternatives {
            let path = dir.join(alt);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(MyError::Tool {
        program: name.to_owned(),
        message: "not found; install the client (Debian: mariadb-client or default-mysql-client)"
            .into(),
    })
}

fn connection_args(server: &Server, dialect: Dialect) -> Vec<String> {
    let mut args = vec![
        "--protocol=TCP".into(),
        format!("--host={}", server.endpoint.host),
        format!("--port={}", server.endpoint.port),
        format!("--user={}", server.endpoint.user),
    ];
    args.extend(tls_args(&server.endpoint, dialect));
    args
}

/// The client program's TLS options for `e`, as cutover's own connection has them. MariaDB's
/// clients take `--ssl` and `--ssl-verify-server-cert` (no `--ssl-mode`); MySQL's `--ssl-mode`.
pub fn tls_args(e: &crate::plan::MysqlEndpoint, dialect: Dialect) -> Vec<String> {
    use crate::plan::MysqlSslMode as M;
    let mode = e.effective_ssl_mode();
    let mut args: Vec<String> = match (dialect, mode) {
        (Dialect::Mariadb, M::Disabled) => vec!["--skip-ssl".into()],
        (Dialect::Mariadb, M::Preferred) => Vec::new(),
        (Dialect::Mariadb, M::Required | M::VerifyCa) => vec!["--ssl".into()],
        (Dialect::Mariadb, M::VerifyIdentity) => {
            vec!["--ssl".into(), "--ssl-verify-server-cert".into()]
        }
        (_, mode) => vec![format!(
            "--ssl-mode={}",
            match mode {
                M::Disabled => "DISABLED",
                M::Preferred => "PREFERRED",
                M::Required => "REQUIRED",
                M::VerifyCa => "VERIFY_CA",
                M::VerifyIdentity => "VERIFY_IDENTITY",
            }
        )],
    };
    if matches!(mode, M::VerifyCa | M::VerifyIdentity) {
        match e.ssl_ca.as_deref() {
            Some(file) if file != "system" => args.push(format!("--ssl-ca={file}")),
            _ => {
                let bundle = "/etc/ssl/certs/ca-certificates.crt";
                if std::path::Path::new(bundle).is_file() {
                    args.push(format!("--ssl-ca={bundle}"));
                }
            }
        }
    }
    if mode != M::Disabled
        && let (Some(cert), Some(key)) = (&e.ssl_cert, &e.ssl_key)
    {
        args.push(format!("--ssl-cert={}", cert.display()));
        args.push(format!("--ssl-key={}", key.display()));
    }
    args
}

fn command(program: PathBuf, server: &Server, dialect: Dialect) -> Result<Command, MyError> {
    let mut cmd = Command::new(program);
    // MYSQL_PWD must come first among the options' sources; no option file is read.
    cmd.arg("--no-defaults")
        .args(connection_args(server, dialect))
        .env_remove("MYSQL_PWD");
    if let Some(password) = server.password()? {
        cmd.env("MYSQL_PWD", password.expose());
    }
    Ok(cmd)
}

async fn stderr_of(child: &mut tokio::process::Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text).await;
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Copies a dump from `reader` to `writer` unchanged, reading the coordinates from its header
/// lines on the way (MariaDB writes the GTID position at the very end, "deferred gtid
/// setting", so every line passes the scanner). Returns them and the bytes copied.
async fn pass_through(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::io::Result<(Coordinates, u64)> {
    let (mut coordinates, mut bytes) = (Coordinates::default(), 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok((coordinates, bytes));
        }
        bytes += n as u64;
        if line.starts_with(b"-- ") || line.starts_with(b"SET @@GLOBAL.GTID_PURGED") {
            coordinates.read_line(&String::from_utf8_lossy(&line));
        }
        writer.write_all(&line).await?;
    }
}

/// Dumps `databases` from `source` into `target`. The header lines are scanned for the
/// coordinates; everything else is copied through unchanged.
pub async fn stream(
    source: &Server,
    source_db: &Db,
    target: &Server,
    target_dialect: Dialect,
    databases: &[String],
) -> Result<Snapshot, MyError> {
    let started = Instant::now();
    let (dump_name, dump_args) = source_db.dialect.dump_command(source_db.version);
    let dump_program = program(dump_name)?;
    let client_program = program(target_dialect.client_program())?;
    let mut dump = command(dump_program.clone(), source, source_db.dialect)?;
    dump.args(dump_args).arg("--databases").args(databases);
    dump.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut load = command(client_program.clone(), target, target_dialect)?;
    load.arg("--init-command=SET SESSION sql_log_bin = 0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let tool = |p: &PathBuf, e: std::io::Error| MyError::Tool {
        program: p.display().to_string(),
        message: e.to_string(),
    };
    let mut dump_child = dump
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tool(&dump_program, e))?;
    let mut load_child = load
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tool(&client_program, e))?;
    let mut reader = BufReader::new(dump_child.stdout.take().expect("piped stdout"));
    let mut writer = load_child.stdin.take().expect("piped stdin");
    let copied = async {
        let scanned = pass_through(&mut reader, &mut writer).await?;
        writer.shutdown().await?;
        drop(writer);
        Ok::<_, std::io::Error>(scanned)
    }
    .await;
    let dump_status = dump_child
        .wait()
        .await
        .map_err(|e| tool(&dump_program, e))?;
    let dump_err = stderr_of(&mut dump_child).await;
    let load_status = load_child
        .wait()
        .await
        .map_err(|e| tool(&client_program, e))?;
    let load_err = stderr_of(&mut load_child).await;
    if !dump_status.success() {
        return Err(MyError::Tool {
            program: dump_name.into(),
            message: format!("{dump_status}: {dump_err}"),
        });
    }
    if !load_status.success() {
        return Err(MyError::Tool {
            program: target_dialect.client_program().into(),
            message: format!(
                "{load_status} loading the snapshot into {}: {load_err}",
                target.label
            ),
        });
    }
    let (coordinates, bytes) = copied.map_err(|e| MyError::Tool {
        program: dump_name.into(),
        message: format!("streaming into the target: {e}"),
    })?;
    if !coordinates.complete() {
        return Err(MyError::Tool {
            program: dump_name.into(),
            message: "the dump did not say where replication must start (no CHANGE MASTER/SOURCE line); the source's binary log may be off".into(),
        });
    }
    Ok(Snapshot {
        coordinates,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A consistent copy of some tables of one database, spooled to a file.
#[derive(Debug)]
pub struct TableCopy {
    /// Where in the source's binlog the copy was taken.
    pub coordinates: Coordinates,
    /// Bytes of the dump.
    pub bytes: u64,
    /// The spool file (removed when dropped).
    pub file: tempfile::NamedTempFile,
}

/// Dumps `tables` of `database` from `source` into a private file in `spool_dir`, with the
/// binlog position the copy is consistent with.
pub async fn dump_tables(
    source: &Server,
    source_db: &Db,
    database: &str,
    tables: &[String],
    spool_dir: &std::path::Path,
) -> Result<TableCopy, MyError> {
    let (dump_name, dump_args) = source_db.dialect.table_dump_command(source_db.version);
    let dump_program = program(dump_name)?;
    let tool = |message: String| MyError::Tool {
        program: dump_name.into(),
        message,
    };
    // Mode 0600 (tempfile's default): the rows are the app's data.
    let spool = tempfile::Builder::new()
        .prefix(".resync-")
        .suffix(".sql")
        .tempfile_in(spool_dir)
        .map_err(|e| tool(format!("a spool file in {}: {e}", spool_dir.display())))?;
    let mut dump = command(dump_program, source, source_db.dialect)?;
    // `--` ends the options: a table named like an option is still a table.
    dump.args(dump_args).arg("--").arg(database).args(tables);
    dump.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = dump
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tool(e.to_string()))?;
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut writer = tokio::fs::File::from_std(
        spool
            .reopen()
            .map_err(|e| tool(format!("the spool file: {e}")))?,
    );
    let copied = async {
        let scanned = pass_through(&mut reader, &mut writer).await?;
        writer.flush().await?;
        writer.sync_all().await?;
        Ok::<_, std::io::Error>(scanned)
    }
    .await;
    let status = child.wait().await.map_err(|e| tool(e.to_string()))?;
    let stderr = stderr_of(&mut child).await;
    if !status.success() {
        return Err(tool(format!("{status}: {stderr}")));
    }
    let (coordinates, bytes) = copied.map_err(|e| tool(format!("spooling the copy: {e}")))?;
    if !coordinates.complete() {
        return Err(tool(
            "the dump did not say where in the binlog it was taken (no CHANGE MASTER/SOURCE line); the source's binary log may be off".into(),
        ));
    }
    Ok(TableCopy {
        coordinates,
        bytes,
        file: spool,
    })
}

/// Loads a [`TableCopy`] into `database` on `target`, outside its binlog.
pub async fn load_tables(
    target: &Server,
    target_dialect: Dialect,
    database: &str,
    copy: &TableCopy,
) -> Result<(), MyError> {
    let client = target_dialect.client_program();
    let client_program = program(client)?;
    let tool = |message: String| MyError::Tool {
        program: client.into(),
        message,
    };
    let input = copy
        .file
        .reopen()
        .map_err(|e| tool(format!("the spool file: {e}")))?;
    let mut load = command(client_program, target, target_dialect)?;
    load.arg("--init-command=SET SESSION sql_log_bin = 0")
        .arg(format!("--database={database}"))
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = load
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tool(e.to_string()))?;
    let status = child.wait().await.map_err(|e| tool(e.to_string()))?;
    if !status.success() {
        let stderr = stderr_of(&mut child).await;
        return Err(tool(format!(
            "{status} loading the copy into {}: {stderr}",
            target.label
        )));
    }
    Ok(())
}

/// Parses a whole dump header (tests and diagnostics).
pub fn coordinates_of(header: &str) -> Coordinates {
    let mut c = Coordinates::default();
    header.lines().for_each(|l| c.read_line(l));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mariadb_and_mysql_dump_headers() {
        let maria = coordinates_of(
            "-- MariaDB dump 10.19\n-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;\n--\n-- Position to start replication or point-in-time recovery from\n--\n\n\
             -- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=3467;\n\n\
             -- GTID to start replication from\n\n-- SET GLOBAL gtid_slave_pos='0-1-15';\n",
        );
        assert_eq!(
            maria,
            Coordinates {
                file: Some("binlog.000002".into()),
                position: Some(3467),
                gtid: Some("0-1-15".into())
            }
        );
        let mysql = coordinates_of(
            "SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77';\n\
             -- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000003', SOURCE_LOG_POS=157;\n",
        );
        assert_eq!(mysql.file.as_deref(), Some("binlog.000003"));
        assert_eq!(mysql.position, Some(157));
        assert_eq!(
            mysql.gtid.as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77")
        );
        assert!(!coordinates_of("-- nothing here\n").complete());
    }
}
