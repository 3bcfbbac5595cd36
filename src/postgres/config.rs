//! `[[postgres]]`: a PostgreSQL pair and how cutover reaches each server (TLS named as libpq
//! names it): its keys, their defaults and their checks.
//!
//! The engine owns its section; it is written at the plan's layer (it imports only the plan's
//! shared parts and `secret`), and the plan loader delegates to [`check_section`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::validate::*;
use crate::plan::{duration, is_loopback};
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

fn default_pg_port() -> u16 {
    5432
}
fn default_max_lag_bytes() -> u64 {
    1024 * 1024
}
fn default_catchup_timeout() -> Duration {
    Duration::from_secs(30)
}

// Validation of this section's keys (every problem reported, with its key and fix).

pub(crate) fn pg_endpoint(c: &mut Checker<'_>, at: &KeyPath, e: &PgEndpoint) {
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
    let plaintext = e.effective_sslmode() == SslMode::Disable;
    c.endpoint(
        at,
        Password {
            env: e.password_env.is_some(),
            file: e.password_file.as_deref(),
            example: "/etc/cutover/pg.password",
        },
        ClientTls {
            cert: ["sslcert", "sslkey"],
            cert_set: e.sslcert.is_some(),
            key: e.sslkey.as_deref(),
            link_names: ["link_sslrootcert", "link_sslcert", "link_sslkey"],
            link_values: [&e.link_sslrootcert, &e.link_sslcert, &e.link_sslkey],
            plaintext: plaintext.then_some((
                "sslmode = \"disable\"",
                "remove it, or choose an sslmode that uses TLS (`verify-full`)",
            )),
            used_by_tls: &[
                ("sslrootcert", e.sslrootcert.is_some()),
                ("sslcert", e.sslcert.is_some()),
                ("link_sslrootcert", e.link_sslrootcert.is_some()),
                ("link_sslcert", e.link_sslcert.is_some()),
            ],
        },
    );
}

/// Every check of the plan's `[[postgres]]` entries: names unique (and distinct in the
/// replication objects they name), then each entry's keys.
pub(crate) fn check_section(c: &mut Checker<'_>, top: &KeyPath, pairs: &[PostgresPair]) {
    check_unique(c, "postgres", pairs.iter().map(|p| p.name.as_str()));
    // Replication objects are named `cutover_<migration>_<pair>` with `-` written as `_`:
    // `app-db` and `app_db` would share one publication, slot and subscription.
    let mut objects: HashMap<String, usize> = HashMap::new();
    for (i, pair) in pairs.iter().enumerate() {
        let object = pair.name.replace('-', "_");
        match objects.get(&object) {
            Some(first) if pairs[*first].name != pair.name => c.fail(
                &top.k("postgres").i(i).k("name"),
                format!(
                    "`{}` and postgres[{first}]'s `{}` name the same replication objects (`-` becomes `_` in them)",
                    pair.name, pairs[*first].name
                ),
                "give the pairs names that differ in more than `-` and `_`",
            ),
            Some(_) => {}
            None => {
                objects.insert(object, i);
            }
        }
    }
    for (i, pair) in pairs.iter().enumerate() {
        let at = top.k("postgres").i(i);
        c.name(&at.k("name"), &pair.name, "pair name");
        pg_endpoint(c, &at.k("source"), &pair.source);
        pg_endpoint(c, &at.k("target"), &pair.target);
        if same_server(
            &pair.source.host,
            pair.source.port,
            &pair.target.host,
            pair.target.port,
        ) && pair.source.dbname == pair.target.dbname
        {
            c.fail(
                &at.k("target"),
                "source and target are the same database",
                "point `target` at the new server",
            );
        }
        if pair.app_roles.is_empty() {
            c.fail(
                &at.k("app_roles"),
                "no application roles are listed, so writes cannot be fenced at cutover",
                "list the roles your application connects as, e.g. `app_roles = [\"forgejo\"]`",
            );
        }
        for (side, endpoint) in [("source", &pair.source), ("target", &pair.target)] {
            if pair.app_roles.contains(&endpoint.user) {
                c.fail(
                    &at.k(side).k("user"),
                    format!(
                        "cutover logs in as `{}`, which is also listed in `app_roles`; the fence would lock cutover out",
                        endpoint.user
                    ),
                    "give cutover its own role (superuser, or REPLICATION + CREATEROLE + pg_signal_backend)",
                );
            }
        }
        c.exemptions(
            &at.k("exempt_roles"),
            &pair.exempt_roles,
            &pair.app_roles,
            "app_roles",
            [&pair.source.user, &pair.target.user],
        );
        for (j, table) in pair.tables.iter().enumerate() {
            let parts: Vec<&str> = table.split('.').collect();
            let well_formed = parts.len() <= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && !p.chars().any(char::is_whitespace));
            if !well_formed {
                c.fail(
                    &at.k("tables").i(j),
                    format!("`{table}` is not a table name"),
                    "write `schema.table` (or `table` for the public schema), without quotes or spaces",
                );
            }
        }
        if pair.max_lag_bytes == 0 {
            c.fail(
                &at.k("max_lag_bytes"),
                "0 bytes of lag is never reached under writes",
                "use a few MiB, e.g. `max_lag_bytes = 1048576`",
            );
        }
        if pair.catchup_timeout.is_zero() {
            c.fail(
                &at.k("catchup_timeout"),
                "a zero timeout always fails",
                "use e.g. \"30s\"",
            );
        }
    }
}
