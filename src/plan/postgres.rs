//! `[[postgres]]`: a PostgreSQL pair and how cutover reaches each server (TLS named as libpq
//! names it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::*;
use super::validate::*;
use crate::secret::SecretRef;

/// How cutover connects to one PostgreSQL server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PgEndpoint {
    /// Host name or address cutover connects to.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database to migrate.
    pub dbname: String,
    /// Role cutover logs in as (superuser, or REPLICATION plus ownership of the tables).
    pub user: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A libpq password file (`.pgpass` format) to look the password up in.
    #[serde(default)]
    pub passfile: Option<PathBuf>,
    /// libpq `sslmode`; unset: `prefer` on a loopback host, `verify-full` anywhere else.
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// libpq `sslrootcert`: a PEM file of the CA certificates to trust, or `system` for the
    /// operating system's store (the default for `verify-ca` / `verify-full`).
    #[serde(default)]
    pub sslrootcert: Option<String>,
    /// libpq `sslcert`: the client certificate (PEM), for servers that ask for one.
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    /// libpq `sslkey`: the client certificate's private key (PEM, mode 0600 or stricter).
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
    /// The CA file as the *subscribing server* opens it, for a replication link to this
    /// server (its libpq, on its machine, reads it); default: `sslrootcert`.
    #[serde(default)]
    pub link_sslrootcert: Option<String>,
    /// The client certificate the subscribing server presents on that link, as it sees the
    /// path; default: `sslcert`.
    #[serde(default)]
    pub link_sslcert: Option<String>,
    /// Its private key, as the subscribing server sees the path (readable by that server's
    /// user only); default: `sslkey`.
    #[serde(default)]
    pub link_sslkey: Option<String>,
}

impl PgEndpoint {
    /// The `sslmode` in force: the plan's, or `prefer` on a loopback host and `verify-full`
    /// anywhere else (a network between cutover and the server is not trusted by default).
    pub fn effective_sslmode(&self) -> SslMode {
        self.sslmode.unwrap_or(if is_loopback(&self.host) {
            SslMode::Prefer
        } else {
            SslMode::VerifyFull
        })
    }

    /// Where the password comes from, if anywhere.
    pub fn password(&self) -> Option<SecretRef> {
        SecretRef::from_pair(&self.password_env, &self.password_file)
    }
}

/// `localhost`, a loopback address, or a Unix socket directory.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// libpq `sslmode` values cutover understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS with the server certificate checked against `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the host name must match.
    VerifyFull,
}

/// `[[postgres]]`: one database replicated from source to target with logical replication.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresPair {
    /// Pair name, unique in the plan; `--pair NAME` selects it.
    pub name: String,
    /// The server the data lives on today.
    pub source: PgEndpoint,
    /// The server the data moves to.
    pub target: PgEndpoint,
    /// Host the *target server* uses to reach the source for its subscription (defaults to `source.host`).
    #[serde(default)]
    pub publisher_host: Option<String>,
    /// Port the target server uses to reach the source (defaults to `source.port`).
    #[serde(default)]
    pub publisher_port: Option<u16>,
    /// Roles the application writes as; they are fenced on the source at cutover.
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Roles that can write the replicated tables but are deliberately not fenced, each with
    /// the reason its writes after the cutover do not matter (`{ reporting = "read-only job" }`).
    #[serde(default)]
    pub exempt_roles: BTreeMap<String, String>,
    /// Tables to replicate (`schema.table`); empty means every table.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Copy the schema into the target with `pg_dump --schema-only` when it is missing.
    #[serde(default)]
    pub copy_schema: bool,
    /// Allow tables without a primary key by setting `REPLICA IDENTITY FULL` on them.
    #[serde(default)]
    pub replica_identity_full: bool,
    /// Set up replication from the new primary back to the old one, for a lossless rollback.
    #[serde(default)]
    pub reverse_replication: bool,
    /// Cutover only starts when the replication lag is below this many bytes.
    #[serde(default = "default_max_lag_bytes")]
    pub max_lag_bytes: u64,
    /// How long to wait for the target to catch up once writes are fenced.
    #[serde(default = "default_catchup_timeout", with = "duration")]
    pub catchup_timeout: Duration,
    /// Time given to app sessions to finish before they are terminated at the fence.
    #[serde(default, with = "duration")]
    pub drain: Duration,
}

// Validation of this section's keys (every problem reported, with its key and fix).

pub(super) fn pg_endpoint(c: &mut Checker<'_>, at: &KeyPath, e: &PgEndpoint) {
    if e.host.trim().is_empty() {
        c.fail(
            &at.k("host"),
            "host is empty",
            "set the server's host name or address",
        );
    }
    if e.dbname.trim().is_empty() {
        c.fail(&at.k("dbname"), "dbname is empty", "set the database name");
    }
    c.one_secret_source(
        at,
        "password",
        e.password_env.is_some(),
        e.password_file.is_some(),
    );
    if let Some(p) = &e.password_file {
        c.absolute(&at.k("password_file"), p, "/etc/cutover/pg.password");
    }
    match (&e.sslcert, &e.sslkey) {
        (Some(_), None) => c.fail(
            &at.k("sslkey"),
            "`sslcert` is set without `sslkey`: a client certificate needs its private key",
            "set `sslkey` to the certificate's private key file",
        ),
        (None, Some(_)) => c.fail(
            &at.k("sslcert"),
            "`sslkey` is set without `sslcert`: a private key alone is not a client certificate",
            "set `sslcert` to the client certificate file, or remove `sslkey`",
        ),
        _ => {}
    }
    link_paths(
        c,
        at,
        ["link_sslrootcert", "link_sslcert", "link_sslkey"],
        [&e.link_sslrootcert, &e.link_sslcert, &e.link_sslkey],
        (e.sslcert.is_some(), e.sslkey.is_some()),
    );
    let mode = e.effective_sslmode();
    if mode == super::SslMode::Disable {
        for (key, set) in [
            ("sslrootcert", e.sslrootcert.is_some()),
            ("sslcert", e.sslcert.is_some()),
            ("link_sslrootcert", e.link_sslrootcert.is_some()),
            ("link_sslcert", e.link_sslcert.is_some()),
        ] {
            if set {
                c.fail(
                    &at.k(key),
                    format!("`{key}` is set but `sslmode = \"disable\"` never uses TLS"),
                    "remove it, or choose an sslmode that uses TLS (`verify-full`)",
                );
            }
        }
    }
    if let Some(key) = &e.sslkey {
        key_file_private(c, &at.k("sslkey"), key);
    }
}

/// A replication link's certificate paths (`names`: CA, certificate, key), as the server at
/// the other end of the link sees them: absolute, and a certificate with its key once the
/// defaults (cutover's own certificate and key: `defaults`) are applied.
pub(super) fn link_paths(
    c: &mut Checker<'_>,
    at: &KeyPath,
    names: [&str; 3],
    values: [&Option<String>; 3],
    defaults: (bool, bool),
) {
    let cert = values[1].is_some() || defaults.0;
    let key = values[2].is_some() || defaults.1;
    if cert != key {
        let (missing, has) = if cert {
            (names[2], names[1])
        } else {
            (names[1], names[2])
        };
        c.fail(
            &at.k(missing),
            format!("the replication link has `{has}` (or its default) but no `{missing}`: a client certificate needs its key"),
            format!("set `{missing}` to the path as the server at the other end of the link sees it"),
        );
    }
    for (name, value) in names.iter().zip(values) {
        if let Some(v) = value
            && !v.starts_with('/')
            && !(*name == names[0] && v == "system")
        {
            c.fail(
                &at.k(name),
                format!("`{name}` is {v:?}: the server that opens it resolves a relative path against its own data directory"),
                "give the absolute path as that server sees it",
            );
        }
    }
}
