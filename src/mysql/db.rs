//! Connecting to a plan's MySQL/MariaDB servers, detecting their dialect, and a connection
//! wrapper whose errors say which server and what cutover was doing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, OptsBuilder, Params, Row, Value};

use super::dialect::{Dialect, Flavour, Version, parse_version};
use crate::plan::MysqlEndpoint;
use crate::secret::{Secret, SecretError};

pub use crate::dberror::DbError as MyError;

/// The server's message for an error (`ERROR 1045 (28000): Access denied …`).
pub fn error_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => {
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state)
        }
        other => other.to_string(),
    }
}

/// One server of a pair, as the plan describes it.
#[derive(Debug, Clone)]
pub struct Server {
    /// `source` or `target` with the address, for messages.
    pub label: String,
    /// The plan's endpoint.
    pub endpoint: MysqlEndpoint,
}

/// The `password=` line of an option file's `[client]` (or `[mysql]`) group.
fn option_file_password(path: &Path) -> Result<Option<String>, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let mut in_client = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_client = matches!(line, "[client]" | "[mysql]" | "[mariadb-client]");
        } else if in_client
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "password"
        {
            return Ok(Some(
                value.trim().trim_matches('"').trim_matches('\'').to_owned(),
            ));
        }
    }
    Ok(None)
}

impl Server {
    /// The server `endpoint` plays `role` (`source`/`target`) for.
    pub fn new(role: &str, endpoint: &MysqlEndpoint) -> Server {
        Server {
            label: format!("{role} {}:{}", endpoint.host, endpoint.port),
            endpoint: endpoint.clone(),
        }
    }

    /// The password from env, file or option file, if the plan names one.
    pub fn password(&self) -> Result<Option<Secret>, MyError> {
        if let Some(reference) = self.endpoint.password() {
            return reference
                .read()
                .map(Some)
                .map_err(|source| MyError::Secret {
                    server: self.label.clone(),
                    source,
                });
        }
        if let Some(path) = &self.endpoint.option_file {
            return option_file_password(path)
                .map(|p| p.map(Secret::new))
                .map_err(|e| MyError::Secret {
                    server: self.label.clone(),
                    source: SecretError::File {
                        path: path.clone(),
                        source: e.into(),
                    },
                });
        }
        Ok(None)
    }

    /// Connection options (TCP, no database selected).
    pub fn opts(&self) -> Result<OptsBuilder, MyError> {
        let password = self.password()?;
        Ok(OptsBuilder::default()
            .ip_or_hostname(self.endpoint.host.clone())
            .tcp_port(self.endpoint.port)
            .user(Some(self.endpoint.user.clone()))
            .pass(password.map(|p| p.expose().to_owned()))
            .prefer_socket(false)
            // literal() escapes backslashes: only right while backslashes escape, whatever the
            // server's sql_mode says.
            .init(vec![
                "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','))",
            ]))
    }

    /// Connects (TLS as the endpoint's `ssl_mode` says) and detects the dialect. A
    /// `preferred` connection to a server without TLS falls back to plaintext, said at `info`.
    pub async fn connect(&self) -> Result<Db, MyError> {
        let failed = |e: &mysql_async::Error| MyError::Connect {
            server: self.label.clone(),
            message: super::tls::describe_failure(e, &self.endpoint)
                .unwrap_or_else(|| error_message(e)),
        };
        let tls = super::tls::ssl_opts(&self.endpoint).map_err(|message| MyError::Connect {
            server: self.label.clone(),
            message,
        })?;
        let conn = match Conn::new(self.opts()?.ssl_opts(tls)).await {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.endpoint.effective_ssl_mode() == crate::plan::MysqlSslMode::Preferred => {
                tracing::info!(server = %self.label, "connected in plaintext: ssl_mode preferred and the server does not offer TLS");
                Conn::new(self.opts()?).await.map_err(|e| failed(&e))?
            }
            other => other.map_err(|e| failed(&e))?,
        };
        let mut db = Db {
            label: self.label.clone(),
            user: self.endpoint.user.clone(),
            conn,
            flavour: Flavour::Mysql,
            version: Version::new(0, 0, 0),
            dialect: Dialect::Mysql80,
        };
        let text: String = db
            .query_one("read the server version", "SELECT VERSION()")
            .await?;
        let (flavour, version) = parse_version(&text).ok_or_else(|| {
            MyError::Refused(format!(
                "{}: cannot read the server version `{text}`",
                self.label
            ))
        })?;
        db.flavour = flavour;
        db.version = version;
        db.dialect = Dialect::of(flavour, version).ok_or_else(|| {
            MyError::Refused(format!(
                "{}: {text} is not supported; fix: upgrade to MySQL 5.7.8+ or MariaDB 10.5.1+",
                self.label
            ))
        })?;
        Ok(db)
    }
}

/// A connection to one server with its detected dialect.
pub struct Db {
    /// Which server, for messages.
    pub label: String,
    /// The account this session logged in as (its user name).
    pub user: String,
    /// The connection.
    pub conn: Conn,
    /// MySQL or MariaDB.
    pub flavour: Flavour,
    /// Numeric version.
    pub version: Version,
    /// Statement dialect.
    pub dialect: Dialect,
}

impl Db {
    /// Logs a statement's round trip at `trace` (`--log cutover::mysql=trace`): which of the
    /// window's statements cost what, by their context, never their text.
    fn took(&self, context: &str, started: Instant) {
        tracing::trace!(server = %self.label, what = context, ms = started.elapsed().as_secs_f64() * 1000.0, "statement");
    }

    /// A SQL error with context.
    pub fn error(&self, context: &str, e: &mysql_async::Error) -> MyError {
        MyError::Sql {
            server: self.label.clone(),
            context: context.to_owned(),
            message: error_message(e),
        }
    }

    /// Runs statements without results.
    pub async fn run(&mut self, context: &str, sql: &str) -> Result<(), MyError> {
        let started = Instant::now();
        let r = self.conn.query_drop(sql).await;
        self.took(context, started);
        r.map_err(|e| self.error(context, &e))
    }

    /// Runs a statement without results; returns the rows the server says it affected.
    pub async fn run_counted(&mut self, context: &str, sql: &str) -> Result<u64, MyError> {
        self.run(context, sql).await?;
        Ok(self.conn.affected_rows())
    }

    /// Prepares `sql` on this session ahead of its first use (the session keeps it), so that
    /// use inside the window is one round trip, not two.
    pub async fn prepare(&mut self, context: &str, sql: &str) -> Result<(), MyError> {
        let r = self.conn.prep(sql).await;
        r.map(drop).map_err(|e| self.error(context, &e))
    }

    /// Runs a statement with bound values.
    pub async fn exec(
        &mut self,
        context: &str,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<(), MyError> {
        let started = Instant::now();
        let r = self.conn.exec_drop(sql, params).await;
        self.took(context, started);
        r.map_err(|e| self.error(context, &e))
    }

    /// The first row's value of a statement that must return one.
    pub async fn query_one<T: FromRow + Send + 'static>(
        &mut self,
        context: &str,
        sql: &str,
    ) -> Result<T, MyError> {
        let started = Instant::now();
        let r = self.conn.query_first::<T, _>(sql).await;
        self.took(context, started);
        r.map_err(|e| self.error(context, &e))?
            .ok_or_else(|| MyError::Sql {
                server: self.label.clone(),
                context: context.to_owned(),
                message: "no row returned".into(),
            })
    }

    /// The first row of a statement with bound values, if any.
    pub async fn exec_opt<T: FromRow + Send + 'static>(
        &mut self,
        context: &str,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Option<T>, MyError> {
        let started = Instant::now();
        let r = self.conn.exec_first::<T, _, _>(sql, params).await;
        self.took(context, started);
        r.map_err(|e| self.error(context, &e))
    }

    /// Every row of a statement with bound values.
    pub async fn exec_all<T: FromRow + Send + 'static>(
        &mut self,
        context: &str,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Vec<T>, MyError> {
        let started = Instant::now();
        let r = self.conn.exec::<T, _, _>(sql, params).await;
        self.took(context, started);
        r.map_err(|e| self.error(context, &e))
    }

    /// A statement's rows as column-name maps (for `SHOW` output read by name).
    pub async fn rows_by_name(
        &mut self,
        context: &str,
        sql: &str,
    ) -> Result<Vec<NamedRow>, MyError> {
        let started = Instant::now();
        let r = self.conn.query::<Row, _>(sql).await;
        self.took(context, started);
        let rows = r.map_err(|e| self.error(context, &e))?;
        Ok(rows.into_iter().map(NamedRow::from).collect())
    }

    /// A global variable as text; `None` when the server has no such variable. `name` is one
    /// of cutover's own constants (letters and `_` only), never user input.
    pub async fn variable(&mut self, name: &str) -> Result<Option<String>, MyError> {
        debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let r = self
            .conn
            .query_first::<Option<String>, _>(format!("SELECT @@GLOBAL.{name}"))
            .await;
        match r {
            Ok(value) => Ok(value.flatten()),
            // ER_UNKNOWN_SYSTEM_VARIABLE: the flavour does not have it.
            Err(mysql_async::Error::Server(e)) if e.code == 1193 => Ok(None),
            Err(e) => Err(self.error(&format!("read @@GLOBAL.{name}"), &e)),
        }
    }

    /// Checks that the server still answers on this session.
    pub async fn ping(&mut self) -> Result<(), MyError> {
        let r = self.conn.ping().await;
        r.map_err(|e| self.error("ping", &e))
    }

    /// Closes the session.
    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// One row of `SHOW …` output, read by column name.
#[derive(Debug, Clone, Default)]
pub struct NamedRow(HashMap<String, Value>);

impl From<Row> for NamedRow {
    fn from(row: Row) -> NamedRow {
        let names: Vec<String> = row
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        let values = row.unwrap();
        NamedRow(names.into_iter().zip(values).collect())
    }
}

impl NamedRow {
    /// The column under its new name or the old `Master`/`Slave` spelling, as text.
    pub fn text(&self, new_name: &str) -> Option<String> {
        super::dialect::status_column_names(new_name)
            .iter()
            .find_map(|n| self.0.get(n))
            .and_then(|v| match v {
                Value::NULL => None,
                Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
            })
    }

    /// The column's raw bytes (binary data such as an XA transaction's xid).
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        match self.0.get(name)? {
            Value::Bytes(b) => Some(b.clone()),
            Value::NULL => None,
            other => Some(other.as_sql(true).trim_matches('\'').as_bytes().to_vec()),
        }
    }

    /// The column as a number.
    pub fn number(&self, new_name: &str) -> Option<u64> {
        self.text(new_name).and_then(|t| t.trim().parse().ok())
    }
}
