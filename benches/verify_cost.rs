//! The cost of `verify_in_window = "all"` (issue #43): how long the chunked row-by-row
//! comparison of one table takes per GB, on two MariaDB 10.11 servers on 127.0.0.1, against
//! the floor of reading the same table once on each server in the same run (`CHECKSUM TABLE`
//! on both at once: a full scan each, nothing compared by key).
//!
//! Per run: a fresh pair of servers, one table of `--mb` MB (id, an integer, a 200-byte text,
//! a timestamp) loaded identically on both, then the comparison and the baseline, each timed
//! twice (the second, warm, is reported: inside the window the table was just written).
//!
//! `cargo bench --bench verify_cost -- [--runs N] [--mb MB]`

mod common;

use common::{arg, runtime};

use std::time::Instant;

use cutover::lab::PLAN_EXEMPT_USERS;
use cutover::lab::{LabDir, MariaDb, Supervision};
use cutover::mysql::{Pair, verify};
use cutover::plan;
use mysql_async::prelude::Queryable;

struct Measured {
    mb: f64,
    compare_s: f64,
    baseline_s: f64,
}

async fn one_run(i: u32, mb: u32) -> Measured {
    let dir = LabDir::temporary().expect("lab dir");
    let (source, target) = tokio::try_join!(
        MariaDb::start(dir.path(), "maria-source", 1, Supervision::Owned),
        MariaDb::start(dir.path(), "maria-target", 2, Supervision::Owned),
    )
    .expect("servers start");
    // ~260 bytes a row on disk.
    let rows = u64::from(mb) * 1_000_000 / 260;
    for m in [&source, &target] {
        let mut c = m.connect(None).await.expect("connect");
        c.query_drop(format!(
            "SET SESSION sql_log_bin = 0; CREATE DATABASE app; USE app;
             CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, pad VARCHAR(255) NOT NULL,
                             at DATETIME(6) NOT NULL) ENGINE=InnoDB;
             INSERT INTO t SELECT seq, seq * 7, REPEAT(MD5(seq), 6) , '2026-01-01' FROM seq_1_to_{rows};"
        ))
        .await
        .expect("load");
    }
    let mut c = source.connect(None).await.expect("connect");
    c.query_drop("ANALYZE TABLE app.t").await.expect("analyze");
    let bytes: u64 = c
        .query_first("SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 't'")
        .await
        .expect("size")
        .unwrap_or(0);
    let endpoint = |m: &MariaDb| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\", ssl_mode = \"disabled\" }}",
            m.port,
            m.password_file.display()
        )
    };
    let text = format!(
        "[migration]\nname = \"verify{i}\"\nstate_dir = \"{}\"\n[[mysql]]\nname = \"app\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\n{PLAN_EXEMPT_USERS}\n",
        dir.path().join("state").display(),
        endpoint(&source),
        endpoint(&target),
    );
    let plan = plan::parse_str(&text, std::path::Path::new("bench.toml")).expect("plan");
    let pair = Pair::select(&plan, None).remove(0);
    let (mut s, mut t) = pair.connect().await.expect("connect");
    let (mut compare_s, mut baseline_s) = (0.0, 0.0);
    for _ in 0..2 {
        let began = Instant::now();
        let check = verify::table(&mut s, &mut t, "app", "t", verify::CHUNK_ROWS)
            .await
            .expect("compare");
        compare_s = began.elapsed().as_secs_f64();
        assert!(check.differing.is_empty() && check.source_rows == rows);
        let began = Instant::now();
        let (mut a, mut b) = (
            source.connect(None).await.expect("connect"),
            target.connect(None).await.expect("connect"),
        );
        let (x, y) = tokio::join!(
            a.query_drop("CHECKSUM TABLE app.t EXTENDED"),
            b.query_drop("CHECKSUM TABLE app.t EXTENDED")
        );
        x.and(y).expect("checksum");
        baseline_s = began.elapsed().as_secs_f64();
    }
    Measured {
        mb: bytes as f64 / 1e6,
        compare_s,
        baseline_s,
    }
}

fn main() {
    let runs = arg("--runs", 3);
    let mb = arg("--mb", 256);
    let rt = runtime();
    println!("run  table_MB  compare_s  s_per_GB  baseline_s  ratio");
    let mut ratios = Vec::new();
    let mut per_gb = Vec::new();
    for i in 1..=runs {
        let m = rt.block_on(one_run(i, mb));
        let ratio = m.compare_s / m.baseline_s;
        let gb = m.compare_s / (m.mb / 1000.0);
        println!(
            "{i:>3}  {:>8.1}  {:>9.2}  {:>8.1}  {:>10.2}  {ratio:>5.2}",
            m.mb, m.compare_s, gb, m.baseline_s
        );
        ratios.push(ratio);
        per_gb.push(gb);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "median: {:.1} s per GB compared, {:.2}x reading the table once on each server",
        median(&mut per_gb),
        median(&mut ratios)
    );
}
