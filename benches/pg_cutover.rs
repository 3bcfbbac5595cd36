//! Write-unavailability of a PostgreSQL cutover (DESIGN §8).
//!
//! Two real PostgreSQL 15 clusters on 127.0.0.1; for each run a fresh database pair and app
//! role, replication started and caught up, a writer committing ~1,000 transactions/s to the
//! source, then `cutover`. Per run: cutover's own fence -> target-writable time, the longest gap
//! between the writer's successful commits across the cutover, the longest gap anywhere else in
//! the same run (this machine's own stalls: the baseline), and rows lost or duplicated.
//!
//! The checked writer and the saturating load run on their own runtime (two threads of their
//! own, `common::apps`), as an app is another process: on cutover's runtime a client's TLS
//! handshake or transaction would hold the window's next statement until it yields.
//! `CUTOVER_BENCH_LOG=cutover::mysql=trace` logs each window statement's round trip.
//!
//! `cargo bench --bench pg_cutover -- [--runs N] [--rate TX_PER_S] [--tls 1] [--saturate N] [--load-retry-ms MS] [--reverse 1]`
//!
//! `--reverse 1` sets `reverse_replication = true` (what a plan needs unless it accepts a one-way
//! cutover): the reverse subscription is created inside the window, after the catch-up.
//!
//! Saturating mode (`--saturate N`): N more app connections commit multi-statement
//! transactions (an update, a delete, two inserts on a 300,000-row table) as fast as they can
//! beside the checked writer, with the plan's defaults (the adaptive gate's 100 ms budget);
//! a refused run is counted, not failed, and the source's commit rate and the target's apply
//! rate are printed before each cutover. A refused load connection tries the other server after
//! `--load-retry-ms` (default 5): every try is a forked backend and a SCRAM exchange on the same
//! cores as the apply.
//!
//! With `--tls 1` a second pair of clusters takes TLS only (`hostssl`, a CA the lab makes) and
//! runs alternate in the same job: even runs plaintext (`sslmode = "disable"`, the baseline),
//! odd runs verified TLS (`verify-full`, cutover's connections and the subscription's link);
//! each half gets its own summary, and the TLS/plaintext ratio of the p50 window is printed.

mod common;

use common::{Run, arg, print_header, print_run, print_summary, runtime};

use std::time::Duration;

use cutover::lab::tls::LabCa;
use cutover::lab::writer::{self, Writer, WriterConfig};
use cutover::lab::{LabDir, Postgres, Supervision};
use cutover::plan;
use cutover::postgres::{Pair, cleanup, start, status};

fn main() {
    let runs = arg("--runs", 10);
    let rate = arg("--rate", 1000);
    let tls = arg("--tls", 0) == 1;
    let saturate = arg("--saturate", 0);
    let rt = runtime();
    rt.block_on(async move {
        let dir = LabDir::temporary().expect("lab dir");
        let ca = LabCa::create(&dir.path().join("ca"), "bench").expect("CA");
        let server_tls = common::server_tls(&ca);
        let (source, target) = tokio::try_join!(
            Postgres::start(dir.path(), "pg-source", Supervision::Owned),
            Postgres::start(dir.path(), "pg-target", Supervision::Owned),
        )
        .expect("clusters start");
        let tls_pair = if tls {
            Some(
                tokio::try_join!(
                    Postgres::start_with(
                        dir.path(),
                        "pg-tls-source",
                        Supervision::Owned,
                        Some(&server_tls)
                    ),
                    Postgres::start_with(
                        dir.path(),
                        "pg-tls-target",
                        Supervision::Owned,
                        Some(&server_tls)
                    ),
                )
                .expect("TLS clusters start"),
            )
        } else {
            None
        };
        println!(
            "PostgreSQL cutover benchmark: {runs} runs, writer at {rate} tx/s (2 connections), {saturate} saturating connections{}",
            if tls {
                "; odd runs over verified TLS"
            } else {
                ""
            }
        );
        let mut refused = 0;
        print_header();
        let (mut plain, mut over_tls) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let r = match (&tls_pair, i % 2) {
                (Some((s, t)), 1) => {
                    let sec = format!(
                        ", sslmode = \"verify-full\", sslrootcert = \"{}\"",
                        ca.ca_file.display()
                    );
                    let Some(r) = one_run(&dir, s, t, i, rate, &sec, saturate).await else {
                        refused += 1;
                        continue;
                    };
                    over_tls.push(r.clone());
                    r
                }
                _ => {
                    let Some(r) = one_run(
                        &dir,
                        &source,
                        &target,
                        i,
                        rate,
                        ", sslmode = \"disable\"",
                        saturate,
                    )
                    .await
                    else {
                        refused += 1;
                        continue;
                    };
                    plain.push(r.clone());
                    r
                }
            };
            print_run(i, &r);
        }
        println!("refused: {refused} of {runs}");
        if plain.is_empty() {
            return;
        }
        if tls {
            println!("plaintext runs:");
        }
        print_summary(&plain);
        if tls {
            println!("verified TLS runs:");
            print_summary(&over_tls);
            let p50 = |rs: &[Run]| {
                let mut v: Vec<f64> = rs.iter().map(|r| r.unavailable_ms).collect();
                common::percentile(&mut v, 0.5)
            };
            println!(
                "TLS / plaintext, p50 fence -> writable: {:.2}",
                p50(&over_tls) / p50(&plain).max(0.001)
            );
        }
    });
}

/// One saturating connection: multi-statement transactions as fast as the source takes them,
/// reconnecting (to the source, then the target) when the fence ends its session, until
/// `stop`. Returns the transactions it committed.
async fn load_task(
    servers: [tokio_postgres::Config; 2],
    task: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    retry: Duration,
) -> u64 {
    use rand::Rng;
    let mut done = 0;
    let mut on = 0;
    let mut next_id = 1_000_000 + task * 10_000_000;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok((c, conn)) = servers[on].connect(tokio_postgres::NoTls).await else {
            on = 1 - on;
            tokio::time::sleep(retry).await;
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (a, b) = {
                let mut r = rand::rng();
                (
                    r.random_range(1..=300_000i64),
                    r.random_range(1..=300_000i64),
                )
            };
            next_id += 1;
            let sql = format!(
                "BEGIN; UPDATE load_rows SET v = v + 1, pad = md5(random()::text) WHERE id = {a};
                 DELETE FROM load_rows WHERE id = {b};
                 INSERT INTO load_rows (id, v, pad) VALUES ({b}, 0, repeat('x', 200)), ({next_id}, 0, repeat('y', 200));
                 COMMIT;"
            );
            match c.batch_execute(&sql).await {
                Ok(()) => done += 1,
                Err(_) if c.is_closed() => break,
                Err(_) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                }
            }
        }
        on = 1 - on;
    }
    done
}

async fn one_run(
    dir: &LabDir,
    source: &Postgres,
    target: &Postgres,
    i: u32,
    rate: u32,
    transport: &str,
    saturate: u32,
) -> Option<Run> {
    let db = format!("bench{i}");
    let role = format!("app{i}");
    let password = "bench-password";
    for pg in [source, target] {
        let c = pg.connect("postgres").await.expect("connect");
        c.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            .await
            .expect("role");
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("database");
    }
    let c = source.connect(&db).await.expect("connect");
    writer::create_tables(&c, &role).await.expect("tables");
    writer::seed_counters(&c, 2).await.expect("counters");
    if saturate > 0 {
        c.batch_execute(&format!(
            "CREATE TABLE load_rows (id bigint PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL);
             INSERT INTO load_rows SELECT g, 0, repeat(md5(g::text), 6) FROM generate_series(1, 300000) g;
             GRANT ALL ON load_rows TO {role};"
        ))
        .await
        .expect("load table");
    }

    let endpoint = |pg: &Postgres| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"{db}\", user = \"postgres\", password_file = \"{}\"{transport} }}",
            pg.port,
            pg.password_file.display()
        )
    };
    let reverse = if arg("--reverse", 0) == 1 {
        "reverse_replication = true\n"
    } else {
        ""
    };
    let text = format!(
        "[migration]\nname = \"bench{i}\"\nstate_dir = \"{}\"\n[[postgres]]\nname = \"app\"\nsource = {}\ntarget = {}\napp_roles = [\"{role}\"]\ncopy_schema = true\n{reverse}",
        dir.path().join("state").display(),
        endpoint(source),
        endpoint(target)
    );
    let plan = plan::parse_str(&text, std::path::Path::new("bench.toml")).expect("plan");
    let pair = Pair::select(&plan, None).remove(0);
    start::start(&pair).await.expect("start");
    loop {
        let (s, t) = pair.connect().await.expect("connect");
        let st = status::status(&pair, &s, &t, None).await.expect("status");
        if st.all_ready && st.apply_running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let app = |pg: &Postgres| {
        let mut config = pg.config(&db);
        config.user(&role).password(password);
        config
    };
    let writer = {
        let _apps = common::apps().enter();
        Writer::start(WriterConfig {
            source: app(source),
            target: app(target),
            rate,
            tasks: 2,
            first_task: 0,
        })
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // How long a refused load connection waits before trying the other server.
    let load_retry_ms = arg("--load-retry-ms", 5);
    let load: Vec<_> = (0..saturate)
        .map(|task| {
            common::apps().spawn(load_task(
                [app(source), app(target)],
                task.into(),
                stop.clone(),
                Duration::from_millis(load_retry_ms.into()),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    if saturate > 0 {
        let lsn = |pg: &Postgres, sql: &'static str| {
            let config = pg.config(&db);
            async move {
                let (c, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(conn);
                let v: i64 = c.query_one(sql, &[]).await.expect("lsn").get(0);
                v
            }
        };
        let committed = "SELECT (pg_current_wal_lsn() - '0/0')::int8";
        let applied = "SELECT coalesce((SELECT (replay_lsn - '0/0')::int8 FROM pg_stat_replication WHERE application_name LIKE 'cutover%' LIMIT 1), 0)";
        let (c0, a0) = (lsn(source, committed).await, lsn(source, applied).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (c1, a1) = (lsn(source, committed).await, lsn(source, applied).await);
        println!(
            "      source writes {:.1} MiB/s of WAL, the target applies {:.1} MiB/s",
            (c1 - c0) as f64 / 2.0 / 1048576.0,
            (a1 - a0) as f64 / 2.0 / 1048576.0
        );
    }
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
            cleanup::cleanup(&pair).await.expect("cleanup");
            return None;
        }
    };
    if saturate > 0 {
        println!("      {load_tx} load transactions committed");
    }
    let t = target.connect(&db).await.expect("connect");
    let check = ledger.check(&t).await.expect("check");
    cleanup::cleanup(&pair).await.expect("cleanup");
    let stages = timed.report.finished.detail["stages_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} {:.1}",
                s[0].as_str().unwrap_or("?"),
                s[1].as_f64().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let stages = match &timed.waited {
        Some(w) => format!(
            "{stages}; gate waited {:.1} s, predicted catch-up {}",
            w.waited_ms / 1000.0,
            common::predicted(w)
        ),
        None => stages,
    };
    Some(timed.run(&ledger, &check, stages))
}
