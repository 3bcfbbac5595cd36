//! MySQL/MariaDB binlog replication against two real MariaDB 10.11 servers per test.

use std::time::{Duration, Instant};

use cutover::engine::{self, Event, Rollback};
use cutover::lab::PLAN_EXEMPT_USERS;
use cutover::lab::mysql_writer::{MyLedger, MyWriter, MyWriterConfig};
use cutover::lab::{MariaDb, Sshd, Supervision};
use cutover::mysql::preflight::{self, Severity};
use cutover::mysql::{Pair, cleanup, resync, start, status, verify};
use cutover::plan::{self, Plan};
use mysql_async::prelude::Queryable;

use crate::support::MariaPair;

/// The shared pair of servers, with 3000 rows in `app.writes` on the source.
struct Fixture(MariaPair);

impl std::ops::Deref for Fixture {
    type Target = MariaPair;
    fn deref(&self) -> &MariaPair {
        &self.0
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut MariaPair {
        &mut self.0
    }
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture(MariaPair::seeded(3000).await)
    }

    fn plan(&self, extra: &str) -> Plan {
        let endpoint = |m: &MariaDb| {
            format!(
                "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}",
                m.port,
                m.password_file.display()
            )
        };
        // `extra` may set its own exemptions (the lab's root account among them).
        let exempt = if extra.contains("exempt_users") {
            ""
        } else {
            PLAN_EXEMPT_USERS
        };
        let text = format!(
            "[migration]\nname = \"my-test\"\nstate_dir = \"/tmp/cutover-my-test-state\"\n\n\
             [[mysql]]\nname = \"app-db\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\n{exempt}\n{extra}\n",
            endpoint(&self.source),
            endpoint(&self.target)
        );
        plan::parse_str(&text, std::path::Path::new("my-test.toml")).expect("valid plan")
    }

    fn pair(&self, extra: &str) -> Pair {
        Pair::select(&self.plan(extra), None).remove(0)
    }
}

fn app_opts(m: &MariaDb) -> mysql_async::Opts {
    m.user_opts("app", crate::support::APP_PASSWORD, "app")
}

async fn app_can_write(m: &MariaDb) -> Result<(), mysql_async::Error> {
    let mut c = mysql_async::Conn::new(app_opts(m)).await?;
    c.query_drop("INSERT INTO writes (k, payload) VALUES (-999999, 'probe')")
        .await?;
    c.query_drop("DELETE FROM writes WHERE k = -999999").await
}

/// Starts replication, then a writer at `rate` inserts/s for `warmup`.
async fn replicate_then_write(f: &Fixture, pair: &Pair, rate: u32, warmup: Duration) -> MyWriter {
    start::start(pair).await.unwrap();
    let writer = MyWriter::start(MyWriterConfig {
        source: app_opts(&f.source),
        target: app_opts(&f.target),
        rate,
        tasks: 2,
    });
    tokio::time::sleep(warmup).await;
    writer
}

/// The server's clock now (for "rows written after this").
async fn server_now(m: &MariaDb) -> String {
    let mut c = m.connect(None).await.unwrap();
    c.query_first::<String, _>("SELECT CAST(NOW(6) AS CHAR)")
        .await
        .unwrap()
        .unwrap()
}

/// Waits (at most 10 s) until the writer has committed a row on `m` after `since`.
async fn wait_for_writes_after(m: &MariaDb, since: &str) {
    let mut c = m.connect(Some("app")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = c
            .exec_first(
                "SELECT COUNT(*) FROM writes WHERE k >= 0 AND at > ?",
                (since,),
            )
            .await
            .unwrap()
            .unwrap();
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no writes on {} since {since}",
            m.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The app is refused by `m` because its account is locked (the fence), not for another reason.
async fn assert_app_locked_out(m: &MariaDb) {
    let e = app_can_write(m)
        .await
        .expect_err("the app must not write here");
    match &e {
        mysql_async::Error::Server(s) => assert_eq!(s.code, 4151, "{e}"),
        other => panic!("not a server refusal: {other}"),
    }
}

async fn check_on(m: &MariaDb, ledger: &MyLedger) -> cutover::lab::writer::LedgerCheck {
    let mut c = m.connect(Some("app")).await.unwrap();
    ledger.check(&mut c).await.unwrap()
}

async fn text(m: &MariaDb, sql: &str) -> String {
    let mut c = m.connect(None).await.unwrap();
    c.query_first::<String, _>(sql).await.unwrap().unwrap()
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
    assert_eq!(nokey.check, "databases-and-tables", "{nokey:?}");
    // The room the snapshot needs on the target, read from its @@datadir's filesystem.
    let room = report
        .findings
        .iter()
        .find(|f| {
            f.problem
                .contains("the snapshot of the replicated databases needs about")
        })
        .expect("the size needed is said");
    assert_eq!(room.severity, Severity::Info, "{room:?}");
    assert!(
        room.server.starts_with("target") && room.problem.contains(" free"),
        "{room:?}"
    );
    // Server settings: statement-based binlog and a clashing server_id are errors with fixes.
    c.query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .unwrap();
    t.query_drop("SET GLOBAL server_id = 1").await.unwrap();
    let (mut source, mut target) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &mut source, &mut target)
        .await
        .unwrap();
    let text = report.errors_text();
    assert!(
        text.contains("binlog_format is STATEMENT") && text.contains("binlog_format = ROW"),
        "{text}"
    );
    assert!(
        text.contains("server_id 1 is the same as the source's"),
        "{text}"
    );
    assert!(
        text.contains("[binary-log] source") && text.contains("[server-ids] target"),
        "each error names its check: {text}"
    );
    c.query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .unwrap();
    t.query_drop("SET GLOBAL server_id = 2").await.unwrap();
    // start refuses with the same reasons and changes nothing on either server.
    let err = start::start(&pair).await.unwrap_err().to_string();
    assert!(
        err.contains("app.nokey") && err.contains("app.old"),
        "{err}"
    );
    assert_eq!(
        count(
            &f.target,
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app'"
        )
        .await,
        1,
        "only the target's own leftover table"
    );
    assert_eq!(count(&f.target, "SELECT @@GLOBAL.read_only").await, 0);
    let mut t = f.target.connect(None).await.unwrap();
    let replica: Vec<mysql_async::Row> = t.query("SHOW ALL SLAVES STATUS").await.unwrap();
    assert!(replica.is_empty(), "no replica was configured");
    assert_eq!(
        count(
            &f.source,
            "SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'cutover\\_repl%'"
        )
        .await,
        0,
        "no replication user on the source"
    );
    assert_eq!(
        count(
            &f.source,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'cutover'"
        )
        .await,
        0,
        "no heartbeat database on the source"
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
    // The target is read-only for everyone but the replica until promotion, and the app's
    // account there is locked (read_only alone does not bind every user).
    assert_eq!(count(&f.target, "SELECT @@GLOBAL.read_only").await, 1);
    assert_app_locked_out(&f.target).await;

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

    // A row written behind replication's back on the target breaks the applier; status shows
    // the server's own error text.
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop(
        "SET SESSION sql_log_bin = 0; INSERT INTO app.writes (k, payload) VALUES (2, 'conflict')",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO app.writes (k, payload) VALUES (2, 'from the source')")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let broken = loop {
        let (mut source, mut target) = pair.connect().await.unwrap();
        let s = status::status(&pair, &mut source, &mut target, Duration::from_millis(200))
            .await
            .unwrap();
        if s.last_sql_error.is_some() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no SQL error surfaced: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!broken.running());
    assert!(
        broken
            .last_sql_error
            .as_deref()
            .unwrap()
            .contains("Duplicate entry"),
        "{broken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_under_concurrent_writes_loses_nothing_and_ids_continue() {
    let f = Fixture::new().await;
    let pair = f.pair("reverse_replication = true");
    // An operator's own applier setting, which must come back after promotion.
    let mut c = f.target.connect(None).await.unwrap();
    c.query_drop("SET GLOBAL slave_parallel_mode = 'conservative'")
        .await
        .unwrap();
    drop(c);
    let writer = replicate_then_write(&f, &pair, 600, Duration::from_secs(2)).await;
    // While it replicates, the target applies with four threads in optimistic mode.
    assert_eq!(
        count(&f.target, "SELECT @@GLOBAL.slave_parallel_threads").await,
        4
    );
    assert_eq!(
        text(&f.target, "SELECT @@GLOBAL.slave_parallel_mode").await,
        "optimistic"
    );
    let mut events = Vec::new();
    let started = Instant::now();
    let report = engine::cutover(&pair, &mut |e: &Event| events.push(format!("{e:?}")))
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    let window = (started, Instant::now());
    let promoted = server_now(&f.target).await;
    wait_for_writes_after(&f.target, &promoted).await;
    let ledger = writer.stop().await;
    assert_eq!(
        ledger.both_accepted, 0,
        "both servers took the app's writes at once"
    );
    assert!(
        report
            .promoted
            .write_unavailable_ms
            .is_some_and(|ms| ms > 0.0 && ms < 5000.0),
        "{report:?}"
    );
    assert!(events.iter().any(|e| e.contains("Fenced")), "{events:?}");
    // The new primary's applier settings are its own again.
    assert_eq!(
        count(&f.target, "SELECT @@GLOBAL.slave_parallel_threads").await,
        0
    );
    assert_eq!(
        text(&f.target, "SELECT @@GLOBAL.slave_parallel_mode").await,
        "conservative"
    );
    assert_eq!(
        report.finished.detail["restored_settings"],
        serde_json::json!([
            "slave_parallel_threads = 0",
            "slave_parallel_mode = 'conservative'"
        ]),
        "{report:?}"
    );
    assert!(
        report.finished.detail["reverse_replication"] == true
            && report.finished.warnings.is_empty(),
        "reverse replication set up: {report:?}"
    );

    let check = check_on(&f.target, &ledger).await;
    assert!(check.clean(), "{check:?}");
    assert!(
        check.acked_on_target > 0 && check.acked_on_target < check.acked,
        "the writer wrote to both, in turn: {check:?}"
    );
    let (gap, other) = ledger.gaps_around(window.0, window.1);
    println!("writer gap across the cutover {gap:?}, elsewhere {other:?}; {report:?}");

    // Another operator's plan for the same move is stopped at preflight: the source is the
    // old primary of a completed cutover.
    let (mut s, mut t) = pair.connect().await.unwrap();
    let again = preflight::run(&pair, &mut s, &mut t).await.unwrap();
    assert!(
        again.findings.iter().any(|f| f.severity == Severity::Error
            && f.problem.contains("moved away from by a completed cutover")),
        "{:#?}",
        again.findings
    );
    // The old primary is read-only and locks the app out; the new one takes the app.
    assert_app_locked_out(&f.source).await;
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 1);
    app_can_write(&f.target).await.unwrap();
    // Reverse replication brings the target's writes back to the old primary.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let back = check_on(&f.source, &ledger).await;
        if back.clean() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reverse replication incomplete: {back:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Both sides hold the same rows, chunk by chunk (small chunks: several per table).
    let verified = verify::verify(&pair, 500).await.unwrap();
    assert!(verified.matches(), "{verified:?}");
    assert!(
        verified
            .tables
            .iter()
            .any(|t| t.table == "app.writes" && t.chunks > 3),
        "{verified:?}"
    );
    // A row changed behind replication's back is found, with its key range.
    let mut c = f.source.connect(Some("app")).await.unwrap();
    c.query_drop(
        "SET SESSION sql_log_bin = 0; UPDATE writes SET payload = 'tampered' WHERE k = -17",
    )
    .await
    .unwrap();
    let tampered = verify::verify(&pair, 500).await.unwrap();
    let writes = tampered
        .tables
        .iter()
        .find(|t| t.table == "app.writes")
        .unwrap();
    assert_eq!(writes.differing.len(), 1, "{writes:?}");

    let cleaned = cleanup::cleanup(&pair).await.unwrap();
    let done = cleaned.done.join("\n");
    assert!(
        done.contains("replica configuration on the source"),
        "{done}"
    );
    assert!(
        done.contains("dropped user") && done.contains("heartbeat"),
        "{done}"
    );
    assert!(
        cleaned
            .kept
            .iter()
            .any(|k| k.contains("source stays read-only")),
        "{cleaned:?}"
    );
    let again = cleanup::cleanup(&pair).await.unwrap();
    assert!(again.done.is_empty(), "{again:?}");
    // Cleanup leaves the old primary read-only and the app locked out of it.
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 1);
    assert_app_locked_out(&f.source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_lost_during_catch_up_leaves_source_writable() {
    let mut f = Fixture::new().await;
    let pair = f.pair("catchup_timeout = \"3s\"");
    let writer = replicate_then_write(&f, &pair, 300, Duration::from_millis(500)).await;
    let target_process = f.target.process();
    let result = engine::cutover(&pair, &mut |e: &Event| {
        if matches!(e, Event::Fenced { .. }) {
            target_process.kill();
        }
    })
    .await;
    let failed = result.expect_err("the cutover must fail without a target");
    assert!(
        matches!(failed.rollback, Rollback::SourceReopened { .. }),
        "{failed}: {:?}",
        failed.rollback
    );
    let rolled_back = Instant::now();
    let since = server_now(&f.source).await;
    wait_for_writes_after(&f.source, &since).await;
    let ledger = writer.stop().await;
    // The source takes writes again, from the app's own connections too.
    app_can_write(&f.source).await.unwrap();
    assert!(
        ledger.commits.iter().any(|t| *t > rolled_back),
        "no commits on the source after the rollback"
    );
    let check = check_on(&f.source, &ledger).await;
    assert!(check.clean() && check.acked_on_target == 0, "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_and_gate_name_writers_the_fence_does_not_stop() {
    let f = Fixture::new().await;
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop(
        "SET SESSION sql_log_bin = 0;
         CREATE USER 'worker'@'127.0.0.1' IDENTIFIED BY 'w';
         GRANT INSERT, UPDATE ON app.* TO 'worker'@'127.0.0.1';
         CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'r';
         GRANT SELECT ON app.* TO 'reader'@'127.0.0.1';
         CREATE USER 'old_job'@'%' IDENTIFIED BY 'o' ACCOUNT LOCK;
         GRANT ALL ON app.* TO 'old_job'@'%';
         GRANT ALL PRIVILEGES ON *.* TO 'app'@'127.0.0.1';",
    )
    .await
    .unwrap();
    let pair = f.pair("");
    let (mut source, mut target) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &mut source, &mut target)
        .await
        .unwrap();
    let errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    let worker = errors
        .iter()
        .find(|e| e.problem.contains("'worker'@'127.0.0.1'"))
        .unwrap_or_else(|| panic!("worker not named: {errors:#?}"));
    assert!(worker.server.starts_with("source"), "{worker:?}");
    assert!(
        worker.fix.contains("app_users") && worker.fix.contains("exempt_users"),
        "{worker:?}"
    );
    let app = errors
        .iter()
        .find(|e| e.problem.contains("'app'@'127.0.0.1'"))
        .unwrap_or_else(|| panic!("the privileged app user is not named: {errors:#?}"));
    assert!(app.problem.contains("READ_ONLY ADMIN"), "{app:?}");
    assert!(app.fix.contains("privileged_app_users"), "{app:?}");
    // Readers and locked accounts cannot write to the old primary.
    assert!(
        report
            .findings
            .iter()
            .all(|f| !f.problem.contains("reader") && !f.problem.contains("old_job")),
        "{:#?}",
        report.findings
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");

    // With both accepted by the plan, preflight passes; the worker reported as exempt.
    let accepted = f.pair(
        "privileged_app_users = [\"app\"]\nexempt_users = { root = \"socket-only admin\", worker = \"writes only its own queue table\" }",
    );
    let report = preflight::run(&accepted, &mut source, &mut target)
        .await
        .unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.problem.contains("'worker'") && f.problem.contains("exempt")),
        "{:#?}",
        report.findings
    );
    // A plan that does not is refused at the gate, before anything is fenced.
    start::start(&accepted).await.unwrap();
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses");
    assert_eq!(failed.rollback, Rollback::NotNeeded);
    let text = failed.error.to_string();
    assert!(
        text.contains("'worker'@'127.0.0.1'") && text.contains("'app'@'127.0.0.1'"),
        "{text}"
    );
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 0);
    app_can_write(&f.source).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_user_read_only_does_not_bind_is_stopped_by_the_account_lock() {
    let f = Fixture::new().await;
    for m in [&f.source, &f.target] {
        let mut c = m.connect(None).await.unwrap();
        c.query_drop(
            "SET SESSION sql_log_bin = 0; GRANT ALL PRIVILEGES ON *.* TO 'app'@'127.0.0.1';",
        )
        .await
        .unwrap();
    }
    let pair = f.pair("privileged_app_users = [\"app\"]");
    // The writer reconnects at once whenever its session is killed.
    let writer = replicate_then_write(&f, &pair, 600, Duration::from_secs(1)).await;
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    let promoted = server_now(&f.target).await;
    wait_for_writes_after(&f.target, &promoted).await;
    let ledger = writer.stop().await;
    assert_eq!(report.finished.old_primary_clean, Some(true), "{report:?}");
    assert_eq!(
        ledger.both_accepted, 0,
        "both servers took the app's writes at once"
    );
    let check = check_on(&f.target, &ledger).await;
    assert!(check.clean(), "{check:?}");
    assert!(check.acked_on_target > 0, "{check:?}");
    // read_only alone would not stop this user: its account is locked on the old primary.
    let refused = app_can_write(&f.source)
        .await
        .expect_err("the old primary refuses the app");
    assert!(
        refused.to_string().contains("locked"),
        "refused for the lock, not something else: {refused}"
    );
    app_can_write(&f.target).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_refuses_a_target_that_is_the_source_and_non_transactional_tables() {
    let f = Fixture::new().await;
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop("CREATE TABLE app.legacy (id INT PRIMARY KEY) ENGINE=Aria")
        .await
        .unwrap();
    let pair = f.pair("");
    let (mut source, mut target) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &mut source, &mut target)
        .await
        .unwrap();
    let legacy = report
        .findings
        .iter()
        .find(|f| f.problem.contains("app.legacy"))
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert_eq!(legacy.severity, Severity::Error);
    assert!(legacy.fix.contains("ENGINE=InnoDB"), "{legacy:?}");

    // The source again, under another name.
    let mut plan = f.plan("");
    plan.mysql[0].target = plan.mysql[0].source.clone();
    plan.mysql[0].target.host = "localhost".into();
    let same = Pair::select(&plan, None).remove(0);
    let began = Instant::now();
    let (mut source, mut target) = same.connect().await.unwrap();
    let report = preflight::run(&same, &mut source, &mut target)
        .await
        .unwrap();
    assert!(!report.passed());
    let finding = report
        .findings
        .iter()
        .find(|f| f.problem.contains("are the same server"))
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert!(finding.problem.contains("source") && finding.problem.contains("target"));
    assert!(began.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_the_replication_filter_skips_stops_the_gate_before_the_fence() {
    let f = Fixture::new().await;
    let pair = f.pair("");
    start::start(&pair).await.unwrap();
    // The app's schema tool, connected without a default database, adds a column and writes
    // rows that use it: the table filter carries both, values included.
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop(
        "ALTER TABLE app.writes ADD COLUMN note VARCHAR(20);
         INSERT INTO app.writes (k, payload, note) VALUES (-900001, 'x', 'after-ddl'), (-900002, 'y', 'after-ddl')",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut t = f.target.connect(None).await.unwrap();
        let notes: Result<Vec<Option<String>>, _> = t
            .query("SELECT note FROM app.writes WHERE k IN (-900001, -900002) ORDER BY k")
            .await;
        if let Ok(rows) = &notes
            && rows.len() == 2
        {
            assert_eq!(*rows, vec![Some("after-ddl".to_owned()); 2]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the column and its values reached the target: {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A view only the source has (created outside the binlog): not a table, so no drift.
    c.query_drop(
        "SET SESSION sql_log_bin = 0; CREATE VIEW app.recent AS SELECT k FROM app.writes; SET SESSION sql_log_bin = 1",
    )
    .await
    .unwrap();
    // A database filter (the old behaviour, or a replica set up by hand), forced here on the
    // target: a statement is judged by the session's default database, so with none this one
    // is not applied on the replica, although it names the replicated database.
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop(
        "STOP SLAVE; SET GLOBAL replicate_wild_do_table = '', GLOBAL replicate_do_db = 'app,cutover'; START SLAVE",
    )
    .await
    .unwrap();
    // (No rows yet: a row event for it would stop the replica, which the gate refuses too.)
    c.query_drop("CREATE TABLE app.late (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let (mut source, mut target) = pair.connect().await.unwrap();
    let s = status::status(&pair, &mut source, &mut target, Duration::from_secs(5))
        .await
        .unwrap();
    drop((source, target));
    assert!(
        s.drift.iter().any(|d| d.contains("app.late")),
        "status shows the drift: {s:?}"
    );
    assert!(
        !s.drift.iter().any(|d| d.contains("app.recent")),
        "a view is not a table to carry: {s:?}"
    );
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses");
    assert_eq!(failed.rollback, Rollback::NotNeeded);
    let why = failed.error.to_string();
    assert!(why.contains("app.late"), "{why}");
    // The fix copies the pair again; it never says to align the target by hand alone.
    assert!(
        why.contains("copy the pair again") && !why.contains("apply the same DDL"),
        "{why}"
    );
    assert!(
        why.contains("--table app.late") && !why.contains("--table app.writes"),
        "the repair names the drifted table only: {why}"
    );
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 0);
    app_can_write(&f.source).await.unwrap();
    // The repair it names creates the table on the target; the drift is gone.
    let spool = tempfile::tempdir().unwrap();
    resync::resync(&pair, &["app.late".into()], spool.path())
        .await
        .unwrap_or_else(|e| panic!("resync: {e}"));
    let (mut source, mut target) = pair.connect().await.unwrap();
    let s = status::status(&pair, &mut source, &mut target, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        s.running() && s.drift.is_empty() && s.ignored.is_empty(),
        "{s:?}"
    );

    // What an interrupted resync leaves (the table in the ignore filter), with the replica
    // started again by hand: status names it, the gate refuses, the same resync completes
    // and puts back only the operator's own entry.
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop(
        "STOP SLAVE; SET GLOBAL replicate_wild_ignore_table = 'keep.me,app.late'; START SLAVE",
    )
    .await
    .unwrap();
    let s = status::status(&pair, &mut source, &mut target, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.ignored, ["app.late"], "{s:?}");
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses");
    assert_eq!(failed.rollback, Rollback::NotNeeded);
    let why = failed.error.to_string();
    assert!(
        why.contains("ignore filter skips app.late") && why.contains("--table app.late"),
        "{why}"
    );
    resync::resync(&pair, &["app.late".into()], spool.path())
        .await
        .unwrap_or_else(|e| panic!("resync again: {e}"));
    assert_eq!(
        text(&f.target, "SELECT @@GLOBAL.replicate_wild_ignore_table").await,
        "keep.me"
    );
    let s = status::status(&pair, &mut source, &mut target, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(s.running() && s.ignored.is_empty(), "{s:?}");

    // An app account missing on the target is named by preflight.
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop("SET SESSION sql_log_bin = 0; DROP USER 'app'@'127.0.0.1'")
        .await
        .unwrap();
    let report = preflight::run(&pair, &mut source, &mut target)
        .await
        .unwrap();
    let missing = report
        .findings
        .iter()
        .find(|f| f.problem.contains("does not exist on the target"))
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert!(missing.problem.contains("'app'@'127.0.0.1'"), "{missing:?}");
    assert!(missing.server.starts_with("target"), "{missing:?}");
}

/// On the source: database `blog` with its own writer account `blogger`, which has no grant
/// on the moved database.
async fn blog_on_source(f: &Fixture) -> mysql_async::Opts {
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop(format!(
        "CREATE DATABASE blog;
         CREATE TABLE blog.posts (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB;
         CREATE USER 'blogger'@'127.0.0.1' IDENTIFIED BY '{0}';
         GRANT ALL PRIVILEGES ON blog.* TO 'blogger'@'127.0.0.1';",
        crate::support::APP_PASSWORD
    ))
    .await
    .unwrap();
    f.source
        .user_opts("blogger", crate::support::APP_PASSWORD, "blog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_neighbour_database_is_refused_by_default_and_keeps_serving_under_a_fence_by_account() {
    let f = Fixture::new().await;
    let blogger = blog_on_source(&f).await;

    // By default: refused before anything changes, naming the database, its writer and the
    // three ways out.
    let pair = f.pair("");
    let (mut s, mut t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &mut s, &mut t).await.unwrap();
    assert!(!report.passed());
    let blog = report
        .findings
        .iter()
        .find(|f| f.problem.starts_with("database `blog` shares this server"))
        .unwrap_or_else(|| panic!("blog not named: {:#?}", report.findings));
    assert_eq!(blog.severity, Severity::Error, "{blog:?}");
    assert!(
        blog.problem.contains("written by 'blogger'@'127.0.0.1'")
            && blog.problem.contains("read-only from the fence on"),
        "{blog:?}"
    );
    for way in [
        "add \"blog\" to `databases`",
        "neighbours = \"read-only\"",
        "neighbours = \"fence-accounts\"",
    ] {
        assert!(blog.fix.contains(way), "{way}: {blog:?}");
    }
    assert!(start::start(&pair).await.is_err(), "start must refuse");
    assert_eq!(
        count(
            &f.target,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'"
        )
        .await,
        0
    );
    // Accepting read-only: a warning that says what happens.
    let pair = f.pair("neighbours = \"read-only\"");
    let report = preflight::run(&pair, &mut s, &mut t).await.unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warning
                && f.problem.starts_with("database `blog` shares this server")),
        "{:#?}",
        report.findings
    );

    // Fenced by account: the blog's writer never fails, the moved database's ledger is clean.
    let pair = f.pair("neighbours = \"fence-accounts\"");
    let report = preflight::run(&pair, &mut s, &mut t).await.unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    let writer = replicate_then_write(&f, &pair, 300, Duration::from_millis(800)).await;
    let neighbour = crate::support::NeighbourWriter::start(move || {
        let opts = blogger.clone();
        async move {
            let mut c = mysql_async::Conn::new(opts)
                .await
                .map_err(|e| e.to_string())?;
            c.query_drop("INSERT INTO posts () VALUES ()")
                .await
                .map_err(|e| e.to_string())?;
            c.disconnect().await.map_err(|e| e.to_string())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    let promoted = Instant::now();
    wait_for_writes_after(&f.target, &server_now(&f.target).await).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ledger = writer.stop().await;
    let (acked, failed) = neighbour.stop().await;
    assert!(failed.is_empty(), "the blog's writer failed: {failed:?}");
    assert!(
        acked
            .iter()
            .any(|t| *t > promoted + Duration::from_millis(300)),
        "the blog kept being written after the cutover"
    );
    assert_eq!(
        count(&f.source, "SELECT COUNT(*) FROM blog.posts").await,
        acked.len() as i64
    );
    assert_eq!(report.finished.old_primary_clean, Some(true), "{report:?}");
    assert!(
        report
            .fenced
            .scope
            .iter()
            .any(|s| s.starts_with("read_only left off")),
        "{report:?}"
    );
    let check = check_on(&f.target, &ledger).await;
    assert!(check.clean(), "{check:?}");
    assert!(check.acked_on_target > 0, "{check:?}");
    assert_eq!(ledger.both_accepted, 0);
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 0);
    assert_app_locked_out(&f.source).await;
    // The audit reads the binlog: a write to the moved database shows, the blog's do not.
    let mut src = f.source.connect(None).await.unwrap();
    let from = cutover::mysql::audit::binlog_position(
        &mut cutover::mysql::Server::new("source", &pair.plan.source)
            .connect()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    src.query_drop("INSERT INTO app.writes (k, payload) VALUES (-777777, 'late'); INSERT INTO blog.posts () VALUES ()")
        .await
        .unwrap();
    let mut db = cutover::mysql::Server::new("source", &pair.plan.source)
        .connect()
        .await
        .unwrap();
    let found = cutover::mysql::audit::writes_since(&mut db, &from, &["app".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec![("app.writes".to_owned(), 1)]
    );
    // The state read from the servers: the source is fenced (by account) and the target
    // promoted, the migration complete.
    let mut window = engine::Pair::window(&pair, false).await.unwrap();
    let state = window.state().await.unwrap();
    assert!(
        state.source_fenced && state.target_promoted && state.completed && !state.replicating,
        "{state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_servers_lease_refuses_another_state_directory_and_survives_its_holders_crash() {
    use cutover::engine::{Holder, Pair as _};
    let f = Fixture::new().await;
    let pair = f.pair("");
    let first = Holder::this_process("run", std::path::Path::new("/srv/first"));
    let other = Holder::this_process("run", std::path::Path::new("/srv/second"));
    let held = pair.lease(&first).await.unwrap();
    // Held: refused, naming the holder and the connection that holds it.
    let refused = pair.lease(&other).await.err().expect("refused while held");
    let text = refused.to_string();
    assert!(
        text.contains("held by `run` as pid") && text.contains("/srv/first"),
        "{text}"
    );
    // The holder gone without releasing (its connections closed, as a kill -9 closes them):
    // another state directory is still refused, its own is let in.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = pair
        .lease(&other)
        .await
        .err()
        .expect("refused after a crash");
    assert!(
        refused
            .to_string()
            .contains("stopped without releasing the migration's lease"),
        "{refused}"
    );
    let resumed = pair.lease(&first).await.unwrap();
    resumed.release().await;
    // Released: anyone may take it.
    pair.lease(&other).await.unwrap().release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_applied_under_two_definitions_are_refused_in_the_window_then_copied_again_under_writes()
 {
    let f = Fixture::new().await;
    let pair = f.pair("");
    start::start(&pair).await.unwrap();
    // A database filter on the target (the old behaviour, or a replica set up by hand): a
    // statement with no default database is skipped there.
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop(
        "STOP SLAVE; SET GLOBAL replicate_wild_do_table = '', GLOBAL replicate_do_db = 'app,cutover'; START SLAVE",
    )
    .await
    .unwrap();
    let writer = MyWriter::start(MyWriterConfig {
        source: app_opts(&f.source),
        target: app_opts(&f.target),
        rate: 100,
        tasks: 2,
    });
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop(
        "ALTER TABLE app.writes ADD COLUMN note VARCHAR(20);
         INSERT INTO app.writes (k, payload, note) VALUES (-900001, 'x', 'after-ddl'), (-900002, 'y', 'after-ddl')",
    )
    .await
    .unwrap();
    // The rows arrive without the column's values (the replica drops what it lacks) ...
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(
        &f.target,
        "SELECT COUNT(*) FROM app.writes WHERE k IN (-900001, -900002)",
    )
    .await
        < 2
    {
        assert!(Instant::now() < deadline, "the rows reached the target");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and the operator aligns the target's schema by hand: no drift is left for the gate.
    t.query_drop("SET SESSION sql_log_bin = 0; ALTER TABLE app.writes ADD COLUMN note VARCHAR(20)")
        .await
        .unwrap();
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the proof inside the window refuses");
    let why = failed.error.to_string();
    assert!(
        why.contains("table app.writes differs") && why.contains("two definitions"),
        "{why}"
    );
    // The fix offered copies the table again; it never says to align the target by hand.
    assert!(
        why.contains("cutover mysql resync <plan> --pair app-db --table app.writes"),
        "{why}"
    );
    assert!(
        matches!(failed.rollback, Rollback::SourceReopened { .. }),
        "{:?}",
        failed.rollback
    );
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 0);
    app_can_write(&f.source).await.unwrap();
    let lost = "SELECT COUNT(*) FROM app.writes WHERE k IN (-900001, -900002) AND note IS NULL";
    assert_eq!(
        count(&f.target, lost).await,
        2,
        "the values were lost on the target"
    );

    // The repair, with the writer still writing: the table is copied again and the replica
    // runs on from the copy's position.
    let spool = tempfile::tempdir().unwrap();
    let bad = resync::resync(
        &pair,
        &["app.nothere".into(), "shop.t".into(), "nodot".into()],
        spool.path(),
    )
    .await
    .expect_err("refused");
    let bad = bad.to_string();
    assert!(
        bad.contains("\"shop.t\"")
            && bad.contains("\"nodot\"")
            && bad.contains("nothing was changed"),
        "every problem at once: {bad}"
    );
    let since = server_now(&f.source).await;
    let resynced = resync::resync(&pair, &["app.writes".into()], spool.path())
        .await
        .unwrap_or_else(|e| panic!("resync: {e}"));
    println!("{resynced:?}");
    assert_eq!(resynced.copied.len(), 1, "{resynced:?}");
    assert_eq!(resynced.copied[0].tables, ["app.writes"]);
    assert!(resynced.copied[0].bytes > 0, "{resynced:?}");
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "the spooled copy is removed"
    );
    assert_eq!(count(&f.target, lost).await, 0, "the values are back");
    wait_for_writes_after(&f.source, &since).await;
    let (mut s, mut t) = pair.connect().await.unwrap();
    let st = status::status(&pair, &mut s, &mut t, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(st.running() && st.drift.is_empty(), "{st:?}");

    // The cutover now proves the table equal inside the window and promotes.
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover after the resync: {e}"));
    assert!(
        report.finished.detail["verified_in_window"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t == "app.writes")),
        "{report:?}"
    );
    let promoted = server_now(&f.target).await;
    wait_for_writes_after(&f.target, &promoted).await;
    let ledger = writer.stop().await;
    assert_eq!(ledger.both_accepted, 0);
    let check = check_on(&f.target, &ledger).await;
    assert!(
        check.clean() && check.acked > 0 && check.acked_on_target > 0,
        "{check:?}"
    );
    let notes = "SELECT GROUP_CONCAT(COALESCE(note, '-') ORDER BY k) FROM app.writes WHERE k IN (-900001, -900002)";
    assert_eq!(text(&f.target, notes).await, "after-ddl,after-ddl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_during_the_sync_is_carried_with_every_value_and_proven_inside_the_window() {
    let f = Fixture::new().await;
    let pair = f.pair("");
    let writer = replicate_then_write(&f, &pair, 200, Duration::from_millis(500)).await;
    // The app's schema tool, with no default database, under the writer: a column added with
    // a default, one dropped, one renamed, rows written between each; the writer's own
    // table gains a column while it inserts.
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop(
        "CREATE TABLE app.items (id INT PRIMARY KEY, a VARCHAR(10), b VARCHAR(10));
         INSERT INTO app.items VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2');
         ALTER TABLE app.items ADD COLUMN c VARCHAR(10) NOT NULL DEFAULT 'dflt';
         INSERT INTO app.items (id, a, b) VALUES (3, 'a3', 'b3');
         INSERT INTO app.items (id, a, b, c) VALUES (4, 'a4', 'b4', 'c4');
         ALTER TABLE app.items DROP COLUMN b;
         INSERT INTO app.items (id, a, c) VALUES (5, 'a5', 'c5');
         ALTER TABLE app.items RENAME COLUMN a TO a_new;
         INSERT INTO app.items (id, a_new, c) VALUES (6, 'a6', 'c6');
         UPDATE app.items SET a_new = 'a1x', c = 'c1' WHERE id = 1;
         ALTER TABLE app.writes ADD COLUMN extra INT NOT NULL DEFAULT 7",
    )
    .await
    .unwrap();
    let since = server_now(&f.source).await;
    wait_for_writes_after(&f.source, &since).await;
    let (mut s, mut t) = pair.connect().await.unwrap();
    let st = status::status(&pair, &mut s, &mut t, Duration::from_secs(10))
        .await
        .unwrap();
    drop((s, t));
    assert!(st.running() && st.drift.is_empty(), "carried: {st:?}");
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover: {e}"));
    let verified = &report.finished.detail["verified_in_window"];
    for table in ["app.items", "app.writes"] {
        assert!(
            verified
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t == table)),
            "{table} proven equal inside the window: {report:?}"
        );
    }
    let promoted = server_now(&f.target).await;
    wait_for_writes_after(&f.target, &promoted).await;
    let ledger = writer.stop().await;
    assert_eq!(ledger.both_accepted, 0);
    let check = check_on(&f.target, &ledger).await;
    assert!(
        check.clean() && check.acked_on_target > 0 && check.acked_on_target < check.acked,
        "{check:?}"
    );
    let items = "SELECT GROUP_CONCAT(CONCAT_WS(':', id, a_new, c) ORDER BY id) FROM app.items";
    assert_eq!(
        text(&f.target, items).await,
        "1:a1x:c1,2:a2:dflt,3:a3:dflt,4:a4:c4,5:a5:c5,6:a6:c6"
    );
    assert_eq!(text(&f.target, items).await, text(&f.source, items).await);
    assert_eq!(
        count(
            &f.target,
            "SELECT COUNT(*) FROM app.writes WHERE extra <> 7"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_binlog_was_purged_is_refused_with_a_fresh_copy_never_a_retry() {
    let f = Fixture::new().await;
    let pair = f.pair("");
    start::start(&pair).await.unwrap();
    // The replica stops; the source writes, rotates and purges what the replica has not read
    // (a short binlog_expire_logs_seconds does the same on its own).
    let mut t = f.target.connect(None).await.unwrap();
    t.query_drop("STOP SLAVE").await.unwrap();
    let mut c = f.source.connect(None).await.unwrap();
    c.query_drop(
        "INSERT INTO app.writes (k, payload) VALUES (-800001, 'x');
         FLUSH BINARY LOGS;
         INSERT INTO app.writes (k, payload) VALUES (-800002, 'y');
         FLUSH BINARY LOGS",
    )
    .await
    .unwrap();
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let current: String = row.get(0).unwrap();
    // The stopped replica's dump thread may linger; a log it reads is not purged.
    let dumps: Vec<u64> = c
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        .await
        .unwrap();
    for id in dumps {
        let _ = c.query_drop(format!("KILL {id}")).await;
    }
    // A log stays until InnoDB's binlog checkpoint has passed it: purge until it goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
            .await
            .unwrap();
        let logs: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
        if logs.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "every older binlog purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.query_drop("START SLAVE").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row: mysql_async::Row = t.query_first("SHOW SLAVE STATUS").await.unwrap().unwrap();
        let errno: u32 = row.get("Last_IO_Errno").unwrap_or(0);
        if errno != 0 {
            assert_eq!(errno, 1236, "{row:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the replica hits the purge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses");
    assert_eq!(failed.rollback, Rollback::NotNeeded);
    let why = failed.error.to_string();
    assert!(
        why.contains("cannot resume")
            && why.contains("cutover mysql cleanup")
            && !why.contains("then `START SLAVE`"),
        "{why}"
    );
    assert_eq!(count(&f.source, "SELECT @@GLOBAL.read_only").await, 0);
    app_can_write(&f.source).await.unwrap();
}

/// A target whose disk cannot hold the snapshot is refused by preflight and by `start`, with
/// the size needed and the free space, before anything is created on either server; the free
/// space is read here, and over ssh when the plan's `[hosts]` name the target's machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_disk_too_small_for_the_snapshot_is_refused_before_anything_starts() {
    let disk = crate::support::SmallFs::mount(300);
    let fx = Fixture(MariaPair::seeded_in(3000, Some(&disk.path)).await);
    let pair = fx.pair("");
    let (mut s, mut t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &mut s, &mut t).await.unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    let room = report
        .findings
        .iter()
        .find(|f| {
            f.problem
                .contains("the snapshot of the replicated databases")
        })
        .expect("the size needed is said");
    assert_eq!(room.severity, Severity::Info, "{room:?}");
    assert!(room.problem.contains("free"), "{room:?}");

    // Far more than the disk's free space, with the margin.
    let mut c = fx.source.connect(Some("app")).await.unwrap();
    c.query_drop(
        "CREATE TABLE app.big (id INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB;
         INSERT INTO app.big SELECT seq, REPEAT(MD5(seq), 24) FROM seq_1_to_200000;
         ANALYZE TABLE app.big;",
    )
    .await
    .unwrap();
    let refused = |report: &preflight::Report| {
        report
            .findings
            .iter()
            .find(|f| f.severity == Severity::Error && f.problem.contains("does not fit"))
            .cloned()
            .unwrap_or_else(|| panic!("refused for room: {:#?}", report.findings))
    };
    let report = preflight::run(&pair, &mut s, &mut t).await.unwrap();
    let short = refused(&report);
    assert!(short.server.starts_with("target"), "{short:?}");
    assert!(short.problem.contains("MiB free"), "{short:?}");
    assert!(short.fix.contains("free at least"), "{short:?}");

    let sshd = Sshd::start(fx.dir.path(), "sshd", Supervision::Owned)
        .await
        .expect("sshd starts");
    let over_ssh = fx.pair(&crate::support::lab_hosts(&sshd));
    let short = refused(&preflight::run(&over_ssh, &mut s, &mut t).await.unwrap());
    assert!(
        short.problem.contains("(on lab-target, over ssh) has"),
        "{short:?}"
    );
    drop(sshd);

    let err = start::start(&pair).await.expect_err("start refuses");
    assert!(err.to_string().contains("does not fit"), "{err}");
    let mut tc = fx.target.connect(None).await.unwrap();
    let replicas: Vec<mysql_async::Row> = tc.query("SHOW ALL SLAVES STATUS").await.unwrap();
    assert!(
        replicas.is_empty(),
        "no replica was configured on the target"
    );
    let users: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'cutover_repl%'")
        .await
        .unwrap();
    assert_eq!(users, Some(0), "no replication account on the source");
    drop((s, t, c, tc));
    drop(fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fence_does_not_wait_for_a_killed_session_read_only_already_stops() {
    let f = Fixture::new().await;
    let pair = f.pair("");
    start::start(&pair).await.unwrap();
    // An app session in the middle of a large transaction: killed, it rolls back for a while.
    let mut big = mysql_async::Conn::new(app_opts(&f.source)).await.unwrap();
    big.query_drop("BEGIN").await.unwrap();
    big.query_drop("INSERT INTO writes (k, payload) SELECT seq, MD5(seq) FROM seq_1_to_500000")
        .await
        .unwrap();
    let mut w = cutover::mysql::cutover::MyWindow::open(&pair)
        .await
        .unwrap();
    w.gate().await.unwrap();
    let killed = w.fence().await.unwrap();
    let sessions = "SELECT COALESCE(GROUP_CONCAT(COMMAND), '') FROM information_schema.PROCESSLIST WHERE USER = 'app'";
    let left = text(&f.source, sessions).await;
    // The gate wrote its heartbeat; from here the binlog must not move.
    let fenced_at = text(&f.source, "SELECT @@GLOBAL.gtid_binlog_pos").await;
    assert!(killed >= 1, "{killed}");
    // Right after the fence the session is still leaving, and shown as such: read_only
    // (which binds this user) refuses whatever it could still try to commit.
    assert!(
        !left.is_empty() && left.split(',').all(|c| c == "Killed"),
        "the fence returned with only killed sessions left: {left:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text(&f.source, sessions).await.is_empty() {
        assert!(Instant::now() < deadline, "the killed session never left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(big);
    assert_eq!(
        count(&f.source, "SELECT COUNT(*) FROM app.writes WHERE k > 0").await,
        0,
        "the killed transaction committed nothing"
    );
    assert_eq!(
        text(&f.source, "SELECT @@GLOBAL.gtid_binlog_pos").await,
        fenced_at,
        "nothing was written to the source's binlog after the fence"
    );
    let back = engine::Window::roll_back(&mut w).await;
    assert!(matches!(back, Rollback::SourceReopened { .. }), "{back:?}");
    app_can_write(&f.source).await.unwrap();
}
