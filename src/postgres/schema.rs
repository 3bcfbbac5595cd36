//! Copying the schema: `pg_dump --schema-only` of the source piped straight into `psql` on the
//! target (no temporary file). Passwords travel in the child's environment, never in argv.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::db::{PgError, Server};
use super::names::SCHEMA;

/// Finds a PostgreSQL client program: `CUTOVER_PG_BIN`, Debian's newest
/// `/usr/lib/postgresql/<major>/bin`, then `PATH`.
pub fn client_program(name: &str) -> Result<PathBuf, PgError> {
    if let Some(dir) = std::env::var_os("CUTOVER_PG_BIN") {
        return Ok(PathBuf::from(dir).join(name));
    }
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort_unstable();
    for major in majors.iter().rev() {
        let path = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
        if path.is_file() {
            return Ok(path);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(PgError::Tool {
        program: name.to_owned(),
        message: "not found; install the PostgreSQL client (Debian: postgresql-client-15 or newer)"
            .to_owned(),
    })
}

/// libpq environment for a child program connecting to `server`.
fn libpq_env(command: &mut Command, server: &Server) -> Result<(), PgError> {
    let e = &server.endpoint;
    command
        .env("PGHOST", &e.host)
        .env("PGPORT", e.port.to_string())
        .env("PGUSER", &e.user)
        .env("PGDATABASE", &e.dbname)
        .env("PGAPPNAME", "cutover")
        .env_remove("PGSERVICE");
    if let Some(password) = server.password()? {
        command.env("PGPASSWORD", password.expose());
    }
    if let Some(passfile) = &e.passfile {
        command.env("PGPASSFILE", passfile);
    }
    // The same TLS as cutover's own connections. libpq 15 has no `sslrootcert=system`: the
    // system bundle's file stands for it.
    let mode = serde_json::to_value(e.effective_sslmode())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "prefer".to_owned());
    command.env("PGSSLMODE", mode);
    for var in ["PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"] {
        command.env_remove(var);
    }
    match e.sslrootcert.as_deref() {
        Some("system") | None => {
            let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
            if bundle.is_file() {
                command.env("PGSSLROOTCERT", bundle);
            }
        }
        Some(file) => {
            command.env("PGSSLROOTCERT", file);
        }
    }
    if let (Some(cert), Some(key)) = (&e.sslcert, &e.sslkey) {
        command.env("PGSSLCERT", cert).env("PGSSLKEY", key);
    }
    Ok(())
}

/// Copies the source's schema (without cutover's own schema, publications and subscriptions)
/// into the target in one transaction.
pub async fn copy(source: &Server, target: &Server) -> Result<(), PgError> {
    copy_only(source, target, &[]).await
}

/// Copies the schema of `tables` only (`schema.name`; with their indexes, constraints and owned
/// sequences), for tables created on the source after replication started.
pub async fn copy_tables(
    source: &Server,
    target: &Server,
    tables: &[String],
) -> Result<(), PgError> {
    if tables.is_empty() {
        return Ok(());
    }
    copy_only(source, target, tables).await
}

async fn copy_only(source: &Server, target: &Server, tables: &[String]) -> Result<(), PgError> {
    let mut dump = Command::new(client_program("pg_dump")?);
    dump.args([
        "--schema-only",
        "--no-publications",
        "--no-subscriptions",
        "--exclude-schema",
        SCHEMA,
    ]);
    for table in tables {
        // `--table` takes a pattern: quote both parts so the name is matched exactly.
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        dump.arg("--table").arg(format!(
            "\"{}\".\"{}\"",
            schema.replace('"', "\"\""),
            name.replace('"', "\"\"")
        ));
    }
    dump.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    libpq_env(&mut dump, source)?;

    let mut restore = Command::new(client_program("psql")?);
    restore
        .args([
            "--no-psqlrc",
            "--quiet",
            "--single-transaction",
            "--set",
            "ON_ERROR_STOP=1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    libpq_env(&mut restore, target)?;

    let mut dump_child = dump.spawn().map_err(|e| tool_error("pg_dump", e))?;
    let dump_out: Stdio = dump_child
        .stdout
        .take()
        .expect("stdout is piped")
        .try_into()
        .map_err(|e| tool_error("pg_dump", e))?;
    restore.stdin(dump_out);
    let mut restore_child = restore.spawn().map_err(|e| tool_error("psql", e))?;

    let mut dump_err = dump_child.stderr.take().expect("stderr is piped");
    let mut restore_err = restore_child.stderr.take().expect("stderr is piped");
    let (dump_status, restore_status, dump_text, restore_text) = tokio::join!(
        dump_child.wait(),
        restore_child.wait(),
        read_all(&mut dump_err),
        read_all(&mut restore_err),
    );
    let dump_status = dump_status.map_err(|e| tool_error("pg_dump", e))?;
    let restore_status = restore_status.map_err(|e| tool_error("psql", e))?;
    if !dump_status.success() {
        return Err(PgError::Tool {
            program: format!("pg_dump ({})", source.label),
            message: format!("{dump_status}: {}", tail(&dump_text)),
        });
    }
    if !restore_status.success() {
        return Err(PgError::Tool {
            program: format!("psql ({})", target.label),
            message: format!(
                "{restore_status}: {} (nothing was applied: the restore runs in one transaction)",
                tail(&restore_text)
            ),
        });
    }
    Ok(())
}

async fn read_all(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn tool_error(program: &str, e: std::io::Error) -> PgError {
    PgError::Tool {
        program: program.to_owned(),
        message: e.to_string(),
    }
}
