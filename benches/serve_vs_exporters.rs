//! `cutover serve` beside the community exporters (Debian's `prometheus-postgres-exporter` and
//! `prometheus-mysqld-exporter`, their default collectors) on the same servers, one after the
//! other in the same run: two PostgreSQL 15 clusters with a logical subscription between them
//! and two MariaDB servers with a GTID replica, watched by the daemon as four `[[watch]]`
//! entries (polled every second) and by one postgres_exporter and one mysqld_exporter per
//! server (each takes one target). Each side is scraped every 250 ms
//! for `--seconds`; reported: scrape p50/p99 per endpoint, the resident memory of the daemon
//! against the exporters' together, and the new server sessions per second each side opened
//! (`pg_stat_database.sessions`, MariaDB's `Connections`), then the ratios.
//!
//! `cargo bench --bench serve_vs_exporters -- [--seconds S]`

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{arg, percentile, rss_mib, runtime, start_daemon};
use cutover::lab::{LabDir, MariaDb, Postgres, Supervision, free_port};
use mysql_async::prelude::Queryable;

/// Sessions opened on the four servers so far.
async fn sessions(pg: &[tokio_postgres::Client], my: &mut [mysql_async::Conn]) -> f64 {
    let mut n = 0.0;
    for c in pg {
        let v: i64 = c
            .query_one("SELECT sum(sessions)::int8 FROM pg_stat_database", &[])
            .await
            .unwrap()
            .get(0);
        n += v as f64;
    }
    for c in my.iter_mut() {
        let row: Option<(String, String)> = c
            .query_first("SHOW GLOBAL STATUS LIKE 'Connections'")
            .await
            .unwrap();
        n += row.and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(0.0);
    }
    n
}

struct Side {
    name: &'static str,
    /// (endpoint name, p50, p99) per scraped URL.
    scrapes: Vec<(String, f64, f64)>,
    rss_mib: f64,
    sessions_per_s: f64,
}

async fn measure(
    name: &'static str,
    urls: Vec<(String, String)>,
    pids: Vec<u32>,
    pg: &[tokio_postgres::Client],
    my: &mut [mysql_async::Conn],
    seconds: u32,
) -> Side {
    let http = reqwest::Client::new();
    // Every endpoint answers once, and the daemon polls every server, before measuring.
    for (_, url) in &urls {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(url).send().await.is_err() {
            assert!(Instant::now() < deadline, "{url} never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s0 = sessions(pg, my).await;
    let t0 = Instant::now();
    let mut latencies: Vec<Vec<f64>> = urls.iter().map(|_| Vec::new()).collect();
    let mut rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds as u64) {
        for (i, (_, url)) in urls.iter().enumerate() {
            let t = Instant::now();
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            latencies[i].push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(
                text.contains("_up"),
                "a real scrape of {url}: {}",
                text.chars().take(1500).collect::<String>()
            );
        }
        rss = rss.max(pids.iter().map(|&p| rss_mib(p)).sum());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    // The measuring connections themselves are kept: only the tools' sessions count.
    let opened = sessions(pg, my).await - s0;
    Side {
        name,
        scrapes: urls
            .iter()
            .zip(latencies.iter_mut())
            .map(|((n, _), l)| {
                (
                    n.clone(),
                    percentile(&mut l.clone(), 0.5),
                    percentile(l, 0.99),
                )
            })
            .collect(),
        rss_mib: rss,
        sessions_per_s: opened / wall,
    }
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
}

fn main() {
    let seconds = arg("--seconds", 30);
    for program in ["prometheus-postgres-exporter", "prometheus-mysqld-exporter"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .status()
                .is_ok_and(|s| s.success()),
            "{program} is missing: apt-get install prometheus-postgres-exporter prometheus-mysqld-exporter"
        );
    }
    runtime().block_on(async move {
        let dir = LabDir::temporary().expect("lab dir");
        let root = dir.path().to_owned();
        let (pg_s, pg_t, my_s, my_t) = tokio::try_join!(
            Postgres::start(&root, "pg-source", Supervision::Owned),
            Postgres::start(&root, "pg-target", Supervision::Owned),
            MariaDb::start(&root, "maria-source", 1, Supervision::Owned),
            MariaDb::start(&root, "maria-target", 2, Supervision::Owned),
        )
        .expect("servers start");
        // Replication to watch: a logical subscription and a GTID replica.
        let (s, t) = (
            pg_s.connect("postgres").await.unwrap(),
            pg_t.connect("postgres").await.unwrap(),
        );
        s.batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);
             CREATE PUBLICATION p FOR TABLE t",
        )
        .await
        .unwrap();
        t.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
            .await
            .unwrap();
        // CREATE SUBSCRIPTION may not share a transaction with anything else.
        t.batch_execute(&format!(
            "CREATE SUBSCRIPTION s CONNECTION 'host=127.0.0.1 port={} user=postgres password={} dbname=postgres' PUBLICATION p",
            pg_s.port,
            pg_s.password().expose()
        ))
        .await
        .unwrap();
        let my_password = |m: &MariaDb| {
            std::fs::read_to_string(&m.password_file)
                .unwrap()
                .trim()
                .to_owned()
        };
        let mut mt = my_t.connect(None).await.unwrap();
        mt.query_drop(format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='cutover', MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos; START SLAVE",
            my_s.port,
            my_password(&my_s)
        ))
        .await
        .unwrap();
        let pg_clients = vec![s, t];
        let mut my_conns = vec![my_s.connect(None).await.unwrap(), mt];

        // The daemon: four [[watch]] entries.
        let pg_entry = |name: &str, pg: &Postgres| {
            format!(
                "[[watch]]\nname = \"{name}\"\npostgres = {{ host = \"127.0.0.1\", port = {}, dbname = \"postgres\", user = \"postgres\", password_file = \"{}\" }}\n\n",
                pg.port,
                pg.password_file.display()
            )
        };
        let my_entry = |name: &str, m: &MariaDb| {
            format!(
                "[[watch]]\nname = \"{name}\"\nmysql = {{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}\n\n",
                m.port,
                m.password_file.display()
            )
        };
        let config = root.join("serve.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\npoll = \"1s\"\n\n{}{}{}{}",
                pg_entry("pg-source", &pg_s),
                pg_entry("pg-target", &pg_t),
                my_entry("maria-source", &my_s),
                my_entry("maria-target", &my_t)
            ),
        )
        .unwrap();
        let (mut daemon, base) = start_daemon(&config);
        let ours = measure(
            "cutover serve",
            vec![("daemon".to_owned(), format!("{base}/metrics"))],
            vec![daemon.id()],
            &pg_clients,
            &mut my_conns,
            seconds,
        )
        .await;
        stop(std::slice::from_mut(&mut daemon));

        // The exporters, on the same servers.
        let dsn = |pg: &Postgres| {
            format!(
                "postgresql://postgres:{}@127.0.0.1:{}/postgres?sslmode=disable",
                pg.password().expose(),
                pg.port
            )
        };
        // One postgres_exporter per cluster (0.11 with two DSNs in one process answers every
        // scrape with "collected before with the same name" errors).
        let mut children = Vec::new();
        let mut urls = Vec::new();
        for (name, pg) in [
            ("postgres_exporter source", &pg_s),
            ("postgres_exporter target", &pg_t),
        ] {
            let port = free_port().unwrap();
            children.push(
                Command::new("prometheus-postgres-exporter")
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .env("DATA_SOURCE_NAME", dsn(pg))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("postgres_exporter starts"),
            );
            urls.push((name.to_owned(), format!("http://127.0.0.1:{port}/metrics")));
        }
        for (name, m) in [("mysqld_exporter source", &my_s), ("mysqld_exporter target", &my_t)] {
            let cnf = root.join(format!("{}.cnf", m.name));
            std::fs::write(
                &cnf,
                format!(
                    "[client]\nuser=cutover\npassword={}\nhost=127.0.0.1\nport={}\n",
                    my_password(m),
                    m.port
                ),
            )
            .unwrap();
            let port = free_port().unwrap();
            children.push(
                Command::new("prometheus-mysqld-exporter")
                    .arg(format!("--config.my-cnf={}", cnf.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mysqld_exporter starts"),
            );
            urls.push((name.to_owned(), format!("http://127.0.0.1:{port}/metrics")));
        }
        let pids = children.iter().map(Child::id).collect();
        let theirs = measure(
            "exporters",
            urls,
            pids,
            &pg_clients,
            &mut my_conns,
            seconds,
        )
        .await;
        stop(&mut children);

        println!("serve_vs_exporters: 2 PostgreSQL 15 + 2 MariaDB servers, scraped every 250 ms for {seconds} s each");
        println!("| side | endpoint | scrape p50 | scrape p99 | RSS (side) | new sessions/s |");
        println!("|---|---|---|---|---|---|");
        for side in [&ours, &theirs] {
            for (endpoint, p50, p99) in &side.scrapes {
                println!(
                    "| {} | {endpoint} | {p50:.2} ms | {p99:.2} ms | {:.1} MiB | {:.2} |",
                    side.name, side.rss_mib, side.sessions_per_s
                );
            }
        }
        let our_p99 = ours.scrapes[0].2;
        for (endpoint, _, p99) in &theirs.scrapes {
            println!("scrape p99 ratio, cutover / {endpoint}: {:.2}", our_p99 / p99);
        }
        println!(
            "RSS ratio, cutover / the exporters together: {:.2}",
            ours.rss_mib / theirs.rss_mib
        );
        println!(
            "new sessions/s: cutover {:.2}, the exporters {:.2}",
            ours.sessions_per_s, theirs.sessions_per_s
        );
    });
}
