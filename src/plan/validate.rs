//! Checks on a typed plan that serde cannot express: names, uniqueness, absolute paths,
//! argv-not-shell-strings, credentials present, addresses that parse.

use super::dns::dns_record;
use super::proxy::proxy_route;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use toml::de::DeTable;

use super::error::Problem;
use super::parse::{Seg, SourceText, display_path, locate};
use super::{Check, Hook, Migration, Plan, ProxyAdapter, RunOn};

/// Longest migration or pair name; keeps derived PostgreSQL identifiers under 63 bytes.
pub const MAX_NAME_LEN: usize = 24;

/// A key path under construction.
#[derive(Clone)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }
    pub(crate) fn k(&self, key: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(key.to_owned()));
        KeyPath(v)
    }
    pub(crate) fn i(&self, index: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(index));
        KeyPath(v)
    }
}

pub(crate) struct Checker<'a> {
    src: &'a SourceText<'a>,
    root: &'a DeTable<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn fail(
        &mut self,
        at: &KeyPath,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let span = locate(self.root, &at.0);
        self.problems
            .push(self.src.problem(display_path(&at.0), span, message, fix));
    }

    /// `exempt_roles` / `exempt_users`: every entry needs a reason, and none may also be fenced
    /// or be cutover's own login.
    pub(crate) fn exemptions(
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

    pub(crate) fn name(&mut self, at: &KeyPath, value: &str, what: &str) {
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

    pub(crate) fn absolute(&mut self, at: &KeyPath, path: &Path, example: &str) {
        if !path.is_absolute() {
            self.fail(
                at,
                format!("path `{}` is relative", path.display()),
                format!("use an absolute path, e.g. `{example}`"),
            );
        }
    }

    pub(crate) fn one_secret_source(&mut self, at: &KeyPath, prefix: &str, env: bool, file: bool) {
        if env && file {
            self.fail(
                &at.k(&format!("{prefix}_file")),
                format!("both `{prefix}_env` and `{prefix}_file` are set"),
                format!("keep one of `{prefix}_env` and `{prefix}_file`"),
            );
        }
    }

    /// What every database endpoint shares: a password from one source (a file by absolute
    /// path, like `example`), and TLS keys named as that engine's client names them
    /// (`tls`): a certificate with its key, none of them under a mode that never uses TLS, a
    /// private key nobody else can read, the replication link's paths.
    pub(crate) fn endpoint(&mut self, at: &KeyPath, password: Password<'_>, tls: ClientTls<'_>) {
        self.one_secret_source(at, "password", password.env, password.file.is_some());
        if let Some(p) = password.file {
            self.absolute(&at.k("password_file"), p, password.example);
        }
        let ([cert, key], [has_cert, has_key]) = (tls.cert, [tls.cert_set, tls.key.is_some()]);
        match (has_cert, has_key) {
            (true, false) => self.fail(
                &at.k(key),
                format!("`{cert}` is set without `{key}`: a client certificate needs its private key"),
                format!("set `{key}` to the certificate's private key file"),
            ),
            (false, true) => self.fail(
                &at.k(cert),
                format!("`{key}` is set without `{cert}`: a private key alone is not a client certificate"),
                format!("set `{cert}` to the client certificate file, or remove `{key}`"),
            ),
            _ => {}
        }
        link_paths(
            self,
            at,
            tls.link_names,
            tls.link_values,
            (has_cert, has_key),
        );
        if let Some((mode, fix)) = tls.plaintext {
            for (name, set) in tls.used_by_tls {
                if *set {
                    self.fail(
                        &at.k(name),
                        format!("`{name}` is set but `{mode}` never uses TLS"),
                        fix,
                    );
                }
            }
        }
        if let Some(path) = tls.key {
            key_file_private(self, &at.k(key), path);
        }
    }

    pub(crate) fn argv(&mut self, at: &KeyPath, command: &[String]) {
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

    pub(crate) fn needs_hosts(&mut self, plan: &Plan, at: &KeyPath, on: RunOn) {
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

    crate::postgres::config::check_section(&mut c, &top, &plan.postgres);
    crate::mysql::config::check_section(&mut c, &top, &plan.mysql);

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

pub(crate) fn check_unique<'a>(
    c: &mut Checker<'_>,
    section: &str,
    names: impl Iterator<Item = &'a str>,
) {
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

pub(crate) fn same_server(a_host: &str, a_port: u16, b_host: &str, b_port: u16) -> bool {
    a_host.eq_ignore_ascii_case(b_host) && a_port == b_port
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

pub(crate) fn is_hostname(name: &str) -> bool {
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
pub(crate) fn is_server_address(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() || s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => is_hostname(host) && port.parse::<u16>().is_ok(),
        None => is_hostname(s),
    }
}

pub(crate) fn url(c: &mut Checker<'_>, at: &KeyPath, value: &str) {
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

/// An endpoint's password keys, for [`Checker::endpoint`].
pub(crate) struct Password<'a> {
    /// `password_env` is set.
    pub env: bool,
    /// `password_file`.
    pub file: Option<&'a Path>,
    /// An absolute path to show in the fix.
    pub example: &'a str,
}

/// An endpoint's TLS keys as its engine's client names them, for [`Checker::endpoint`].
pub(crate) struct ClientTls<'a> {
    /// The names of the client certificate's keys: certificate, private key.
    pub cert: [&'a str; 2],
    /// The certificate is set.
    pub cert_set: bool,
    /// The private key's path, when set.
    pub key: Option<&'a Path>,
    /// The replication link's keys (CA, certificate, key) and their values.
    pub link_names: [&'a str; 3],
    pub link_values: [&'a Option<String>; 3],
    /// When the mode never uses TLS: the mode as written, and the fix.
    pub plaintext: Option<(&'a str, &'a str)>,
    /// The keys only TLS uses, and whether each is set.
    pub used_by_tls: &'a [(&'a str, bool)],
}
