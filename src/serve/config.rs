//! The daemon's configuration file: where it listens, which plans it watches, how often.
//!
//! Validated like a plan: every problem at once, each with the key and the fix. A listener off
//! loopback is refused without a token: the status API would otherwise hand anyone on the
//! network the run's state and a button for the TTL job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plan::{self, Plan};
use crate::secret::{Secret, SecretRef};

/// Default listener: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    #[serde(default, with = "opt_duration")]
    poll: Option<Duration>,
    #[serde(default)]
    plans: Vec<PathBuf>,
    /// Replication to watch that no migration plan names.
    #[serde(default)]
    watch: Vec<RawWatch>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default, with = "opt_duration")]
    ttl_every: Option<Duration>,
    /// Every endpoint but `/healthz` needs the token even on loopback (behind a reverse
    /// proxy, loopback is the network).
    #[serde(default)]
    require_token: bool,
}

/// `[[watch]]`: one server whose replication the daemon exports, no migration needed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    name: String,
    postgres: Option<crate::plan::PgEndpoint>,
    mysql: Option<crate::plan::MysqlEndpoint>,
    /// A MySQL/MariaDB replica's pt-heartbeat table (`database.table`, with `ts` and
    /// `server_id` columns), read as mysqld_exporter's heartbeat collector reads it.
    heartbeat: Option<String>,
}

/// A server whose replication the daemon watches without a migration: a PostgreSQL server's
/// slots and walsenders (a primary with standbys or subscribers, logical or physical), or a
/// MySQL/MariaDB replica's channels.
#[derive(Debug, Clone)]
pub enum Watched {
    /// A PostgreSQL server.
    Postgres {
        /// The entry's name (the `migration` label of its series).
        name: String,
        /// How to reach it.
        endpoint: crate::plan::PgEndpoint,
    },
    /// A MySQL or MariaDB replica.
    Mysql {
        /// The entry's name.
        name: String,
        /// How to reach it.
        endpoint: crate::plan::MysqlEndpoint,
        /// Its pt-heartbeat table (database, table), when it has one.
        heartbeat: Option<(String, String)>,
    },
}

impl Watched {
    /// The entry's name.
    pub fn name(&self) -> &str {
        match self {
            Watched::Postgres { name, .. } | Watched::Mysql { name, .. } => name,
        }
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            D::Error::custom(format!(
                "`{text}` is not a duration ({e}); fix: write e.g. \"15s\" or \"1h\""
            ))
        })
    }
}

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Pause between two polls of every server.
    pub poll: Duration,
    /// The plans watched, loaded.
    pub plans: Vec<Plan>,
    /// Replication watched without a plan.
    pub watches: Vec<Watched>,
    /// Bearer token the mutating endpoints require (none: they are refused).
    pub token: Option<Secret>,
    /// Run the TTL job (`dns lower-ttl` of every plan) this often.
    pub ttl_every: Option<Duration>,
    /// Every endpoint but `/healthz` needs the token (always off loopback; on loopback when
    /// `require_token = true`).
    pub require_token: bool,
}

/// What was wrong with the configuration, all of it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", file.display(), problems.join("\n  "))]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// One line per problem, each with its fix.
    pub problems: Vec<String>,
}

/// Reads and checks `file`; plan paths are relative to its directory.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<String>| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let text =
        std::fs::read_to_string(file).map_err(|e| fail(vec![format!("cannot read it: {e}")]))?;
    let raw: Raw = toml::from_str(&text).map_err(|e| fail(vec![e.to_string()]))?;
    let mut problems = Vec::new();
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "key `listen`: `{listen_text}` is not an address:port; fix: e.g. \"{DEFAULT_LISTEN}\""
            ));
            None
        }
    };
    if let Some(path) = &raw.token_file
        && let Err(e) = crate::secret::check_private_file(path)
    {
        problems.push(format!("key `token_file`: {e}"));
    }
    if raw.require_token && raw.token_env.is_none() && raw.token_file.is_none() {
        problems.push(
            "key `require_token`: true, but no token is set; fix: set `token_file` (or `token_env`)"
                .to_owned(),
        );
    }
    let token = match (&raw.token_env, &raw.token_file) {
        (Some(_), Some(_)) => {
            problems.push("keys `token_env` and `token_file`: both set; fix: keep one".to_owned());
            None
        }
        (env, path) => match SecretRef::from_pair(env, path).map(|r| r.read()) {
            Some(Ok(secret)) => Some(secret),
            Some(Err(e)) => {
                problems.push(format!("key `token_env`/`token_file`: {e}"));
                None
            }
            None => None,
        },
    };
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && raw.token_env.is_none()
        && raw.token_file.is_none()
    {
        problems.push(format!(
            "key `listen`: {addr} is not a loopback address and no token is set; fix: listen on 127.0.0.1, or set `token_file` (or `token_env`) so that only holders of the token may change anything"
        ));
    }
    let poll = raw.poll.unwrap_or(Duration::from_secs(15));
    if poll < Duration::from_secs(1) {
        problems.push("key `poll`: below 1 s; fix: poll every second or less often".to_owned());
    }
    if raw.plans.is_empty() && raw.watch.is_empty() {
        problems.push(
            "nothing to watch; fix: list plan files in `plans`, or servers in `[[watch]]` entries"
                .to_owned(),
        );
    }
    let mut watches = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, w) in raw.watch.into_iter().enumerate() {
        let at = format!("watch[{i}]");
        if w.name.trim().is_empty()
            || !w
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            problems.push(format!(
                "key `{at}.name`: `{}` is not a name; fix: letters, digits, `-`, `_`, `.` (it labels the series)",
                w.name
            ));
        } else if !seen.insert(w.name.clone()) {
            problems.push(format!(
                "key `{at}.name`: `{}` is already used; fix: give each `[[watch]]` its own name",
                w.name
            ));
        }
        let heartbeat = match w.heartbeat.as_deref().map(|h| h.split_once('.')) {
            None => None,
            Some(Some((db, table)))
                if !db.is_empty() && !table.is_empty() && !table.contains('.') =>
            {
                Some((db.to_owned(), table.to_owned()))
            }
            Some(_) => {
                problems.push(format!(
                    "key `{at}.heartbeat`: `{}` is not `database.table`; fix: name pt-heartbeat's table, e.g. `heartbeat = \"heartbeat.heartbeat\"`",
                    w.heartbeat.as_deref().unwrap_or_default()
                ));
                None
            }
        };
        match (w.postgres, w.mysql) {
            (Some(endpoint), None) => {
                if w.heartbeat.is_some() {
                    problems.push(format!(
                        "key `{at}.heartbeat`: a heartbeat table is read from a MySQL/MariaDB replica; fix: remove it from this `postgres` entry"
                    ));
                }
                watches.push(Watched::Postgres {
                    name: w.name,
                    endpoint,
                })
            }
            (None, Some(endpoint)) => watches.push(Watched::Mysql {
                name: w.name,
                endpoint,
                heartbeat,
            }),
            (Some(_), Some(_)) => problems.push(format!(
                "key `{at}`: both `postgres` and `mysql`; fix: one server per entry"
            )),
            (None, None) => problems.push(format!(
                "key `{at}`: no server; fix: set `postgres = {{ host = ..., dbname = ..., user = ..., password_file = ... }}` or `mysql = {{ ... }}`"
            )),
        }
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut plans = Vec::new();
    for path in &raw.plans {
        let path = base.join(path);
        match plan::load(&path) {
            Ok(p) => plans.push(p),
            Err(e) => problems.push(format!("key `plans`: {e}")),
        }
    }
    let mut names: Vec<&str> = plans.iter().map(|p| p.migration.name.as_str()).collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            problems.push(format!(
                "key `plans`: two plans name the migration `{}`; fix: give each its own [migration] name (metrics are labelled by it)",
                pair[0]
            ));
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let listen = listen.expect("checked");
    Ok(Config {
        require_token: raw.require_token || !listen.ip().is_loopback(),
        listen,
        poll,
        plans,
        watches,
        token,
        ttl_every: raw.ttl_every,
    })
}
