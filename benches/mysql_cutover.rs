//! Write-unavailability of a MariaDB cutover (DESIGN §8, issue #4).
//!
//! Per run: two fresh MariaDB 10.11 servers on 127.0.0.1, the app database streamed and
//! replicating, a writer inserting ~1,000 rows/s as the app user (two connections) into the
//! source and moving to the target when the source refuses it, then `cutover`. Per run:
//! cutover's own fence -> target writable time, the longest gap between the writer's
//! acknowledged inserts across the cutover, the longest gap elsewhere in the same run (this
//! machine's own stalls: the baseline), and rows lost or duplicated.
//!
//! Saturating mode (`--saturate N`): N more app connections commit multi-statement
//! transactions (an update, a delete and an insert over a 300,000-row table larger than the
//! lab's 64 MB buffer pool) as fast as they can, following the writable server like the
//! checked writer. Runs alternate `apply_workers = 0` (one applier: the baseline) and
//! `apply_workers = W` (`--workers W`, default 4); each run reports the source's commit rate
//! and the target's apply rate over 3 s before the cutover, and a refused gate is counted,
//! not fatal.
//!
//! TLS mode (`--tls 1`): runs alternate plaintext (`ssl_mode = "disabled"`, the baseline) and
//! verified TLS (servers with `require_secure_transport` and a CA the lab makes,
//! `ssl_mode = "verify_identity"` for cutover and the replica's link), each half summarised,
//! with the TLS/plaintext ratio of the p50 window.
//!
//! The checked writer and the saturating load run on their own runtime (two threads of their
//! own, `common::apps`), as an app is another process: on cutover's runtime a client's TLS
//! handshake or transaction would hold the window's next statement until it yields.
//! `CUTOVER_BENCH_LOG=cutover::mysql=trace` logs each window statement's round trip.
//!
//! `cargo bench --bench mysql_cutover -- [--runs N] [--rate TX_PER_S] [--saturate N] [--workers W] [--tls 1] [--budget-ms MS] [--alternate 0] [--writer-retry-ms MS] [--round-trips N]`
//!
//! `--round-trips N`: instead, N statement round trips to an idle TLS-only server and to a
//! plaintext one (what TLS adds to each of the window's statements, nothing else running).
//!
//! `--writer-retry-ms MS` (default 3): how long the checked writer waits before asking both
//! servers again after a refusal. Each ask opens a connection to each server: over TLS a
//! handshake on the same two cores the window runs on.
//!
//! `--alternate 0` runs every run with `--workers W` (and TLS off): no baseline runs, each
//! run's baseline is then its largest writer gap away from the cutover.
//!
//! `--budget-ms MS` sets `window_budget` (without it, `"off"`: the fixed ceilings alone, the
//! figures before the adaptive gate): each run reports the adaptive gate's wait and its
//! predicted catch-up beside the catch-up stage it measured.

mod common;

use common::{Run, arg, print_header, print_run, print_summary, runtime};

use std::time::Duration;

use cutover::lab::PLAN_EXEMPT_USERS;
use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig, TABLE_SQL};
use cutover::lab::tls::LabCa;
use cutover::lab::{LabDir, MariaDb, Supervision};
use cutover::mysql::{Pair, start};
use cutover::plan;
use mysql_async::prelude::Queryable;

const APP_PASSWORD: &str = "bench-password";

fn app_opts(m: &MariaDb) -> mysql_async::Opts {
    m.user_opts("app", APP_PASSWORD, "app")
}

/// Transactions per second committed on the source and applied on the target over `span`
/// (GTID sequence numbers of domain 0).
async fn rates(source: &MariaDb, target: &MariaDb, span: Duration) -> (f64, f64) {
    async fn seq(m: &MariaDb, var: &str) -> u64 {
        let mut c = m.connect(None).await.expect("connect");
        let pos: String = c
            .query_first(format!("SELECT @@GLOBAL.{var}"))
            .await
            .expect("gtid")
            .unwrap_or_default();
        pos.split(',')
            .filter(|g| g.starts_with("0-"))
            .filter_map(|g| g.rsplit('-').next()?.parse().ok())
            .max()
            .unwrap_or(0)
    }
    let (s0, t0) = (
        seq(source, "gtid_binlog_pos").await,
        seq(target, "gtid_slave_pos").await,
    );
    tokio::time::sleep(span).await;
    let (s1, t1) = (
        seq(source, "gtid_binlog_pos").await,
        seq(target, "gtid_slave_pos").await,
    );
    let secs = span.as_secs_f64();
    (
        (s1 - s0) as f64 / secs,
        (t1.saturating_sub(t0)) as f64 / secs,
    )
}

/// One saturating load connection: transactions as fast as the server takes them, on
/// whichever server accepts the app (the fence's read-only refusal moves it on).
async fn load_task(
    servers: [mysql_async::Opts; 2],
    task: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use rand::Rng;
    let mut done = 0;
    let mut on = 0;
    let mut next_id = 1_000_000 + task * 10_000_000;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(mut c) = mysql_async::Conn::new(servers[on].clone()).await else {
            on = 1 - on;
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (a, b) = {
                let mut r = rand::rng();
                (
                    r.random_range(1..=300_000u64),
                    r.random_range(1..=300_000u64),
                )
            };
            next_id += 1;
            let tx = async {
                c.query_drop("START TRANSACTION").await?;
                c.exec_drop(
                    "UPDATE load_rows SET v = v + 1, pad = MD5(RAND()) WHERE id = ?",
                    (a,),
                )
                .await?;
                c.exec_drop("DELETE FROM load_rows WHERE id = ?", (b,)).await?;
                c.exec_drop(
                    "INSERT INTO load_rows (id, v, pad) VALUES (?, 0, REPEAT('x', 200)), (?, 0, REPEAT('y', 200))",
                    (b, next_id),
                )
                .await?;
                c.query_drop("COMMIT").await
            }
            .await;
            match tx {
                Ok(()) => done += 1,
                Err(_) => {
                    let _ = c.query_drop("ROLLBACK").await;
                    on = 1 - on;
                    break;
                }
            }
        }
    }
    done
}

async fn one_run(
    i: u32,
    rate: u32,
    saturate: u32,
    workers: u32,
    tls: bool,
    budget_ms: u32,
) -> Option<Run> {
    let dir = LabDir::temporary().expect("lab dir");
    let ca = LabCa::create(&dir.path().join("ca"), "bench").expect("CA");
    let server_tls = common::server_tls(&ca);
    let with = tls.then_some(&server_tls);
    let (source, target) = tokio::try_join!(
        MariaDb::start_with(dir.path(), "maria-source", 1, Supervision::Owned, with),
        MariaDb::start_with(dir.path(), "maria-target", 2, Supervision::Owned, with),
    )
    .expect("servers start");
    let transport = if tls {
        format!(
            ", ssl_mode = \"verify_identity\", ssl_ca = \"{}\"",
            ca.ca_file.display()
        )
    } else {
        ", ssl_mode = \"disabled\"".to_owned()
    };
    for m in [&source, &target] {
        let mut c = m.connect(None).await.expect("connect");
        c.query_drop(format!(
            "SET SESSION sql_log_bin = 0; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}';
             GRANT ALL PRIVILEGES ON app.* TO 'app'@'127.0.0.1';"
        ))
        .await
        .expect("app user");
    }
    let mut c = source.connect(None).await.expect("connect");
    c.query_drop(format!(
        "CREATE DATABASE app; USE app; {TABLE_SQL};
         INSERT INTO writes (k, payload) SELECT -seq, MD5(seq) FROM seq_1_to_10000;
         CREATE TABLE load_rows (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, pad VARCHAR(255) NOT NULL);
         {}",
        if saturate > 0 {
            "INSERT INTO load_rows SELECT seq, 0, REPEAT(MD5(seq), 6) FROM seq_1_to_300000;"
        } else {
            ""
        }
    ))
    .await
    .expect("app table");
    let endpoint = |m: &MariaDb| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\"{transport} }}",
            m.port,
            m.password_file.display()
        )
    };
    let text = format!(
        "[migration]\nname = \"bench{i}\"\nstate_dir = \"{}\"\n{}[[mysql]]\nname = \"app\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\napply_workers = {workers}\n{PLAN_EXEMPT_USERS}\n",
        dir.path().join("state").display(),
        if budget_ms > 0 {
            format!("window_budget = \"{budget_ms}ms\"\ngate_timeout = \"60s\"\n")
        } else {
            "window_budget = \"off\"\n".to_owned()
        },
        endpoint(&source),
        endpoint(&target),
    );
    let plan = plan::parse_str(&text, std::path::Path::new("bench.toml")).expect("plan");
    let pair = Pair::select(&plan, None).remove(0);
    start::start(&pair).await.expect("start");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..saturate)
        .map(|task| {
            common::apps().spawn(load_task(
                [app_opts(&source), app_opts(&target)],
                task.into(),
                stop.clone(),
            ))
        })
        .collect();
    let retry = Duration::from_millis(arg("--writer-retry-ms", 3).into());
    let writer = {
        let _apps = common::apps().enter();
        MyWriter::start_retrying(
            MyWriterConfig {
                source: app_opts(&source),
                target: app_opts(&target),
                rate,
                tasks: 2,
            },
            retry,
        )
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (committed, applied) = rates(&source, &target, Duration::from_secs(3)).await;
    println!(
        "      workers {workers}: source commits {committed:.0} tx/s, target applies {applied:.0} tx/s"
    );
    let timed = common::try_cut_over(&pair).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut load_tx = 0;
    for t in load {
        load_tx += t.await.expect("load task");
    }
    let ledger = writer.stop().await;
    let timed = match timed {
        Ok(t) => t,
        Err(e) => {
            println!("      REFUSED ({load_tx} load transactions): {e}");
            return None;
        }
    };
    let mut t = target.connect(Some("app")).await.expect("connect");
    let check = ledger.check(&mut t).await.expect("check");
    assert!(check.id_problems.is_empty(), "{check:?}");
    let ms = |key: &str| {
        timed.report.finished.detail[key]
            .as_f64()
            .unwrap_or_default()
    };
    let stages = format!(
        "fence {:.1}, catch-up {:.1}, promote {:.1}",
        ms("fence_ms"),
        ms("catchup_ms"),
        ms("promote_ms")
    );
    let stages = match &timed.waited {
        Some(w) => format!(
            "{stages}; gate waited {:.1} s, predicted catch-up {}",
            w.waited_ms / 1000.0,
            common::predicted(w)
        ),
        None => stages,
    };
    let mut run = timed.run(&ledger, &check, stages);
    run.stages = format!(
        "{}; workers {workers}, source {committed:.0} tx/s, target applied {applied:.0} tx/s",
        run.stages
    );
    Some(run)
}

/// `--round-trips N`: what one statement's round trip costs over verified TLS against
/// plaintext, with nothing else running: N `DO 1` on an idle session to a TLS-only server and
/// to a plaintext one, interleaved in blocks of 100, each side's median and mean.
async fn round_trips(n: u32) {
    let dir = LabDir::temporary().expect("lab dir");
    let ca = LabCa::create(&dir.path().join("ca"), "bench").expect("CA");
    let server_tls = common::server_tls(&ca);
    let (plain, tls) = tokio::try_join!(
        MariaDb::start_with(dir.path(), "maria-plain", 1, Supervision::Owned, None),
        MariaDb::start_with(
            dir.path(),
            "maria-tls",
            2,
            Supervision::Owned,
            Some(&server_tls)
        ),
    )
    .expect("servers start");
    let mut conns = [
        plain.connect(None).await.expect("connect"),
        tls.connect(None).await.expect("connect"),
    ];
    let mut took: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..n.div_ceil(100) {
        for (c, t) in conns.iter_mut().zip(took.iter_mut()) {
            for _ in 0..100 {
                let started = std::time::Instant::now();
                c.query_drop("DO 1").await.expect("DO 1");
                t.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v.iter().sum::<f64>() / v.len() as f64)
    };
    let (p, t) = (stats(&mut took[0]), stats(&mut took[1]));
    println!(
        "one round trip (DO 1), {} a side: plaintext median {:.1} us, mean {:.1} us; TLS median {:.1} us, mean {:.1} us; TLS adds {:.1} us (median)",
        took[0].len(),
        p.0,
        p.1,
        t.0,
        t.1,
        t.0 - p.0
    );
}

fn main() {
    let trips = arg("--round-trips", 0);
    if trips > 0 {
        runtime().block_on(round_trips(trips));
        return;
    }
    let runs = arg("--runs", 10);
    let rate = arg("--rate", 1000);
    let saturate = arg("--saturate", 0);
    let workers = arg("--workers", 4);
    let budget_ms = arg("--budget-ms", 0);
    let tls = arg("--tls", 0) == 1;
    let alternate = arg("--alternate", 1) == 1;
    runtime().block_on(async move {
        println!(
            "MariaDB cutover benchmark: {runs} runs, writer at {rate} inserts/s (2 connections), {saturate} saturating connections, fresh servers per run"
        );
        print_header();
        let (mut results, mut baseline) = (Vec::new(), Vec::new());
        let (mut refused, mut baseline_refused) = (0, 0);
        for i in 0..runs {
            // Saturating: odd runs are the one-applier baseline. TLS mode: odd runs over
            // verified TLS, even runs the plaintext baseline.
            let base = (saturate > 0 || tls) && alternate && i % 2 == 1;
            let w = if saturate > 0 && base { 0 } else { workers };
            match one_run(i, rate, saturate, w, tls && base, budget_ms).await {
                Some(r) => {
                    print_run(i, &r);
                    if base { baseline.push(r) } else { results.push(r) }
                }
                None if base => baseline_refused += 1,
                None => refused += 1,
            }
        }
        if saturate > 0 {
            println!("apply_workers = {workers}: {} cut over, {refused} refused", results.len());
        }
        if !results.is_empty() {
            print_summary(&results);
        }
        if saturate > 0 {
            println!("apply_workers = 0 (baseline): {} cut over, {baseline_refused} refused", baseline.len());
            if !baseline.is_empty() {
                print_summary(&baseline);
            }
        }
        if tls && saturate == 0 {
            println!("(above: plaintext) verified TLS runs: {} cut over, {baseline_refused} refused", baseline.len());
            if !baseline.is_empty() {
                print_summary(&baseline);
                let p50 = |rs: &[Run]| {
                    let mut v: Vec<f64> = rs.iter().map(|r| r.unavailable_ms).collect();
                    common::percentile(&mut v, 0.5)
                };
                println!(
                    "TLS / plaintext, p50 fence -> writable: {:.2}",
                    p50(&baseline) / p50(&results).max(0.001)
                );
            }
        }
    });
}
