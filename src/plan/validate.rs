//! Checks on a typed plan that serde cannot express: names, uniqueness, absolute paths,
//! argv-not-shell-strings, credentials present, addresses that parse.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use toml::de::DeTable;

use super::error::Problem;
use super::parse::{Seg, SourceText, display_path, locate};
use super::types::{
    Check, DnsRecord, Hook, Migration, MysqlEndpoint, PgEndpoint, Plan, Provider, ProviderKind,
    ProxyAdapter, ProxyRoute, RecordType, RunOn,
};

/// Longest migration or pair name; keeps derived PostgreSQL identifiers under 63 bytes.
pub const MAX_NAME_LEN: usize = 24;

/// Databases that are never migrated as application data.
const MYSQL_SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "sys", "information_schema", "performance_schema"];

/// A key path under construction.
#[derive(Clone)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn root() -> KeyPath {
        KeyPath(Vec::new())
    }
    fn k(&self, key: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(key.to_owned()));
        KeyPath(v)
    }
    fn i(&self, index: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(index));
        KeyPath(v)
    }
}

struct Checker<'a> {
    src: &'a SourceText<'a>,
    root: &'a DeTable<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn fail(&mut self, at: &KeyPath, message: impl Into<String>, fix: impl Into<String>) {
        let span = locate(self.root, &at.0);
        self.problems
            .push(self.src.problem(display_path(&at.0), span, message, fix));
    }

    /// `exempt_roles` / `exempt_users`: every entry needs a reason, and none may also be fenced
    /// or be cutover's own login.
    fn exemptions(
        &mut self,
        at: &KeyPath,
        exempt: &std::collections::BTreeMap<String, String>,
        fenced: &[String],
        fenced_key: &str,
        own: [&str; 2],
    ) {
        for (name, reason) in exempt {
            let key = at.k(name);
            if reason.trim().is_empty() {
                self.fail(
                    &key,
                    format!("`{name}` is exempted from the fence without a reason"),
                    format!("say why its writes after the cutover do not matter, e.g. `{name} = \"reads only; its grants are a leftover\"`"),
                );
            }
            if fenced.contains(name) {
                self.fail(
                    &key,
                    format!("`{name}` is both fenced (`{fenced_key}`) and exempt"),
                    format!("keep it in one of `{fenced_key}` and the exemptions"),
                );
            }
            if own.contains(&name.as_str()) {
                self.fail(
                    &key,
                    format!("`{name}` is the login cutover itself uses; it needs no exemption"),
                    "remove it from the exemptions",
                );
            }
        }
    }

    fn name(&mut self, at: &KeyPath, value: &str, what: &str) {
        let ok_chars = value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        let starts = value.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !(ok_chars && starts) || value.len() > MAX_NAME_LEN {
            self.fail(
                at,
                format!("{what} `{value}` is not a valid name"),
                format!(
                    "use 1 to {MAX_NAME_LEN} lowercase letters, digits, `-` or `_`, starting with \
                     a letter (it becomes part of slot, publication and file names)"
                ),
            );
        }
    }

    fn absolute(&mut self, at: &KeyPath, path: &Path, example: &str) {
        if !path.is_absolute() {
            self.fail(
                at,
                format!("path `{}` is relative", path.display()),
                format!("use an absolute path, e.g. `{example}`"),
            );
        }
    }

    fn one_secret_source(&mut self, at: &KeyPath, prefix: &str, env: bool, file: bool) {
        if env && file {
            self.fail(
                &at.k(&format!("{prefix}_file")),
                format!("both `{prefix}_env` and `{prefix}_file` are set"),
                format!("keep one of `{prefix}_env` and `{prefix}_file`"),
            );
        }
    }

    fn argv(&mut self, at: &KeyPath, command: &[String]) {
        match command {
            [] => self.fail(
                at,
                "the command is empty",
                "give the program and its arguments as an array, e.g. `[\"systemctl\", \"stop\", \"myapp\"]`",
            ),
            [single] if single.trim().contains(char::is_whitespace) => {
                let split: Vec<String> = single
                    .split_whitespace()
                    .map(|w| format!("\"{w}\""))
                    .collect();
                self.fail(
                    at,
                    format!("`{single}` looks like a shell command line; cutover never runs a shell"),
                    format!(
                        "split it into program and arguments: `[{}]` (wrap it in `[\"sh\", \"-c\", ...]` only if you really need a shell)",
                        split.join(", ")
                    ),
                );
            }
            _ => {}
        }
    }

    fn needs_hosts(&mut self, plan: &Plan, at: &KeyPath, on: RunOn) {
        if on != RunOn::Local && plan.hosts.is_none() {
            self.fail(
                at,
                format!("runs on `{}` but the plan has no `[hosts]`", on.as_str()),
                "add `[hosts.source]` and `[hosts.target]` with `ssh = \"user@host\"`, or use `on = \"local\"`",
            );
        }
    }
}

/// Checks `[migration]`.
fn validate_migration(
    migration: &Migration,
    src: &SourceText<'_>,
    root: &DeTable<'_>,
) -> Vec<Problem> {
    let mut c = Checker {
        src,
        root,
        problems: Vec::new(),
    };
    let m = KeyPath::root().k("migration");
    c.name(&m.k("name"), &migration.name, "migration name");
    c.absolute(
        &m.k("state_dir"),
        &migration.state_dir,
        "/var/lib/cutover/NAME",
    );
    if migration.window_budget.is_some_and(|b| b.is_zero()) {
        c.fail(
            &m.k("window_budget"),
            "a zero budget never fits: every gate would wait until gate_timeout and refuse",
            "set the longest window your users accept, e.g. `window_budget = \"100ms\"` (the default), or `\"off\"` to pass on the fixed ceilings alone",
        );
    }
    if migration.gate_timeout.is_zero() {
        c.fail(
            &m.k("gate_timeout"),
            "a zero timeout refuses before the first sample",
            "remove it (default 60s) or set e.g. `gate_timeout = \"60s\"`",
        );
    }
    c.problems
}

/// Runs every semantic check on a fully parsed plan and returns the problems found.
pub(crate) fn validate(plan: &Plan, src: &SourceText<'_>, root: &DeTable<'_>) -> Vec<Problem> {
    let mut c = Checker {
        src,
        root,
        problems: validate_migration(&plan.migration, src, root),
    };
    let top = KeyPath::root();

    if plan.postgres.is_empty()
        && plan.mysql.is_empty()
        && plan.files.is_empty()
        && plan.dns.is_empty()
        && plan.proxy.is_empty()
    {
        c.fail(
            &top,
            "the plan has nothing to migrate",
            "add at least one `[[postgres]]`, `[[mysql]]`, `[[files]]`, `[[dns]]` or `[[proxy]]` section",
        );
    }

    check_unique(
        &mut c,
        "postgres",
        plan.postgres.iter().map(|p| p.name.as_str()),
    );
    // Replication objects are named `cutover_<migration>_<pair>` with `-` written as `_`:
    // `app-db` and `app_db` would share one publication, slot and subscription.
    let mut objects: HashMap<String, usize> = HashMap::new();
    for (i, pair) in plan.postgres.iter().enumerate() {
        let object = pair.name.replace('-', "_");
        match objects.get(&object) {
            Some(first) if plan.postgres[*first].name != pair.name => c.fail(
                &KeyPath::root().k("postgres").i(i).k("name"),
                format!(
                    "`{}` and postgres[{first}]'s `{}` name the same replication objects (`-` becomes `_` in them)",
                    pair.name, plan.postgres[*first].name
                ),
                "give the pairs names that differ in more than `-` and `_`",
            ),
            Some(_) => {}
            None => {
                objects.insert(object, i);
            }
        }
    }
    check_unique(&mut c, "mysql", plan.mysql.iter().map(|p| p.name.as_str()));
    check_unique(&mut c, "files", plan.files.iter().map(|f| f.name.as_str()));
    check_unique(&mut c, "checks", plan.checks.iter().map(Check::name));
    check_unique(&mut c, "proxy", plan.proxy.iter().map(|p| p.name.as_str()));
    // One entry per proxy route: two would switch and restore the same server entry twice.
    let mut routes: HashMap<String, usize> = HashMap::new();
    for (i, r) in plan.proxy.iter().enumerate() {
        let key = match &r.adapter {
            ProxyAdapter::Haproxy {
                socket,
                backend,
                server,
            } => format!("{socket} {backend}/{server}"),
            ProxyAdapter::Command { switch, .. } => format!("command {}", switch.join(" ")),
            ProxyAdapter::Nginx {
                include, upstream, ..
            } => format!("nginx {} {upstream}", include.display()),
        };
        match routes.get(&key) {
            Some(first) => c.fail(
                &KeyPath::root().k("proxy").i(i).k("adapter"),
                format!("the route `{key}` is already listed as proxy[{first}]"),
                "list each route once",
            ),
            None => {
                routes.insert(key, i);
            }
        }
    }
    // One entry per DNS record: two would switch, wait on and restore the same record twice,
    // the second undoing the first's saved TTL.
    let mut records: HashMap<(String, String), usize> = HashMap::new();
    for (i, r) in plan.dns.iter().enumerate() {
        let key = (
            r.name.trim_end_matches('.').to_ascii_lowercase(),
            format!("{:?}", r.record_type),
        );
        match records.get(&key) {
            Some(first) => c.fail(
                &KeyPath::root().k("dns").i(i).k("name"),
                format!(
                    "record `{}` ({}) is already listed as dns[{first}]",
                    r.name, key.1
                ),
                "list each record once, with all its values in `values`",
            ),
            None => {
                records.insert(key, i);
            }
        }
    }

    for (i, pair) in plan.postgres.iter().enumerate() {
        let at = top.k("postgres").i(i);
        c.name(&at.k("name"), &pair.name, "pair name");
        pg_endpoint(&mut c, &at.k("source"), &pair.source);
        pg_endpoint(&mut c, &at.k("target"), &pair.target);
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

    for (i, pair) in plan.mysql.iter().enumerate() {
        let at = top.k("mysql").i(i);
        c.name(&at.k("name"), &pair.name, "pair name");
        mysql_endpoint(&mut c, &at.k("source"), &pair.source);
        mysql_endpoint(&mut c, &at.k("target"), &pair.target);
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
        if pair.neighbours == super::Neighbours::FenceAccounts && pair.reverse_replication {
            c.fail(
                &at.k("reverse_replication"),
                "reverse replication cannot follow a fence by account (`neighbours = \"fence-accounts\"`): the old primary keeps taking its other databases' writes, and a replica that writes its own transactions diverges from its primary",
                "set `reverse_replication = false`, or fence the whole server (`neighbours = \"read-only\"`, or move the other databases too)",
            );
        }
    }

    for (i, f) in plan.files.iter().enumerate() {
        let at = top.k("files").i(i);
        c.absolute(&at.k("source_path"), &f.source_path, "/var/lib/myapp/");
        c.absolute(&at.k("target_path"), &f.target_path, "/var/lib/myapp/");
        if plan.hosts.is_none() {
            c.fail(
                &at,
                "file syncs copy between hosts but the plan has no `[hosts]`",
                "add `[hosts.source]` and `[hosts.target]` with `ssh = \"user@host\"`",
            );
        }
        for (j, db) in f.sqlite.iter().enumerate() {
            let path = Path::new(db);
            if db.is_empty()
                || path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                c.fail(
                    &at.k("sqlite").i(j),
                    format!("`{db}` is not a path inside the tree"),
                    "write the database file's path relative to `source_path`, e.g. `data/db.sqlite3`",
                );
            }
        }
        for (j, arg) in f.rsync_args.iter().enumerate() {
            if arg == "-e" || arg.starts_with("--rsh") || arg.starts_with("-e") {
                c.fail(
                    &at.k("rsync_args").i(j),
                    "cutover sets rsync's remote shell itself",
                    "remove it; set `port`, `ssh_config` or `identity_file` under `[hosts.*]` instead",
                );
            }
        }
    }

    for (i, record) in plan.dns.iter().enumerate() {
        dns_record(&mut c, &top.k("dns").i(i), record);
    }

    for (i, route) in plan.proxy.iter().enumerate() {
        proxy_route(&mut c, &top.k("proxy").i(i), route);
    }

    for (i, hook) in plan.hooks.iter().enumerate() {
        hook_checks(&mut c, plan, &top.k("hooks").i(i), hook);
    }

    for (i, check) in plan.checks.iter().enumerate() {
        let at = top.k("checks").i(i);
        match check {
            Check::Http { url, within, .. } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    c.fail(
                        &at.k("url"),
                        format!("`{url}` is not an http(s) URL"),
                        "write the full URL, e.g. `https://app.example.com/healthz`",
                    );
                }
                if within.is_zero() {
                    c.fail(
                        &at.k("within"),
                        "a zero window always fails",
                        "use e.g. \"60s\"",
                    );
                }
            }
            Check::Command { on, command, .. } => {
                c.argv(&at.k("command"), command);
                c.needs_hosts(plan, &at.k("on"), *on);
            }
        }
    }

    c.problems
}

fn check_unique<'a>(c: &mut Checker<'_>, section: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = seen.get(name) {
            c.fail(
                &KeyPath::root().k(section).i(i).k("name"),
                format!("name `{name}` is already used by {section}[{first}]"),
                format!("give each `[[{section}]]` its own name"),
            );
        } else {
            seen.insert(name, i);
        }
    }
}

fn same_server(a_host: &str, a_port: u16, b_host: &str, b_port: u16) -> bool {
    a_host.eq_ignore_ascii_case(b_host) && a_port == b_port
}

fn pg_endpoint(c: &mut Checker<'_>, at: &KeyPath, e: &PgEndpoint) {
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
fn link_paths(
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

fn mysql_endpoint(c: &mut Checker<'_>, at: &KeyPath, e: &MysqlEndpoint) {
    if e.host.trim().is_empty() {
        c.fail(
            &at.k("host"),
            "host is empty",
            "set the server's host name or address",
        );
    }
    c.one_secret_source(
        at,
        "password",
        e.password_env.is_some(),
        e.password_file.is_some(),
    );
    if let Some(p) = &e.password_file {
        c.absolute(&at.k("password_file"), p, "/etc/cutover/mysql.password");
    }
    match (&e.ssl_cert, &e.ssl_key) {
        (Some(_), None) => c.fail(
            &at.k("ssl_key"),
            "`ssl_cert` is set without `ssl_key`: a client certificate needs its private key",
            "set `ssl_key` to the certificate's private key file",
        ),
        (None, Some(_)) => c.fail(
            &at.k("ssl_cert"),
            "`ssl_key` is set without `ssl_cert`: a private key alone is not a client certificate",
            "set `ssl_cert` to the client certificate file, or remove `ssl_key`",
        ),
        _ => {}
    }
    link_paths(
        c,
        at,
        ["link_ssl_ca", "link_ssl_cert", "link_ssl_key"],
        [&e.link_ssl_ca, &e.link_ssl_cert, &e.link_ssl_key],
        (e.ssl_cert.is_some(), e.ssl_key.is_some()),
    );
    if e.effective_ssl_mode() == super::MysqlSslMode::Disabled {
        for (key, set) in [
            ("ssl_ca", e.ssl_ca.is_some()),
            ("ssl_cert", e.ssl_cert.is_some()),
            ("link_ssl_ca", e.link_ssl_ca.is_some()),
            ("link_ssl_cert", e.link_ssl_cert.is_some()),
        ] {
            if set {
                c.fail(
                    &at.k(key),
                    format!("`{key}` is set but `ssl_mode = \"disabled\"` never uses TLS"),
                    "remove it, or choose an ssl_mode that uses TLS (`verify_identity`)",
                );
            }
        }
    }
    if let Some(key) = &e.ssl_key {
        key_file_private(c, &at.k("ssl_key"), key);
    }
}

/// A private key file must not be readable by group or world (libpq and the mysql client
/// refuse such a key); a file that is not there yet is for the connection to report.
fn key_file_private(c: &mut Checker<'_>, at: &KeyPath, key: &std::path::Path) {
    if key.exists()
        && let Err(why) = crate::secret::check_private_file(key)
    {
        c.fail(at, why, format!("chmod 600 {}", key.display()));
    }
}

fn is_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '*')
        })
}

/// `address`, `address:port` or `[v6]:port`.
fn is_server_address(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() || s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => is_hostname(host) && port.parse::<u16>().is_ok(),
        None => is_hostname(s),
    }
}

/// A name HAProxy's runtime API carries as one word: its commands are lines of words, with
/// `;` between commands, so anything else could change the command.
fn is_proxy_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':'))
}

fn proxy_route(c: &mut Checker<'_>, at: &KeyPath, r: &ProxyRoute) {
    let mut addresses = Vec::new();
    for (key, value) in [("source", &r.source), ("target", &r.target)] {
        match value.parse::<std::net::SocketAddr>() {
            Ok(a) => addresses.push(a),
            Err(_) => c.fail(
                &at.k(key),
                format!("`{value}` is not an `ip:port` address"),
                "write the backend's address as the proxy reaches it, e.g. `10.0.0.12:8080` or `[2001:db8::12]:8080`",
            ),
        }
    }
    if let [a, b] = addresses[..]
        && a == b
    {
        c.fail(
            &at.k("target"),
            "the target is the source's address",
            "set `target` to the new host's address",
        );
    }
    if r.timeout.is_zero() {
        c.fail(
            &at.k("timeout"),
            "a zero timeout fails every request",
            "remove it (default 5s) or set e.g. `timeout = \"5s\"`",
        );
    }
    if let Some(proof) = &r.proof {
        let at = at.k("proof");
        match reqwest::Url::parse(&proof.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => c.fail(
                &at.k("url"),
                format!("`{}` is not an http:// or https:// URL", proof.url),
                "give the URL a client uses through the proxy, e.g. `http://127.0.0.1:8080/whoami`",
            ),
        }
        for (key, text) in [("source", &proof.source), ("target", &proof.target)] {
            if text.trim().is_empty() {
                c.fail(
                    &at.k(key),
                    "empty: every answer would hold it",
                    format!("give text only the {key}'s answers hold (its host name, say)"),
                );
            }
        }
        if !proof.source.trim().is_empty()
            && (proof.source.contains(&proof.target) || proof.target.contains(&proof.source))
        {
            c.fail(
                &at.k("target"),
                format!(
                    "`{}` and `{}`: one holds the other, so one answer could name both backends",
                    proof.source, proof.target
                ),
                "give texts that tell the two backends apart",
            );
        }
        if let Some(h) = &proof.header
            && reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            c.fail(
                &at.k("header"),
                format!("`{h}` is not a header name"),
                "give the header's name alone, e.g. `X-Served-By`",
            );
        }
        if proof.within.is_some_and(|d| d.is_zero()) {
            c.fail(
                &at.k("within"),
                "zero leaves the new side no time to answer",
                "remove it (the route's `timeout`) or set e.g. `within = \"10s\"`",
            );
        }
    }
    match &r.adapter {
        ProxyAdapter::Haproxy {
            socket,
            backend,
            server,
        } => {
            if socket.trim().is_empty() {
                c.fail(
                    &at.k("adapter").k("socket"),
                    "socket is empty",
                    "set the stats socket's path (`stats socket /run/haproxy/admin.sock level admin` in haproxy.cfg) or its `ip:port`",
                );
            }
            for (key, value) in [("backend", backend), ("server", server)] {
                if !is_proxy_word(value) {
                    c.fail(
                        &at.k("adapter").k(key),
                        format!("`{value}` is not a HAProxy {key} name"),
                        "use the name haproxy.cfg gives it (letters, digits, `_`, `-`, `.`, `:`)",
                    );
                }
            }
        }
        ProxyAdapter::Nginx {
            include, upstream, ..
        } => {
            if !include.is_absolute() {
                c.fail(
                    &at.k("adapter").k("include"),
                    format!("`{}` is not an absolute path", include.display()),
                    "give the include file's full path, e.g. `/etc/nginx/cutover/app-upstream.conf`",
                );
            }
            if !is_proxy_word(upstream) {
                c.fail(
                    &at.k("adapter").k("upstream"),
                    format!("`{upstream}` is not an nginx upstream name"),
                    "use the name of the `upstream` block (letters, digits, `_`, `-`, `.`)",
                );
            }
        }
        ProxyAdapter::Command {
            read,
            switch,
            rollback,
            env,
            command_timeout,
        } => {
            for (key, argv) in [("read", read), ("switch", switch), ("rollback", rollback)] {
                if argv.first().is_none_or(|p| p.trim().is_empty()) {
                    c.fail(
                        &at.k("adapter").k(key),
                        "no program given",
                        format!(
                            "give the command as an argv array, e.g. `{key} = [\"/usr/local/bin/route\", \"{key}\"]`"
                        ),
                    );
                }
            }
            for name in env.keys() {
                if name.is_empty()
                    || name.contains('=')
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                {
                    c.fail(
                        &at.k("adapter").k("env"),
                        format!("`{name}` is not an environment variable name"),
                        "use letters, digits and `_`",
                    );
                }
            }
            if command_timeout.is_zero() {
                c.fail(
                    &at.k("adapter").k("command_timeout"),
                    "a zero timeout kills every switch",
                    "remove it (default 10m) or set the longest a switch may take",
                );
            }
        }
    }
}

fn dns_record(c: &mut Checker<'_>, at: &KeyPath, r: &DnsRecord) {
    if !is_hostname(&r.name) || !r.name.contains('.') {
        c.fail(
            &at.k("name"),
            format!("`{}` is not a fully qualified domain name", r.name),
            "write the full name, e.g. `git.example.com`",
        );
    }
    if let Some(zone) = &r.zone {
        let name = r.name.trim_end_matches('.');
        let zone_t = zone.trim_end_matches('.');
        if !(name == zone_t || name.ends_with(&format!(".{zone_t}"))) {
            c.fail(
                &at.k("zone"),
                format!("`{}` is not inside zone `{zone}`", r.name),
                "set `zone` to the zone the record belongs to, or remove it to find it from the SOA",
            );
        }
    }
    if r.values.is_empty() {
        c.fail(
            &at.k("values"),
            "no values given",
            "list what the record must point to after cutover, e.g. `values = [\"203.0.113.10\"]`",
        );
    }
    let values = r.values.iter().map(|v| ("values", v));
    let current = r.expect_current.iter().map(|v| ("expect_current", v));
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    for (key, v) in values.chain(current) {
        let j = {
            let n = index.entry(key).or_default();
            *n += 1;
            *n - 1
        };
        let ok = match r.record_type {
            RecordType::A => v.parse::<Ipv4Addr>().is_ok(),
            RecordType::Aaaa => v.parse::<Ipv6Addr>().is_ok(),
            RecordType::Cname => is_hostname(v),
        };
        if !ok {
            let expect = match r.record_type {
                RecordType::A => "an IPv4 address such as `203.0.113.10`",
                RecordType::Aaaa => "an IPv6 address such as `2001:db8::10`",
                RecordType::Cname => "a host name such as `new.example.com`",
            };
            c.fail(
                &at.k(key).i(j),
                format!("`{v}` is not a valid {} value", r.record_type.as_str()),
                format!("use {expect}"),
            );
        }
    }
    if r.record_type == RecordType::Cname && r.values.len() > 1 {
        c.fail(
            &at.k("values"),
            "a CNAME has exactly one value",
            "keep one value",
        );
    }
    let kind = r.provider.kind();
    let minimum = kind.documented_min_ttl();
    // deSEC's minimum is per domain (read at lower-ttl time), so only the others are checked here.
    if kind != ProviderKind::Desec && r.cutover_ttl < minimum {
        c.fail(
            &at.k("cutover_ttl"),
            format!("{kind} does not accept a TTL below {minimum} s"),
            format!("set `cutover_ttl = {minimum}` or higher"),
        );
    }
    if r.cutover_ttl == 0 {
        c.fail(
            &at.k("cutover_ttl"),
            "a TTL of 0 is ignored by many resolvers",
            "use 60 to 300 seconds",
        );
    }
    for (j, ns) in r.nameservers.iter().enumerate() {
        if !is_server_address(ns) {
            c.fail(
                &at.k("nameservers").i(j),
                format!("`{ns}` is not an address or address:port"),
                "write e.g. `192.0.2.53`, `ns1.example.com` or `127.0.0.1:5353`",
            );
        }
    }
    for (j, ns) in r.resolvers.iter().enumerate() {
        if !is_server_address(ns) {
            c.fail(
                &at.k("resolvers").i(j),
                format!("`{ns}` is not an address or address:port"),
                "write e.g. `9.9.9.9`",
            );
        }
    }
    let p = at.k("provider");
    let keys = r.provider.credential_keys();
    let prefix = keys.prefix;
    if keys.env.is_none() && keys.file.is_none() {
        c.fail(
            &p,
            format!(
                "the {} provider needs a credential",
                r.provider.kind().as_str()
            ),
            format!("set `{prefix}_env = \"VARIABLE\"` or `{prefix}_file = \"/path/to/file\"`"),
        );
    }
    c.one_secret_source(&p, prefix, keys.env.is_some(), keys.file.is_some());
    if let Some(u) = r.provider.api_url() {
        url(c, &p.k("api_url"), u);
    }
    if let Provider::Rfc2136 {
        server,
        key_algorithm,
        ..
    } = &r.provider
    {
        if !is_server_address(server) {
            c.fail(
                &p.k("server"),
                format!("`{server}` is not an address or address:port"),
                "write the primary server, e.g. `192.0.2.53` or `ns1.example.com:53`",
            );
        }
        const ALGORITHMS: [&str; 4] = ["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha1"];
        if !ALGORITHMS.contains(&key_algorithm.as_str()) {
            c.fail(
                &p.k("key_algorithm"),
                format!("unsupported TSIG algorithm `{key_algorithm}`"),
                format!("use one of {}", ALGORITHMS.join(", ")),
            );
        }
    }
}

fn url(c: &mut Checker<'_>, at: &KeyPath, value: &str) {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        c.fail(
            at,
            format!("`{value}` is not an http(s) URL"),
            "write the full URL, e.g. `https://dns.example.com:8081`",
        );
    }
}

fn hook_checks(c: &mut Checker<'_>, plan: &Plan, at: &KeyPath, hook: &Hook) {
    c.argv(&at.k("command"), &hook.command);
    c.needs_hosts(plan, &at.k("on"), hook.on);
    if hook.timeout.is_zero() {
        c.fail(
            &at.k("timeout"),
            "a zero timeout always fails",
            "use e.g. \"60s\"",
        );
    }
}
