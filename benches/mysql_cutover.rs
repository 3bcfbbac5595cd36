//! Write-unavailability of a MariaDB cutover (DESIGN §8, issue #4).
//!
//! Per run: two fresh MariaDB 10.11 servers on 127.0.0.1, the app database streamed and
//! replicating, a writer inserting ~1,000 rows/s as the app user (two connections) into the
//! source and moving to the target when the source refuses it, then `cutover`. Per run:
//! cutover's own fence -> target writable time, the longest gap between the writer's
//! acknowledged inserts across the cutover, the longest gap elsewhere in the same run (this
//! machine's own stalls: the baseline), and rows lost or duplicated.
//!
//! `cargo bench --bench mysql_cutover -- [--runs N] [--rate TX_PER_S]`

mod common;

use common::{Run, arg, print_header, print_run, print_summary, runtime};

use std::time::Duration;

use cutover::lab::PLAN_EXEMPT_USERS;
use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig, TABLE_SQL};
use cutover::lab::{LabDir, MariaDb, Supervision};
use cutover::mysql::{Pair, start};
use cutover::plan;
use mysql_async::prelude::Queryable;

const APP_PASSWORD: &str = "bench-password";

fn app_opts(m: &MariaDb) -> mysql_async::Opts {
    m.user_opts("app", APP_PASSWORD, "app")
}

async fn one_run(i: u32, rate: u32) -> Run {
    let dir = LabDir::temporary().expect("lab dir");
    let (source, target) = tokio::try_join!(
        MariaDb::start(dir.path(), "maria-source", 1, Supervision::Owned),
        MariaDb::start(dir.path(), "maria-target", 2, Supervision::Owned),
    )
    .expect("servers start");
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
         INSERT INTO writes (k, payload) SELECT -seq, MD5(seq) FROM seq_1_to_10000;"
    ))
    .await
    .expect("app table");
    let endpoint = |m: &MariaDb| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}",
            m.port,
            m.password_file.display()
        )
    };
    let text = format!(
        "[migration]\nname = \"bench{i}\"\nstate_dir = \"{}\"\n[[mysql]]\nname = \"app\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\n{PLAN_EXEMPT_USERS}\n",
        dir.path().join("state").display(),
        endpoint(&source),
        endpoint(&target)
    );
    let plan = plan::parse_str(&text, std::path::Path::new("bench.toml")).expect("plan");
    let pair = Pair::select(&plan, None).remove(0);
    start::start(&pair).await.expect("start");
    let writer = MyWriter::start(MyWriterConfig {
        source: app_opts(&source),
        target: app_opts(&target),
        rate,
        tasks: 2,
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let timed = common::cut_over(&pair).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = writer.stop().await;
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
    timed.run(&ledger, &check, stages)
}

fn main() {
    let runs = arg("--runs", 10);
    let rate = arg("--rate", 1000);
    runtime().block_on(async move {
        println!("MariaDB cutover benchmark: {runs} runs, writer at {rate} inserts/s (2 connections), fresh servers per run");
        print_header();
        let mut results = Vec::new();
        for i in 0..runs {
            let r = one_run(i, rate).await;
            print_run(i, &r);
            results.push(r);
        }
        print_summary(&results);
    });
}
