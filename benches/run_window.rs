//! The joint window of a run beside the single-pair windows (issue "Hot migration runs").
//!
//! Per iteration, two labs on 127.0.0.1, each with the app writing ~`--rate` tx/s to its
//! PostgreSQL and as many rows/s to its MariaDB:
//! - lab A: `pg cutover` then `mysql cutover` (the library calls the commands make), one pair
//!   at a time: each pair's fence -> target writable;
//! - lab B: one `cutover run` of the lab plan's two database pairs (files and DNS left out: they
//!   are outside the database window), fenced together, caught up together, promoted
//!   together: each pair's fence -> writable, and the joint window (first fence -> last
//!   promotion, from the journal's clock, journal fsyncs included).
//!
//! The figure of merit is joint / slower single pair; the ceiling is 1.5.
//!
//! `cargo bench --bench run_window -- [--runs N] [--rate TX_PER_S]`

mod common;

use std::time::{Duration, Instant};

use common::{arg, percentile, runtime};
use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
use cutover::lab::writer::{DEMO_TASKS, Writer, WriterConfig};
use cutover::lab::{self, Lab, LabDir, Supervision};
use cutover::secret::SecretRef;

struct Figures {
    pg_single: f64,
    my_single: f64,
    pg_joint: f64,
    my_joint: f64,
    joint: f64,
    lost: usize,
}

struct App {
    pg: Writer,
    maria: MyWriter,
}

async fn lab_with_app(rate: u32) -> (Lab, App, cutover::plan::Plan) {
    let lab = Lab::start(LabDir::temporary().expect("lab dir"), Supervision::Owned)
        .await
        .expect("lab");
    lab::prepare_app(&lab).await.expect("app");
    let password = SecretRef::File(lab.dir.path().join("secrets").join("app.password"))
        .read()
        .expect("password");
    let pg = |p: &lab::Postgres| {
        let mut c = p.config(lab::APP);
        c.user(lab::APP).password(password.expose());
        c
    };
    let maria = |m: &lab::MariaDb| m.user_opts(lab::APP, password.expose(), lab::APP);
    let app = App {
        pg: Writer::start(WriterConfig {
            source: pg(&lab.pg_source),
            target: pg(&lab.pg_target),
            rate,
            tasks: DEMO_TASKS,
            first_task: 0,
        }),
        maria: MyWriter::start(MyWriterConfig {
            source: maria(&lab.maria_source),
            target: maria(&lab.maria_target),
            rate,
            tasks: 2,
        }),
    };
    let path = lab.dir.path().join("plan.toml");
    std::fs::write(&path, lab::lab_plan_toml(&lab)).expect("plan");
    let mut plan = cutover::plan::load(&path).expect("plan");
    plan.files.clear();
    plan.dns.clear();
    (lab, app, plan)
}

async fn lost(lab: &Lab, app: App) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg = app.pg.stop().await;
    let maria = app.maria.stop().await;
    let c = pg
        .check(&lab.pg_target.connect(lab::APP).await.expect("connect"))
        .await
        .expect("check");
    let mut conn = lab
        .maria_target
        .connect(Some(lab::APP))
        .await
        .expect("connect");
    let m = maria.check(&mut conn).await.expect("check");
    c.lost.len() + c.duplicated.len() + m.lost.len() + m.duplicated.len()
}

async fn one(rate: u32) -> Figures {
    // Lab A: one pair at a time.
    let (lab_a, app_a, plan_a) = lab_with_app(rate).await;
    let pg_pair = cutover::postgres::Pair::select(&plan_a, None).remove(0);
    cutover::postgres::start::start(&pg_pair)
        .await
        .expect("pg start");
    let my_pair = cutover::mysql::Pair::select(&plan_a, None).remove(0);
    cutover::mysql::start::start(&my_pair)
        .await
        .expect("mysql start");
    let (s, t) = pg_pair.connect().await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cutover::postgres::status::status(&pg_pair, &s, &t, None)
        .await
        .expect("status")
        .all_ready
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg_single = cutover::engine::cutover(&pg_pair, &mut |_| {})
        .await
        .expect("pg cutover")
        .promoted
        .write_unavailable_ms
        .unwrap_or_default();
    let my_single = cutover::engine::cutover(&my_pair, &mut |_| {})
        .await
        .expect("mysql cutover")
        .promoted
        .write_unavailable_ms
        .unwrap_or_default();
    let lost_a = lost(&lab_a, app_a).await;
    drop(lab_a);

    // Lab B: one run, both pairs together.
    let (lab_b, app_b, plan_b) = lab_with_app(rate).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (outcome, report) = cutover::run::run(
        &plan_b,
        &cutover::run::Options::default(),
        tokio_util::sync::CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .expect("run");
    assert_eq!(outcome, cutover::run::Outcome::Completed, "{report:#?}");
    let lost_b = lost(&lab_b, app_b).await;
    Figures {
        pg_single,
        my_single,
        pg_joint: report.write_unavailable_ms["postgres app-pg"],
        my_joint: report.write_unavailable_ms["mysql app-mariadb"],
        joint: report.joint_write_unavailable_ms.expect("joint window"),
        lost: lost_a + lost_b,
    }
}

fn main() {
    let runs = arg("--runs", 3);
    let rate = arg("--rate", 500);
    let rt = runtime();
    println!(
        "{:>3} {:>13} {:>13} {:>12} {:>12} {:>14} {:>7} {:>5}",
        "run",
        "pg single ms",
        "my single ms",
        "pg joint ms",
        "my joint ms",
        "joint window",
        "ratio",
        "lost"
    );
    let mut ratios = Vec::new();
    for i in 0..runs {
        let f = rt.block_on(one(rate));
        let ratio = f.joint / f.pg_single.max(f.my_single);
        ratios.push(ratio);
        println!(
            "{:>3} {:>13.1} {:>13.1} {:>12.1} {:>12.1} {:>14.1} {:>7.2} {:>5}",
            i + 1,
            f.pg_single,
            f.my_single,
            f.pg_joint,
            f.my_joint,
            f.joint,
            ratio,
            f.lost
        );
    }
    println!(
        "joint window / slower single pair: p50 {:.2}, max {:.2} (ceiling 1.5)",
        percentile(&mut ratios.clone(), 0.5),
        percentile(&mut ratios, 1.0)
    );
}
