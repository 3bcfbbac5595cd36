//! Service mode against real servers: the daemon watches a replicating PostgreSQL pair, serves
//! its figures, keeps answering when a server dies, and refuses changes without the token.

use crate::support;
use mysql_async::prelude::Queryable;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{PgPair, binary, dns_plan, pdns_with_zone, run, wait_pg_ready, write_plan};

const TOKEN: &str = "serve-test-token-0123456789";

struct Daemon {
    child: Child,
    base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cutover serve` and reads the address it bound from its first line.
fn start(config: &std::path::Path) -> Daemon {
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Daemon { child, base }
}

/// A daemon configuration in `dir` watching `plan`, polling every second, with the token in a
/// file, and `extra` lines.
fn config(dir: &std::path::Path, plan: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let token = dir.join("serve.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npoll = \"1s\"\nplans = [\"{}\"]\ntoken_file = \"{}\"\n{extra}",
            plan.display(),
            token.display()
        ),
    )
    .unwrap();
    config
}

/// [`config`] naming two plans.
fn config_of_two(
    dir: &std::path::Path,
    plans: [&std::path::Path; 2],
    extra: &str,
) -> std::path::PathBuf {
    let config = config(dir, plans[0], extra);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("plans = [\"{}\"]", plans[0].display()),
        &format!(
            "plans = [\"{}\", \"{}\"]",
            plans[0].display(),
            plans[1].display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The value of the sample `name{labels}` in a scrape, labels given in any order.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name
            || !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        value.parse().ok()
    })
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a scrape is answered")
        .text()
        .await
        .unwrap()
}

/// Scrapes until `ok` holds (the poller works on its own clock).
async fn until(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(http, base).await;
        if ok(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never saw {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The backends cutover's own connections hold on `pg` (its application name).
async fn cutover_sessions(pg: &cutover::lab::Postgres) -> Vec<i32> {
    let c = pg.connect("postgres").await.unwrap();
    let rows = c
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'cutover' ORDER BY pid",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<_, i32>(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_serves_a_replicating_pair_and_keeps_answering_when_a_server_dies() {
    let mut pg = PgPair::start().await;
    pg.database("shop").await;
    let plan = write_plan(pg.dir.path(), "m", &pg.pair_toml("shop", ""));
    let plan_text = plan.display().to_string();
    let (code, _, err) = run(&["pg", "start", &plan_text]);
    assert_eq!(code, 0, "{err}");
    wait_pg_ready(&plan).await;

    // A second team's plan of the same pair and a `[[watch]]` of the source database: one
    // session per database still serves all of them.
    let other = write_plan(pg.dir.path(), "m-too", &pg.pair_toml("shop", ""));
    let watch = format!(
        "\n[[watch]]\nname = \"shop-primary\"\npostgres = {{ host = \"127.0.0.1\", port = {}, dbname = \"shop\", user = \"postgres\", password_file = \"{}\" }}\n",
        pg.source.port,
        pg.source.password_file.display()
    );
    let config = config_of_two(pg.dir.path(), [&plan, &other], &watch);
    let daemon = start(&config);
    let http = reqwest::Client::new();
    let base = daemon.base.clone();
    until(&http, &base, "the second plan and the watch read", |t| {
        sample(
            t,
            "cutover_up",
            &[("migration", "m-too"), ("component", "postgres shop")],
        ) == Some(1.0)
            && sample(t, "pg_up", &[("migration", "shop-primary")]) == Some(1.0)
    })
    .await;

    // The pair as the poller reads it: up, replicating, neither side fenced or promoted, and
    // no run yet.
    let text = until(&http, &base, "the pair up with its lag", |t| {
        sample(
            t,
            "cutover_up",
            &[("migration", "m"), ("component", "postgres shop")],
        ) == Some(1.0)
            && sample(
                t,
                "cutover_replication_lag_bytes",
                &[("migration", "m"), ("stream", "shop")],
            )
            .is_some()
    })
    .await;
    assert_eq!(
        sample(&text, "cutover_up", &[("component", "run")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "cutover_pair_source_fenced",
            &[("component", "postgres shop")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "cutover_pair_target_promoted",
            &[("component", "postgres shop")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "cutover_run_steps_done", &[("migration", "m")]),
        Some(0.0)
    );
    assert!(sample(&text, "cutover_run_steps", &[("migration", "m")]).is_some_and(|n| n > 0.0));
    assert_eq!(
        sample(
            &text,
            "cutover_run_phase",
            &[("migration", "m"), ("phase", "fence")]
        ),
        Some(0.0)
    );
    assert!(text.contains("# TYPE cutover_replication_lag_bytes gauge"));
    // The series postgres_exporter's dashboards and alerts query.
    assert!(
        sample(
            &text,
            "pg_replication_slots_pg_wal_lsn_diff",
            &[("migration", "m"), ("database", "shop")]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_up",
            &[("server", &format!("127.0.0.1:{}", pg.target.port))]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "pg_replication_slots_active",
            &[("database", "shop")]
        ),
        Some(1.0)
    );

    // The poller keeps its sessions: the same backends on both servers across three polls, and
    // no connection opened meanwhile. Cut off, it connects again and the pair reads up.
    let connects = |t: &str| sample(t, "cutover_poll_connects_total", &[("migration", "m")]);
    let before = (
        cutover_sessions(&pg.source).await,
        cutover_sessions(&pg.target).await,
        connects(&scrape(&http, &base).await),
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = (
        cutover_sessions(&pg.source).await,
        cutover_sessions(&pg.target).await,
        connects(&scrape(&http, &base).await),
    );
    assert!(
        before.0.len() == 1 && before.1.len() == 1,
        "two plans and a watch of the same databases share one session on each: {before:?}"
    );
    assert_eq!(before, after, "no new session across three polls");
    assert!(before.2.is_some_and(|n| n >= 1.0), "{before:?}");
    let c = pg.source.connect("postgres").await.unwrap();
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cutover'",
        &[],
    )
    .await
    .unwrap();
    let opened = before.2.unwrap();
    until(&http, &base, "the pair read again on new sessions", |t| {
        connects(t).is_some_and(|n| n > opened)
            && sample(
                t,
                "cutover_up",
                &[("migration", "m"), ("component", "postgres shop")],
            ) == Some(1.0)
    })
    .await;
    let again = cutover_sessions(&pg.source).await;
    assert!(
        !again.is_empty() && again.iter().all(|p| !before.0.contains(p)),
        "{again:?} after {:?}",
        before.0
    );
    assert!(sample(&text, "process_resident_memory_bytes", &[]).is_some());

    let status: serde_json::Value = http
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = &status["migrations"][0];
    assert_eq!(m["migration"], "m");
    let pair = m["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "postgres shop")
        .expect("the pair in /status");
    assert_eq!(pair["up"], true, "{status}");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Changes need the token; with it, the TTL job runs (this plan has no DNS records).
    let post = |auth: Option<&str>| {
        let mut r = http.post(format!("{base}/ttl-job"));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("Bearer wrong")).await.unwrap().status(), 401);
    let ok = post(Some(&format!("Bearer {TOKEN}"))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["results"], serde_json::json!([]));

    // A run, journalled by another process: the daemon reads how it ended from the journal
    // and the report, and each side's state from the servers.
    let (code, out, err) = run(&["run", &plan_text]);
    assert_eq!(code, 0, "{out}\n{err}");
    let text = until(&http, &base, "the completed run", |t| {
        sample(
            t,
            "cutover_run_outcome",
            &[("migration", "m"), ("outcome", "completed")],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(&text, "cutover_run_steps_done", &[("migration", "m")]),
        sample(&text, "cutover_run_steps", &[("migration", "m")])
    );
    assert_eq!(
        sample(
            &text,
            "cutover_run_past_point_of_no_return",
            &[("migration", "m")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "cutover_run_running", &[("migration", "m")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "cutover_pair_source_fenced",
            &[("component", "postgres shop")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "cutover_pair_target_promoted",
            &[("component", "postgres shop")]
        ),
        Some(1.0)
    );
    let outage = sample(
        &text,
        "cutover_write_unavailable_seconds",
        &[("component", "postgres shop")],
    );
    assert!(outage.is_some_and(|s| s > 0.0 && s < 60.0), "{outage:?}");
    // The adaptive gate (on by default) as the report has it: its wait, its prediction and the
    // catch-up measured beside it.
    for series in [
        "cutover_gate_wait_seconds",
        "cutover_gate_predicted_catch_up_seconds",
        "cutover_catch_up_seconds",
    ] {
        let v = sample(&text, series, &[("component", "postgres shop")]);
        assert!(
            v.is_some_and(|s| (0.0..60.0).contains(&s)),
            "{series}: {v:?}\n{text}"
        );
    }

    // The target dies: the next polls say so, and scrapes keep being answered at once.
    let pair = [("migration", "m"), ("component", "postgres shop")];
    let read_at = sample(&text, "cutover_last_success_timestamp_seconds", &pair);
    assert!(read_at.is_some_and(|t| t > 1.7e9), "{text}");
    pg.target.process().kill();
    let text = until(&http, &base, "the pair down", |t| {
        sample(t, "cutover_up", &pair) == Some(0.0)
    })
    .await;
    // Down, it keeps the time it was last read, which stops moving.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = scrape(&http, &base).await;
    let last = sample(&later, "cutover_last_success_timestamp_seconds", &pair);
    assert!(
        last.is_some_and(|t| t >= read_at.unwrap_or(0.0))
            && last == sample(&text, "cutover_last_success_timestamp_seconds", &pair),
        "{last:?} then {:?}",
        sample(&text, "cutover_last_success_timestamp_seconds", &pair)
    );
    assert!(
        sample(
            &later,
            "cutover_last_poll_timestamp_seconds",
            &[("migration", "m")]
        ) > last,
        "polls go on while the pair is down"
    );
    assert!(
        sample(
            &text,
            "cutover_replication_lag_bytes",
            &[("stream", "shop")]
        )
        .is_none(),
        "no stale lag for a pair that cannot be read"
    );
    assert!(
        sample(
            &text,
            "pg_replication_slots_pg_wal_lsn_diff",
            &[("database", "shop")]
        )
        .is_none(),
        "no stale exporter lag either"
    );
    assert_eq!(
        sample(
            &text,
            "pg_up",
            &[("server", &format!("127.0.0.1:{}", pg.target.port))]
        ),
        Some(0.0)
    );
    assert!(!text.contains(TOKEN), "the token never appears");

    // SIGTERM stops it cleanly.
    let mut daemon = daemon;
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ttl_job_runs_on_its_schedule_and_on_request_and_the_records_are_watched() {
    let dir = cutover::lab::LabDir::temporary().unwrap();
    let (zone, name) = ("s.example.com", "app.s.example.com");
    let pdns = pdns_with_zone(dir.path(), "pdns", zone, name).await;
    let plan = dns_plan(dir.path(), &pdns, zone, name);
    let daemon = start(&config(dir.path(), &plan, "ttl_every = \"1s\"\n"));
    let http = reqwest::Client::new();
    let base = daemon.base.clone();
    let record = [("migration", "dns-test"), ("record", "app.s.example.com A")];

    // The schedule lowers the TTL (once: later runs find it lowered); the poller then sees the
    // saved safe time, and that no server serves the new value yet.
    let text = until(
        &http,
        &base,
        "the scheduled TTL job and the safe time",
        |t| {
            sample(t, "cutover_ttl_job_runs_total", &[("outcome", "lowered")]) == Some(1.0)
                && sample(t, "cutover_ttl_job_runs_total", &[("outcome", "unchanged")]).is_some()
                && sample(t, "cutover_dns_safe_timestamp_seconds", &record).is_some()
        },
    )
    .await;
    assert_eq!(sample(&text, "cutover_dns_servers", &record), Some(1.0));
    assert_eq!(
        sample(&text, "cutover_dns_servers_serving_target", &record),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "cutover_up",
            &[("component", "dns app.s.example.com")]
        ),
        Some(1.0)
    );
    let safe = sample(&text, "cutover_dns_safe_timestamp_seconds", &record).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now + 250.0..now + 301.0).contains(&safe),
        "one old TTL (300 s) ahead: {safe} vs {now}"
    );

    // On request, with the token: already lowered, nothing changes.
    let r = http
        .post(format!("{base}/ttl-job"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["record"], "app.s.example.com A");
    assert_eq!(body["results"][0]["outcome"], "unchanged", "{body}");

    // The record is switched (by hand here): the poller sees the server serve it.
    let api = cutover_providers::powerdns::PowerDns::new(
        &pdns.api_url(),
        "localhost",
        pdns.api_key().clone(),
    )
    .unwrap();
    use cutover_providers::DnsProvider;
    let now_set = api
        .read(zone, name, cutover_providers::RecordType::A)
        .await
        .unwrap()
        .unwrap();
    let switched = cutover_providers::RecordSet::new(
        name,
        cutover_providers::RecordType::A,
        now_set.ttl,
        &["192.0.2.2".to_owned()],
    );
    api.replace(zone, &switched).await.unwrap();
    until(&http, &base, "the server serving the new value", |t| {
        sample(t, "cutover_dns_servers_serving_target", &record) == Some(1.0)
    })
    .await;
}

/// A deploy adds a column on the source and the target's apply worker stops on it: the daemon
/// says replication is not running and drops the lag-seconds series (an alert on it must not
/// read a dead replica as 0 s behind) while the bytes behind stay visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_replica_is_not_running_with_no_lag_seconds_never_zero() {
    let pg = PgPair::start().await;
    pg.database("shop").await;
    let plan = write_plan(pg.dir.path(), "m", &pg.pair_toml("shop", ""));
    let plan_text = plan.display().to_string();
    let (code, _, err) = run(&["pg", "start", &plan_text]);
    assert_eq!(code, 0, "{err}");
    wait_pg_ready(&plan).await;
    let daemon = start(&config(pg.dir.path(), &plan, ""));
    let http = reqwest::Client::new();
    let stream = [("migration", "m"), ("stream", "shop")];
    until(&http, &daemon.base, "replication running", |t| {
        sample(t, "cutover_replication_running", &stream) == Some(1.0)
            && sample(t, "cutover_replication_lag_seconds", &stream).is_some()
    })
    .await;

    let writer = pg.writer("shop", 100);
    let source = pg.source.connect("shop").await.unwrap();
    source
        .batch_execute("ALTER TABLE writes ADD COLUMN note text")
        .await
        .unwrap();
    let text = until(&http, &daemon.base, "replication not running", |t| {
        sample(t, "cutover_replication_running", &stream) == Some(0.0)
            && sample(t, "cutover_replication_lag_bytes", &stream).is_some_and(|b| b > 0.0)
    })
    .await;
    assert_eq!(
        sample(&text, "cutover_replication_lag_seconds", &stream),
        None,
        "no lag-seconds figure while nothing applies:\n{text}"
    );
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("shop").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean() && check.acked > 0, "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_proxy_every_endpoint_but_healthz_takes_the_token_and_slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    // A plan whose servers do not answer: the endpoints answer all the same.
    let plan = write_plan(
        dir.path(),
        "m",
        "[[postgres]]\nname = \"shop\"\nsource = { host = \"127.0.0.1\", port = 1, dbname = \"shop\", user = \"u\", password_env = \"CUTOVER_TEST_NOPE\" }\ntarget = { host = \"127.0.0.1\", port = 2, dbname = \"shop\", user = \"u\", password_env = \"CUTOVER_TEST_NOPE\" }\napp_roles = [\"app\"]\n",
    );
    // A token file others can read is refused with the fix.
    let config_path = config(dir.path(), &plan, "require_token = true\n");
    use std::os::unix::fs::PermissionsExt;
    let token = dir.path().join("serve.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token_file") && err.contains("chmod"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    let daemon = start(&config_path);
    let http = reqwest::Client::new();
    let base = daemon.base.clone();
    for path in ["/metrics", "/status"] {
        let bare = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{path} without the token");
        let wrong = http
            .get(format!("{base}{path}"))
            .header("Authorization", "Bearer nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let ok = http
            .get(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path} with the token");
        assert!(!ok.text().await.unwrap().contains(TOKEN));
    }
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz stays open for probes");

    // A client that never finishes its headers is cut off (a slow-loris holds nothing).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let began = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the half-sent request");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(12),
        "closed after the header timeout: {waited:?}"
    );
    // Meanwhile and after, others are served (on a new connection: the server closed the
    // client's idle keep-alive one at the same header timeout, a race a pooled reuse loses).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let health = fresh.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// The sessions cutover's own account holds on a MariaDB server (the replica's threads and
/// the test's session left out).
async fn mariadb_sessions(db: &cutover::lab::MariaDb) -> Vec<u64> {
    use mysql_async::prelude::Queryable;
    let mut c = db.connect(None).await.unwrap();
    let ids: Vec<u64> = c
        .query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'cutover' AND ID <> CONNECTION_ID() AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID') ORDER BY ID",
        )
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_reads_a_mariadb_pair_on_the_same_sessions_poll_after_poll() {
    let m = support::MariaPair::start().await;
    let plan = write_plan(m.dir.path(), "my", &m.pair_toml());
    let plan_text = plan.display().to_string();
    let (code, _, err) = run(&["mysql", "start", &plan_text]);
    assert_eq!(code, 0, "{err}");
    // A second team's plan of the same pair, and a `[[watch]]` of the replica: the daemon
    // still holds one session per server for all three.
    let other = write_plan(m.dir.path(), "my-too", &m.pair_toml());
    let watch = format!(
        "\n[[watch]]\nname = \"replica\"\nmysql = {{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}\n",
        m.target.port,
        m.target.password_file.display()
    );
    let config = config_of_two(m.dir.path(), [&plan, &other], &watch);
    let daemon = start(&config);
    let http = reqwest::Client::new();
    let component = [("migration", "my"), ("component", "mysql app-db")];
    until(&http, &daemon.base, "the pair up and replicating", |t| {
        sample(t, "cutover_up", &component) == Some(1.0)
            && sample(
                t,
                "cutover_replication_running",
                &[("migration", "my"), ("stream", "app-db")],
            ) == Some(1.0)
            && sample(
                t,
                "cutover_up",
                &[("migration", "my-too"), ("component", "mysql app-db")],
            ) == Some(1.0)
            && sample(t, "mysql_up", &[("migration", "replica")]) == Some(1.0)
    })
    .await;
    let before = (
        mariadb_sessions(&m.source).await,
        mariadb_sessions(&m.target).await,
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = (
        mariadb_sessions(&m.source).await,
        mariadb_sessions(&m.target).await,
    );
    assert!(
        before.0.len() == 1 && before.1.len() == 1,
        "two plans and a watch of the same servers share one session on each: {before:?}"
    );
    assert_eq!(before, after, "no new session across three polls");
    let text = scrape(&http, &daemon.base).await;
    assert_eq!(sample(&text, "cutover_up", &component), Some(1.0), "{text}");
    // The series mysqld_exporter's dashboards and alerts query.
    let replica = [("migration", "my"), ("master_host", "127.0.0.1")];
    assert_eq!(
        sample(&text, "mysql_slave_status_slave_sql_running", &replica),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "mysql_slave_status_slave_io_running", &replica),
        Some(1.0)
    );
    assert!(
        sample(&text, "mysql_slave_status_seconds_behind_master", &replica)
            .is_some_and(|s| s >= 0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mysql_up",
            &[("server", &format!("127.0.0.1:{}", m.source.port))]
        ),
        Some(1.0)
    );
}

/// Replication no migration plan names: a `[[watch]]` of a PostgreSQL primary (its logical
/// slot and walsender) and of a MariaDB replica (its channel), exported under the community
/// exporters' names; a configuration naming neither a plan nor a watch, or a watch with no
/// server, is refused with every problem at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_watches_replication_without_a_plan_under_the_exporters_names() {
    let pg = PgPair::start().await;
    pg.database("shop").await;
    let plan = write_plan(pg.dir.path(), "m", &pg.pair_toml("shop", ""));
    let (code, _, err) = run(&["pg", "start", &plan.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    wait_pg_ready(&plan).await;
    let m = support::MariaPair::start().await;
    let my_plan = write_plan(m.dir.path(), "my", &m.pair_toml());
    let (code, _, err) = run(&["mysql", "start", &my_plan.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    // pt-heartbeat's table, written on the source, replicated to the watched replica.
    {
        let mut c = m.source.connect(None).await.unwrap();
        c.query_drop(
            "CREATE TABLE app.heartbeat (ts VARCHAR(26) NOT NULL, server_id INT UNSIGNED NOT NULL PRIMARY KEY);
             INSERT INTO app.heartbeat VALUES (DATE_FORMAT(NOW(6), '%Y-%m-%d %H:%i:%s.%f'), @@server_id)",
        )
        .await
        .unwrap();
    }

    let config = pg.dir.path().join("watch.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npoll = \"1s\"\n\n[[watch]]\nname = \"billing-primary\"\npostgres = {{ host = \"127.0.0.1\", port = {}, dbname = \"shop\", user = \"postgres\", password_file = \"{}\" }}\n\n[[watch]]\nname = \"billing-subscriber\"\npostgres = {{ host = \"127.0.0.1\", port = {}, dbname = \"shop\", user = \"postgres\", password_file = \"{}\" }}\n\n[[watch]]\nname = \"app-replica\"\nmysql = {{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}\nheartbeat = \"app.heartbeat\"\n",
            pg.source.port,
            pg.source.password_file.display(),
            pg.target.port,
            pg.target.password_file.display(),
            m.target.port,
            m.target.password_file.display()
        ),
    )
    .unwrap();
    let daemon = start(&config);
    let http = reqwest::Client::new();
    let text = until(&http, &daemon.base, "every watch read", |t| {
        sample(t, "pg_up", &[("migration", "billing-primary")]) == Some(1.0)
            && sample(t, "pg_up", &[("migration", "billing-subscriber")]) == Some(1.0)
            && sample(t, "mysql_up", &[("migration", "app-replica")]) == Some(1.0)
            && sample(
                t,
                "mysql_heartbeat_stored_timestamp_seconds",
                &[("migration", "app-replica")],
            )
            .is_some()
    })
    .await;
    // postgres_exporter's older slot names, the WAL position of each walsender, the standby
    // series (a primary is no replica), and the subscriber side no exporter offers.
    assert_eq!(
        sample(
            &text,
            "pg_replication_slot_slot_is_active",
            &[("migration", "billing-primary"), ("slot_type", "logical")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "pg_replication_slot_slot_current_wal_lsn",
            &[("migration", "billing-primary"), ("slot_type", "logical")]
        )
        .is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "pg_stat_replication_pg_current_wal_lsn_bytes",
            &[("migration", "billing-primary"), ("state", "streaming")]
        )
        .is_some_and(|v| v > 0.0),
        "{text}"
    );
    for watch in ["billing-primary", "billing-subscriber"] {
        assert_eq!(
            sample(&text, "pg_replication_is_replica", &[("migration", watch)]),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "pg_replication_lag_seconds", &[("migration", watch)]),
            Some(0.0),
            "{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "pg_stat_subscription_worker_running",
            &[("migration", "billing-subscriber")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_stat_subscription_tables_not_ready",
            &[("migration", "billing-subscriber")]
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "pg_stat_subscription_received_unapplied_bytes",
            &[("migration", "billing-subscriber")]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_stat_subscription_apply_error_count",
            &[("migration", "billing-subscriber")]
        ),
        Some(0.0),
        "{text}"
    );
    let stored = sample(
        &text,
        "mysql_heartbeat_stored_timestamp_seconds",
        &[("migration", "app-replica"), ("server_id", "1")],
    )
    .unwrap_or_else(|| panic!("the heartbeat under the source's server_id:\n{text}"));
    let now = sample(
        &text,
        "mysql_heartbeat_now_timestamp_seconds",
        &[("migration", "app-replica"), ("server_id", "1")],
    )
    .unwrap();
    assert!(stored > 1.7e9 && now >= stored, "{stored} {now}");
    assert!(
        sample(
            &text,
            "pg_replication_slots_pg_wal_lsn_diff",
            &[("migration", "billing-primary"), ("database", "shop")]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_replication_slots_active",
            &[("migration", "billing-primary"), ("database", "shop")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "pg_stat_replication_pg_wal_lsn_diff",
            &[("migration", "billing-primary"), ("state", "streaming")]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mysql_slave_status_slave_sql_running",
            &[("migration", "app-replica"), ("master_host", "127.0.0.1")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cutover_up",
            &[
                ("migration", "app-replica"),
                ("component", "watch app-replica")
            ]
        ),
        Some(1.0)
    );

    // One watched server stops: it reads down within two polls, the other's series keep
    // updating (its slot's lag figure moves with a writer), and scrapes stay fast.
    let mut m = m;
    let writer = pg.writer("shop", 100);
    let before = sample(
        &scrape(&http, &daemon.base).await,
        "pg_replication_slots_pg_wal_lsn_diff",
        &[("migration", "billing-primary"), ("database", "shop")],
    );
    m.target.process().kill();
    let stopped = Instant::now();
    let text = until(&http, &daemon.base, "the replica down", |t| {
        sample(t, "mysql_up", &[("migration", "app-replica")]) == Some(0.0)
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "down within two polls of a second: {:?}",
        stopped.elapsed()
    );
    assert!(
        sample(
            &text,
            "mysql_slave_status_slave_sql_running",
            &[("migration", "app-replica")]
        )
        .is_none(),
        "no stale channel figures"
    );
    until(&http, &daemon.base, "the primary's figures move", |t| {
        let now = sample(
            t,
            "pg_replication_slots_pg_wal_lsn_diff",
            &[("migration", "billing-primary"), ("database", "shop")],
        );
        now.is_some()
            && now != before
            && sample(t, "pg_up", &[("migration", "billing-primary")]) == Some(1.0)
    })
    .await;
    let t = Instant::now();
    let _ = scrape(&http, &daemon.base).await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "a scrape answers from the last poll"
    );
    let _ = writer.stop().await;
    drop(daemon);

    // The shipped example loads as it is.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/serve/watch.toml");
    let loaded = cutover::serve::config::load(&example).expect("the example loads");
    assert_eq!(loaded.watches.len(), 3);

    let bad = pg.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\n\n[[watch]]\nname = \"a b\"\n\n[[watch]]\nname = \"ok\"\n\n[[watch]]\nname = \"hb\"\nmysql = { host = \"127.0.0.1\", user = \"m\" }\nheartbeat = \"no_table\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&["serve", "--config", &bad.display().to_string()]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("watch[0].name")
            && err.contains("watch[1]`: no server")
            && err.contains("watch[2].heartbeat"),
        "every problem at once:\n{err}"
    );
}

/// A streaming standby made by `pg_basebackup -R` through a physical slot, watched without a
/// plan: the primary exports the walsender and the physical slot under both naming
/// generations, the standby says it is a replica with its lag, and a write on the primary
/// reaches the standby while the series are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_standby_and_its_primary_are_watched_without_a_plan() {
    use cutover::lab::{LabDir, Postgres, Supervision};
    let dir = LabDir::temporary().unwrap();
    let primary = Postgres::start(dir.path(), "primary", Supervision::Owned)
        .await
        .unwrap();
    let standby = Postgres::start_standby(
        dir.path(),
        "standby",
        &primary,
        "standby_1",
        Supervision::Owned,
    )
    .await
    .unwrap();
    let endpoint = |pg: &Postgres| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"postgres\", user = \"postgres\", password_file = \"{}\" }}",
            pg.port,
            pg.password_file.display()
        )
    };
    let config = dir.path().join("watch.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npoll = \"1s\"\n\n[[watch]]\nname = \"primary\"\npostgres = {}\n\n[[watch]]\nname = \"standby\"\npostgres = {}\n",
            endpoint(&primary),
            endpoint(&standby)
        ),
    )
    .unwrap();
    let c = primary.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let daemon = start(&config);
    let http = reqwest::Client::new();
    let text = until(
        &http,
        &daemon.base,
        "both servers read, the slot active, the standby's first reply in",
        |t| {
            // A walsender has no replay position until the standby's first status reply,
            // and then no byte lag is exported (never a made-up 0): wait for that reply.
            sample(t, "pg_up", &[("migration", "standby")]) == Some(1.0)
                && sample(
                    t,
                    "pg_replication_slots_active",
                    &[("migration", "primary"), ("slot_name", "standby_1")],
                ) == Some(1.0)
                && sample(
                    t,
                    "pg_stat_replication_pg_wal_lsn_diff",
                    &[("migration", "primary"), ("slot_name", "standby_1")],
                )
                .is_some()
        },
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "pg_replication_is_replica",
            &[("migration", "standby")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_replication_is_replica",
            &[("migration", "primary")]
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "pg_replication_lag_seconds",
            &[("migration", "standby")]
        )
        .is_some_and(|s| s >= 0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_replication_slot_slot_is_active",
            &[
                ("migration", "primary"),
                ("slot_name", "standby_1"),
                ("slot_type", "physical")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "pg_stat_replication_pg_wal_lsn_diff",
            &[
                ("migration", "primary"),
                ("slot_name", "standby_1"),
                ("state", "streaming")
            ]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pg_replication_slot_wal_status",
            &[
                ("migration", "primary"),
                ("slot_name", "standby_1"),
                ("wal_status", "reserved")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    // The standby really replays what the primary writes.
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let s = standby.connect("postgres").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the standby replays the CREATE TABLE, the table does not exist there.
        let n: i64 = match s.query_one("SELECT count(*) FROM t", &[]).await {
            Ok(row) => row.get(0),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
            Err(e) => panic!("reading the standby: {e}"),
        };
        if n == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never replayed the row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemon);
}

/// Sends `signal` to process `pid` and every process it started (a PostgreSQL cluster: the
/// postmaster and its backends, the daemon's session among them).
fn signal_tree(pid: u32, signal: i32) {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            pids.push(child);
        }
    }
    for p in pids {
        unsafe { libc::kill(p as i32, signal) };
    }
}

/// Two pairs in one plan, one on a server that hangs (every process of it stopped): the other
/// pair is still read every poll on the sessions it had (its last-read time keeps moving, its
/// backends stay the same), scrapes answer at once, and the hung pair reads down. Reading the
/// pairs one after another, with the run's status bounded as a whole, held the healthy pair up
/// for the hung one's 10 s timeouts and reconnected it every poll; waiting for every pair's
/// reading held it up for the hung one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_server_holds_up_only_its_own_pair() {
    use cutover::lab::{Postgres, Supervision};
    let pg = PgPair::start().await;
    pg.database("shop").await;
    let mut other = Postgres::start(pg.dir.path(), "pg-other", Supervision::Owned)
        .await
        .unwrap();
    for server in [&pg.source, &other] {
        let c = server.connect("postgres").await.unwrap();
        c.batch_execute("CREATE DATABASE hung").await.unwrap();
    }
    let endpoint = |server: &Postgres| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"hung\", user = \"postgres\", password_file = \"{}\" }}",
            server.port,
            server.password_file.display()
        )
    };
    let body = format!(
        "{}\n[[postgres]]\nname = \"hung\"\nsource = {}\ntarget = {}\napp_roles = [\"app\"]\n",
        pg.pair_toml("shop", ""),
        endpoint(&pg.source),
        endpoint(&other)
    );
    let plan = write_plan(pg.dir.path(), "two", &body);
    let daemon = start(&config(pg.dir.path(), &plan, ""));
    let http = reqwest::Client::new();
    let shop = [("migration", "two"), ("component", "postgres shop")];
    let hung = [("migration", "two"), ("component", "postgres hung")];
    until(&http, &daemon.base, "both pairs read", |t| {
        sample(t, "cutover_up", &shop) == Some(1.0) && sample(t, "cutover_up", &hung) == Some(1.0)
    })
    .await;
    let sessions = cutover_sessions(&pg.target).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");

    let postmaster = other.process().pid();
    signal_tree(postmaster, libc::SIGSTOP);
    let hung_at = Instant::now();
    // Over the hung pair's first read bound (10 s), the healthy pair is read every poll.
    let mut seen = Vec::new();
    while hung_at.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let text = scrape(&http, &daemon.base).await;
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "a scrape waited {:?}",
            asked.elapsed()
        );
        if let Some(t) = sample(&text, "cutover_last_success_timestamp_seconds", &shop)
            && seen.last() != Some(&t)
        {
            seen.push(t);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = until(&http, &daemon.base, "the hung pair down", |t| {
        sample(t, "cutover_up", &hung) == Some(0.0)
    })
    .await;
    let after = cutover_sessions(&pg.target).await;
    signal_tree(postmaster, libc::SIGCONT);
    assert!(
        seen.len() >= 4,
        "the healthy pair was read {} times in 8 s while the other hung: {seen:?}",
        seen.len()
    );
    assert_eq!(sample(&text, "cutover_up", &shop), Some(1.0), "{text}");
    assert_eq!(after, sessions, "the healthy pair kept its session");
    drop(daemon);
}
