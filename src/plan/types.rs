//! The plan file's types: exactly what a user may write, nothing more.
//!
//! Every struct denies unknown keys, so a typo is an error and never a silently ignored setting.
//! Secrets are never values here: only the name of an environment variable (`*_env`) or the path
//! of a file (`*_file`) that holds them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use cutover_providers::{ProviderKind, RecordType};
use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;

/// A whole migration plan.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Name, state directory and run-wide settings.
    pub migration: Migration,
    /// The old and the new host, as ssh destinations.
    #[serde(default)]
    pub hosts: Option<Hosts>,
    /// PostgreSQL logical-replication pairs.
    #[serde(default)]
    pub postgres: Vec<PostgresPair>,
    /// MySQL/MariaDB binlog-replication pairs.
    #[serde(default)]
    pub mysql: Vec<MysqlPair>,
    /// Directory trees copied with rsync.
    #[serde(default)]
    pub files: Vec<FileSync>,
    /// DNS records switched at cutover.
    #[serde(default)]
    pub dns: Vec<DnsRecord>,
    /// Reverse-proxy routes switched from the source to the target after promotion.
    #[serde(default)]
    pub proxy: Vec<ProxyRoute>,
    /// Commands run at named points of a run.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Health checks that decide whether the new host serves correctly.
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// `[migration]`: what this migration is called and where its journal lives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// Short identifier (lowercase letters, digits, `-`, `_`); used in slot and publication names.
    pub name: String,
    /// Absolute directory for the journal, the lock and saved DNS state.
    pub state_dir: PathBuf,
    /// Free text shown in status output.
    #[serde(default)]
    pub description: Option<String>,
    /// Roll back automatically when a step fails before the point of no return.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// The longest the window may stay open (from the window-open hooks to the last
    /// promotion); exceeded before the point of no return, the run rolls back.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_timeout: Option<Duration>,
    /// The plan accepts that a rollback after promotion would lose the new primary's writes
    /// (a pair without `reverse_replication`); without it such a run is refused.
    #[serde(default)]
    pub accept_one_way: bool,
    /// The adaptive gate: each pair's gate samples the replication backlog and both rates,
    /// and fences only once the predicted window (catch-up plus the fence's and promotion's
    /// fixed cost) fits this budget. Default 100 ms; `"off"` (`None`) lets the gate pass on
    /// the fixed ceilings alone.
    #[serde(default = "default_window_budget", with = "budget")]
    pub window_budget: Option<Duration>,
    /// How long the adaptive gate waits for the prediction to fit before it refuses (nothing
    /// fenced).
    #[serde(default = "default_gate_timeout", with = "duration")]
    pub gate_timeout: Duration,
}

fn default_window_budget() -> Option<Duration> {
    Some(Duration::from_millis(100))
}

/// `window_budget`: a duration, or `"off"`.
pub(crate) mod budget {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            D::Error::custom(
                "expected a duration string or \"off\"; fix: write e.g. \"100ms\", \"1s\", or \"off\" to let the gate pass on the fixed ceilings alone",
            )
        })?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            D::Error::custom(format!(
                "`{text}` is not a duration ({e}); fix: write e.g. \"100ms\" or \"1s\", or \"off\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_str(&humantime::format_duration(*v).to_string()),
            None => s.serialize_str("off"),
        }
    }
}

fn default_gate_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `[hosts]`: the machines the service moves between.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hosts {
    /// The host the service runs on today.
    pub source: Host,
    /// The host the service moves to.
    pub target: Host,
}

/// One host, reached over ssh.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// ssh destination: `user@host`, `host`, or an alias from an ssh config file.
    pub ssh: String,
    /// ssh port, when not 22 and not set in the ssh config.
    #[serde(default)]
    pub port: Option<u16>,
    /// An ssh config file (`ssh -F`), e.g. one that defines the alias used in `ssh`.
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
    /// Private key to log in with (`ssh -i`).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

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

/// `[[files]]`: a directory tree copied from the source host to the target host with rsync.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Name, unique among `[[files]]`.
    pub name: String,
    /// Absolute path on the source host.
    pub source_path: PathBuf,
    /// Absolute path on the target host.
    pub target_path: PathBuf,
    /// rsync `--exclude` patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Delete files on the target that are gone from the source (`--delete`).
    #[serde(default = "default_true")]
    pub delete: bool,
    /// Further rsync arguments, one per element (never a shell string).
    #[serde(default)]
    pub rsync_args: Vec<String>,
    /// Which host runs rsync: `target` pulls from the source, `source` pushes to the target.
    /// Either way the two hosts talk directly, never through the operator's machine.
    #[serde(default)]
    pub runs_on: FilesRunsOn,
    /// rsync `--bwlimit` (e.g. `"50M"`), to spare a link the service also uses.
    #[serde(default)]
    pub bwlimit: Option<String>,
    /// Compress on the wire (`-z`): only worth it on slow links.
    #[serde(default)]
    pub compress: bool,
    /// Keep a change log (inotify on the source) from the first warm pass, so the final pass
    /// copies only what changed.
    #[serde(default)]
    pub change_log: bool,
    /// SQLite database files in the tree (paths relative to it): copied as online backups,
    /// never as live files, and integrity-checked on the target by the final pass.
    #[serde(default)]
    pub sqlite: Vec<String>,
    /// The target tree already holds files the source lacks or that differ: let the passes
    /// delete or overwrite them (preflight refuses such a target otherwise, as the databases
    /// refuse a target with rows).
    #[serde(default)]
    pub replace_target: bool,
}

/// Which host of a `[[files]]` entry runs rsync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesRunsOn {
    /// The target pulls (it needs ssh access to the source).
    #[default]
    Target,
    /// The source pushes (it needs ssh access to the target).
    Source,
}

/// `[[proxy]]`: one route of a reverse proxy, pointed at the target right after promotion
/// (before DNS), and back at the source by a reverse cutover.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// The route's name in the plan (`proxy NAME` in the steps).
    pub name: String,
    /// The address (`ip:port`) the route serves today: preflight refuses a route that points
    /// anywhere else.
    pub source: String,
    /// The address (`ip:port`) it serves after the cutover.
    pub target: String,
    /// How long one request to the proxy may take.
    #[serde(default = "default_proxy_timeout", with = "duration")]
    pub timeout: Duration,
    /// Whether the route switches before the DNS records (default: the proxy takes effect for
    /// every client at once, DNS only as caches expire) or after them.
    #[serde(default)]
    pub order: ProxyOrder,
    /// The proxy and how cutover reaches it; `kind` selects the adapter.
    pub adapter: ProxyAdapter,
    /// Requests through the proxy that say which backend answered: preflight proves the
    /// source answers, the switch waits until the new side does (and fails, to be rolled back,
    /// when it does not within `timeout`), and the report gives the time to its first answer.
    #[serde(default)]
    pub proof: Option<ProxyProof>,
}

/// `[[proxy]] proof`: an HTTP request through the proxy whose answer names its backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProof {
    /// The URL, through the proxy (`http://` or `https://`, certificate verified).
    pub url: String,
    /// Text only the source's answers hold (in the body, or in `header`).
    pub source: String,
    /// Text only the target's answers hold.
    pub target: String,
    /// A response header that names the backend (e.g. `X-Served-By`); unset: the body.
    #[serde(default)]
    pub header: Option<String>,
    /// Time the new side has to answer after the switch (default: the route's `timeout`).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub within: Option<Duration>,
}

/// When a `[[proxy]]` route switches relative to the DNS records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyOrder {
    /// Right after the promotion, before any DNS record.
    #[default]
    BeforeDns,
    /// After every DNS record was switched.
    AfterDns,
}

/// A `[[proxy]]` route's adapter settings; `kind` selects the adapter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProxyAdapter {
    /// HAProxy's runtime API (a stats socket at `level admin`): the backend's server entry
    /// gets the target's address (`set server B/S addr IP port P`).
    Haproxy {
        /// The stats socket: a Unix socket path, or `ip:port` for a TCP one.
        socket: String,
        /// The backend's name.
        backend: String,
        /// The server entry's name in that backend.
        server: String,
    },
    /// nginx: the upstream block lives in its own include file, which cutover rewrites
    /// atomically (the previous one kept beside it), tests with `nginx -t` (a failing test
    /// restores the file and reloads nothing), then reloads nginx.
    Nginx {
        /// The include file holding `upstream NAME { server ADDRESS; }`.
        include: PathBuf,
        /// The upstream's name.
        upstream: String,
        /// The nginx program.
        #[serde(default = "default_nginx")]
        nginx: PathBuf,
        /// nginx's main configuration file (`-c`), when not the default.
        #[serde(default)]
        config: Option<PathBuf>,
        /// nginx's prefix (`-p`), when not the default.
        #[serde(default)]
        prefix: Option<PathBuf>,
    },
    /// The operator's own commands, for declarative setups (`nixos-rebuild switch` and
    /// `--rollback`, a configuration-management run): argv arrays run on this machine with
    /// an explicit environment.
    Command {
        /// Prints the address (`ip:port`) the route serves now as its first line.
        read: Vec<String>,
        /// Points the route at the target.
        switch: Vec<String>,
        /// Points it back at the source.
        rollback: Vec<String>,
        /// Variables for the three commands, besides PATH, HOME, the locale and the ssh agent
        /// (nothing else of cutover's environment reaches them).
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
        /// How long `switch` or `rollback` may run (`read` has the route's `timeout`).
        #[serde(default = "default_proxy_command_timeout", with = "duration")]
        command_timeout: Duration,
    },
}

fn default_nginx() -> PathBuf {
    PathBuf::from("nginx")
}

fn default_proxy_command_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_proxy_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[[dns]]`: one record set switched from the old host to the new one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Fully qualified record name, e.g. `git.example.com`.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The zone the record lives in; found from the SOA when omitted.
    #[serde(default)]
    pub zone: Option<String>,
    /// Values the record must have after cutover.
    pub values: Vec<String>,
    /// Values the record must have *before* the switch (the source's address): checked on
    /// every authoritative server by preflight and right before the switch; empty: unchecked.
    #[serde(default)]
    pub expect_current: Vec<String>,
    /// TTL (seconds) to lower the record to ahead of the cutover.
    #[serde(default = "default_cutover_ttl")]
    pub cutover_ttl: u32,
    /// Authoritative servers to poll (`address` or `address:port`); found from NS when omitted.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Recursive resolvers that should also serve the new value before the run reports success.
    #[serde(default)]
    pub resolvers: Vec<String>,
    /// How long to wait for every authoritative server to serve the new value.
    #[serde(default = "default_propagation_timeout", with = "duration")]
    pub propagation_timeout: Duration,
    /// The DNS provider that hosts the zone.
    pub provider: Provider,
}

/// Provider settings for a `[[dns]]` record; `kind` selects the provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Provider {
    /// PowerDNS Authoritative HTTP API.
    Powerdns {
        /// Base URL of the API, e.g. `http://ns1.example.com:8081`.
        api_url: String,
        /// PowerDNS server id.
        #[serde(default = "default_pdns_server_id")]
        server_id: String,
        /// Environment variable holding the API key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// File holding the API key.
        #[serde(default)]
        api_key_file: Option<PathBuf>,
    },
    /// RFC 2136 dynamic update signed with TSIG.
    Rfc2136 {
        /// Primary server to send updates to (`address` or `address:port`).
        server: String,
        /// TSIG key name.
        key_name: String,
        /// TSIG algorithm.
        #[serde(default = "default_tsig_algorithm")]
        key_algorithm: String,
        /// Environment variable holding the base64 TSIG secret.
        #[serde(default)]
        key_secret_env: Option<String>,
        /// File holding the base64 TSIG secret.
        #[serde(default)]
        key_secret_file: Option<PathBuf>,
    },
    /// Cloudflare API v4.
    Cloudflare {
        /// Zone id; looked up by zone name when omitted.
        #[serde(default)]
        zone_id: Option<String>,
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// Amazon Route 53.
    Route53 {
        /// Hosted zone id.
        hosted_zone_id: String,
        /// Environment variable holding the access key id.
        #[serde(default = "default_aws_key_id_env")]
        access_key_id_env: String,
        /// Environment variable holding the secret access key.
        #[serde(default)]
        secret_access_key_env: Option<String>,
        /// File holding the secret access key.
        #[serde(default)]
        secret_access_key_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// DigitalOcean Domains API.
    Digitalocean {
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// Hetzner DNS API.
    Hetzner {
        /// Zone id; looked up by zone name when omitted.
        #[serde(default)]
        zone_id: Option<String>,
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// Gandi LiveDNS.
    Gandi {
        /// Environment variable holding the personal access token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the personal access token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// deSEC.
    Desec {
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
}

impl Provider {
    /// Which provider this is.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Provider::Powerdns { .. } => ProviderKind::Powerdns,
            Provider::Rfc2136 { .. } => ProviderKind::Rfc2136,
            Provider::Cloudflare { .. } => ProviderKind::Cloudflare,
            Provider::Route53 { .. } => ProviderKind::Route53,
            Provider::Digitalocean { .. } => ProviderKind::Digitalocean,
            Provider::Hetzner { .. } => ProviderKind::Hetzner,
            Provider::Gandi { .. } => ProviderKind::Gandi,
            Provider::Desec { .. } => ProviderKind::Desec,
        }
    }

    /// The plan keys that hold this provider's credential.
    pub fn credential_keys(&self) -> CredentialKeys<'_> {
        let (prefix, env, file) = match self {
            Provider::Powerdns {
                api_key_env,
                api_key_file,
                ..
            } => ("api_key", api_key_env, api_key_file),
            Provider::Rfc2136 {
                key_secret_env,
                key_secret_file,
                ..
            } => ("key_secret", key_secret_env, key_secret_file),
            Provider::Route53 {
                secret_access_key_env,
                secret_access_key_file,
                ..
            } => (
                "secret_access_key",
                secret_access_key_env,
                secret_access_key_file,
            ),
            Provider::Cloudflare {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Digitalocean {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Hetzner {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Gandi {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Desec {
                api_token_env,
                api_token_file,
                ..
            } => ("api_token", api_token_env, api_token_file),
        };
        CredentialKeys { prefix, env, file }
    }

    /// Where this provider's credential comes from.
    pub fn credential(&self) -> Option<SecretRef> {
        let keys = self.credential_keys();
        SecretRef::from_pair(keys.env, keys.file)
    }

    /// The HTTP API base URL, where the provider has one set.
    pub fn api_url(&self) -> Option<&str> {
        match self {
            Provider::Powerdns { api_url, .. } => Some(api_url),
            Provider::Rfc2136 { .. } => None,
            Provider::Cloudflare { api_url, .. }
            | Provider::Route53 { api_url, .. }
            | Provider::Digitalocean { api_url, .. }
            | Provider::Hetzner { api_url, .. }
            | Provider::Gandi { api_url, .. }
            | Provider::Desec { api_url, .. } => api_url.as_deref(),
        }
    }
}

/// The `<prefix>_env` / `<prefix>_file` pair holding a provider's credential.
#[derive(Debug, Clone, Copy)]
pub struct CredentialKeys<'a> {
    /// Key prefix, e.g. `api_token`.
    pub prefix: &'static str,
    /// Value of `<prefix>_env`.
    pub env: &'a Option<String>,
    /// Value of `<prefix>_file`.
    pub file: &'a Option<PathBuf>,
}

/// Points in a run at which hooks can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    /// The cutover window opens: e.g. stop the app on the old host.
    WindowOpen,
    /// The target has been promoted (point of no return passed).
    AfterPromote,
    /// DNS has been switched: e.g. reload a proxy, start the app on the new host.
    AfterSwitch,
    /// Health checks passed.
    AfterVerify,
    /// A rollback finished: e.g. start the app on the old host again.
    OnRollback,
}

impl HookPoint {
    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::WindowOpen => "window-open",
            HookPoint::AfterPromote => "after-promote",
            HookPoint::AfterSwitch => "after-switch",
            HookPoint::AfterVerify => "after-verify",
            HookPoint::OnRollback => "on-rollback",
        }
    }
}

/// Where a hook or command check runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOn {
    /// On the machine running cutover.
    #[default]
    Local,
    /// Over ssh on `hosts.source`.
    Source,
    /// Over ssh on `hosts.target`.
    Target,
}

impl RunOn {
    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOn::Local => "local",
            RunOn::Source => "source",
            RunOn::Target => "target",
        }
    }
}

/// `[[hooks]]`: a command run at a named point of a run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// When it runs.
    pub at: HookPoint,
    /// Where it runs.
    #[serde(default)]
    pub on: RunOn,
    /// Program and arguments, one per element (never a shell string).
    pub command: Vec<String>,
    /// How long it may take.
    #[serde(default = "default_hook_timeout", with = "duration")]
    pub timeout: Duration,
    /// A failing hook does not fail the run.
    #[serde(default)]
    pub allow_failure: bool,
}

/// `[[checks]]`: a health check that must pass on the new host; `kind` selects the check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Check {
    /// An HTTP request that must answer with the expected status.
    Http {
        /// Name shown in reports.
        name: String,
        /// URL to request.
        url: String,
        /// Expected HTTP status.
        #[serde(default = "default_http_status")]
        expect_status: u16,
        /// Text the body must contain.
        #[serde(default)]
        body_contains: Option<String>,
        /// How long to keep retrying until the check passes.
        #[serde(default = "default_check_within", with = "duration")]
        within: Duration,
        /// How long one request may take.
        #[serde(default = "default_check_timeout", with = "duration")]
        timeout: Duration,
        /// Pause between tries.
        #[serde(default = "default_check_interval", with = "duration")]
        interval: Duration,
        /// Consecutive successes needed to pass.
        #[serde(default = "default_one")]
        success_threshold: u32,
        /// Consecutive failures that fail the check at once (default: keep trying until
        /// `within`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_threshold: Option<u32>,
    },
    /// A command that must exit 0.
    Command {
        /// Name shown in reports.
        name: String,
        /// Where it runs.
        #[serde(default)]
        on: RunOn,
        /// Program and arguments, one per element (never a shell string).
        command: Vec<String>,
        /// How long to keep retrying until the check passes.
        #[serde(default = "default_check_within", with = "duration")]
        within: Duration,
        /// How long one run of the command may take.
        #[serde(default = "default_check_timeout", with = "duration")]
        timeout: Duration,
        /// Pause between tries.
        #[serde(default = "default_check_interval", with = "duration")]
        interval: Duration,
        /// Consecutive successes needed to pass.
        #[serde(default = "default_one")]
        success_threshold: u32,
        /// Consecutive failures that fail the check at once (default: keep trying until
        /// `within`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_threshold: Option<u32>,
    },
}

impl Check {
    /// The check's name.
    pub fn name(&self) -> &str {
        match self {
            Check::Http { name, .. } | Check::Command { name, .. } => name,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_pg_port() -> u16 {
    5432
}
fn default_mysql_port() -> u16 {
    3306
}
fn default_max_lag_bytes() -> u64 {
    1024 * 1024
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
fn default_cutover_ttl() -> u32 {
    60
}
fn default_propagation_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_pdns_server_id() -> String {
    "localhost".to_owned()
}
fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
}
fn default_aws_key_id_env() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_http_status() -> u16 {
    200
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_one() -> u32 {
    1
}
fn default_check_within() -> Duration {
    Duration::from_secs(60)
}

/// An optional duration, written like [`duration`].
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::duration::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

/// Durations written as `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            D::Error::custom(
                "expected a duration string; fix: write a quoted duration such as \"30s\", \"5m\" or \"250ms\"",
            )
        })?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "`{text}` is not a duration ({e}); fix: write e.g. \"30s\", \"5m\" or \"250ms\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}
