//! MySQL/MariaDB binlog replication against two real MariaDB 10.11 servers per test.

use std::time::Duration;

use cutover::lab::{LabDir, MariaDb, Supervision};
use cutover::mysql::preflight::{self, Severity};
use cutover::mysql::{Pair, start, status};
use cutover::plan::{self, Plan};
use mysql_async::prelude::Queryable;

struct Fixture {
    _dir: LabDir,
    source: MariaDb,
    target: MariaDb,
}

impl Fixture {
    /// Two servers; on the source the `app` database with a few thousand rows.
    async fn new() -> Fixture {
        let dir = LabDir::temporary().expect("lab dir");
        let (source, target) = tokio::try_join!(
            MariaDb::start(dir.path(), "maria-source", 1, Supervision::Owned),
            MariaDb::start(dir.path(), "maria-target", 2, Supervision::Owned),
        )
        .expect("servers start");
        let mut c = source.connect(None).await.unwrap();
        c.query_drop(
            "CREATE DATABASE app;
             USE app;
             CREATE TABLE app.writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, k BIGINT NOT NULL UNIQUE, payload VARCHAR(64) NOT NULL);
             INSERT INTO app.writes (k, payload) SELECT -seq, MD5(seq) FROM seq_1_to_3000;",
        )
        .await
        .unwrap();
        Fixture {
            _dir: dir,
            source,
            target,
        }
    }

    fn plan(&self, extra: &str) -> Plan {
        let endpoint = |m: &MariaDb| {
            format!(
                "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}",
                m.port,
                m.password_file.display()
            )
        };
        let text = format!(
            "[migration]\nname = \"my-test\"\nstate_dir = \"/tmp/cutover-my-test-state\"\n\n\
             [[mysql]]\nname = \"app-db\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\n{extra}\n",
            endpoint(&self.source),
            endpoint(&self.target)
        );
        plan::parse_str(&text, std::path::Path::new("my-test.toml")).expect("valid plan")
    }

    fn pair(&self, extra: &str) -> Pair {
        Pair::select(&self.plan(extra), None).remove(0)
    }
}

async fn count(m: &MariaDb, sql: &str) -> i64 {
    let mut c = m.connect(None).await.unwrap();
    c.query_first::<i64, _>(sql).await.unwrap().unwrap()
}

#[tokio::test]
async fn preflight_names_keyless_tables_and_target_leftovers_with_fixes() {
    let f = Fixture::new().await;
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop("CREATE TABLE app.nokey (a INT)")
        .await
        .unwrap();
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop("SET SESSION sql_log_bin = 0; CREATE DATABASE app; CREATE TABLE app.old (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let pair = f.pair("");
    let (mut source, mut target) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &mut source, &mut target)
        .await
        .unwrap();
    assert!(!report.passed());
    assert!(report.gtid, "MariaDB replicates by GTID");
    let errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    let nokey = errors
        .iter()
        .find(|f| f.problem.contains("app.nokey"))
        .expect("keyless table reported");
    assert!(nokey.server.starts_with("source") && nokey.fix.contains("PRIMARY KEY"));
    let leftover = errors
        .iter()
        .find(|f| f.problem.contains("app.old"))
        .expect("target leftovers reported");
    assert!(leftover.server.starts_with("target") && leftover.fix.contains("drop"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    // start refuses with the same reasons and changes nothing on the target.
    let err = start::start(&pair).await.unwrap_err().to_string();
    assert!(
        err.contains("app.nokey") && err.contains("app.old"),
        "{err}"
    );
}

#[tokio::test]
async fn start_streams_a_snapshot_then_replicates_and_is_idempotent() {
    let f = Fixture::new().await;
    let pair = f.pair("");
    let started = start::start(&pair).await.unwrap();
    assert!(!started.already_running && started.gtid, "{started:?}");
    let snapshot = started.snapshot.unwrap();
    assert!(snapshot.coordinates.gtid.is_some() && snapshot.coordinates.file.is_some());
    assert_eq!(
        count(&f.target, "SELECT COUNT(*) FROM app.writes").await,
        3000
    );
    // The target is read-only for everyone but the replica until promotion.
    assert_eq!(count(&f.target, "SELECT @@GLOBAL.read_only").await, 1);

    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop("INSERT INTO app.writes (k, payload) VALUES (1, 'after the snapshot')")
        .await
        .unwrap();
    let (mut source, mut target) = pair.connect().await.unwrap();
    let s = status::status(&pair, &mut source, &mut target, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(s.running(), "{s:?}");
    assert!(
        s.lag.replicated_after.is_some(),
        "heartbeat replicated: {s:?}"
    );
    assert_eq!(
        count(&f.target, "SELECT COUNT(*) FROM app.writes WHERE k = 1").await,
        1
    );
    assert!(s.last_io_error.is_none() && s.last_sql_error.is_none());

    let again = start::start(&pair).await.unwrap();
    assert!(again.already_running && again.snapshot.is_none());
    assert_eq!(
        count(&f.target, "SELECT COUNT(*) FROM app.writes").await,
        3001
    );
}
