//! The ready-to-use plan `cutover lab up` writes for the lab's servers.

use super::Lab;
use super::bind;
use super::mariadb::{ADMIN_USER, PLAN_EXEMPT_USERS};
use super::postgres::SUPERUSER;

/// Name of the application database, roles and users the lab creates.
pub const APP: &str = "app";
/// The PowerDNS zone the lab creates.
pub const PDNS_ZONE: &str = "lab.example.com";
/// The record the lab plan switches.
pub const APP_RECORD: &str = "app.lab.example.com";
/// The TTL the lab's app records start with (PowerDNS and BIND): short, so the earliest safe
/// switch after `lower-ttl` comes within the demo.
pub const APP_RECORD_TTL: u32 = 10;

/// The app's SQLite database, relative to the lab's files tree.
pub const SQLITE_DB: &str = "data/app.sqlite3";

/// A TOML string literal.
fn q(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_owned()).to_string()
}

/// The plan text for `lab`; every path is absolute and every secret is a `*_file` reference.
pub fn lab_plan_toml(lab: &Lab) -> String {
    let root = lab.dir.path();
    let ssh_config = q(lab.sshd.ssh_config.display().to_string());
    // The lab's clusters take TLS only; their certificates are verified with the lab's CA.
    let pg = |server: &super::Postgres| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"{APP}\", user = \"{SUPERUSER}\", password_file = {}, sslmode = \"verify-full\", sslrootcert = {} }}",
            server.port,
            q(server.password_file.display().to_string()),
            q(lab.pg_ca_file.display().to_string())
        )
    };
    let my = |server: &super::MariaDb| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, user = \"{ADMIN_USER}\", password_file = {}, ssl_mode = \"verify_identity\", ssl_ca = {} }}",
            server.port,
            q(server.password_file.display().to_string()),
            q(lab.pg_ca_file.display().to_string())
        )
    };
    format!(
        r#"# Plan for the local lab written by `cutover lab up`. Every server is on 127.0.0.1.
[migration]
name = "lab-demo"
state_dir = {state_dir}
description = "demo migration between the lab's servers"

[hosts.source]
ssh = "lab-source"
ssh_config = {ssh_config}

[hosts.target]
ssh = "lab-target"
ssh_config = {ssh_config}

[[postgres]]
name = "app-pg"
source = {pg_source}
target = {pg_target}
app_roles = ["{APP}"]
copy_schema = true
reverse_replication = true

[[mysql]]
name = "app-mariadb"
source = {my_source}
target = {my_target}
databases = ["{APP}"]
app_users = ["{APP}"]
{PLAN_EXEMPT_USERS}
reverse_replication = true

[[files]]
name = "uploads"
source_path = {files_source}
target_path = {files_target}
change_log = true
sqlite = ["{SQLITE_DB}"]

[[dns]]
name = "{APP_RECORD}"
type = "A"
zone = "{PDNS_ZONE}"
values = ["127.0.0.2"]
cutover_ttl = 5
nameservers = ["127.0.0.1:{pdns_port}"]
provider = {{ kind = "powerdns", api_url = {pdns_url}, api_key_file = {pdns_key} }}

[[dns]]
name = "app.{bind_zone}"
type = "A"
zone = "{bind_zone}"
values = ["127.0.0.2"]
cutover_ttl = 5
nameservers = ["127.0.0.1:{bind_port}"]
provider = {{ kind = "rfc2136", server = "127.0.0.1:{bind_port}", key_name = "{tsig_name}", key_secret_file = {tsig_file} }}
"#,
        state_dir = q(root.join("state").display().to_string()),
        pg_source = pg(&lab.pg_source),
        pg_target = pg(&lab.pg_target),
        my_source = my(&lab.maria_source),
        my_target = my(&lab.maria_target),
        files_source = q(format!("{}/", root.join("files/source").display())),
        files_target = q(format!("{}/", root.join("files/target").display())),
        pdns_port = lab.powerdns.dns_port,
        pdns_url = q(lab.powerdns.api_url()),
        pdns_key = q(lab.powerdns.api_key_file.display().to_string()),
        bind_zone = bind::ZONE,
        bind_port = lab.bind.port,
        tsig_name = bind::TSIG_KEY_NAME,
        tsig_file = q(lab.bind.tsig_secret_file.display().to_string()),
    )
}

/// Hooks and a health check for a `cutover run` of the lab plan: the window-open hook stops
/// the app on the source host (over ssh) by killing the process in `app_pid_file` and waiting
/// until it is gone; the other hooks append their phase to `hooks.log`; the check asks
/// `health_url` until the new host's databases take the app's writes.
pub fn run_plan_extras(lab: &Lab, app_pid_file: &std::path::Path, health_url: &str) -> String {
    let log = lab.dir.path().join("hooks.log");
    let record = |at: &str, on: &str| {
        format!(
            "[[hooks]]\nat = \"{at}\"\non = \"{on}\"\ncommand = [\"sh\", \"-c\", \"echo \\\"$CUTOVER_PHASE $CUTOVER_MIGRATION rollback=$CUTOVER_ROLLBACK\\\" >> \\\"$1\\\"\", \"hook\", {}]\ntimeout = \"10s\"\n\n",
            q(log.display().to_string())
        )
    };
    format!(
        r#"
[[hooks]]
at = "window-open"
on = "source"
command = ["sh", "-c", "pid=$(cat \"$1\") && kill \"$pid\" && while kill -0 \"$pid\" 2>/dev/null; do sleep 0.02; done", "stop-app", {pid_file}]
timeout = "10s"

{after_promote}{after_switch}{on_rollback}[[checks]]
kind = "http"
name = "app health"
url = {url}
expect_status = 200
body_contains = "ok"
within = "30s"
interval = "200ms"
timeout = "3s"
success_threshold = 2
"#,
        pid_file = q(app_pid_file.display().to_string()),
        after_promote = record("after-promote", "local"),
        after_switch = record("after-switch", "target"),
        on_rollback = record("on-rollback", "local"),
        url = q(health_url),
    )
}
