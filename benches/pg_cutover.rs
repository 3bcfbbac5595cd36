//! Write-unavailability of a PostgreSQL cutover (DESIGN §8).
//!
//! Two real PostgreSQL 15 clusters on 127.0.0.1; for each run a fresh database pair and app
//! role, replication started and caught up, a writer committing ~1,000 transactions/s to the
//! source, then `cutover`. Per run: cutover's own fence -> target-writable time, the longest gap
//! between the writer's successful commits across the cutover, the longest gap anywhere else in
//! the same run (this machine's own stalls: the baseline), and rows lost or duplicated.
//!
//! `cargo bench --bench pg_cutover -- [--runs N] [--rate TX_PER_S] [--tls 1]`
//!
//! With `--tls 1` a second pair of clusters takes TLS only (`hostssl`, a CA the lab makes) and
//! runs alternate in the same job: even runs plaintext (`sslmode = "disable"`, the baseline),
//! odd runs verified TLS (`verify-full`, cutover's connections and the subscription's link);
//! each half gets its own summary, and the TLS/plaintext ratio of the p50 window is printed.

mod common;

use common::{Run, arg, print_header, print_run, print_summary, runtime};

use std::time::Duration;

use cutover::lab::tls::{LabCa, ServerTls};
use cutover::lab::writer::{self, Writer, WriterConfig};
use cutover::lab::{LabDir, Postgres, Supervision};
use cutover::plan;
use cutover::postgres::{Pair, cleanup, start, status};

fn main() {
    let runs = arg("--runs", 10);
    let rate = arg("--rate", 1000);
    let tls = arg("--tls", 0) == 1;
    let rt = runtime();
    rt.block_on(async move {
        let dir = LabDir::temporary().expect("lab dir");
        let ca = LabCa::create(&dir.path().join("ca"), "bench").expect("CA");
        let server_tls = ServerTls {
            ca: &ca,
            names: vec!["127.0.0.1".into()],
            client_cert: false,
        };
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
            "PostgreSQL cutover benchmark: {runs} runs, writer at {rate} tx/s (2 connections){}",
            if tls {
                "; odd runs over verified TLS"
            } else {
                ""
            }
        );
        print_header();
        let (mut plain, mut over_tls) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let r = match (&tls_pair, i % 2) {
                (Some((s, t)), 1) => {
                    let sec = format!(
                        ", sslmode = \"verify-full\", sslrootcert = \"{}\"",
                        ca.ca_file.display()
                    );
                    let r = one_run(&dir, s, t, i, rate, &sec).await;
                    over_tls.push(r.clone());
                    r
                }
                _ => {
                    let r =
                        one_run(&dir, &source, &target, i, rate, ", sslmode = \"disable\"").await;
                    plain.push(r.clone());
                    r
                }
            };
            print_run(i, &r);
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

async fn one_run(
    dir: &LabDir,
    source: &Postgres,
    target: &Postgres,
    i: u32,
    rate: u32,
    transport: &str,
) -> Run {
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

    let endpoint = |pg: &Postgres| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"{db}\", user = \"postgres\", password_file = \"{}\"{transport} }}",
            pg.port,
            pg.password_file.display()
        )
    };
    let text = format!(
        "[migration]\nname = \"bench{i}\"\nstate_dir = \"{}\"\n[[postgres]]\nname = \"app\"\nsource = {}\ntarget = {}\napp_roles = [\"{role}\"]\ncopy_schema = true\n",
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
    let writer = Writer::start(WriterConfig {
        source: app(source),
        target: app(target),
        rate,
        tasks: 2,
        first_task: 0,
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let timed = common::cut_over(&pair).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = writer.stop().await;
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
    timed.run(&ledger, &check, stages)
}
