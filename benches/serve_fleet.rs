//! Service mode with a fleet (DESIGN §8 "Fleet"): one daemon watching N PostgreSQL pairs (one
//! plan each) polled every second, for `--seconds` seconds, at two fleet sizes in the same run
//! (the smaller is the baseline). Reported per size: the daemon's CPU (share of one core, and
//! per pair), its resident memory, and `/metrics` latency (p50, p99) from a scraper asking
//! every 100 ms; the connections the poller opened while measured (its own counter: zero when
//! it keeps them) and the backends both clusters hold for cutover at the end; then the ratios
//! of the larger fleet to the smaller.
//!
//! The pairs point at databases on two lab clusters; they need not replicate for the cost of
//! reading them (the poller asks the same catalogs either way).
//!
//! `cargo bench --bench serve_fleet -- [--small N] [--large N] [--seconds S]`

mod common;

use std::time::{Duration, Instant};

use common::{arg, percentile, rss_mib, runtime, start_daemon};
use cutover::lab::{LabDir, Postgres, Supervision};

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / hz
}

struct Figures {
    pairs: u32,
    cpu_share: f64,
    rss_mib: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Connections the poller opened while measured (its own counter).
    connects: f64,
    /// cutover's backends on both clusters at the end (what the servers hold for it).
    backends: i64,
}

/// The sum of `cutover_poll_connects_total` over every migration in a scrape.
fn connects_in(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("cutover_poll_connects_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn measure(
    dir: &std::path::Path,
    source: &Postgres,
    target: &Postgres,
    pairs: u32,
    seconds: u32,
) -> Figures {
    let mut plans = Vec::new();
    for i in 0..pairs {
        let db = format!("fleet{pairs}_{i}");
        for pg in [source, target] {
            pg.create_database(&db).await.expect("database");
        }
        let c = source.connect(&db).await.unwrap();
        c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)")
            .await
            .unwrap();
        let endpoint = |pg: &Postgres| {
            format!(
                "{{ host = \"127.0.0.1\", port = {}, dbname = \"{db}\", user = \"postgres\", password_file = \"{}\" }}",
                pg.port,
                pg.password_file.display()
            )
        };
        let path = dir.join(format!("{db}.toml"));
        std::fs::write(
            &path,
            format!(
                "[migration]\nname = \"{db}\"\nstate_dir = \"{}\"\n\n[[postgres]]\nname = \"{db}\"\nsource = {}\ntarget = {}\napp_roles = [\"app\"]\nreverse_replication = true\n",
                dir.join(format!("state-{db}")).display(),
                endpoint(source),
                endpoint(target)
            ),
        )
        .unwrap();
        plans.push(format!("\"{}\"", path.display()));
    }
    let config = dir.join(format!("serve-{pairs}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npoll = \"1s\"\nplans = [{}]\n",
            plans.join(", ")
        ),
    )
    .unwrap();
    let (mut child, base) = start_daemon(&config);
    let pid = child.id();
    let http = reqwest::Client::new();
    let scrape = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .unwrap()
    };
    // Every pair read before measuring (the first poll connects every session).
    let began = Instant::now();
    loop {
        let text = scrape(http.clone(), base.clone()).await;
        let up = text
            .lines()
            .filter(|l| l.starts_with("cutover_up{") && l.contains("component=\"postgres "))
            .filter(|l| l.ends_with(" 1"))
            .count();
        if up >= pairs as usize {
            println!(
                "{pairs} pairs: every pair read after {:.1} s",
                began.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "only {up} of {pairs} pairs read after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connects0 = connects_in(&scrape(http.clone(), base.clone()).await);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        let t = Instant::now();
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(text.contains("cutover_up"), "a real scrape");
        rss = rss.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let connects = connects_in(&scrape(http.clone(), base.clone()).await) - connects0;
    let mut backends = 0;
    for pg in [source, target] {
        let c = pg.connect("postgres").await.unwrap();
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cutover'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        backends += n;
    }
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    Figures {
        pairs,
        cpu_share: cpu / wall,
        rss_mib: rss,
        p50_ms: percentile(&mut latencies.clone(), 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
        connects,
        backends,
    }
}

fn main() {
    let small = arg("--small", 10);
    let large = arg("--large", 40);
    let seconds = arg("--seconds", 20);
    runtime().block_on(async move {
        let dir = LabDir::temporary().expect("lab dir");
        let (source, target) = tokio::try_join!(
            Postgres::start(dir.path(), "pg-source", Supervision::Owned),
            Postgres::start(dir.path(), "pg-target", Supervision::Owned),
        )
        .expect("clusters");
        for pg in [&source, &target] {
            let c = pg.connect("postgres").await.unwrap();
            c.batch_execute("CREATE ROLE app LOGIN").await.unwrap();
        }
        let mut rows = Vec::new();
        for pairs in [small, large] {
            rows.push(measure(dir.path(), &source, &target, pairs, seconds).await);
        }
        println!(
            "{:>6} {:>10} {:>14} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "pairs", "cpu %", "cpu %/pair", "rss MiB", "p50 ms", "p99 ms", "connects", "backends"
        );
        for f in &rows {
            println!(
                "{:>6} {:>10.1} {:>14.2} {:>9.1} {:>9.2} {:>9.2} {:>10} {:>9}",
                f.pairs,
                f.cpu_share * 100.0,
                f.cpu_share * 100.0 / f.pairs as f64,
                f.rss_mib,
                f.p50_ms,
                f.p99_ms,
                f.connects,
                f.backends
            );
        }
        let (a, b) = (&rows[0], &rows[1]);
        println!(
            "{} -> {} pairs: cpu x{:.2}, cpu per pair x{:.2}, rss x{:.2}, scrape p99 x{:.2}",
            a.pairs,
            b.pairs,
            b.cpu_share / a.cpu_share,
            (b.cpu_share / b.pairs as f64) / (a.cpu_share / a.pairs as f64),
            b.rss_mib / a.rss_mib,
            b.p99_ms / a.p99_ms
        );
    });
}
