//! `[[proxy]]`: a reverse-proxy route, its adapter and its proof.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::*;
use super::validate::*;

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

pub(super) fn default_nginx() -> PathBuf {
    PathBuf::from("nginx")
}

pub(super) fn default_proxy_command_timeout() -> Duration {
    Duration::from_secs(600)
}

pub(super) fn default_proxy_timeout() -> Duration {
    Duration::from_secs(5)
}

// Validation of this section's keys (every problem reported, with its key and fix).

/// A name HAProxy's runtime API carries as one word: its commands are lines of words, with
/// `;` between commands, so anything else could change the command.
pub(super) fn is_proxy_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':'))
}

pub(super) fn proxy_route(c: &mut Checker<'_>, at: &KeyPath, r: &ProxyRoute) {
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
