//! PostgreSQL logical replication against two real PostgreSQL 15 clusters per test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cutover::engine::{self, Event, Phase, Rollback};
use cutover::lab::writer::{Writer, WriterConfig};
use cutover::lab::{Postgres, Sshd, Supervision};

use crate::support::{self, NeighbourWriter, PgPair, connect_grants};
use cutover::plan::{self, Plan};
use cutover::postgres::preflight::{self, Severity};
use cutover::postgres::{Pair, cleanup, start, status, verify};

use crate::support::APP_PASSWORD;

/// The shared pair of clusters, with an `app` database seeded for these tests.
struct Fixture(PgPair);

impl std::ops::Deref for Fixture {
    type Target = PgPair;
    fn deref(&self) -> &PgPair {
        &self.0
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut PgPair {
        &mut self.0
    }
}

impl Fixture {
    /// Two clusters, an `app` database on each, the `app` role on the source (and on the
    /// target unless `role_on_target` is false), the writer's tables and rows on the source.
    async fn new(role_on_target: bool) -> Fixture {
        let pair = PgPair::start_roles(role_on_target).await;
        pair.seeded("app", 3000, 500).await;
        Fixture(pair)
    }

    fn plan(&self, extra: &str) -> Plan {
        let endpoint = |pg: &Postgres| {
            format!(
                "{{ host = \"127.0.0.1\", port = {}, dbname = \"app\", user = \"postgres\", password_file = \"{}\" }}",
                pg.port,
                pg.password_file.display()
            )
        };
        // `extra` may set its own `app_roles`.
        let roles = if extra.contains("app_roles") {
            ""
        } else {
            "app_roles = [\"app\"]\n"
        };
        let text = format!(
            "[migration]\nname = \"t\"\nstate_dir = \"{}\"\n\n[[postgres]]\nname = \"app-pg\"\nsource = {}\ntarget = {}\n{roles}copy_schema = true\n{extra}\n",
            self.dir.path().join("state").display(),
            endpoint(&self.source),
            endpoint(&self.target),
        );
        plan::parse_str(&text, &PathBuf::from("test-plan.toml")).expect("valid plan")
    }

    /// Starts replication, waits until it is ready, then starts a writer at `rate` tx/s and
    /// lets it run for `warm_up`.
    async fn replicate_then_write(&self, pair: &Pair, rate: u32, warm_up: Duration) -> Writer {
        start::start(pair).await.unwrap();
        wait_ready(pair).await;
        let writer = self.writer("app", rate);
        tokio::time::sleep(warm_up).await;
        writer
    }

    async fn app_can_write(&self, pg: &Postgres) -> Result<(), tokio_postgres::Error> {
        let (client, conn) = self
            .app_config(pg, "app")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(conn);
        client
            .execute("UPDATE counters SET n = n WHERE id = 0", &[])
            .await
            .map(|_| ())
    }
}

/// The app role was refused *because it may not log in* (NOLOGIN), not for any other reason
/// (a wrong password or a down server would also be an error).
fn assert_login_refused(result: Result<(), tokio_postgres::Error>) {
    let e = result.expect_err("the app role must not get in");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server refusal: {e:?}"));
    assert_eq!(db.code().code(), "28000", "{db:?}");
    assert!(db.message().contains("not permitted to log in"), "{db:?}");
}

/// The app role was refused *because it may not connect to this database* (the fence scoped to
/// the moved database: its `CONNECT` there is gone), not for any other reason.
fn assert_connect_refused(result: Result<(), tokio_postgres::Error>) {
    let e = result.expect_err("the app role must not get in");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server refusal: {e:?}"));
    assert_eq!(db.code().code(), "42501", "{db:?}");
    assert!(
        db.message().contains("permission denied for database"),
        "{db:?}"
    );
}

fn pair_of(plan: &Plan) -> Pair {
    Pair::select(plan, None).remove(0)
}

async fn wait_ready(pair: &Pair) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, t) = pair.connect().await.unwrap();
        let st = status::status(pair, &s, &t, None).await.unwrap();
        if st.all_ready && st.apply_running && st.lag_bytes.is_some_and(|l| l < 1 << 20) {
            return;
        }
        assert!(Instant::now() < deadline, "replication not ready: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_names_tables_without_key_and_missing_roles_with_fixes() {
    let fx = Fixture::new(false).await;
    let c = fx.source.connect("app").await.unwrap();
    c.batch_execute("CREATE TABLE audit_log (at timestamptz, line text)")
        .await
        .unwrap();
    // A prepared transaction holds back the slot's creation: preflight must name it.
    c.batch_execute("BEGIN; INSERT INTO counters (id, n) VALUES (99, 0); PREPARE TRANSACTION 'x'")
        .await
        .unwrap();

    let pair = pair_of(&fx.plan(""));
    let (s, t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    assert!(!report.passed());
    let no_key = report
        .findings
        .iter()
        .find(|f| f.problem.contains("public.audit_log"))
        .expect("the table without a primary key is named");
    assert_eq!(no_key.severity, Severity::Error);
    assert!(no_key.server.starts_with("source"), "{no_key:?}");
    assert!(no_key.fix.contains("replica_identity_full"), "{no_key:?}");
    let role = report
        .findings
        .iter()
        .find(|f| f.problem.contains("app role `app` does not exist"))
        .expect("the missing role is reported");
    assert!(role.server.starts_with("target"));
    assert!(role.fix.contains("CREATE ROLE"));
    let prepared = report
        .findings
        .iter()
        .find(|f| f.problem.contains("prepared transaction `x`"))
        .expect("the prepared transaction is named");
    assert_eq!(prepared.severity, Severity::Error);
    assert!(prepared.fix.contains("COMMIT PREPARED 'x'"), "{prepared:?}");
    // Each finding names the check that found it, in the refusal text too.
    assert_eq!(no_key.check, "replica-identity", "{no_key:?}");
    assert_eq!(role.check, "app-roles", "{role:?}");
    assert_eq!(prepared.check, "open-transactions", "{prepared:?}");
    assert!(
        report.errors_text().contains("[replica-identity] source"),
        "{}",
        report.errors_text()
    );
    c.batch_execute("ROLLBACK PREPARED 'x'").await.unwrap();
    // The tables with keys are fine and the empty target gets its schema copied.
    assert!(report.copy_schema);
    assert!(
        report
            .findings
            .iter()
            .all(|f| !f.problem.contains("public.writes"))
    );

    // With the role created and FULL identity allowed, only a warning is left.
    t.batch(
        "create role",
        &format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"),
    )
    .await
    .unwrap();
    let pair = pair_of(&fx.plan("replica_identity_full = true"));
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    assert_eq!(report.identity_full, vec!["public.audit_log".to_owned()]);

    // Without copy_schema the empty target is an error that says how to fix it.
    let mut plan = fx.plan("replica_identity_full = true");
    plan.postgres[0].copy_schema = false;
    let pair = pair_of(&plan);
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    let schema = report
        .findings
        .iter()
        .find(|f| f.problem.contains("none of the tables"))
        .expect("missing schema reported");
    assert!(schema.fix.contains("copy_schema = true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_twice_verify_and_cleanup_twice_are_harmless() {
    let fx = Fixture::new(true).await;
    let plan = fx.plan("");
    let pair = pair_of(&plan);

    let first = start::start(&pair).await.unwrap();
    assert!(first.schema_copied && first.publication_created && first.subscription_created);
    assert_eq!(first.target_roles_blocked, vec!["app".to_owned()]);
    wait_ready(&pair).await;
    let second = start::start(&pair).await.unwrap();
    assert!(!second.schema_copied && !second.publication_created && !second.subscription_created);
    wait_ready(&pair).await;

    // The target's app role cannot connect to the database until promotion (it can reach
    // `postgres` too, so the fence is scoped to `app`).
    assert_connect_refused(fx.app_can_write(&fx.target).await);

    // Status does not queue behind DDL on a replicated table: a session holding an ACCESS
    // EXCLUSIVE lock on the target's copy of `writes` (what ALTER TABLE takes) does not stop it.
    let locker = fx.target.connect("app").await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE writes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (s, t) = pair.connect().await.unwrap();
    let st = tokio::time::timeout(Duration::from_secs(10), status::status(&pair, &s, &t, None))
        .await
        .expect("status must not wait behind a lock on a replicated table")
        .unwrap();
    assert!(st.all_ready, "{st:?}");
    assert!(st.tables.iter().all(|t| t.target_bytes.is_none()), "{st:?}");
    // The schema comparison needs the table's definition, which waits for the lock: it is
    // skipped after a bounded wait and status says so, rather than claiming no drift.
    assert!(
        st.warnings
            .iter()
            .any(|w| w.starts_with("schema drift not checked") && w.contains("lock")),
        "{st:?}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();

    // Verify in small chunks: every row matches (the source is idle) ...
    let report = verify::verify(&pair, 700).await.unwrap();
    assert!(report.tables.iter().all(|t| t.matches()), "{report:#?}");
    // ... and sequences, which only the cutover copies, are reported behind, by name.
    let mut behind: Vec<&str> = report
        .differences
        .iter()
        .inspect(|d| {
            assert!(
                d.kind == "sequence" && d.detail.starts_with("behind"),
                "{d:?}"
            )
        })
        .map(|d| d.object.as_str())
        .collect();
    behind.sort();
    assert_eq!(behind, ["public.idents_id_seq", "public.writes_id_seq"]);
    let writes = report
        .tables
        .iter()
        .find(|t| t.table == "public.writes")
        .unwrap();
    assert_eq!((writes.source_rows, writes.target_rows), (3000, 3000));
    assert_eq!(writes.chunks, 5, "3000 rows in chunks of 700");
    // ... and a row changed behind replication's back is found, with its key range.
    let t = fx.target.connect("app").await.unwrap();
    t.batch_execute("UPDATE writes SET payload = 'tampered' WHERE id = 1500")
        .await
        .unwrap();
    let report = verify::verify(&pair, 700).await.unwrap();
    assert!(!report.matches());
    let writes = report
        .tables
        .iter()
        .find(|t| t.table == "public.writes")
        .unwrap();
    assert_eq!(writes.differing.len(), 1, "{writes:#?}");
    assert_eq!(writes.differing[0].keys, "keys after 1400 up to 2100");

    let first = cleanup::cleanup(&pair).await.unwrap();
    assert!(
        first.done.iter().any(|l| l.contains("subscription")),
        "{first:?}"
    );
    assert!(
        first
            .done
            .iter()
            .any(|l| l
                == "gave back what the fence took on the target: app (CONNECT on database app)"),
        "{first:?}"
    );
    let second = cleanup::cleanup(&pair).await.unwrap();
    assert!(
        second.done.is_empty() && second.kept.is_empty(),
        "{second:?}"
    );

    // Nothing of cutover's is left, and the target's app role works again.
    let s = fx.source.connect("app").await.unwrap();
    let left: i64 = s
        .query_one(
            "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'cutover')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let left: i64 = t
        .query_one(
            "SELECT (SELECT count(*) FROM pg_subscription) + (SELECT count(*) FROM pg_namespace WHERE nspname = 'cutover')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    fx.app_can_write(&fx.target).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_under_concurrent_writes_loses_nothing_and_ids_continue() {
    let fx = Fixture::new(true).await;
    let plan = fx.plan("reverse_replication = true");
    let pair = pair_of(&plan);
    // Aim above the 500 tx/s the issue asks for, so a busy machine still clears it.
    let writer = fx
        .replicate_then_write(&pair, 1000, Duration::from_secs(2))
        .await;
    // Start again while writes flow: still harmless.
    start::start(&pair).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let began = Instant::now();
    let mut fenced_at = None;
    let mut promoted_at = None;
    let report = engine::cutover(&pair, &mut |e: &Event| match e {
        Event::GatePassed { .. } => fenced_at = Some(Instant::now()),
        Event::Promoted { .. } => promoted_at = Some(Instant::now()),
        _ => {}
    })
    .await
    .unwrap_or_else(|e| panic!("cutover failed: {e} ({:?})", e.rollback));
    wait_for_writes_after(&fx.target, server_now(&fx.target).await, APP_KEYS).await;
    let ledger = writer.stop().await;

    let (fenced_at, promoted_at) = (fenced_at.unwrap(), promoted_at.unwrap());
    assert!(
        ledger.commits.iter().any(|t| *t < fenced_at),
        "the writer committed on the source before the fence"
    );
    // The reported window lies between the gate and the promotion event, which bound it.
    let observed_ms = (promoted_at - fenced_at).as_secs_f64() * 1000.0;
    assert!(
        report.promoted.write_unavailable_ms.unwrap() > 0.0
            && report.promoted.write_unavailable_ms.unwrap() <= observed_ms,
        "reported {:.1} ms, gate to promotion {observed_ms:.1} ms",
        report.promoted.write_unavailable_ms.unwrap()
    );
    assert_eq!(
        ledger.both_accepted, 0,
        "source and target accepted the app role at once"
    );
    // Only the commits cut off by the fence fail: one per writer connection.
    assert!(ledger.errors.len() <= 2, "{:?}", ledger.errors);

    let t = fx.target.connect("app").await.unwrap();
    let check = ledger.check(&t).await.unwrap();
    assert!(
        check.acked_on_target > 0,
        "the writer moved to the target: {check:?}"
    );
    assert!(check.clean(), "{check:#?}");
    // The writer's longest pause spans the window and ends once the target takes it: it is at
    // least the window's own length and no longer than the whole cutover call.
    let (gap, _) = ledger.gaps_around(fenced_at, promoted_at);
    assert!(
        gap.as_secs_f64() * 1000.0 >= report.promoted.write_unavailable_ms.unwrap() * 0.5
            && gap < began.elapsed(),
        "writer gap {gap:?}, report {:.1} ms",
        report.promoted.write_unavailable_ms.unwrap()
    );

    // The old primary stays fenced; the new one takes the app.
    assert_connect_refused(fx.app_can_write(&fx.source).await);
    fx.app_can_write(&fx.target).await.unwrap();
    // Another operator's plan for the same move (its own state directory) is stopped at
    // preflight: the source is the old primary of a completed cutover.
    let (s, t) = pair.connect().await.unwrap();
    let again = preflight::run(&pair, &s, &t).await.unwrap();
    assert!(
        again.findings.iter().any(|f| f.severity == Severity::Error
            && f.problem
                .starts_with("this database was moved away by a completed cutover")),
        "{:#?}",
        again.findings
    );

    // Reverse replication carries the target's writes back to the old primary.
    let s = fx.source.connect("app").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let back = ledger.check(&s).await.unwrap();
        if back.clean() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reverse replication incomplete: {back:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Object by object, row chunk by row chunk, the old primary holds what the new one holds.
    let verified = verify::verify(&pair, 1000).await.unwrap();
    assert!(verified.matches(), "{verified:#?}");

    let cleaned = cleanup::cleanup(&pair).await.unwrap();
    assert!(
        cleaned
            .kept
            .iter()
            .any(|k| k.contains("stay blocked on the source")),
        "{cleaned:?}"
    );
    assert_connect_refused(fx.app_can_write(&fx.source).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_lost_during_catch_up_leaves_source_writable() {
    let mut fx = Fixture::new(true).await;
    let plan = fx.plan("catchup_timeout = \"3s\"");
    let pair = pair_of(&plan);
    let writer = fx
        .replicate_then_write(&pair, 300, Duration::from_millis(500))
        .await;

    let target_process = fx.target.process();
    let result = engine::cutover(&pair, &mut |e: &Event| {
        if matches!(e, Event::Fenced { .. }) {
            target_process.stop(Duration::from_secs(5));
        }
    })
    .await;
    let failed = result.expect_err("the cutover must fail without a target");
    let rolled_back = Instant::now();
    assert_eq!(failed.phase, Phase::CatchUp, "{failed}");
    match &failed.rollback {
        Rollback::SourceReopened { detail } => {
            assert_eq!(detail, "given back: app (CONNECT on database app)")
        }
        other => panic!("expected the source unfenced, got {other:?}"),
    }

    // The app role logs in and writes on the source again; the writer found its way back:
    // wait (bounded) until the source holds a row it committed after the rollback.
    fx.app_can_write(&fx.source).await.unwrap();
    let s = fx.source.connect("app").await.unwrap();
    let since: std::time::SystemTime = s.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .query_one(
            "SELECT count(*) FROM writes WHERE k >= 0 AND at > $1",
            &[&since],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the writer never wrote to the source again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = writer.stop().await;
    let check = ledger.check(&s).await.unwrap();
    assert!(check.clean(), "{check:#?}");
    assert_eq!(check.acked_on_target, 0);
    let after_rollback = ledger.commits.iter().filter(|t| **t > rolled_back).count();
    assert!(
        after_rollback > 0,
        "no commits on the source after the rollback"
    );
}

/// The server's clock now.
async fn server_now(pg: &Postgres) -> std::time::SystemTime {
    let c = pg.connect("app").await.unwrap();
    c.query_one("SELECT now()", &[]).await.unwrap().get(0)
}

/// Waits (at most 10 s) until `pg` holds a row of the writer's key range `keys` stamped after
/// `since` (written there, or replicated there).
async fn wait_for_writes_after(pg: &Postgres, since: std::time::SystemTime, keys: (i64, i64)) {
    let c = pg.connect("app").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM writes WHERE k >= $1 AND k < $2 AND at > $3",
                &[&keys.0, &keys.1, &since],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no writes on {} since the cutover",
            pg.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keys the first writer (tasks 0 and 1) uses; the second (tasks 2 and 3) uses the next range.
const APP_KEYS: (i64, i64) = (0, 2_000_000_000);
const WORKER_KEYS: (i64, i64) = (2_000_000_000, 4_000_000_000);

/// Runs `sql` as the superuser on `pg`'s `app` database.
async fn as_superuser(pg: &Postgres, sql: &str) {
    let c = pg.connect("app").await.unwrap();
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_and_gate_refuse_writers_the_fence_does_not_stop() {
    let fx = Fixture::new(true).await;
    as_superuser(
        &fx.source,
        "CREATE ROLE worker LOGIN PASSWORD 'w'; GRANT INSERT ON writes TO worker;
         CREATE ROLE reader LOGIN PASSWORD 'r'; GRANT SELECT ON writes, idents, counters TO reader;
         CREATE ROLE reporting LOGIN PASSWORD 'p'; GRANT SELECT, UPDATE ON counters TO reporting;
         CREATE ROLE writers_group NOLOGIN; GRANT INSERT ON idents TO writers_group;
         CREATE ROLE batch LOGIN NOINHERIT PASSWORD 'b' IN ROLE writers_group;
         CREATE ROLE owner_role LOGIN PASSWORD 'o'; ALTER TABLE counters OWNER TO owner_role;
         CREATE ROLE other_admin LOGIN SUPERUSER PASSWORD 'a';",
    )
    .await;
    let exempt =
        "exempt_roles = { reporting = \"nightly job; recomputes its counters from scratch\" }";
    let pair = pair_of(&fx.plan(exempt));
    let (s, t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    let errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    // Directly granted, through membership (NOINHERIT still allows SET ROLE), as owner, as
    // superuser: each named, on the source, with the fix.
    for role in ["worker", "batch", "owner_role", "other_admin"] {
        let e = errors
            .iter()
            .find(|f| f.problem.contains(&format!("role `{role}`")))
            .unwrap_or_else(|| panic!("{role} not reported: {:#?}", report.findings));
        assert!(e.server.starts_with("source"), "{e:?}");
        assert!(
            e.fix.contains("app_roles") && e.fix.contains("exempt_roles"),
            "{e:?}"
        );
    }
    let copy_needs = errors
        .iter()
        .find(|f| f.problem.contains("schema copy needs roles"))
        .expect("roles the schema copy would need are named before start fails on them");
    assert!(copy_needs.server.starts_with("target"), "{copy_needs:?}");
    for role in ["reader", "writers_group", "reporting"] {
        assert!(copy_needs.problem.contains(role), "{copy_needs:?}");
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");
    // A role that only reads is no problem; an exempt writer is reported as exempt.
    assert!(
        report
            .findings
            .iter()
            .filter(|f| !f.problem.contains("schema copy"))
            .all(|f| !f.problem.contains("reader")),
        "{:#?}",
        report.findings
    );
    let exempt_finding = report
        .findings
        .iter()
        .find(|f| f.problem.contains("`reporting`"))
        .expect("the exempt role is listed");
    assert_eq!(exempt_finding.severity, Severity::Info);
    assert!(exempt_finding.problem.contains("nightly job"));

    // Replication runs once every writer is accounted for; a plan that drops the exemption
    // is then refused at the gate, naming the role and its open session, and nothing changes.
    as_superuser(
        &fx.source,
        "DROP ROLE batch; ALTER TABLE counters OWNER TO postgres; DROP ROLE owner_role;
         DROP ROLE other_admin; REVOKE ALL ON writes FROM worker; DROP ROLE worker;
         REVOKE ALL ON writes, idents, counters FROM reader; DROP ROLE reader;
         REVOKE ALL ON idents FROM writers_group; DROP ROLE writers_group;",
    )
    .await;
    let c = fx.target.connect("postgres").await.unwrap();
    c.batch_execute("CREATE ROLE reporting LOGIN PASSWORD 'p'")
        .await
        .unwrap();
    start::start(&pair).await.unwrap();
    wait_ready(&pair).await;
    let mut config = fx.source.config("app");
    config.user("reporting").password("p");
    let (reporting, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let strict = pair_of(&fx.plan(""));
    let failed = engine::cutover(&strict, &mut |_| {})
        .await
        .expect_err("the gate refuses an unfenced writer");
    assert_eq!(failed.phase, Phase::Gate);
    assert!(matches!(failed.rollback, Rollback::NotNeeded));
    let text = failed.error.to_string();
    assert!(
        text.contains("reporting") && text.contains("1 session"),
        "{text}"
    );
    // Nothing was fenced: the app still writes on the source, the writer role too.
    fx.app_can_write(&fx.source).await.unwrap();
    reporting
        .execute("UPDATE counters SET n = n WHERE id = 0", &[])
        .await
        .unwrap();
    let (s, _) = pair.connect().await.unwrap();
    assert!(
        cutover::postgres::fence::blocked(&s, &pair.names.pair)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writing_roles_both_fenced_lose_nothing() {
    let fx = Fixture::new(true).await;
    for pg in [&fx.source, &fx.target] {
        let c = pg.connect("postgres").await.unwrap();
        c.batch_execute(&format!(
            "CREATE ROLE worker LOGIN PASSWORD '{APP_PASSWORD}'"
        ))
        .await
        .unwrap();
    }
    as_superuser(
        &fx.source,
        "GRANT SELECT, INSERT, UPDATE, DELETE ON writes, idents, counters TO worker;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO worker;
         INSERT INTO counters (id, n) VALUES (2, 0), (3, 0);",
    )
    .await;
    let pair = pair_of(&fx.plan("app_roles = [\"app\", \"worker\"]"));
    let app = fx
        .replicate_then_write(&pair, 300, Duration::from_millis(800))
        .await;
    let as_worker = |pg: &Postgres| {
        let mut c = fx.app_config(pg, "app");
        c.user("worker");
        c
    };
    let worker = Writer::start(WriterConfig {
        source: as_worker(&fx.source),
        target: as_worker(&fx.target),
        rate: 300,
        tasks: 2,
        first_task: 2,
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    let promoted = server_now(&fx.target).await;
    wait_for_writes_after(&fx.target, promoted, APP_KEYS).await;
    wait_for_writes_after(&fx.target, promoted, WORKER_KEYS).await;
    let (app, worker) = (app.stop().await, worker.stop().await);
    assert_eq!(report.finished.old_primary_clean, Some(true), "{report:?}");
    let target = fx.target.connect("app").await.unwrap();
    for (who, ledger) in [("app", &app), ("worker", &worker)] {
        let check = ledger.check(&target).await.unwrap();
        assert!(check.clean(), "{who}: {check:?}");
        assert!(
            check.acked_on_target > 0,
            "{who} moved to the target: {check:?}"
        );
        assert_eq!(ledger.both_accepted, 0, "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_slipped_into_the_old_primary_after_the_fence_is_reported() {
    let fx = Fixture::new(true).await;
    let pair = pair_of(&fx.plan(""));
    start::start(&pair).await.unwrap();
    wait_ready(&pair).await;
    // A superuser session the fence does not touch (cutover's own login) writes to the old
    // primary once the target is promoted.
    let intruder = fx.source.connect("app").await.unwrap();
    let mut wrote = None;
    let report = engine::cutover(&pair, &mut |e: &Event| {
        if matches!(e, Event::Promoted { .. }) {
            wrote = Some(tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(intruder.batch_execute(
                    "INSERT INTO writes (k, payload) VALUES (-100001, 'late'), (-100002, 'late');
                     UPDATE counters SET n = n + 1 WHERE id = 0;",
                ))
            }));
        }
    })
    .await
    .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    wrote.expect("the promotion was reported").unwrap();
    let on_target = fx.target.connect("app").await.unwrap();
    let n: i64 = on_target
        .query_one(
            "SELECT count(*) FROM writes WHERE k IN (-100001, -100002)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the late rows never reached the new primary");
    assert_eq!(report.finished.old_primary_clean, Some(false), "{report:?}");
    let audit = &report.finished.detail["old_primary_audit"];
    assert_eq!(audit["rows_by_table"]["public.writes"], 2, "{audit}");
    assert_eq!(audit["rows_by_table"]["public.counters"], 1, "{audit}");
    assert_eq!(audit["transactions"], 1, "{audit}");
    let lost = report.finished.lost.as_deref().unwrap_or_default();
    assert!(lost.contains("3 row write(s)"), "{lost}");

    // Without the intruder the same audit finds nothing.
    let fx = Fixture::new(true).await;
    let pair = pair_of(&fx.plan("reverse_replication = true"));
    let writer = fx
        .replicate_then_write(&pair, 300, Duration::from_millis(500))
        .await;
    let report = engine::cutover(&pair, &mut |_| {}).await.unwrap();
    assert_eq!(report.finished.old_primary_clean, Some(true), "{report:?}");
    // Reverse replication applies the new primary's writes on the old one; the audit decodes
    // them and does not count them, while a local write next to them is counted. Shown on a
    // fresh slot of the test's own, once reverse-replicated rows have arrived.
    let source = pair.source.connect().await.unwrap();
    source
        .batch(
            "probe slot",
            "SELECT pg_create_logical_replication_slot('audit_probe', 'pgoutput')",
        )
        .await
        .unwrap();
    let probe = || async {
        cutover::postgres::writers::audit_slot(
            &source,
            "audit_probe",
            &pair.names.publication,
            "cutover",
        )
        .await
        .unwrap()
    };
    let since = server_now(&fx.target).await;
    wait_for_writes_after(&fx.source, since, APP_KEYS).await;
    writer.stop().await;
    let audit = probe().await;
    assert!(audit.replicated_transactions > 0, "{audit:?}");
    assert_eq!(audit.rows(), 0, "{audit:?}");
    as_superuser(
        &fx.source,
        "INSERT INTO writes (id, k, payload) VALUES (-200001, -200001, 'local')",
    )
    .await;
    let audit = probe().await;
    assert_eq!(
        audit.rows_by_table.get("public.writes"),
        Some(&1),
        "{audit:?}"
    );
    cutover::postgres::cleanup::drop_slot(&source, "audit_probe")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_created_during_the_sync_stops_the_gate_until_start_brings_it_over() {
    let fx = Fixture::new(true).await;
    as_superuser(
        &fx.source,
        "CREATE MATERIALIZED VIEW write_totals AS SELECT count(*) AS n FROM writes;",
    )
    .await;
    let pair = pair_of(&fx.plan(""));
    let (s, t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    let matview = report
        .findings
        .iter()
        .find(|f| f.problem.contains("public.write_totals"))
        .expect("preflight names the materialized view");
    assert!(matview.fix.contains("REFRESH"), "{matview:?}");
    let writer = fx
        .replicate_then_write(&pair, 200, Duration::from_millis(300))
        .await;

    // An app deploy during the sync: a new table with a non-sequence key, filled at once.
    as_superuser(
        &fx.source,
        "CREATE TABLE deploys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), note text NOT NULL);
         GRANT SELECT, INSERT ON deploys TO app;
         INSERT INTO deploys (note) SELECT 'row ' || g FROM generate_series(1, 40) g;",
    )
    .await;
    let (s, t) = pair.connect().await.unwrap();
    let st = status::status(&pair, &s, &t, None).await.unwrap();
    assert!(
        st.drift.iter().any(|d| d.object == "public.deploys"),
        "status shows the drift: {:?}",
        st.drift
    );
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses on drift");
    assert_eq!(failed.phase, Phase::Gate);
    assert!(matches!(failed.rollback, Rollback::NotNeeded));
    assert!(
        failed.error.to_string().contains("public.deploys"),
        "{failed}"
    );
    fx.app_can_write(&fx.source).await.unwrap();

    // `start` again copies its schema and rows; then the cutover carries both tables.
    start::start(&pair).await.unwrap();
    wait_ready(&pair).await;
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    assert_eq!(
        report.finished.detail["matviews_refreshed"],
        serde_json::json!(["public.write_totals"])
    );
    wait_for_writes_after(&fx.target, server_now(&fx.target).await, APP_KEYS).await;
    let ledger = writer.stop().await;
    let target = fx.target.connect("app").await.unwrap();
    let check = ledger.check(&target).await.unwrap();
    assert!(check.clean(), "{check:?}");
    let deploys: i64 = target
        .query_one("SELECT count(*) FROM deploys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deploys, 40);
    // The view holds rows on the new primary (the app's first query would have failed).
    let totals: i64 = target
        .query_one("SELECT n FROM write_totals", &[])
        .await
        .unwrap()
        .get(0);
    assert!(totals >= 3000, "{totals}");
    let verified = verify::verify(&pair, 1000).await.unwrap();
    assert!(
        verified.differences.is_empty(),
        "{:#?}",
        verified.differences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_replication_cannot_carry_is_refused_or_listed_never_a_raw_error() {
    let fx = Fixture::new(true).await;
    as_superuser(
        &fx.source,
        "CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
         SELECT lo_from_bytea(0, 'attachment');",
    )
    .await;
    let pair = pair_of(&fx.plan(""));
    let (s, t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    let errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    let unlogged = errors
        .iter()
        .find(|f| f.problem.contains("public.scratch"))
        .expect("the unlogged table is named");
    assert!(unlogged.fix.contains("SET LOGGED"), "{unlogged:?}");
    let lo = errors
        .iter()
        .find(|f| f.problem.contains("large object"))
        .expect("the large object is refused");
    assert!(lo.problem.contains("1 large object"), "{lo:?}");
    // `start` refuses with preflight's words, not the server's.
    let refused = start::start(&pair).await.expect_err("start refuses");
    assert!(refused.to_string().contains("SET LOGGED"), "{refused}");

    // With those out of the way, verify lists each remaining difference, none as a crash.
    as_superuser(
        &fx.source,
        "DROP TABLE scratch; SELECT lo_unlink(oid) FROM pg_largeobject_metadata;",
    )
    .await;
    start::start(&pair).await.unwrap();
    wait_ready(&pair).await;
    as_superuser(
        &fx.source,
        "CREATE TABLE late (id int PRIMARY KEY); SELECT lo_from_bytea(0, 'late');",
    )
    .await;
    let report = verify::verify(&pair, 1000).await.unwrap();
    let listed: Vec<String> = report.differences.iter().map(|d| d.to_string()).collect();
    assert!(
        listed.iter().any(|d| d.starts_with("table public.late")),
        "{listed:#?}"
    );
    assert!(
        listed.iter().any(|d| d.starts_with("large objects")),
        "{listed:#?}"
    );
    assert!(
        listed
            .iter()
            .any(|d| d.starts_with("sequence public.writes_id_seq") && d.contains("behind")),
        "{listed:#?}"
    );
    assert!(!report.matches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_whose_target_is_its_source_is_refused_within_seconds() {
    let fx = Fixture::new(true).await;
    let mut plan = fx.plan("");
    // The same cluster under another name.
    plan.postgres[0].target = plan.postgres[0].source.clone();
    plan.postgres[0].target.host = "localhost".into();
    let pair = pair_of(&plan);
    let began = Instant::now();
    let (s, t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    let same = report
        .findings
        .iter()
        .find(|f| f.problem.contains("same PostgreSQL cluster"))
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert_eq!(same.severity, Severity::Error);
    let refused = start::start(&pair).await.expect_err("start refuses");
    assert!(refused.to_string().contains("same PostgreSQL cluster"));
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "refused, not hung"
    );
}

/// How `user` (password [`APP_PASSWORD`]) connects to database `db` of `pg`.
fn config_as(pg: &Postgres, db: &str, user: &str) -> tokio_postgres::Config {
    let mut config = pg.config(db);
    config
        .user(user)
        .password(APP_PASSWORD)
        .connect_timeout(Duration::from_secs(5));
    config
}

async fn connect_with(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Connects as `user` to database `db` of `pg`.
async fn connect_as(
    pg: &Postgres,
    db: &str,
    user: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with(&config_as(pg, db, user)).await
}

/// On the source: database `blog` written by the plan's own role `app`, database `wiki` with a
/// role of its own that shares nothing, and a login role `reader` that connects to `app`
/// through PUBLIC's grant.
async fn neighbours_on_source(fx: &Fixture) {
    let c = fx.source.connect("postgres").await.unwrap();
    for sql in [
        "CREATE DATABASE blog",
        "CREATE DATABASE wiki",
        &format!("CREATE ROLE wikiuser LOGIN PASSWORD '{APP_PASSWORD}'"),
        &format!("CREATE ROLE reader LOGIN PASSWORD '{APP_PASSWORD}'"),
        "REVOKE CONNECT ON DATABASE wiki FROM PUBLIC",
        "GRANT CONNECT ON DATABASE wiki TO wikiuser",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    for (db, user) in [("blog", "app"), ("wiki", "wikiuser")] {
        let c = fx.source.connect(db).await.unwrap();
        c.batch_execute(&format!(
            "CREATE TABLE posts (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
             GRANT INSERT, SELECT ON posts TO {user}; GRANT USAGE ON SEQUENCE posts_id_seq TO {user};"
        ))
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_neighbour_sharing_the_app_role_keeps_serving_through_and_after_the_cutover() {
    let fx = Fixture::new(true).await;
    neighbours_on_source(&fx).await;
    let pair = pair_of(&fx.plan("reverse_replication = true"));

    // Preflight names both neighbours and what the fence does to each.
    let (s, t) = pair.connect().await.unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    let named = |db: &str| {
        report
            .findings
            .iter()
            .find(|f| {
                f.server.starts_with("source")
                    && f.problem
                        .starts_with(&format!("database {db} shares this server"))
            })
            .unwrap_or_else(|| panic!("neighbour {db} not named: {:#?}", report.findings))
            .clone()
    };
    let blog = named("blog");
    assert_eq!(blog.severity, Severity::Info, "{blog:?}");
    assert!(
        blog.problem.contains("shares app role(s) app")
            && blog.problem.contains("scoped to database app"),
        "{blog:?}"
    );
    let wiki = named("wiki");
    assert!(
        wiki.problem.contains("no app role of the plan can connect"),
        "{wiki:?}"
    );

    let app = fx
        .replicate_then_write(&pair, 300, Duration::from_millis(800))
        .await;
    let neighbour = |db: &str, user: &str| {
        let config = config_as(&fx.source, db, user);
        NeighbourWriter::start(move || {
            let config = config.clone();
            async move {
                let c = connect_with(&config).await.map_err(|e| format!("{e:?}"))?;
                c.execute("INSERT INTO posts DEFAULT VALUES", &[])
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }
        })
    };
    let blog_writer = neighbour("blog", "app");
    let wiki_writer = neighbour("wiki", "wikiuser");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    let promoted = Instant::now();
    wait_for_writes_after(&fx.target, server_now(&fx.target).await, APP_KEYS).await;
    // The neighbours keep writing after the cutover, each insert on a new connection.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ledger = app.stop().await;
    assert_eq!(
        report.fenced.scope,
        vec!["app (no CONNECT on database app)".to_owned()],
        "{report:?}"
    );
    assert_eq!(report.finished.old_primary_clean, Some(true), "{report:?}");
    for (db, writer) in [("blog", blog_writer), ("wiki", wiki_writer)] {
        let (acked, failed) = writer.stop().await;
        assert!(failed.is_empty(), "{db}'s writer failed: {failed:?}");
        assert!(
            acked
                .iter()
                .any(|t| *t > promoted + Duration::from_millis(300)),
            "{db} kept being written after the cutover"
        );
        let c = fx.source.connect(db).await.unwrap();
        let rows: i64 = c
            .query_one("SELECT count(*) FROM posts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            rows,
            acked.len() as i64,
            "{db}: every acknowledged insert is there"
        );
    }

    // The moved database: the app is fenced out of it on the old primary, row by row clean.
    let target = fx.target.connect("app").await.unwrap();
    let check = ledger.check(&target).await.unwrap();
    assert!(check.clean(), "{check:#?}");
    assert!(check.acked_on_target > 0, "{check:?}");
    assert_eq!(ledger.both_accepted, 0);
    assert_connect_refused(fx.app_can_write(&fx.source).await);
    // Everyone else who could connect to it through PUBLIC still can.
    connect_as(&fx.source, "app", "reader")
        .await
        .expect("reader keeps its CONNECT on the old primary's database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_scoped_fence_gives_back_exactly_the_grants_it_took() {
    use cutover::postgres::fence::{self, Scope};
    let fx = Fixture::new(true).await;
    neighbours_on_source(&fx).await;
    let su = fx.source.connect("app").await.unwrap();
    // Grants of every kind: PUBLIC's default, a direct grant with grant option to the app role.
    su.batch_execute("GRANT CONNECT ON DATABASE app TO app WITH GRANT OPTION")
        .await
        .unwrap();
    let before = connect_grants(&fx.source, "app").await;
    let pair = pair_of(&fx.plan(""));
    let (s, _) = pair.connect().await.unwrap();
    start::own_tables(&s).await.unwrap();

    let planned = fence::block(&s, &["app".to_owned()], "p").await.unwrap();
    assert_eq!(planned.scopes[0].scope, Scope::Database);
    assert_connect_refused(fx.app_can_write(&fx.source).await);
    connect_as(&fx.source, "blog", "app")
        .await
        .expect("app still reaches blog");
    connect_as(&fx.source, "app", "reader")
        .await
        .expect("reader keeps CONNECT");
    // Applied twice (a resumed window): nothing changes, nothing is remembered twice.
    fence::block(&s, &["app".to_owned()], "p").await.unwrap();
    let unblocked = fence::unblock(&s, "p").await.unwrap();
    assert_eq!(unblocked, vec!["app (CONNECT on database app)".to_owned()]);
    assert_eq!(connect_grants(&fx.source, "app").await, before);
    fx.app_can_write(&fx.source).await.unwrap();

    // CONNECT held through a group the plan does not fence: the scope cannot hold, so the
    // role is made NOLOGIN (and preflight says why); unblocking gives LOGIN back.
    su.batch_execute(
        "CREATE ROLE staff NOLOGIN; GRANT staff TO app; GRANT CONNECT ON DATABASE app TO staff",
    )
    .await
    .unwrap();
    let before = connect_grants(&fx.source, "app").await;
    let planned = fence::block(&s, &["app".to_owned()], "p").await.unwrap();
    assert_eq!(planned.scopes[0].scope, Scope::Login);
    assert!(
        planned.scopes[0]
            .why_login
            .as_deref()
            .is_some_and(|w| w.contains("through role staff")),
        "{:?}",
        planned.scopes[0]
    );
    assert_login_refused(fx.app_can_write(&fx.source).await);
    let report = preflight::run(&pair, &s, &pair.connect().await.unwrap().1)
        .await
        .unwrap();
    let blog = report
        .findings
        .iter()
        .find(|f| f.problem.starts_with("database blog shares this server"))
        .expect("blog named");
    assert_eq!(blog.severity, Severity::Warning, "{blog:?}");
    assert!(blog.problem.contains("unable to log in"), "{blog:?}");
    fence::unblock(&s, "p").await.unwrap();
    assert_eq!(connect_grants(&fx.source, "app").await, before);
    fx.app_can_write(&fx.source).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_that_lost_its_wal_is_refused_with_a_restart_never_a_retry() {
    let fx = Fixture::new(true).await;
    let pair = pair_of(&fx.plan(""));
    start::start(&pair).await.unwrap();
    wait_ready(&pair).await;
    // The target stops applying while the source writes past max_slot_wal_keep_size (a
    // careless setting on a busy source): the slot's WAL is removed at a checkpoint.
    let t = fx.target.connect("app").await.unwrap();
    let sub: String = t
        .query_one("SELECT subname::text FROM pg_subscription", &[])
        .await
        .unwrap()
        .get(0);
    t.batch_execute(&format!("ALTER SUBSCRIPTION \"{sub}\" DISABLE"))
        .await
        .unwrap();
    let s = fx.source.connect("app").await.unwrap();
    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "SELECT pg_reload_conf()",
        "CREATE TABLE ballast (id int, pad text)",
    ] {
        s.batch_execute(sql).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for sql in [
            "INSERT INTO ballast SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
        ] {
            s.batch_execute(sql).await.unwrap();
        }
        let wal: Option<String> = s
            .query_one(
                "SELECT max(wal_status) FROM pg_replication_slots WHERE slot_type = 'logical'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if wal.as_deref() == Some("lost") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot lost its WAL ({wal:?})");
    }
    // The operator lets the target apply again: nothing can resume.
    t.batch_execute(&format!("ALTER SUBSCRIPTION \"{sub}\" ENABLE"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sc, tc) = pair.connect().await.unwrap();
    let st = status::status(&pair, &sc, &tc, None).await.unwrap();
    let said = st.warnings.join("\n");
    assert!(
        said.contains("start the sync again") && !said.contains("retries by itself"),
        "{said}"
    );
    assert_eq!(
        said.matches("lost WAL").count(),
        1,
        "said once, with its fix: {said}"
    );
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses");
    assert_eq!(failed.rollback, Rollback::NotNeeded);
    let why = failed.error.to_string();
    assert!(
        why.contains("cannot resume")
            && why.contains("cutover pg cleanup")
            && !why.contains("retries by itself"),
        "{why}"
    );
    fx.app_can_write(&fx.source).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_copy_that_keeps_failing_is_shown_failing_not_copying() {
    let fx = Fixture::new(true).await;
    let pair = pair_of(&fx.plan(""));
    start::start(&pair).await.unwrap();
    wait_ready(&pair).await;
    // A table added during the sync, whose rows the target's copy of it refuses (a check the
    // operator added there by hand): every copy attempt fails and starts over.
    as_superuser(
        &fx.source,
        "CREATE TABLE refused (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO refused SELECT g, g FROM generate_series(1, 100) g;",
    )
    .await;
    as_superuser(
        &fx.target,
        "CREATE TABLE refused (id int PRIMARY KEY, v int NOT NULL CHECK (v < 0));",
    )
    .await;
    start::start(&pair).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let (s, t) = pair.connect().await.unwrap();
        let st = status::status(&pair, &s, &t, None).await.unwrap();
        if st.sync_errors >= 2 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the copy failed twice: {:?}",
            st.tables
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let refused = st
        .tables
        .iter()
        .find(|t| t.table == "public.refused")
        .unwrap_or_else(|| panic!("{:?}", st.tables));
    assert_eq!(refused.state, "failing", "{:?}", st.tables);
    let said = st.warnings.join("\n");
    assert!(
        said.contains("initial copy is FAILING") && said.contains("public.refused"),
        "{said}"
    );
    // The gate refuses while it fails.
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses");
    assert_eq!(failed.rollback, Rollback::NotNeeded);
    let why = failed.error.to_string();
    assert!(
        why.contains("public.refused (failing)") && why.contains("server log"),
        "{why}"
    );
    fx.app_can_write(&fx.source).await.unwrap();
}

/// A target whose disk cannot hold the copy is refused by preflight and by `start`, with the
/// size needed and the free space, before anything is created on either server; one that can
/// is told the size needed and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_disk_too_small_for_the_copy_is_refused_before_anything_starts() {
    let disk = support::SmallFs::mount(160);
    let pair_servers = PgPair::start_in(true, Some(&disk.path)).await;
    pair_servers.seeded("app", 2000, 0).await;
    let fx = Fixture(pair_servers);
    let pair = pair_of(&fx.plan(""));
    let (s, t) = pair.connect().await.unwrap();

    let report = preflight::run(&pair, &s, &t).await.unwrap();
    assert!(report.passed(), "{:#?}", report.findings);
    let room = report
        .findings
        .iter()
        .find(|f| f.problem.contains("the initial copy of"))
        .expect("the size needed is said");
    assert_eq!(room.severity, Severity::Info, "{room:?}");
    assert!(room.server.starts_with("target"), "{room:?}");
    assert!(room.problem.contains("free"), "{room:?}");

    // About 85 MiB more on the source: with the margin, more than the whole 160 MiB disk.
    s.batch(
        "grow",
        "CREATE TABLE big (id int PRIMARY KEY, pad text);
         INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 150000) g;",
    )
    .await
    .unwrap();
    let report = preflight::run(&pair, &s, &t).await.unwrap();
    assert!(!report.passed());
    let short = report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error && f.problem.contains("does not fit"))
        .unwrap_or_else(|| panic!("refused for room: {:#?}", report.findings));
    assert!(short.server.starts_with("target"), "{short:?}");
    assert!(short.problem.contains("MiB free"), "{short:?}");
    assert!(short.fix.contains("free at least"), "{short:?}");

    // The plan's `[hosts]` name the target's machine (an alias of an ssh config whose
    // HostName is the target server's address): its free space is read there, over ssh.
    let sshd = Sshd::start(fx.dir.path(), "sshd", Supervision::Owned)
        .await
        .expect("sshd starts");
    let over_ssh = pair_of(&fx.plan(&support::lab_hosts(&sshd)));
    let report = preflight::run(&over_ssh, &s, &t).await.unwrap();
    let short = report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error && f.problem.contains("does not fit"))
        .unwrap_or_else(|| panic!("refused for room, read over ssh: {:#?}", report.findings));
    assert!(
        short.problem.contains("(on lab-target, over ssh) has")
            && short.problem.contains("MiB free"),
        "{short:?}"
    );
    drop(sshd);

    let refused = start::start(&pair).await.expect_err("start refuses");
    assert!(refused.to_string().contains("does not fit"), "{refused}");
    let subscriptions = t
        .query_one("count", "SELECT count(*) FROM pg_subscription", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(subscriptions, 0, "nothing was created on the target");
    let slots = s
        .query_one("count", "SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(slots, 0, "no slot holds WAL on the source");
    drop((s, t));
    drop(fx);
}
