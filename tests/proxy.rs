//! Reverse-proxy routes against a real HAProxy (Debian's package) on loopback: a whole run
//! switches the route while a client loops through the proxy, `run --rollback` points it back,
//! and preflight refuses a route that points elsewhere or does not exist, changing nothing.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use cutover::lab::web::{LoopingClient, NamedServer};
use cutover::lab::{Haproxy, Supervision};

/// An HTTP backend that answers every request with its own name (and closes the connection).
async fn backend(name: &'static str) -> (SocketAddr, NamedServer) {
    let server = NamedServer::start(name).await.unwrap();
    (server.addr, server)
}

/// One command to HAProxy's runtime API.
async fn api(socket: &Path, line: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The address the lab's server entry points at, as HAProxy reports it.
async fn points_at(socket: &Path) -> String {
    let state = api(socket, "show servers state app").await;
    let line = state
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("web"))
        .unwrap_or_else(|| panic!("no server web in {state}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", f[4], f[18])
}

fn plan(
    dir: &Path,
    socket: &Path,
    source: SocketAddr,
    target: SocketAddr,
    backend: &str,
) -> PathBuf {
    let text = format!(
        r#"[migration]
name = "proxy-test"
state_dir = "{state}"

[[proxy]]
name = "web"
source = "{source}"
target = "{target}"
adapter = {{ kind = "haproxy", socket = "{socket}", backend = "{backend}", server = "web" }}
"#,
        state = dir.join("state").display(),
        socket = socket.display(),
    );
    let path = dir.join("plan.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Requests through the proxy every few milliseconds, each on a new connection, until
/// stopped: (answers by backend name, failed requests).
struct Client(LoopingClient);

impl Client {
    fn start(port: u16) -> Client {
        Client(LoopingClient::start(format!("http://127.0.0.1:{port}/")))
    }

    async fn stop(self) -> (Vec<String>, usize) {
        self.0.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_switches_the_haproxy_route_with_no_failed_request_and_a_reverse_cutover_points_it_back()
 {
    let dir = tempfile::tempdir().unwrap();
    let (source, _s) = backend("source").await;
    let (target, _t) = backend("target").await;
    let proxy = Haproxy::start(dir.path(), "haproxy", source, Supervision::Owned)
        .await
        .unwrap();
    let path = plan(dir.path(), &proxy.socket, source, target, "app");
    let plan_arg = path.display().to_string();

    let (code, out, err) = support::run(&["plan", "check", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = support::run(&["run", "--dry-run", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("proxy web"),
        "the dry run shows the route's steps:\n{out}"
    );

    let client = Client::start(proxy.port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("points at the source"), "{out}");
    assert!(
        out.contains(&format!("{source} -> {target}")),
        "the report says what the route pointed at and points at now:\n{out}"
    );
    assert_eq!(points_at(&proxy.socket).await, target.to_string());
    let (code, out, err) = support::run(&["status", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "proxy web: points at the target {target} (running)"
        )),
        "status reads the route from the proxy:\n{out}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answers, failed) = client.stop().await;
    assert_eq!(failed, 0, "requests failed through the switch");
    let first_target = answers
        .iter()
        .position(|a| a == "target")
        .expect("requests reached the target");
    assert!(
        first_target > 0,
        "requests reached the source before the switch"
    );
    assert!(
        answers[first_target..].iter().all(|a| a == "target"),
        "after the first answer from the target, only the target answers"
    );

    // The reverse cutover points the route back, read back from the proxy.
    let client = Client::start(proxy.port);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, err) = support::run(&["run", "--rollback", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{target} -> {source}")), "{out}");
    assert_eq!(points_at(&proxy.socket).await, source.to_string());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answers, failed) = client.stop().await;
    assert_eq!(failed, 0);
    assert_eq!(answers.last().map(String::as_str), Some("source"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_refuses_a_route_that_points_elsewhere_or_does_not_exist_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _s) = backend("source").await;
    let (target, _t) = backend("target").await;
    let (other, _o) = backend("other").await;
    let proxy = Haproxy::start(dir.path(), "haproxy", other, Supervision::Owned)
        .await
        .unwrap();

    // Pointing at a third address (switched by hand, or by another migration): refused with
    // what it points at; nothing changed.
    let path = plan(dir.path(), &proxy.socket, source, target, "app");
    let (code, out, err) = support::run(&["run", &path.display().to_string()]);
    assert_ne!(code, 0, "{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains(&format!("points at {other}")) && all.contains("nothing was changed"),
        "{all}"
    );
    assert_eq!(points_at(&proxy.socket).await, other.to_string());

    // A backend HAProxy does not have: named, with the fix.
    let dir2 = tempfile::tempdir().unwrap();
    let path = plan(dir2.path(), &proxy.socket, other, target, "nope");
    let (code, out, err) = support::run(&["run", &path.display().to_string()]);
    assert_ne!(code, 0, "{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("no backend `nope`") && all.contains("adapter.backend"),
        "{all}"
    );
    assert_eq!(points_at(&proxy.socket).await, other.to_string());

    // The proxy gone: unreachable, with the stats-socket fix.
    let mut proxy = proxy;
    proxy.process().kill();
    let dir3 = tempfile::tempdir().unwrap();
    let path = plan(dir3.path(), &proxy.socket, other, target, "app");
    let (code, out, err) = support::run(&["run", &path.display().to_string()]);
    assert_ne!(code, 0, "{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("cannot reach the proxy") && all.contains("level admin"),
        "{all}"
    );
}

#[test]
fn plan_check_names_every_bad_proxy_key_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[migration]
name = "proxy-bad"
state_dir = "{state}"

[[proxy]]
name = "web"
source = "10.0.0.1"
target = "10.0.0.1"
timeout = "0s"
adapter = {{ kind = "haproxy", socket = "", backend = "app;disable server x/y", server = "web 1" }}
proof = {{ url = "ftp://127.0.0.1/", source = " ", target = "new", header = "Bad Header" }}
"#,
        state = dir.path().join("state").display(),
    );
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = support::run(&["plan", "check", &path.display().to_string()]);
    assert_eq!(code, 2, "{out}\n{err}");
    for key in [
        "proxy[0].source",
        "proxy[0].timeout",
        "proxy[0].adapter.socket",
        "proxy[0].adapter.backend",
        "proxy[0].adapter.server",
        "proxy[0].proof.url",
        "proxy[0].proof.source",
        "proxy[0].proof.header",
    ] {
        assert!(
            err.contains(key) || out.contains(key),
            "{key} not named:\n{out}\n{err}"
        );
    }
}

/// The route inside a whole database run: switched right after the promotion, kill -9 at the
/// switch's records is resumed forward by one command, and a health check that fails after the
/// switch reverses the cutover and points the route back at the source. The writer's ledger
/// is clean row by row each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inside_a_database_run_the_route_follows_the_promotion_through_a_crash_and_an_automatic_reverse()
 {
    use cutover::run;
    use support::{PgPair, kill9, wait_stopped, write_plan};
    let (source, _s) = backend("source").await;
    let (target, _t) = backend("target").await;

    for side in ["begin", "done", "reverse"] {
        let pg = PgPair::start().await;
        pg.database("px").await;
        let proxy = Haproxy::start(pg.dir.path(), "haproxy", source, Supervision::Owned)
            .await
            .unwrap();
        let route = format!(
            "[[proxy]]\nname = \"web\"\nsource = \"{source}\"\ntarget = \"{target}\"\nadapter = {{ kind = \"haproxy\", socket = \"{}\", backend = \"app\", server = \"web\" }}\n",
            proxy.socket.display()
        );
        let check = if side == "reverse" {
            let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/health", dead.local_addr().unwrap());
            drop(dead);
            format!(
                "[[checks]]\nkind = \"http\"\nname = \"app\"\nurl = \"{url}\"\nwithin = \"1s\"\ninterval = \"200ms\"\n"
            )
        } else {
            String::new()
        };
        let path = write_plan(
            pg.dir.path(),
            "px",
            &(pg.pair_toml("px", "") + &route + &check),
        );
        let plan_arg = path.display().to_string();
        let plan = cutover::plan::load(&path).unwrap();
        let writer = pg.writer("px", 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if side == "reverse" {
            let (code, out, err) = support::run(&["run", &plan_arg]);
            assert_eq!(code, 1, "the failed check fails the run:\n{out}\n{err}");
            assert!(out.contains("reverse cutover completed"), "{out}\n{err}");
            assert_eq!(
                points_at(&proxy.socket).await,
                source.to_string(),
                "the reverse cutover points the route back"
            );
            assert!(
                pg.app_writes(&pg.source, "px").await,
                "the source serves again"
            );
        } else {
            let steps = run::steps(&plan);
            let index = steps
                .iter()
                .position(|s| matches!(s.kind, run::Kind::ProxySwitch(_)))
                .unwrap();
            let promote = steps
                .iter()
                .position(|s| matches!(s.kind, run::Kind::Promote(_)))
                .unwrap();
            assert!(index > promote, "the route follows the promotion");
            let mut child = std::process::Command::new(support::binary())
                .args(["run", &plan_arg])
                .env(run::test_stop::STEP_VAR, format!("{index}:{side}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            assert!(wait_stopped(&mut child, Duration::from_secs(120)), "{side}");
            kill9(&mut child);
            let expected = if side == "begin" { source } else { target };
            assert_eq!(
                points_at(&proxy.socket).await,
                expected.to_string(),
                "{side}"
            );
            let status = run::status(&plan).await.unwrap();
            let (_, pointing) = &status.proxies[0];
            assert_eq!(
                pointing.as_ref().unwrap().address,
                expected.to_string(),
                "{side}: status reads the route"
            );
            assert!(
                status.resume_would.contains("go forward"),
                "{side}: {}",
                status.resume_would
            );
            let (code, out, err) = support::run(&["run", "--resume", &plan_arg]);
            assert_eq!(code, 0, "{side}:\n{out}\n{err}");
            assert_eq!(points_at(&proxy.socket).await, target.to_string(), "{side}");
            assert!(
                pg.app_writes(&pg.target, "px").await,
                "{side}: the target serves"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ledger = writer.stop().await;
        let serving = if side == "reverse" {
            &pg.source
        } else {
            &pg.target
        };
        let check = ledger
            .check(&serving.connect("px").await.unwrap())
            .await
            .unwrap();
        if side == "reverse" {
            // Writes went to the target and back to the source: the ledger's one-way checks
            // (ids rising across the move, no source acknowledgement after the target's
            // first) do not apply to a round trip; nothing lost, duplicated or unexpected does.
            assert!(
                check.lost.is_empty()
                    && check.duplicated.is_empty()
                    && check.unexpected.is_empty()
                    && check.panicked == 0
                    && check.acked > 0
                    && check.acked_on_target > 0,
                "{side}: {check:?}"
            );
        } else {
            assert!(check.clean() && check.acked > 0, "{side}: {check:?}");
        }
    }
}

/// A command adapter over a "declarative configuration" (a file the commands rewrite, as
/// `nixos-rebuild switch` would): the run switches it and the reverse cutover rolls it back;
/// the commands get the plan's `env` and none of cutover's secrets; a failing switch fails the
/// step with the command's own words; a switch past its timeout is killed with everything it
/// started.
#[test]
fn a_command_adapter_switches_and_rolls_back_with_an_explicit_environment_and_a_bounded_switch() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("route");
    let seen = dir.path().join("env-seen");
    let (source, target) = ("127.0.0.1:8101", "127.0.0.1:8102");
    std::fs::write(&state, format!("{source}\n")).unwrap();
    let write = |what: &str, script: &str, extra: &str| {
        let path = dir.path().join(format!("{what}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"[migration]
name = "cmd-{what}"
state_dir = "{state_dir}"

[[proxy]]
name = "web"
source = "{source}"
target = "{target}"

[proxy.adapter]
kind = "command"
read = ["cat", "{route}"]
switch = ["sh", "-c", '{script}']
rollback = ["sh", "-c", 'printf "%s\n" "$SOURCE" > "$ROUTE"']
env = {{ ROUTE = "{route}", TARGET = "{target}", SOURCE = "{source}", SEEN = "{seen}" }}
{extra}
"#,
                state_dir = dir.path().join(format!("state-{what}")).display(),
                route = state.display(),
                seen = seen.display(),
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let secret = "do-not-leak-5cc1a7";
    let run_with_secret = |args: &[&str]| {
        let out = std::process::Command::new(support::binary())
            .args(args)
            .env("CUTOVER_PG_SOURCE_PASSWORD", secret)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    let plan = write(
        "ok",
        r#"env > "$SEEN"; printf "%s\n" "$TARGET" > "$ROUTE""#,
        "",
    );
    let (code, out) = run_with_secret(&["run", &plan]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{source} -> {target}")), "{out}");
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), target);
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains(&format!("TARGET={target}")), "{env}");
    assert!(
        !env.contains(secret) && !env.contains("CUTOVER_PG_SOURCE_PASSWORD"),
        "cutover's secrets never reach the commands:\n{env}"
    );
    let (code, out) = run_with_secret(&["run", "--rollback", &plan]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), source);

    // A switch that fails: the step fails with what the command said.
    let plan = write(
        "fails",
        r#"echo "rebuild failed: no space" >&2; exit 3"#,
        "",
    );
    let (code, out) = run_with_secret(&["run", &plan]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("exited 3") && out.contains("rebuild failed: no space"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), source);

    // A switch past its timeout: killed, with the command it left in the background.
    let marker = dir.path().join("late");
    let plan = write(
        "slow",
        &format!(r#"(sleep 3; touch {}) & sleep 30"#, marker.display()),
        "command_timeout = \"1s\"",
    );
    let (code, out) = run_with_secret(&["run", &plan]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("killed after its timeout"), "{out}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !marker.exists(),
        "the command's whole process group was killed at the timeout"
    );
}

fn nginx_plan(
    dir: &Path,
    nginx: &cutover::lab::Nginx,
    source: SocketAddr,
    target: SocketAddr,
) -> PathBuf {
    let text = format!(
        r#"[migration]
name = "nginx-test"
state_dir = "{state}"

[[proxy]]
name = "web"
source = "{source}"
target = "{target}"
adapter = {{ kind = "nginx", include = "{include}", upstream = "app", nginx = "{program}", config = "{config}", prefix = "{prefix}" }}
"#,
        state = dir.join("state").display(),
        include = nginx.include.display(),
        program = nginx.program.display(),
        config = nginx.config.display(),
        prefix = nginx.dir.display(),
    );
    let path = dir.join("nginx-plan.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// nginx (Debian's package): a run rewrites the upstream's include file, tests and reloads,
/// with no failed request through it; the reverse cutover points it back; a configuration
/// `nginx -t` refuses at the switch puts the previous file back and reloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_nginx_upstream_is_switched_with_a_tested_reload_and_a_refused_test_changes_nothing() {
    use cutover::run;
    let dir = tempfile::tempdir().unwrap();
    let (source, _s) = backend("source").await;
    let (target, _t) = backend("target").await;
    let nginx = cutover::lab::Nginx::start(dir.path(), "nginx", source, Supervision::Owned)
        .await
        .unwrap();
    let path = nginx_plan(dir.path(), &nginx, source, target);
    let plan_arg = path.display().to_string();

    let client = Client::start(nginx.port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{source} -> {target}")), "{out}");
    let include = std::fs::read_to_string(&nginx.include).unwrap();
    assert!(include.contains(&format!("server {target};")), "{include}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (answers, failed) = client.stop().await;
    assert_eq!(failed, 0, "requests failed through the reload");
    assert_eq!(
        answers.last().map(String::as_str),
        Some("target"),
        "the reload took"
    );
    let (code, out, err) = support::run(&["run", "--rollback", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        std::fs::read_to_string(&nginx.include)
            .unwrap()
            .contains(&format!("server {source};"))
    );
    // The switch returns once the reload took: the very next connection reaches the source
    // (nginx's old workers keep accepting for about 100 ms after `nginx -s reload` returns).
    let first = reqwest::get(format!("http://127.0.0.1:{}/", nginx.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(first, "source", "the first request after the rollback");

    // The next run stops right before its switch; meanwhile another part of the configuration
    // breaks. `nginx -t` refuses, the previous file is back, nothing reloaded.
    let dir2 = tempfile::tempdir().unwrap();
    let path = nginx_plan(dir2.path(), &nginx, source, target);
    let steps = run::steps(&cutover::plan::load(&path).unwrap());
    let switch = steps
        .iter()
        .position(|s| matches!(s.kind, run::Kind::ProxySwitch(_)))
        .unwrap();
    let mut child = std::process::Command::new(support::binary())
        .args(["run", &path.display().to_string()])
        .env(run::test_stop::STEP_VAR, format!("{switch}:begin"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(support::wait_stopped(&mut child, Duration::from_secs(60)));
    std::fs::write(&nginx.extra, "this_is_not_a_directive on;\n").unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("`nginx -t` refused the new configuration")
            && all.contains("this_is_not_a_directive"),
        "{all}"
    );
    assert!(
        std::fs::read_to_string(&nginx.include)
            .unwrap()
            .contains(&format!("server {source};")),
        "the previous file is back"
    );
    let client = Client::start(nginx.port);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answers, failed) = client.stop().await;
    assert_eq!(failed, 0);
    assert!(
        answers.iter().all(|a| a == "source"),
        "nothing was reloaded"
    );
}

#[test]
fn a_route_switches_before_the_dns_records_unless_it_says_after() {
    use cutover::run::{self, Kind};
    let text = r#"[migration]
name = "order"
state_dir = "/var/lib/cutover/order"

[[dns]]
name = "app.example.com"
type = "A"
values = ["192.0.2.2"]
provider = { kind = "powerdns", api_url = "http://127.0.0.1:8081", api_key_env = "PDNS_KEY" }

[[proxy]]
name = "first"
source = "127.0.0.1:8001"
target = "127.0.0.1:8002"
adapter = { kind = "haproxy", socket = "/run/haproxy/admin.sock", backend = "app", server = "one" }

[[proxy]]
name = "last"
source = "127.0.0.1:8001"
target = "127.0.0.1:8002"
order = "after-dns"
adapter = { kind = "haproxy", socket = "/run/haproxy/admin.sock", backend = "app", server = "two" }
"#;
    let plan = cutover::plan::parse_str(text, std::path::Path::new("order.toml")).unwrap();
    let switches: Vec<Kind> = run::steps(&plan)
        .into_iter()
        .map(|s| s.kind)
        .filter(|k| matches!(k, Kind::ProxySwitch(_) | Kind::DnsSwitch(_)))
        .collect();
    assert_eq!(
        switches,
        [
            Kind::ProxySwitch(0),
            Kind::DnsSwitch(0),
            Kind::ProxySwitch(1)
        ]
    );
}

/// `plan` with a `proof` line added to its route.
fn proof_plan(
    dir: &Path,
    proxy: &Haproxy,
    source: SocketAddr,
    target: SocketAddr,
    proof: &str,
) -> String {
    let path = plan(dir, &proxy.socket, source, target, "app");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "proof = {{ url = \"http://127.0.0.1:{}/\", {proof} }}\n",
        proxy.port
    ));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// With a `proof`, a request through the proxy proves where clients land: preflight refuses
/// a proof that does not name the source today (nothing changed); the switch times the first
/// answer from the target; a target that never answers as itself fails the switch and the
/// route is put back on the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proof_through_the_proxy_times_the_first_answer_and_a_wrong_backend_puts_the_route_back()
{
    let dir = tempfile::tempdir().unwrap();
    let (source, _s) = backend("source").await;
    let (target, _t) = backend("target").await;
    let (wrong, _w) = backend("maintenance page").await;
    let proxy = Haproxy::start(dir.path(), "haproxy", source, Supervision::Owned)
        .await
        .unwrap();

    // The texts do not name what answers today: refused before anything changes.
    let d = tempfile::tempdir().unwrap();
    let plan_arg = proof_plan(
        d.path(),
        &proxy,
        source,
        target,
        "source = \"old-host\", target = \"new-host\"",
    );
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_ne!(code, 0, "{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("answered `source`") && all.contains("neither `old-host`"),
        "{all}"
    );
    assert_eq!(points_at(&proxy.socket).await, source.to_string());

    // Texts that tell the backends apart: the first answer from the target is timed.
    let d = tempfile::tempdir().unwrap();
    let plan_arg = proof_plan(
        d.path(),
        &proxy,
        source,
        target,
        "source = \"source\", target = \"target\"",
    );
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("answers from the source"), "{out}");
    assert!(
        out.contains(&format!(
            "first request through the proxy answered by {target}"
        )),
        "{out}"
    );
    assert_eq!(points_at(&proxy.socket).await, target.to_string());
    let (code, out, err) = support::run(&["run", "--rollback", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(points_at(&proxy.socket).await, source.to_string());

    // The target address serves something else: the switch is not proven within 500 ms, the
    // run fails and the route points at the source again.
    let d = tempfile::tempdir().unwrap();
    let plan_arg = proof_plan(
        d.path(),
        &proxy,
        source,
        wrong,
        "source = \"source\", target = \"target\", within = \"500ms\"",
    );
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_ne!(code, 0, "{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("no answer through")
            && all.contains("the last said `maintenance page`")
            && all.contains(&format!("the route was put back on {source}")),
        "{all}"
    );
    assert_eq!(
        points_at(&proxy.socket).await,
        source.to_string(),
        "the route is back on the source"
    );
}
