//! `[[mysql]]`: a MySQL/MariaDB pair and how cutover reaches each server (TLS named as the
//! MySQL client names it): its keys, their defaults and their checks.
//!
//! The engine owns its section; it is written at the plan's layer (it imports only the plan's
//! shared parts and `secret`), and the plan loader delegates to [`check_section`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::validate::*;
use crate::plan::{duration, is_loopback};
use crate::secret::SecretRef;

/// How cutover connects to one MySQL or MariaDB server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlEndpoint {
    /// Host name or address cutover connects to.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_mysql_port")]
    pub port: u16,
    /// User cutover logs in as.
    pub user: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A MySQL option file (`[client]` section) with the password, as for `--defaults-extra-file`.
    #[serde(default)]
    pub option_file: Option<PathBuf>,
    /// The mysql client's `--ssl-mode`; unset: `preferred` on a loopback host, `verify_identity`
    /// anywhere else.
    #[serde(default)]
    pub ssl_mode: Option<MysqlSslMode>,
    /// `--ssl-ca`: a PEM file of the CA certificates to trust, or `system` for the operating
    /// system's store (the default for `verify_ca` / `verify_identity`).
    #[serde(default)]
    pub ssl_ca: Option<String>,
    /// `--ssl-cert`: the client certificate (PEM).
    #[serde(default)]
    pub ssl_cert: Option<PathBuf>,
    /// `--ssl-key`: the client certificate's private key (PEM, mode 0600 or stricter).
    #[serde(default)]
    pub ssl_key: Option<PathBuf>,
    /// The CA file as the *replica server* opens it, for a replica link to this server
    /// (`MASTER_SSL_CA`); default: `ssl_ca`.
    #[serde(default)]
    pub link_ssl_ca: Option<String>,
    /// The client certificate the replica server presents on that link, as it sees the
    /// path (`MASTER_SSL_CERT`; its account then `REQUIRE X509`); default: `ssl_cert`.
    #[serde(default)]
    pub link_ssl_cert: Option<String>,
    /// Its private key, as the replica server sees the path; default: `ssl_key`.
    #[serde(default)]
    pub link_ssl_key: Option<String>,
}

/// The mysql client's `--ssl-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlSslMode {
    /// Plain TCP.
    Disabled,
    /// TLS when the server offers it, certificate not checked.
    Preferred,
    /// TLS required, certificate not checked.
    Required,
    /// TLS with the certificate checked against `ssl_ca`.
    VerifyCa,
    /// As `verify_ca`, and the host name must match.
    VerifyIdentity,
}

impl MysqlEndpoint {
    /// The `ssl_mode` in force: the plan's, or `preferred` on a loopback host and
    /// `verify_identity` anywhere else.
    pub fn effective_ssl_mode(&self) -> MysqlSslMode {
        self.ssl_mode.unwrap_or(if is_loopback(&self.host) {
            MysqlSslMode::Preferred
        } else {
            MysqlSslMode::VerifyIdentity
        })
    }

    /// Where the password comes from, if anywhere.
    pub fn password(&self) -> Option<SecretRef> {
        SecretRef::from_pair(&self.password_env, &self.password_file)
    }
}

/// Whether the replica follows the source by GTID or by binlog file and position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GtidMode {
    /// GTID when both sides support it, file/position otherwise (stated in preflight).
    #[default]
    Auto,
    /// GTID required.
    On,
    /// File/position.
    Off,
}

/// What the fence may do to the other databases of the source server (`read_only` is
/// server-wide and cannot be scoped to the moved databases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Neighbours {
    /// Refuse (preflight and the gate) while another database of the source has writers,
    /// naming each; nothing changes.
    #[default]
    Refuse,
    /// Accept that every other database goes read-only from the fence on, and stays so on the
    /// old primary (stated in preflight and the report).
    ReadOnly,
    /// Fence by account: the app accounts are locked and their sessions ended, `read_only`
    /// stays off, so the other databases keep serving. The audit after promotion reads the
    /// old primary's binlog for writes to the moved databases.
    FenceAccounts,
}

/// `[[mysql]]`: one MySQL/MariaDB server pair replicated with the binlog.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlPair {
    /// Pair name, unique in the plan; `--pair NAME` selects it.
    pub name: String,
    /// The server the data lives on today.
    pub source: MysqlEndpoint,
    /// The server the data moves to.
    pub target: MysqlEndpoint,
    /// Databases (schemas) to copy and replicate.
    pub databases: Vec<String>,
    /// Host the *target server* uses to reach the source as a replica (defaults to `source.host`).
    #[serde(default)]
    pub replication_host: Option<String>,
    /// Port the target server uses to reach the source (defaults to `source.port`).
    #[serde(default)]
    pub replication_port: Option<u16>,
    /// The host part of the replication accounts cutover creates (`'user'@'<this>'`): the
    /// address or pattern the replica connects from; default `%`.
    #[serde(default)]
    pub replication_user_host: Option<String>,
    /// Users the application connects as; their accounts are locked and their sessions
    /// killed at the fence.
    #[serde(default)]
    pub app_users: Vec<String>,
    /// Users that can write the replicated databases but are deliberately not fenced, each
    /// with the reason their writes after the cutover do not matter.
    #[serde(default)]
    pub exempt_users: BTreeMap<String, String>,
    /// App users that hold a privilege `read_only` does not bind (`READ_ONLY ADMIN`, `SUPER`
    /// before MariaDB 10.11, `ALL PRIVILEGES ON *.*`), accepted because the fence locks their
    /// accounts and kills their sessions.
    #[serde(default)]
    pub privileged_app_users: Vec<String>,
    /// GTID or file/position replication.
    #[serde(default)]
    pub gtid: GtidMode,
    /// Cutover only starts when the heartbeat lag is below this.
    #[serde(default = "default_max_lag", with = "duration")]
    pub max_lag: Duration,
    /// How long to wait for the target to catch up once writes are fenced.
    #[serde(default = "default_catchup_timeout", with = "duration")]
    pub catchup_timeout: Duration,
    /// Make the old source a replica of the new primary after promotion.
    #[serde(default)]
    pub reverse_replication: bool,
    /// Applier threads on the target while it is a replica, keeping the source's commit
    /// order (MariaDB `slave_parallel_threads` in optimistic mode, MySQL
    /// `replica_parallel_workers`); the server's own values come back after promotion.
    /// `0` leaves the target's settings alone.
    #[serde(default = "default_apply_workers")]
    pub apply_workers: u32,
    /// Other databases on the source server and the server-wide fence: `refuse` (default),
    /// `read-only`, `fence-accounts`.
    #[serde(default)]
    pub neighbours: Neighbours,
    /// Which tables are compared row by row inside the window, after the exact catch-up and
    /// before the promotion: `changed` (default: those whose definition changed since `start`),
    /// `all`, or `off`.
    #[serde(default)]
    pub verify_in_window: VerifyInWindow,
}

/// Which tables a MySQL/MariaDB window compares row by row before promoting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyInWindow {
    /// Tables whose definition changed since replication started (their rows may have been
    /// applied under two definitions).
    #[default]
    Changed,
    /// Every table of the pair (its cost is in the README).
    All,
    /// None.
    Off,
}

fn default_mysql_port() -> u16 {
    3306
}
fn default_apply_workers() -> u32 {
    4
}
fn default_max_lag() -> Duration {
    Duration::from_secs(1)
}
fn default_catchup_timeout() -> Duration {
    Duration::from_secs(30)
}

// Validation of this section's keys (every problem reported, with its key and fix).

pub(crate) fn mysql_endpoint(c: &mut Checker<'_>, at: &KeyPath, e: &MysqlEndpoint) {
    if e.host.trim().is_empty() {
        c.fail(
            &at.k("host"),
            "host is empty",
            "set the server's host name or address",
        );
    }
    let plaintext = e.effective_ssl_mode() == MysqlSslMode::Disabled;
    c.endpoint(
        at,
        Password {
            env: e.password_env.is_some(),
            file: e.password_file.as_deref(),
            example: "/etc/cutover/mysql.password",
        },
        ClientTls {
            cert: ["ssl_cert", "ssl_key"],
            cert_set: e.ssl_cert.is_some(),
            key: e.ssl_key.as_deref(),
            link_names: ["link_ssl_ca", "link_ssl_cert", "link_ssl_key"],
            link_values: [&e.link_ssl_ca, &e.link_ssl_cert, &e.link_ssl_key],
            plaintext: plaintext.then_some((
                "ssl_mode = \"disabled\"",
                "remove it, or choose an ssl_mode that uses TLS (`verify_identity`)",
            )),
            used_by_tls: &[
                ("ssl_ca", e.ssl_ca.is_some()),
                ("ssl_cert", e.ssl_cert.is_some()),
                ("link_ssl_ca", e.link_ssl_ca.is_some()),
                ("link_ssl_cert", e.link_ssl_cert.is_some()),
            ],
        },
    );
}

/// Databases that are never migrated as application data.
const MYSQL_SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "sys", "information_schema", "performance_schema"];

/// Every check of the plan's `[[mysql]]` entries: names unique, then each entry's keys.
pub(crate) fn check_section(c: &mut Checker<'_>, top: &KeyPath, pairs: &[MysqlPair]) {
    check_unique(c, "mysql", pairs.iter().map(|p| p.name.as_str()));
    for (i, pair) in pairs.iter().enumerate() {
        let at = top.k("mysql").i(i);
        c.name(&at.k("name"), &pair.name, "pair name");
        mysql_endpoint(c, &at.k("source"), &pair.source);
        mysql_endpoint(c, &at.k("target"), &pair.target);
        if same_server(
            &pair.source.host,
            pair.source.port,
            &pair.target.host,
            pair.target.port,
        ) {
            c.fail(
                &at.k("target"),
                "source and target are the same server",
                "point `target` at the new server",
            );
        }
        if pair.databases.is_empty() {
            c.fail(
                &at.k("databases"),
                "no databases are listed",
                "list the application's databases, e.g. `databases = [\"app\"]`",
            );
        }
        for (j, db) in pair.databases.iter().enumerate() {
            if MYSQL_SYSTEM_DATABASES.contains(&db.to_ascii_lowercase().as_str()) {
                c.fail(
                    &at.k("databases").i(j),
                    format!("`{db}` is a system database"),
                    "list only application databases; users and grants are not migrated by replication",
                );
            }
        }
        if pair.app_users.is_empty() {
            c.fail(
                &at.k("app_users"),
                "no application users are listed, so their sessions cannot be ended at the fence",
                "list the users your application connects as, e.g. `app_users = [\"app\"]`",
            );
        }
        c.exemptions(
            &at.k("exempt_users"),
            &pair.exempt_users,
            &pair.app_users,
            "app_users",
            [&pair.source.user, &pair.target.user],
        );
        for (j, user) in pair.privileged_app_users.iter().enumerate() {
            if !pair.app_users.contains(user) {
                c.fail(
                    &at.k("privileged_app_users").i(j),
                    format!("`{user}` is not in `app_users`, so the fence would not lock it"),
                    format!("add `{user}` to `app_users` too"),
                );
            }
        }
        if pair.catchup_timeout.is_zero() {
            c.fail(
                &at.k("catchup_timeout"),
                "a zero timeout always fails",
                "use e.g. \"30s\"",
            );
        }
        if pair.neighbours == Neighbours::FenceAccounts && pair.reverse_replication {
            c.fail(
                &at.k("reverse_replication"),
                "reverse replication cannot follow a fence by account (`neighbours = \"fence-accounts\"`): the old primary keeps taking its other databases' writes, and a replica that writes its own transactions diverges from its primary",
                "set `reverse_replication = false`, or fence the whole server (`neighbours = \"read-only\"`, or move the other databases too)",
            );
        }
    }
}
