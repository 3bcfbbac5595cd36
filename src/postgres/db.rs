//! Connecting to a plan's PostgreSQL servers, and a client wrapper whose errors say which server
//! and what cutover was doing (tokio-postgres alone only says "db error").

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::Side;
use crate::plan::{PgEndpoint, SslMode};
use crate::secret::{Secret, SecretError};

pub use crate::dberror::DbError as PgError;

/// The server's own message for database errors.
pub fn error_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// One end of a pair: how to reach it and how to name it in messages.
#[derive(Debug, Clone)]
pub struct Server {
    /// Source or target.
    pub side: Side,
    /// The plan's connection settings.
    pub endpoint: PgEndpoint,
    /// `source 127.0.0.1:5432/app`, used in every message.
    pub label: String,
}

impl Server {
    /// A server from its plan entry.
    pub fn new(side: Side, endpoint: PgEndpoint) -> Server {
        let label = format!(
            "{side} {}:{}/{}",
            endpoint.host, endpoint.port, endpoint.dbname
        );
        Server {
            side,
            endpoint,
            label,
        }
    }

    /// The password from `password_env`, `password_file` or `passfile`, if any.
    pub fn password(&self) -> Result<Option<Secret>, PgError> {
        let secret_error = |source| PgError::Secret {
            server: self.label.clone(),
            source,
        };
        if let Some(reference) = self.endpoint.password() {
            return reference.read().map(Some).map_err(secret_error);
        }
        if let Some(passfile) = &self.endpoint.passfile {
            let text = std::fs::read_to_string(passfile).map_err(|source| {
                secret_error(SecretError::File {
                    path: passfile.clone(),
                    source: source.into(),
                })
            })?;
            return Ok(passfile_lookup(&text, &self.endpoint));
        }
        Ok(None)
    }

    /// tokio-postgres settings for this server, password included.
    pub fn config(&self) -> Result<tokio_postgres::Config, PgError> {
        let e = &self.endpoint;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&e.host)
            .port(e.port)
            .user(&e.user)
            .dbname(&e.dbname)
            .application_name("cutover")
            // literal() doubles quotes and leaves backslashes alone: only right when strings
            // conform, whatever the server's or the role's default says.
            .options("-c standard_conforming_strings=on")
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = self.password()? {
            config.password(password.expose());
        }
        config.ssl_mode(super::tls::transport(e));
        Ok(config)
    }

    /// Opens a connection (TLS as the endpoint's `sslmode` says); the connection task runs in
    /// the background. A `prefer` connection that fell back to plaintext says so at `info`.
    pub async fn connect(&self) -> Result<Db, PgError> {
        let config = self.config()?;
        let tls = super::tls::connector(&self.endpoint).map_err(|message| PgError::Connect {
            server: self.label.clone(),
            message,
        })?;
        let (client, connection) = config.connect(tls).await.map_err(|e| PgError::Connect {
            server: self.label.clone(),
            message: super::tls::describe_failure(&e, &self.endpoint)
                .unwrap_or_else(|| error_message(&e)),
        })?;
        let label = self.label.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(server = %label, error = %e, "connection closed");
            }
        });
        let db = Db {
            client,
            server: self.label.clone(),
        };
        if self.endpoint.effective_sslmode() == SslMode::Prefer && !db.encrypted().await? {
            tracing::info!(server = %self.label, "connected in plaintext: sslmode prefer and the server does not offer TLS");
        }
        Ok(db)
    }

    /// libpq connection string another server uses to reach this one (for a subscription).
    /// `host`/`port` override where that server finds this one. The password is included
    /// when one is configured, since the subscribing server has no other way to get it.
    pub fn subscription_conninfo(&self, host: &str, port: u16) -> Result<Secret, PgError> {
        let e = &self.endpoint;
        let mut parts = vec![
            format!("host={}", conninfo_value(host)),
            format!("port={port}"),
            format!("dbname={}", conninfo_value(&e.dbname)),
            format!("user={}", conninfo_value(&e.user)),
        ];
        // The subscribing server's libpq opens these paths, on its own machine (the same
        // paths by default). PostgreSQL 15's libpq has no `sslrootcert=system`: without a CA
        // file, a verifying mode is carried as `require` (encrypted, not verified).
        let root_file = e
            .link_sslrootcert
            .as_deref()
            .or(e.sslrootcert.as_deref())
            .filter(|r| *r != "system");
        let mode = match (e.effective_sslmode(), root_file) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => SslMode::Require,
            (mode, _) => mode,
        };
        parts.push(format!("sslmode={}", sslmode_name(mode)));
        if let (Some(file), SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) =
            (root_file, mode)
        {
            parts.push(format!("sslrootcert={}", conninfo_value(file)));
        }
        // The link's client certificate, as the subscribing server sees the paths.
        let cert = e
            .link_sslcert
            .clone()
            .or_else(|| e.sslcert.as_ref().map(|p| p.display().to_string()));
        let key = e
            .link_sslkey
            .clone()
            .or_else(|| e.sslkey.as_ref().map(|p| p.display().to_string()));
        if let (Some(cert), Some(key), false) = (cert, key, mode == SslMode::Disable) {
            parts.push(format!("sslcert={}", conninfo_value(&cert)));
            parts.push(format!("sslkey={}", conninfo_value(&key)));
        }
        if let Some(password) = self.password()? {
            parts.push(format!("password={}", conninfo_value(password.expose())));
        }
        Ok(Secret::new(parts.join(" ")))
    }
}

fn sslmode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// A libpq conninfo value, single-quoted with `\` and `'` escaped.
pub fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The password for `endpoint` in `.pgpass` text (`host:port:db:user:password`, `*` wildcards,
/// `\` escapes), first match wins, as libpq does.
pub fn passfile_lookup(text: &str, endpoint: &PgEndpoint) -> Option<Secret> {
    let port = endpoint.port.to_string();
    let wanted = [
        endpoint.host.as_str(),
        port.as_str(),
        endpoint.dbname.as_str(),
        endpoint.user.as_str(),
    ];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want);
        if matches {
            return Some(Secret::new(fields[4].clone()));
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// A connected client that names its server in every error.
pub struct Db {
    client: Client,
    server: String,
}

impl Db {
    /// The server's label (`source 127.0.0.1:5432/app`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The underlying client, for prepared statements in tight loops.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Wraps a tokio-postgres error with this server and `context`.
    pub fn error(&self, context: &str, e: &tokio_postgres::Error) -> PgError {
        PgError::Sql {
            server: self.server.clone(),
            context: context.to_owned(),
            message: error_message(e),
        }
    }

    /// Runs statements without parameters (one implicit transaction when several).
    pub async fn batch(&self, context: &str, sql: &str) -> Result<(), PgError> {
        tracing::debug!(server = %self.server, %context, "batch");
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.error(context, &e))
    }

    /// [`Db::batch`] for statements that change roles: `ALTER ROLE` on a role another session
    /// alters at the same moment (two pairs fencing one cluster-wide role side by side) fails
    /// with "tuple concurrently updated" and rolls back whole; it is run again, a few times.
    pub async fn batch_role_change(&self, context: &str, sql: &str) -> Result<(), PgError> {
        let mut attempt = 0;
        loop {
            match self.client.batch_execute(sql).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if attempt < 5
                        && e.as_db_error().is_some_and(|d| {
                            d.message().contains("tuple concurrently updated")
                        }) =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                Err(e) => return Err(self.error(context, &e)),
            }
        }
    }

    /// Runs one statement; returns the number of rows it touched.
    pub async fn execute(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, PgError> {
        self.client
            .execute(sql, params)
            .await
            .map_err(|e| self.error(context, &e))
    }

    /// Runs a query and returns every row.
    pub async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        self.client
            .query(sql, params)
            .await
            .map_err(|e| self.error(context, &e))
    }

    /// Runs a query that returns exactly one row.
    pub async fn query_one(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        self.client
            .query_one(sql, params)
            .await
            .map_err(|e| self.error(context, &e))
    }

    /// Runs a query that returns at most one row.
    pub async fn query_opt(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        self.client
            .query_opt(sql, params)
            .await
            .map_err(|e| self.error(context, &e))
    }

    /// Whether this session is encrypted (`pg_stat_ssl`).
    pub async fn encrypted(&self) -> Result<bool, PgError> {
        Ok(self
            .query_opt(
                "read whether the session is encrypted",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// True when the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes `schema.name`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// Quotes an SQL string literal (for statements that take no parameters, such as
/// `CREATE SUBSCRIPTION ... CONNECTION`).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> PgEndpoint {
        PgEndpoint {
            host: "db.example.com".into(),
            port: 5433,
            dbname: "app".into(),
            user: "cutover".into(),
            password_env: None,
            password_file: None,
            passfile: None,
            sslmode: Some(SslMode::Prefer),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            link_sslrootcert: None,
            link_sslcert: None,
            link_sslkey: None,
        }
    }

    #[test]
    fn passfile_first_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5433:app:cutover:nope\n*:5433:*:cutover:s\\:e\\\\cret\n*:*:*:*:late\n";
        let found = passfile_lookup(text, &endpoint()).expect("a match");
        assert_eq!(found.expose(), "s:e\\cret");
        assert!(passfile_lookup("db.example.com:5432:app:cutover:x\n", &endpoint()).is_none());
    }

    #[test]
    fn the_subscription_carries_the_tls_mode_and_the_ca_file_its_server_opens() {
        let mut e = endpoint();
        e.sslmode = None;
        let info = |e: &PgEndpoint| {
            Server::new(Side::Source, e.clone())
                .subscription_conninfo("db.example.com", 5433)
                .unwrap()
                .expose()
                .to_owned()
        };
        // Off loopback the default is verify-full; without a CA file PostgreSQL 15's libpq
        // cannot verify (no `system`), so the link is encrypted, not verified.
        assert!(info(&e).contains("sslmode=require"), "{}", info(&e));
        e.sslrootcert = Some("/etc/cutover/ca.crt".into());
        let with_ca = info(&e);
        assert!(
            with_ca.contains("sslmode=verify-full")
                && with_ca.contains("sslrootcert='/etc/cutover/ca.crt'"),
            "{with_ca}"
        );
        // The link's own paths, as the subscribing server sees them, win over cutover's.
        e.sslcert = Some("/home/op/client.crt".into());
        e.sslkey = Some("/home/op/client.key".into());
        assert!(info(&e).contains("sslcert='/home/op/client.crt' sslkey='/home/op/client.key'"));
        e.link_sslrootcert = Some("/srv/pg/ca.crt".into());
        e.link_sslcert = Some("/srv/pg/link.crt".into());
        e.link_sslkey = Some("/srv/pg/link.key".into());
        let link = info(&e);
        assert!(
            link.contains("sslrootcert='/srv/pg/ca.crt'")
                && link.contains("sslcert='/srv/pg/link.crt' sslkey='/srv/pg/link.key'")
                && !link.contains("/home/op"),
            "{link}"
        );
        e.sslmode = Some(SslMode::Disable);
        e.sslrootcert = None;
        assert!(info(&e).contains("sslmode=disable") && !info(&e).contains("sslcert"));
        e.host = "127.0.0.1".into();
        e.sslmode = None;
        assert!(info(&e).contains("sslmode=prefer"));
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_value("a b'c\\"), "'a b\\'c\\\\'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }
}
