//! The adaptive gate against real servers: the target's applier held while a writer runs, the
//! gate waits and says why; released, it fences and the ledger is clean row by row; never
//! released, the run is refused at `gate_timeout` with the figures, nothing fenced, the source
//! serving and the writer never moved.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover::run;
use support::{MariaPair, PgPair, write_plan};

/// The progress notes the run journalled so far.
fn notes(plan: &std::path::Path) -> Vec<String> {
    let plan = cutover::plan::load(plan).unwrap();
    let store =
        cutover::state::FileStore::new(&cutover::state::StateDir::new(&plan.migration.state_dir));
    use cutover::state::Store;
    run::last_run(&store.journal().unwrap_or_default())
        .into_iter()
        .filter_map(|r| match r.entry {
            run::Entry::Progress { text } => Some(text),
            _ => None,
        })
        .collect()
}

/// Starts `cutover run`, stopped (SIGSTOP) right after it journalled the beginning of its gate:
/// everything before (the lease, preflight, replication ready) is done. The caller holds the
/// applier, then continues it with [`resume`].
fn spawn_run_to_the_gate(plan: &std::path::Path) -> Child {
    spawn_run_to_gate(plan, 0)
}

/// [`spawn_run_to_the_gate`], stopped at the `nth` pair's gate.
fn spawn_run_to_gate(plan: &std::path::Path, nth: usize) -> Child {
    let steps = run::steps(&cutover::plan::load(plan).unwrap());
    let gate = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.kind, run::Kind::Gate(_)))
        .nth(nth)
        .unwrap()
        .0;
    let mut child = Command::new(support::binary())
        .arg("run")
        .arg(plan)
        .env(run::test_stop::STEP_VAR, format!("{gate}:begin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        support::wait_stopped(&mut child, Duration::from_secs(120)),
        "the run reached its gate"
    );
    child
}

fn resume(child: &Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
}

/// Waits until the run journalled a note containing `what` (the child still running).
fn wait_note(child: &mut Child, plan: &std::path::Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(n) = notes(plan).into_iter().find(|n| n.contains(what)) {
            return n;
        }
        if let Ok(Some(status)) = child.try_wait() {
            use std::io::Read;
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            panic!("the run ended ({status}) before saying `{what}`:\n{out}");
        }
        if Instant::now() >= deadline {
            support::kill9(child);
            use std::io::Read;
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            panic!("no note `{what}`: {:?}\n{out}", notes(plan));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const BUDGET: &str = "window_budget = \"100ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_the_gate_waits_for_a_held_apply_worker_then_fences_or_refuses_at_its_timeout() {
    for released in [true, false] {
        let pg = PgPair::start().await;
        pg.database("ag").await;
        let timeout = if released { "60s" } else { "6s" };
        let path = write_plan(
            pg.dir.path(),
            "ag",
            // No `window_budget`: the default (100 ms) is what waits here.
            &(format!("gate_timeout = \"{timeout}\"\n") + &pg.pair_toml("ag", "")),
        );
        let plan_arg = path.display().to_string();
        let (code, out, err) = support::run(&["pg", "start", &plan_arg]);
        assert_eq!(code, 0, "{out}\n{err}");
        let writer = pg.writer("ag", 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut child = spawn_run_to_the_gate(&path);
        // The apply worker needs this lock for the writer's next insert.
        let hold = pg.target.connect("ag").await.unwrap();
        hold.batch_execute("BEGIN; LOCK TABLE writes IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        resume(&child);
        let note = wait_note(&mut child, &path, "waiting for the window to fit");
        assert!(
            note.contains("target applies 0 bytes/s") && note.contains("unbounded"),
            "the wait says why: {note}"
        );
        assert!(
            pg.app_writes(&pg.source, "ag").await,
            "nothing is fenced while the gate waits"
        );
        let (code, out, err) = support::run(&["status", &plan_arg]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            out.contains("it said last: postgres ag: waiting for the window to fit"),
            "status shows what the gate waits for:\n{out}"
        );
        if released {
            hold.batch_execute("COMMIT").await.unwrap();
            let (code, out) = finish(child);
            assert_eq!(code, Some(0), "{out}");
            assert!(out.contains("the gate waited"), "{out}");
            assert!(pg.app_writes(&pg.target, "ag").await);
        } else {
            let (code, out) = finish(child);
            assert_ne!(code, Some(0), "{out}");
            assert!(
                out.contains("did not fit window_budget")
                    && out.contains("target applies 0 bytes/s")
                    && out.contains("look for what holds its applier"),
                "refused with the figures and the help:\n{out}"
            );
            assert!(
                pg.app_writes(&pg.source, "ag").await,
                "the source still serves"
            );
            hold.batch_execute("ROLLBACK").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ledger = writer.stop().await;
        let serving = if released { &pg.target } else { &pg.source };
        let check = ledger
            .check(&serving.connect("ag").await.unwrap())
            .await
            .unwrap();
        assert!(
            check.clean() && check.acked > 0,
            "released {released}: {check:?}"
        );
        if !released {
            assert_eq!(
                check.acked_on_target, 0,
                "the writer never moved: {check:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_the_gate_waits_behind_a_read_lock_on_the_target_then_fences_when_it_is_lifted() {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    use mysql_async::prelude::Queryable;
    let m = MariaPair::start().await;
    let path = write_plan(
        m.dir.path(),
        "my",
        &(format!("{BUDGET}gate_timeout = \"60s\"\n") + &m.pair_toml()),
    );
    let plan_arg = path.display().to_string();
    let (code, out, err) = support::run(&["mysql", "start", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let writer = MyWriter::start(MyWriterConfig {
        source: m.opts(&m.source),
        target: m.opts(&m.target),
        rate: 200,
        tasks: 2,
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut child = spawn_run_to_the_gate(&path);
    // The replica's applier cannot commit while a global read lock is held.
    let mut hold = m.target.connect(None).await.unwrap();
    hold.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    resume(&child);
    let note = wait_note(&mut child, &path, "waiting for the window to fit");
    assert!(
        note.contains("target applies 0 transactions/s"),
        "the wait says why: {note}"
    );
    assert!(m.writable(&m.source).await, "nothing fenced while it waits");
    hold.query_drop("UNLOCK TABLES").await.unwrap();
    let (code, out) = finish(child);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the gate waited"), "{out}");
    assert!(m.writable(&m.target).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = writer.stop().await;
    let mut conn = m.target.connect(Some("app")).await.unwrap();
    let check = ledger.check(&mut conn).await.unwrap();
    assert!(check.clean() && check.acked > 0, "{check:?}");
}

/// Two pairs fenced together: the first pair's gate fitted, then its applier is held while
/// the second pair is gated. The second fits alone, but the gate waits until both fit at the
/// same moment, naming the one that does not; released, both are fenced and cut over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pairs_fenced_together_wait_until_every_pair_fits_at_once() {
    let pg = PgPair::start().await;
    pg.database("one").await;
    pg.database("two").await;
    let path = write_plan(
        pg.dir.path(),
        "two-pairs",
        &(format!("{BUDGET}gate_timeout = \"60s\"\n")
            + &pg.pair_toml("one", "")
            + &pg.pair_toml("two", "")),
    );
    let plan_arg = path.display().to_string();
    let (code, out, err) = support::run(&["pg", "start", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (one, two) = (pg.writer("one", 100), pg.writer("two", 100));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut child = spawn_run_to_gate(&path, 1);
    let hold = pg.target.connect("one").await.unwrap();
    hold.batch_execute("BEGIN; LOCK TABLE writes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    resume(&child);
    let note = wait_note(&mut child, &path, "waiting for every pair to fit");
    assert!(
        note.contains("not yet: postgres one") && !note.contains("postgres two:"),
        "the pair that does not fit is named: {note}"
    );
    assert!(pg.app_writes(&pg.source, "one").await && pg.app_writes(&pg.source, "two").await);
    hold.batch_execute("COMMIT").await.unwrap();
    let (code, out) = finish(child);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("every pair fits together"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (db, writer) in [("one", one), ("two", two)] {
        let ledger = writer.stop().await;
        let check = ledger
            .check(&pg.target.connect(db).await.unwrap())
            .await
            .unwrap();
        assert!(check.clean() && check.acked > 0, "{db}: {check:?}");
    }
}

/// Runs the plan and proves it refused because the source outran the target: the figures,
/// the help, and both rates, the target's above zero and below the source's.
fn run_refused_as_outrun(plan_arg: &str) {
    let (code, out, err) = support::run(&["run", plan_arg]);
    let said = format!("{out}\n{err}");
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("did not fit window_budget")
            && said.contains("the source commits faster than the target applies"),
        "refused with the figures and the help:\n{said}"
    );
    let (source_rate, apply_rate) =
        stated_rates(&said).unwrap_or_else(|| panic!("both rates are stated:\n{said}"));
    assert!(
        apply_rate > 0.0 && source_rate > apply_rate,
        "the target applies, slower than the source commits: {source_rate} > {apply_rate}:\n{said}"
    );
}

/// The rates a refusal states: (source commits, target applies), in the engine's unit.
fn stated_rates(said: &str) -> Option<(f64, f64)> {
    // The last figure after `key` (the help's words use it too, without a figure).
    let number_after = |key: &str| -> Option<f64> {
        said.rmatch_indices(key).find_map(|(at, _)| {
            said[at + key.len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    };
    Some((
        number_after("source commits ")?,
        number_after("target applies ")?,
    ))
}

/// A target that applies, but slower than the source commits, for the whole `gate_timeout`
/// (a trigger the apply worker fires sleeps 20 ms per row; the writer commits 200 a second):
/// refused at the timeout with both rates, the source's above the target's, and what would
/// help; nothing fenced, the source serving, the writer never moved, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_source_that_outruns_its_target_for_the_whole_timeout_is_refused_with_both_rates()
 {
    let pg = PgPair::start().await;
    pg.database("og").await;
    let path = write_plan(
        pg.dir.path(),
        "og",
        // The fixed ceiling out of the way: the adaptive gate is what refuses.
        &(format!("{BUDGET}gate_timeout = \"8s\"\n")
            + &pg.pair_toml("og", "max_lag_bytes = 1073741824")),
    );
    let plan_arg = path.display().to_string();
    let (code, out, err) = support::run(&["pg", "start", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    // Copied first: the trigger is for the apply worker's changes.
    support::wait_pg_ready(&path).await;
    let slow = pg.target.connect("og").await.unwrap();
    slow.batch_execute(
        "CREATE FUNCTION slow_apply() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
         CREATE TRIGGER slow_apply BEFORE INSERT ON writes
           FOR EACH ROW EXECUTE FUNCTION slow_apply();
         ALTER TABLE writes ENABLE REPLICA TRIGGER slow_apply",
    )
    .await
    .unwrap();
    let writer = pg.writer("og", 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    run_refused_as_outrun(&plan_arg);
    assert!(
        pg.app_writes(&pg.source, "og").await,
        "the source still serves"
    );
    slow.batch_execute("DROP TRIGGER slow_apply ON writes")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("og").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean() && check.acked > 0, "{check:?}");
    assert_eq!(
        check.acked_on_target, 0,
        "the writer never moved: {check:?}"
    );
}

/// The same on MariaDB: a trigger the replica's appliers fire (`slave_run_triggers_for_rbr`)
/// sleeps 100 ms per row, so its four apply workers fall behind a writer that commits 200
/// transactions a second. Refused at `gate_timeout` with both rates; nothing fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_a_source_that_outruns_its_target_for_the_whole_timeout_is_refused_with_both_rates()
{
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    use mysql_async::prelude::Queryable;
    let m = MariaPair::start().await;
    let path = write_plan(
        m.dir.path(),
        "my",
        // The fixed ceiling out of the way (the lag grows past a second before the gate): the
        // adaptive gate is what refuses.
        &(format!("{BUDGET}gate_timeout = \"8s\"\n") + &m.pair_toml() + "max_lag = \"1h\"\n"),
    );
    let plan_arg = path.display().to_string();
    let (code, out, err) = support::run(&["mysql", "start", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut slow = m.target.connect(Some("app")).await.unwrap();
    // Not in the target's binlog: a transaction of its own would be drift.
    slow.query_drop(
        "SET SESSION sql_log_bin = 0;
         SET GLOBAL slave_run_triggers_for_rbr = 'YES';
         CREATE TRIGGER slow_apply BEFORE INSERT ON writes
           FOR EACH ROW SET @slept = SLEEP(0.1)",
    )
    .await
    .unwrap();
    let writer = MyWriter::start(MyWriterConfig {
        source: m.opts(&m.source),
        target: m.opts(&m.target),
        rate: 200,
        tasks: 2,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    run_refused_as_outrun(&plan_arg);
    assert!(m.writable(&m.source).await, "the source still serves");
    slow.query_drop("DROP TRIGGER slow_apply; SET GLOBAL slave_run_triggers_for_rbr = 'NO'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = writer.stop().await;
    let mut conn = m.source.connect(Some("app")).await.unwrap();
    let check = ledger.check(&mut conn).await.unwrap();
    assert!(check.clean() && check.acked > 0, "{check:?}");
    assert_eq!(
        check.acked_on_target, 0,
        "the writer never moved: {check:?}"
    );
}
