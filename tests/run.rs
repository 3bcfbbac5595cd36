//! `cutover run` against real servers: several pairs rolled back together, `kill -9` at every
//! step boundary of the window followed by `--resume`, a second runner refused, Ctrl-C, and the
//! single-pair cutovers killed inside their window.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use cutover::run::{self, Entry, Outcome};
use support::*;
use tokio_util::sync::CancellationToken;

fn journal(plan: &std::path::Path) -> Vec<run::Record> {
    let plan = cutover::plan::load(plan).unwrap();
    let store =
        cutover::state::FileStore::new(&cutover::state::StateDir::new(&plan.migration.state_dir));
    use cutover::state::Store;
    run::last_run(&store.journal().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_in_the_second_pairs_catch_up_rolls_back_both_and_both_sources_serve() {
    let pg = PgPair::start().await;
    pg.database("one").await;
    pg.database("two").await;
    let body = pg.pair_toml("one", "")
        + &pg.pair_toml("two", "catchup_timeout = \"2s\"\nmax_lag_bytes = 100000000");
    let path = write_plan(pg.dir.path(), "two-pairs", &body);
    let plan = cutover::plan::load(&path).unwrap();
    // Replication set up first (the run's start step finds it running), so the target's
    // apply for pair `two` can be blocked by a lock a session holds (SHARE: readers pass,
    // the apply worker's inserts wait): its catch-up cannot end.
    for p in cutover::postgres::Pair::select(&plan, None) {
        cutover::postgres::start::start(&p).await.unwrap();
    }
    wait_pg_ready(&path).await;
    let (w1, w2) = (pg.writer("one", 200), pg.writer("two", 200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let blocker = pg.target.connect("two").await.unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE writes IN SHARE MODE")
        .await
        .unwrap();

    let mut seen = Vec::new();
    let (outcome, report) = run::run(
        &plan,
        &run::Options::default(),
        CancellationToken::new(),
        &mut |r: &run::Record| {
            eprintln!("{}", serde_json::to_string(r).unwrap());
            seen.push(r.entry.clone())
        },
    )
    .await
    .unwrap();
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(outcome, Outcome::RolledBack, "{report:#?}");
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .contains("catch-up postgres two"),
        "{:?}",
        report.error
    );
    assert!(!seen.iter().any(|e| matches!(e, Entry::PointOfNoReturn)));
    let rolled: BTreeSet<&str> = report.rollback.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(rolled, BTreeSet::from(["postgres one", "postgres two"]));
    assert!(
        report.rollback.iter().all(|(_, r)| r.source_serves()),
        "{:?}",
        report.rollback
    );
    // Both sources take the app's writes again; neither target lets the app in.
    for db in ["one", "two"] {
        assert!(pg.app_writes(&pg.source, db).await, "source {db} serves");
        assert!(
            !pg.app_writes(&pg.target, db).await,
            "target {db} stays blocked"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (db, w) in [("one", w1), ("two", w2)] {
        let ledger = w.stop().await;
        let check = ledger
            .check(&pg.source.connect(db).await.unwrap())
            .await
            .unwrap();
        assert!(check.clean(), "{db}: {check:?}");
        assert!(
            check.acked > 100,
            "{db}: the writer wrote ({})",
            check.acked
        );
        assert_eq!(check.acked_on_target, 0, "{db}: nothing went to the target");
    }
    // The run is over: status says so and a resume has nothing to do.
    let status = run::status(&plan).await.unwrap();
    assert_eq!(status.outcome, Some(Outcome::RolledBack));
    let (code, _, err) = support::run(&["run", "--resume", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing to resume"), "{err}");
}

/// The part of a sweep case both engines share: the runner of the plan at `path` stopped right
/// after journal record `at` and killed; `status` read and checked against the servers' own
/// answer (`serves`: whether the source and the target take the app's writes); then one
/// `run --resume`. At some records the journal's tail is torn first (a crash mid-append), or
/// the first resume is itself killed right after its own first step record (a crash during a
/// resume), and resumed again. Returns whether the run went forward, and the last record's
/// type before the kill.
async fn crash_and_resume(
    path: &std::path::Path,
    at: u64,
    serves: impl AsyncFn() -> (bool, bool),
) -> (bool, String) {
    crash_and_resume_run(path, at, false, serves).await
}

/// [`crash_and_resume`] of a forward run or (`reverse`) of a reverse cutover (`run
/// --rollback`), whose `serves` answers for the side serving when it began and the side it
/// moves to (the plan's target and source).
async fn crash_and_resume_run(
    path: &std::path::Path,
    at: u64,
    reverse: bool,
    serves: impl AsyncFn() -> (bool, bool),
) -> (bool, String) {
    let plan_arg = path.to_str().unwrap().to_owned();
    let args: &[&str] = if reverse {
        &["run", "--rollback", &plan_arg]
    } else {
        &["run", &plan_arg]
    };
    let mut child = spawn_stopping(args, Some(at), None);
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_stopped(&mut child, Duration::from_secs(30))
    }));
    if !matches!(stopped, Ok(true)) {
        // It exited on its own (a refusal, a rollback): what it said is the why.
        let said = match stopped {
            Ok(false) => child
                .wait_with_output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        let (_, out, err) = support::run(&["status", &plan_arg]);
        panic!(
            "record {at}: the runner did not stop there ({stopped:?}); it said:\n{said}\nstatus:\n{out}\n{err}"
        );
    }
    // A phase's records are made durable together (one fsync per batch), so a stop after
    // record `at` is a stop after the batch that holds it: the point of no return and its
    // promotions' begins, or the results of steps that ran side by side.
    let records = journal(path);
    let last = records
        .iter()
        .find(|r| r.seq == at)
        .cloned()
        .unwrap_or_else(|| panic!("record {at} is in the journal"));
    let tail = records.last().unwrap();
    assert!(
        tail.seq >= at,
        "record {at}: the journal ends at {}",
        tail.seq
    );
    assert!(
        records
            .iter()
            .filter(|r| r.seq > at)
            .all(|r| r.at_ms == last.at_ms),
        "record {at}: only its own batch follows it"
    );
    if at == 8 {
        // A second runner is refused while the first holds the migration, and told who; so is
        // every command that changes a server (the resume below then proves they changed
        // nothing: the run finishes or rolls back as if they had not been called).
        let (code, _, err) = support::run(&["run", &plan_arg]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("another runner holds this migration") && err.contains("`run`"),
            "{err}"
        );
        let plan = cutover::plan::load(path).unwrap();
        let group = if plan.postgres.is_empty() {
            "mysql"
        } else {
            "pg"
        };
        for cmd in ["start", "cleanup"] {
            let (code, _, err) = support::run(&[group, cmd, &plan_arg]);
            assert_eq!(code, 1, "{group} {cmd}: {err}");
            assert!(
                err.contains("another runner holds this migration") && err.contains("`run`"),
                "{group} {cmd}: {err}"
            );
        }
    }
    kill9(&mut child);
    let journal_file =
        cutover::state::StateDir::new(&cutover::plan::load(path).unwrap().migration.state_dir)
            .run()
            .join("journal.jsonl");
    if at.is_multiple_of(5) {
        // A crash mid-append leaves half a record: every read skips it, the next append cuts it.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal_file)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"seq\": 999, \"ty").unwrap();
    }

    // status tells the truth before the resume: what the servers are, and what resume does.
    let status = run::status(&cutover::plan::load(path).unwrap())
        .await
        .unwrap();
    // This run's point of no return (a reverse cutover follows a run that passed its own).
    let records = journal(path);
    let this_run = records
        .iter()
        .rposition(|r| matches!(r.entry, Entry::RunStarted { .. }))
        .unwrap();
    let past = records[this_run..]
        .iter()
        .any(|r| matches!(r.entry, Entry::PointOfNoReturn));
    let (from_serves, to_serves) = serves().await;
    let (source_serves, target_serves) = if reverse {
        (to_serves, from_serves)
    } else {
        (from_serves, to_serves)
    };
    let (_, state) = &status.pairs[0];
    match (source_serves, target_serves) {
        (true, false) => assert!(state.contains("the source serves writes"), "{at}: {state}"),
        (false, false) => assert!(state.contains("NO server accepts writes"), "{at}: {state}"),
        (false, true) => assert!(state.contains("the target serves writes"), "{at}: {state}"),
        (true, true) => panic!("record {at}: both servers take the app's writes"),
    }
    assert!(
        status.resume_would.contains(if past || to_serves {
            "go forward"
        } else {
            "roll back"
        }),
        "record {at}: {}",
        status.resume_would
    );
    assert_eq!(status.outcome, None, "record {at}: the run is interrupted");
    let forward = past || to_serves;

    if at % 4 == 2 {
        // The resume crashes too, right after its decision and its first record after it.
        let mut child = spawn_stopping(&["run", "--resume", &plan_arg], Some(at + 2), None);
        if wait_stopped(&mut child, Duration::from_secs(30)) {
            kill9(&mut child);
        }
        let status = run::status(&cutover::plan::load(path).unwrap())
            .await
            .unwrap();
        let (s, t) = serves().await;
        assert!(!(s && t), "record {at}: both serve after a crashed resume");
        if status.outcome.is_none() {
            assert!(
                status
                    .resume_would
                    .contains(if forward { "go forward" } else { "roll back" }),
                "record {at}, crashed resume: {}",
                status.resume_would
            );
        }
    }
    let (code, out, err) = support::run(&["run", "--resume", &plan_arg]);
    let outcome = journal(path).iter().rev().find_map(|r| match &r.entry {
        Entry::RunFinished { outcome, .. } => Some(*outcome),
        _ => None,
    });
    // A resume that the crashed one already finished has nothing left (exit 2); the journal
    // says how it ended either way.
    if forward {
        assert!(
            matches!(code, 0 | 2) && outcome == Some(Outcome::Completed),
            "record {at}: {code} {outcome:?}\n{out}\n{err}"
        );
    } else {
        assert!(
            matches!(code, 1 | 2) && outcome == Some(Outcome::RolledBack),
            "record {at}: {code} {outcome:?}\n{out}\n{err}"
        );
    }
    assert!(
        code != 2 || at % 4 == 2,
        "record {at}: only a crashed resume's work can be done already:\n{err}"
    );
    // Exactly one server serves afterwards, the right one.
    assert_eq!(serves().await, (!forward, forward), "record {at}");
    // The journal reads whole: nothing torn is left in the middle.
    let text = std::fs::read_to_string(&journal_file).unwrap();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("record {at}: a journal line does not parse ({e}): {line}"));
    }
    if at.is_multiple_of(5) {
        assert!(
            text.contains("journal-repaired"),
            "record {at}: the cut is journalled"
        );
    }
    (forward, last_entry_name(&last.entry))
}

/// One case of a PostgreSQL sweep: a fresh database and migration, a writer, the crash at
/// record `at`, the resume, and the row-by-row proof on the server that serves. `reverse`:
/// the case is the reverse cutover's (`run --rollback` after a completed forward run, the
/// writer starting on the new primary, `at` counted from the reverse run's first record).
async fn pg_case(pg: &PgPair, at: u64, reverse: bool) -> (bool, String) {
    use cutover::lab::writer::{Writer, WriterConfig};
    eprintln!(
        "case: stop at record {at}{}",
        if reverse {
            " of the reverse cutover"
        } else {
            ""
        }
    );
    let db = format!("{}{at}", if reverse { "r" } else { "k" });
    pg.database(&db).await;
    let grants_before = (
        connect_grants(&pg.source, &db).await,
        connect_grants(&pg.target, &db).await,
    );
    let path = write_plan(pg.dir.path(), &db, &pg.pair_toml(&db, ""));
    let plan_arg = path.to_str().unwrap().to_owned();
    // The side serving when the swept run begins, and the side it moves the app to.
    let (from, to) = if reverse {
        (&pg.target, &pg.source)
    } else {
        (&pg.source, &pg.target)
    };
    let record = if reverse {
        let (code, out, err) = support::run(&["run", &plan_arg]);
        assert_eq!(code, 0, "forward run:\n{out}\n{err}");
        journal(&path).last().unwrap().seq + at
    } else {
        at
    };
    let writer = Writer::start(WriterConfig {
        source: pg.app_config(from, &db),
        target: pg.app_config(to, &db),
        rate: 200,
        tasks: 2,
        first_task: 0,
    });
    assert!(
        writer.wait_acked(20, Duration::from_secs(30)).await,
        "record {at}: the writer writes before the run"
    );
    let (forward, last) = crash_and_resume_run(&path, record, reverse, async || {
        (pg.app_writes(from, &db).await, pg.app_writes(to, &db).await)
    })
    .await;
    settle(
        at,
        forward,
        writer.wait_on_target(20, Duration::from_secs(30)),
    )
    .await;
    let ledger = writer.stop().await;
    let serving = if forward { to } else { from };
    let check = ledger
        .check(&serving.connect(&db).await.unwrap())
        .await
        .unwrap();
    prove_case(at, forward, &check);
    // Replication objects removed: each case's subscription would otherwise hold an apply
    // worker on the shared clusters.
    let (code, out, err) = support::run(&["pg", "cleanup", &plan_arg]);
    assert_eq!(code, 0, "record {at}: cleanup:\n{out}\n{err}");
    // The fence is scoped to the database (app reaches `postgres` too): every grant it took is
    // given back exactly, except on an old primary a completed move keeps fenced.
    let (source_before, target_before) = &grants_before;
    let kept_fenced = match (reverse, forward) {
        (false, false) => None,
        // A forward move, or a reverse one rolled back (the first move's fence stays).
        (false, true) | (true, false) => Some(&pg.source),
        (true, true) => Some(&pg.target),
    };
    for (side, before) in [(&pg.source, source_before), (&pg.target, target_before)] {
        if kept_fenced.is_some_and(|k| std::ptr::eq(side, k)) {
            continue;
        }
        assert_eq!(
            &connect_grants(side, &db).await,
            before,
            "record {at}: {}'s CONNECT grants on {db} as they were",
            side.name
        );
    }
    // Fences are for good and roles are the whole cluster's: the next case's app must log in
    // on both clusters again.
    for side in [from, to] {
        let c = side.connect(&db).await.unwrap();
        c.batch_execute(
            "DO $$ BEGIN IF to_regclass('cutover.blocked_role') IS NOT NULL THEN \
             DELETE FROM cutover.blocked_role; END IF; END $$; ALTER ROLE app LOGIN",
        )
        .await
        .unwrap();
    }
    (forward, last)
}

/// After a sweep case's resume: when the run went forward, the writer reached the side it moved
/// to (`reached`); otherwise it goes on writing where it was for a moment.
async fn settle(at: u64, forward: bool, reached: impl std::future::Future<Output = bool>) {
    if forward {
        assert!(
            reached.await,
            "record {at}: the writer reached the new primary"
        );
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A sweep case's ledger, checked on the server that serves: nothing lost, duplicated or
/// taken by both; the writer wrote, and on the side moved to exactly when the run went forward.
fn prove_case(at: u64, forward: bool, check: &cutover::lab::writer::LedgerCheck) {
    assert!(check.clean(), "record {at}: {check:?}");
    assert!(check.acked > 0, "record {at}: the writer wrote: {check:?}");
    assert_eq!(
        check.acked_on_target > 0,
        forward,
        "record {at}: writes on the new primary exactly when it went forward: {check:?}"
    );
}

/// One case of the MariaDB sweep: fresh servers, a writer committing single inserts and
/// multi-statement transactions, the crash at record `at`, the resume, and the proof.
async fn kill_at_mysql(at: u64) -> (bool, String) {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    eprintln!("case (mariadb): stop at record {at}");
    let m = MariaPair::start().await;
    let path = write_plan(m.dir.path(), "my", &m.pair_toml());
    let writer = MyWriter::start(MyWriterConfig {
        source: m.opts(&m.source),
        target: m.opts(&m.target),
        rate: 200,
        tasks: 2,
    });
    let (forward, last) = crash_and_resume(&path, at, async || {
        (m.app_writes(&m.source).await, m.app_writes(&m.target).await)
    })
    .await;
    settle(
        at,
        forward,
        writer.wait_on_target(20, Duration::from_secs(30)),
    )
    .await;
    let ledger = writer.stop().await;
    let serving = if forward { &m.target } else { &m.source };
    let mut conn = serving.connect(Some("app")).await.unwrap();
    prove_case(at, forward, &ledger.check(&mut conn).await.unwrap());
    (forward, last)
}

fn last_entry_name(e: &Entry) -> String {
    serde_json::to_value(e).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_every_step_boundary_then_resume_finishes_or_rolls_back_with_nothing_lost() {
    let pg = PgPair::start().await;
    // The plan's steps: preflight, start, gate, fence, catch-up, promote, finish, report; the
    // records: run-started (1), then a begin and a done per step, the point of no return
    // before the promotion. Every record from the first step's begin to the last step's done.
    let mut outcomes = Vec::new();
    for at in 2..=18 {
        outcomes.push((at, pg_case(&pg, at, false).await));
    }
    // Before the point of no return (record 12) every case rolled back; after it, forward.
    for (at, (forward, entry)) in &outcomes {
        assert_eq!(*forward, *at >= 12, "record {at} ({entry})");
    }
}

/// The reverse cutover's own records: `run --rollback` of a completed run, killed at each.
/// Before its point of no return a resume gives the app back to the new primary, after it the
/// old primary serves; never both, nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_every_record_of_a_reverse_cutover_then_resume_with_nothing_lost() {
    let pg = PgPair::start().await;
    // Its steps: prepare, gate, fence, catch-up, promote (the point of no return before it),
    // finish, report; its records: run-started (1), then a begin and a done per step.
    let mut seen = Vec::new();
    for at in 2..=16 {
        seen.push((at, pg_case(&pg, at, true).await));
    }
    let went: Vec<_> = seen.iter().map(|(at, (f, _))| (*at, *f)).collect();
    // Before the point of no return (its record is 10: after the catch-up's done, 9) the
    // reverse run rolls back; from it on it goes on.
    for (at, f) in &went {
        assert_eq!(*f, *at >= 10, "record {at}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_every_record_of_a_mariadb_run_then_resume_with_nothing_lost() {
    // The same steps and records as the PostgreSQL plan's: point of no return at record 12.
    let mut outcomes = Vec::new();
    for at in 2..=18 {
        outcomes.push((at, kill_at_mysql(at).await));
    }
    for (at, (forward, entry)) in &outcomes {
        assert_eq!(*forward, *at >= 12, "record {at} ({entry})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_before_the_point_of_no_return_rolls_back_and_exits_non_zero() {
    let pg = PgPair::start().await;
    pg.database("cc").await;
    let path = write_plan(pg.dir.path(), "cc", &pg.pair_toml("cc", ""));
    let plan_arg = path.to_str().unwrap().to_owned();
    let writer = pg.writer("cc", 200);
    // Stopped right after the fence step began; SIGINT is delivered when it continues.
    let mut child = spawn_stopping(&["run", &plan_arg], Some(8), None);
    assert!(wait_stopped(&mut child, Duration::from_secs(120)));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let records = journal(&path);
    assert!(matches!(
        records.last().map(|r| &r.entry),
        Some(Entry::RunFinished {
            outcome: Outcome::RolledBack,
            ..
        })
    ));
    assert!(pg.app_writes(&pg.source, "cc").await);
    assert!(!pg.app_writes(&pg.target, "cc").await);
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("cc").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean(), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cutover_killed_inside_its_window_is_resumed_by_one_command() {
    let pg = PgPair::start().await;
    for (event, forward) in [("fenced", false), ("caught-up", false), ("promoted", true)] {
        let db = format!("p_{}", event.replace('-', "_"));
        pg.database(&db).await;
        let path = write_plan(pg.dir.path(), &db, &pg.pair_toml(&db, ""));
        let plan_arg = path.to_str().unwrap().to_owned();
        let (code, _, err) = support::run(&["pg", "start", &plan_arg]);
        assert_eq!(code, 0, "{err}");
        wait_pg_ready(&path).await;
        let writer = pg.writer(&db, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut child = spawn_stopping(&["pg", "cutover", &plan_arg], None, Some(event));
        if !wait_stopped(&mut child, Duration::from_secs(60)) {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{event}: the cutover did not stop there:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        kill9(&mut child);
        // A plain rerun refuses, says so truthfully and names the way out.
        if !forward {
            let (_, status, _) = support::run(&["pg", "status", &plan_arg]);
            assert!(
                status.contains("NO server accepts the app's writes")
                    && status.contains("--resume"),
                "{event}: {status}"
            );
            let (code, _, err) = support::run(&["pg", "cutover", &plan_arg]);
            assert_eq!(code, 1, "{err}");
            assert!(
                err.contains("interrupted") && err.contains("--resume"),
                "{err}"
            );
            assert!(!err.contains("serves as before"), "{err}");
        }
        let (code, out, err) = support::run(&["pg", "cutover", "--resume", &plan_arg]);
        assert_eq!(code, 0, "{event}:\n{out}\n{err}");
        assert!(
            out.contains(if forward {
                "finishing the cutover"
            } else {
                "rolling back"
            }),
            "{event}:\n{out}"
        );
        assert!(
            out.contains(if forward {
                "now: the target serves writes"
            } else {
                "now: the source serves writes"
            }),
            "{event}:\n{out}"
        );
        assert_eq!(pg.app_writes(&pg.source, &db).await, !forward, "{event}");
        assert_eq!(pg.app_writes(&pg.target, &db).await, forward, "{event}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ledger = writer.stop().await;
        let serving = if forward { &pg.target } else { &pg.source };
        let check = ledger
            .check(&serving.connect(&db).await.unwrap())
            .await
            .unwrap();
        assert!(check.clean(), "{event}: {check:?}");
        // The clusters and the app role are shared by the cases: this one's replication and
        // blocks go before the next.
        let (code, out, err) = support::run(&["pg", "cleanup", &plan_arg]);
        assert_eq!(code, 0, "{event}: cleanup:\n{out}\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_cutover_killed_inside_its_window_is_resumed_by_one_command() {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    for (event, forward) in [("fenced", false), ("caught-up", false), ("promoted", true)] {
        let m = MariaPair::start().await;
        let path = write_plan(m.dir.path(), "my", &m.pair_toml());
        let plan_arg = path.to_str().unwrap().to_owned();
        let (code, _, err) = support::run(&["mysql", "start", &plan_arg]);
        assert_eq!(code, 0, "{err}");
        let writer = MyWriter::start(MyWriterConfig {
            source: m.opts(&m.source),
            target: m.opts(&m.target),
            rate: 200,
            tasks: 2,
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut child = spawn_stopping(&["mysql", "cutover", &plan_arg], None, Some(event));
        assert!(wait_stopped(&mut child, Duration::from_secs(60)), "{event}");
        kill9(&mut child);
        if event == "caught-up" {
            // What a crash right after the promotion's first statement leaves (no journal
            // record falls there): the applier stopped, the target still read-only. The
            // resume rolls back and must start the applier again (checked below).
            use mysql_async::prelude::Queryable;
            let mut t = m.target.connect(None).await.unwrap();
            t.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
            let (_, out, err) = support::run(&["status", &plan_arg]);
            assert!(
                out.contains("its replica of the source configured, applier stopped")
                    && !out.contains("replicating from the source"),
                "status says the applier is stopped:\n{out}\n{err}"
            );
        }
        let (code, out, err) = support::run(&["mysql", "cutover", "--resume", &plan_arg]);
        assert_eq!(code, 0, "{event}:\n{out}\n{err}");
        assert!(
            out.contains(if forward {
                "now: the target serves writes"
            } else {
                "now: the source serves writes"
            }),
            "{event}:\n{out}"
        );
        assert_eq!(m.writable(&m.source).await, !forward, "{event}");
        assert_eq!(m.writable(&m.target).await, forward, "{event}");
        // The promotion's second half (receiver stopped, replica forgotten) runs after the
        // window, so a crash right after promotion leaves it to the resume; a rollback keeps
        // the target replicating with its applier running.
        {
            use mysql_async::prelude::Queryable;
            let mut target = m.target.connect(None).await.unwrap();
            let rows: Vec<mysql_async::Row> = target.query("SHOW SLAVE STATUS").await.unwrap();
            if forward {
                assert!(
                    rows.is_empty(),
                    "{event}: the new primary still has a replica"
                );
            } else {
                let sql: Option<String> = rows[0].get("Slave_SQL_Running");
                assert_eq!(sql.as_deref(), Some("Yes"), "{event}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ledger = writer.stop().await;
        let serving = if forward { &m.target } else { &m.source };
        let mut conn = serving.connect(Some("app")).await.unwrap();
        let check = ledger.check(&mut conn).await.unwrap();
        assert!(check.clean(), "{event}: {check:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_with_continue_after_a_crash_in_the_fence_finishes_the_run() {
    let pg = PgPair::start().await;
    pg.database("go").await;
    let path = write_plan(pg.dir.path(), "go", &pg.pair_toml("go", ""));
    let plan_arg = path.to_str().unwrap().to_owned();
    let writer = pg.writer("go", 200);
    // Record 9: the fence step is done; the source refuses the app, the target is not promoted.
    let mut child = spawn_stopping(&["run", &plan_arg], Some(9), None);
    assert!(wait_stopped(&mut child, Duration::from_secs(120)));
    kill9(&mut child);
    assert!(!pg.app_writes(&pg.source, "go").await);
    assert!(!pg.app_writes(&pg.target, "go").await);
    let (code, out, err) = support::run(&["run", "--resume", "--continue", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("decision: continue"), "{out}");
    assert!(out.contains("completed"), "{out}");
    assert!(!pg.app_writes(&pg.source, "go").await);
    assert!(pg.app_writes(&pg.target, "go").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.target.connect("go").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean(), "{check:?}");
    // The report counts the outage from the crashed process's fence (the journal's clock).
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pg.dir.path().join("state-go/run/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["resumed"], true);
    assert!(
        report["write_unavailable_ms"]["postgres go"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_after_a_completed_run_brings_every_row_back_to_the_old_primaries() {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    let (pg, m) = tokio::join!(PgPair::start(), MariaPair::start());
    pg.database("rb").await;
    let body = pg.pair_toml("rb", "") + &m.pair_toml();
    let path = write_plan(pg.dir.path(), "rb", &body);
    let plan_arg = path.to_str().unwrap().to_owned();
    let pg_writer = pg.writer("rb", 200);
    let my_writer = MyWriter::start(MyWriterConfig {
        source: m.opts(&m.source),
        target: m.opts(&m.target),
        rate: 200,
        tasks: 2,
    });
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_eq!(code, 0, "forward run:\n{out}\n{err}");
    // The app works on the new primaries for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pg.app_writes(&pg.target, "rb").await);
    assert!(m.writable(&m.target).await);
    // Running the completed migration again is refused with nothing changed: the new
    // primaries still serve, the old ones stay fenced.
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_eq!(code, 2, "a rerun:\n{out}\n{err}");
    assert!(err.contains("this migration already moved"), "{err}");
    assert!(pg.app_writes(&pg.target, "rb").await);
    assert!(!pg.app_writes(&pg.source, "rb").await);
    assert!(m.writable(&m.target).await && !m.writable(&m.source).await);
    // A runner with a state directory of its own (another migration name) is refused by the
    // servers themselves, changes nothing, and says what it read from them.
    let other = write_plan(pg.dir.path(), "rb-again", &body);
    let (code, out, err) = support::run(&["run", other.to_str().unwrap()]);
    assert_eq!(code, 1, "a second runner:\n{out}\n{err}");
    assert!(
        !out.contains("every source serves writes again"),
        "no false word about the sources:\n{out}"
    );
    assert!(
        out.contains("the target serves writes (source fenced)"),
        "the servers as read:\n{out}"
    );
    assert!(pg.app_writes(&pg.target, "rb").await);
    assert!(!pg.app_writes(&pg.source, "rb").await);
    assert!(m.writable(&m.target).await && !m.writable(&m.source).await);

    let (code, out, err) = support::run(&["run", "--rollback", &plan_arg]);
    assert_eq!(code, 0, "rollback:\n{out}\n{err}");
    assert!(
        out.contains("reverse cutover completed: every old primary serves again"),
        "{out}"
    );
    // The old primaries serve again, the new ones refuse the app.
    assert!(pg.app_writes(&pg.source, "rb").await);
    assert!(!pg.app_writes(&pg.target, "rb").await);
    assert!(m.writable(&m.source).await);
    assert!(!m.writable(&m.target).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every acknowledged row, written before, between and after both cutovers, is on the old
    // primaries, once.
    let ledger = pg_writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("rb").await.unwrap())
        .await
        .unwrap();
    // (The ledger's id order assumes one move; after two, ids are checked below instead.)
    assert!(
        check.lost.is_empty()
            && check.duplicated.is_empty()
            && check.unexpected.is_empty()
            && check.changed.is_empty()
            && check.counter_problems.is_empty(),
        "{check:?}"
    );
    assert!(
        check.acked_on_target > 100,
        "rows written on the new primary: {check:?}"
    );
    // Sequences came back too: a new row on the old primary gets an id above every row.
    let c = pg.source.connect("rb").await.unwrap();
    let max: i64 = c
        .query_one("SELECT max(id)::int8 FROM writes", &[])
        .await
        .unwrap()
        .get(0);
    let (app, conn) = pg
        .app_config(&pg.source, "rb")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let id: i64 = app
        .query_one(
            "INSERT INTO writes (k, payload) VALUES (-999999, 'after') RETURNING id::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(id > max, "id {id} after the rollback, max before {max}");
    let ledger = my_writer.stop().await;
    let mut conn = m.source.connect(Some("app")).await.unwrap();
    let mcheck = ledger.check(&mut conn).await.unwrap();
    assert!(
        mcheck.lost.is_empty() && mcheck.duplicated.is_empty() && mcheck.unexpected.is_empty(),
        "{mcheck:?}"
    );
    assert!(
        mcheck.acked_on_target > 100,
        "rows written on the new primary: {mcheck:?}"
    );
    // A second rollback has nothing to reverse.
    let (code, _, err) = support::run(&["run", "--rollback", &plan_arg]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing to roll back"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_health_check_after_the_promotion_reverses_the_cutover() {
    let pg = PgPair::start().await;
    pg.database("hc").await;
    // Nothing listens on this port: the check fails after the promotion.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", dead.local_addr().unwrap());
    drop(dead);
    let hook_log = pg.dir.path().join("rollback-hook.log");
    let body = pg.pair_toml("hc", "")
        + &format!(
            "[[checks]]\nkind = \"http\"\nname = \"app\"\nurl = \"{url}\"\nwithin = \"2s\"\ninterval = \"200ms\"\n\n\
             [[hooks]]\nat = \"on-rollback\"\ncommand = [\"sh\", \"-c\", \"echo \\\"$CUTOVER_PHASE $CUTOVER_ROLLBACK\\\" >> \\\"$1\\\"\", \"hook\", \"{}\"]\n",
            hook_log.display()
        );
    let path = write_plan(pg.dir.path(), "hc", &body);
    let plan_arg = path.to_str().unwrap().to_owned();
    let writer = pg.writer("hc", 200);
    let (code, out, err) = support::run(&["run", &plan_arg]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("check app failed"), "{err}");
    assert!(out.contains("reverse cutover"), "{out}");
    // The old primary serves again with everything, the new one refuses the app.
    assert!(pg.app_writes(&pg.source, "hc").await);
    assert!(!pg.app_writes(&pg.target, "hc").await);
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap().trim(),
        "switch 1",
        "the on-rollback hook ran once, told it is a rollback"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("hc").await.unwrap())
        .await
        .unwrap();
    assert!(
        check.lost.is_empty() && check.duplicated.is_empty() && check.unexpected.is_empty(),
        "{check:?}"
    );
    let status = run::status(&cutover::plan::load(&path).unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.outcome,
        Some(Outcome::Completed),
        "the reverse run completed"
    );
    assert!(
        status.pairs[0].1.contains("the source serves writes"),
        "{:?}",
        status.pairs
    );
}

/// Database `db` on `pg`, its plan, and its pair started (`pg start`) and replicating: the
/// plan's path, as a path and as an argument.
async fn replicating(pg: &PgPair, db: &str) -> (std::path::PathBuf, String) {
    pg.database(db).await;
    let path = write_plan(pg.dir.path(), db, &pg.pair_toml(db, ""));
    let plan_arg = path.to_str().unwrap().to_owned();
    let (code, out, err) = support::run(&["pg", "start", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    wait_pg_ready(&path).await;
    (path, plan_arg)
}

/// A prepared transaction's rows reach logical replication only at its `COMMIT PREPARED`,
/// which its transaction manager would send to the old primary after the move. The gate
/// refuses while one is pending (naming it, its owner and the fix), and the fence checks again
/// for one prepared between the gate and the fence. Either way the source serves again, the
/// transaction's rows reach the target once committed, and the cutover then goes through with
/// nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepared_transaction_refuses_the_gate_and_the_fence_and_nothing_is_lost() {
    let pg = PgPair::start().await;
    let db = "tm";
    let (_, plan_arg) = replicating(&pg, db).await;
    let writer = pg.writer(db, 200);
    // The transaction manager's own session, as the app role.
    let (tm, conn) = pg
        .app_config(&pg.source, db)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    tm.batch_execute(
        "BEGIN; INSERT INTO writes (k, payload) VALUES (-900001, 'tm-1'); PREPARE TRANSACTION 'tm-1'",
    )
    .await
    .unwrap();

    // At the gate.
    let (code, out, err) = support::run(&["pg", "cutover", &plan_arg]);
    assert_eq!(code, 1, "{out}\n{err}");
    let said = format!("{out}\n{err}");
    assert!(
        said.contains("`tm-1`")
            && said.contains("owner `app`")
            && said.contains("COMMIT PREPARED 'tm-1'"),
        "{said}"
    );
    assert!(pg.app_writes(&pg.source, db).await, "the source serves");
    assert!(
        !pg.app_writes(&pg.target, db).await,
        "the target stays blocked"
    );
    tm.batch_execute("COMMIT PREPARED 'tm-1'").await.unwrap();

    // Between the gate and the fence: the cutover stops itself after its gate passed, the
    // transaction manager prepares another one (its session is still allowed), the cutover
    // goes on, and the fence's own check catches it.
    let mut child = spawn_stopping(&["pg", "cutover", &plan_arg], None, Some("gate-passed"));
    assert!(
        wait_stopped(&mut child, Duration::from_secs(60)),
        "stopped after the gate"
    );
    tm.batch_execute(
        "BEGIN; INSERT INTO writes (k, payload) VALUES (-900002, 'tm-2'); PREPARE TRANSACTION 'tm-2'",
    )
    .await
    .unwrap();
    // SAFETY: kill() signals one process by pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGCONT);
    }
    let done = child.wait_with_output().unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(done.status.code(), Some(1), "{said}");
    assert!(said.contains("`tm-2`"), "{said}");
    assert!(
        pg.app_writes(&pg.source, db).await,
        "the source serves again"
    );
    assert!(
        !pg.app_writes(&pg.target, db).await,
        "the target stays blocked"
    );
    // The fence ended the app's sessions; the transaction manager reconnects and commits.
    let (tm, conn) = pg
        .app_config(&pg.source, db)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    tm.batch_execute("COMMIT PREPARED 'tm-2'").await.unwrap();

    // Nothing pending: the cutover goes through, and both transactions' rows are on the new
    // primary.
    let (code, out, err) = support::run(&["pg", "cutover", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        writer.wait_on_target(20, Duration::from_secs(30)).await,
        "the writer reached the new primary"
    );
    let ledger = writer.stop().await;
    let target = pg.target.connect(db).await.unwrap();
    let check = ledger.check(&target).await.unwrap();
    assert!(check.clean(), "{check:?}");
    assert!(check.acked > 0 && check.acked_on_target > 0, "{check:?}");
    let tm_rows: i64 = target
        .query_one(
            "SELECT count(*) FROM writes WHERE k IN (-900001, -900002)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tm_rows, 2,
        "both prepared transactions' rows reached the new primary"
    );
}

/// A deploy adds a column on the source during the sync: the target's apply worker stops on
/// it. Lag in seconds is then unknown (never 0) and `status` says replication is not running
/// and why; the cutover refuses with that same cause and its fix. Aligning the target's schema
/// lets the worker go on, and the cutover then goes through with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_apply_worker_reads_as_unknown_lag_and_the_refusal_names_its_cause() {
    let pg = PgPair::start().await;
    let db = "drift";
    let (path, plan_arg) = replicating(&pg, db).await;
    let writer = pg.writer(db, 200);
    let source = pg.source.connect(db).await.unwrap();
    source
        .batch_execute("ALTER TABLE writes ADD COLUMN note text")
        .await
        .unwrap();
    let plan = cutover::plan::load(&path).unwrap();
    let pair = cutover::postgres::Pair::select(&plan, None).pop().unwrap();
    let (s, t) = pair.connect().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let st = loop {
        let st = cutover::postgres::status::status(&pair, &s, &t, None)
            .await
            .unwrap();
        if !st.replication_running && st.lag_bytes.unwrap_or(0) > 0 {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the apply worker never stopped: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(st.lag_seconds, None, "{st:?}");
    assert!(
        st.warnings
            .iter()
            .any(|w| w.contains("replication is not running") && w.contains("note")),
        "{:?}",
        st.warnings
    );
    let (_, out, _) = support::run(&["pg", "status", &plan_arg]);
    assert!(out.contains("replication is NOT running"), "{out}");

    let (code, out, err) = support::run(&["pg", "cutover", &plan_arg]);
    assert_eq!(code, 1, "{out}\n{err}");
    let said = format!("{out}\n{err}");
    assert!(
        said.contains("note") && said.contains("fix"),
        "the refusal names the drift and the fix: {said}"
    );
    assert!(pg.app_writes(&pg.source, db).await, "the source serves");

    // The fix the refusal gives: the column on the target too.
    t.batch("align", "ALTER TABLE writes ADD COLUMN note text")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = cutover::postgres::status::status(&pair, &s, &t, None)
            .await
            .unwrap();
        if st.replication_running && st.lag_bytes.unwrap_or(i64::MAX) < 1 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replication did not recover: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = support::run(&["pg", "cutover", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        writer.wait_on_target(20, Duration::from_secs(30)).await,
        "the writer reached the new primary"
    );
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.target.connect(db).await.unwrap())
        .await
        .unwrap();
    assert!(check.clean(), "{check:?}");
    assert!(check.acked > 0 && check.acked_on_target > 0, "{check:?}");
}

/// MariaDB's prepared XA transactions have the same shape: `XA PREPARE`d on the source, their
/// transaction manager would `XA COMMIT` them on the old primary after the move. The gate
/// refuses while one is pending (naming its xid and the fix), the source keeps serving, and
/// once it is committed the cutover goes through with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepared_xa_transaction_refuses_the_mysql_gate_and_nothing_is_lost() {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    use mysql_async::prelude::Queryable;
    let m = MariaPair::start().await;
    let path = write_plan(m.dir.path(), "xa", &m.pair_toml());
    let plan_arg = path.to_str().unwrap().to_owned();
    let (code, _, err) = support::run(&["mysql", "start", &plan_arg]);
    assert_eq!(code, 0, "{err}");
    let writer = MyWriter::start(MyWriterConfig {
        source: m.opts(&m.source),
        target: m.opts(&m.target),
        rate: 200,
        tasks: 2,
    });
    let mut tm = mysql_async::Conn::new(m.opts(&m.source)).await.unwrap();
    tm.query_drop(
        "XA START 'tm-1'; INSERT INTO writes (k, payload) VALUES (-900001, 'tm-1'); XA END 'tm-1'; XA PREPARE 'tm-1'",
    )
    .await
    .unwrap();
    let (code, out, err) = support::run(&["mysql", "cutover", &plan_arg]);
    assert_eq!(code, 1, "{out}\n{err}");
    let said = format!("{out}\n{err}");
    // 'tm-1' in hex, as `XA COMMIT` takes it.
    assert!(
        said.contains("X'746d2d31'") && said.contains("XA COMMIT"),
        "{said}"
    );
    assert!(m.writable(&m.source).await, "the source serves");
    assert!(!m.writable(&m.target).await, "the target stays read-only");
    tm.query_drop("XA COMMIT 'tm-1'").await.unwrap();

    let (code, out, err) = support::run(&["mysql", "cutover", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(m.writable(&m.target).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = writer.stop().await;
    let mut conn = m.target.connect(Some("app")).await.unwrap();
    let check = ledger.check(&mut conn).await.unwrap();
    assert!(check.clean(), "{check:?}");
    assert!(check.acked > 0 && check.acked_on_target > 0, "{check:?}");
    let rows: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM writes WHERE k = -900001")
        .await
        .unwrap();
    assert_eq!(
        rows,
        Some(1),
        "the XA transaction's row reached the new primary"
    );
}

/// Two crashes that fall between records: after a run's last record but before its report is
/// saved (resume rebuilds the report from the journal), and after a failed health check was
/// journalled but before the automatic reverse cutover began (resume starts it). Each is
/// recovered by `run --resume`, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_before_the_report_or_before_the_automatic_reverse_is_resumed_by_one_command() {
    let pg = PgPair::start().await;

    // Before the report.
    pg.database("rep").await;
    let path = write_plan(pg.dir.path(), "rep", &pg.pair_toml("rep", ""));
    let plan_arg = path.to_str().unwrap().to_owned();
    let mut child = spawn_stopping(&["run", &plan_arg], None, Some("before-report"));
    assert!(
        wait_stopped(&mut child, Duration::from_secs(90)),
        "stopped before the report"
    );
    kill9(&mut child);
    let plan = cutover::plan::load(&path).unwrap();
    let store =
        cutover::state::FileStore::new(&cutover::state::StateDir::new(&plan.migration.state_dir));
    use cutover::state::Store;
    assert!(
        store.report().unwrap().is_none(),
        "the crash came before the report"
    );
    let (code, out, err) = support::run(&["run", "--resume", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report = store.report().unwrap().expect("the report was rebuilt");
    let run_id = journal(&path)[0].run.clone();
    assert_eq!(report["run"], serde_json::json!(run_id));
    assert_eq!(report["outcome"], "completed");
    assert!(
        report["write_unavailable_ms"]["postgres rep"]
            .as_f64()
            .is_some(),
        "{report:#}"
    );
    drop(pg);

    // Before the automatic reverse cutover (clusters of its own: the fence is on roles).
    let pg = PgPair::start().await;
    pg.database("rev").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", dead.local_addr().unwrap());
    drop(dead);
    let body = pg.pair_toml("rev", "")
        + &format!(
            "[[checks]]\nkind = \"http\"\nname = \"app\"\nurl = \"{url}\"\nwithin = \"2s\"\ninterval = \"200ms\"\n"
        );
    let path = write_plan(pg.dir.path(), "rev", &body);
    let plan_arg = path.to_str().unwrap().to_owned();
    let writer = pg.writer("rev", 200);
    let mut child = spawn_stopping(&["run", &plan_arg], None, Some("before-reverse"));
    if !wait_stopped(&mut child, Duration::from_secs(90)) {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the run did not stop before the reverse:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kill9(&mut child);
    // The new primary serves meanwhile, and the writer reached it.
    assert!(
        writer.wait_on_target(20, Duration::from_secs(30)).await,
        "the writer reached the new primary"
    );
    let status = run::status(&cutover::plan::load(&path).unwrap())
        .await
        .unwrap();
    assert!(
        status.resume_would.contains("reverse the cutover"),
        "{}",
        status.resume_would
    );
    let (code, out, err) = support::run(&["run", "--resume", &plan_arg]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("reverse cutover completed"), "{out}\n{err}");
    assert!(
        pg.app_writes(&pg.source, "rev").await,
        "the old primary serves again"
    );
    assert!(
        !pg.app_writes(&pg.target, "rev").await,
        "the new one refuses the app"
    );
    let (code, _, err) = support::run(&["run", "--resume", &plan_arg]);
    assert_eq!(code, 2, "nothing left: {err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("rev").await.unwrap())
        .await
        .unwrap();
    assert!(
        check.lost.is_empty()
            && check.duplicated.is_empty()
            && check.unexpected.is_empty()
            && check.panicked == 0,
        "{check:?}"
    );
    assert!(check.acked > 0 && check.acked_on_target > 0, "{check:?}");
}

/// Kills a stand-in process when the case ends unless a hook stopped it (and it was reaped:
/// its pid may belong to someone else then).
struct StopOnDrop {
    pid: libc::pid_t,
    reaped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StopOnDrop {
    /// Reaps `child` on a thread of its own (a hook waits until its pid is gone) and kills it
    /// on drop if it still runs.
    fn watch(mut child: std::process::Child) -> StopOnDrop {
        let reaped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pid = child.id() as libc::pid_t;
        let flag = reaped.clone();
        std::thread::spawn(move || {
            let _ = child.wait();
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        StopOnDrop { pid, reaped }
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.reaped.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: kill(2) on the child this test started, not yet reaped.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// One case of the whole-lab sweep: the lab plan (a PostgreSQL and a MariaDB pair side by side,
/// a tree with a SQLite database and a change log, hooks, two DNS records, a health check),
/// writers on both databases, the runner stopped right after step `step`'s `side` record and
/// killed, `status` checked against both pairs' servers, one `run --resume`, and the proof:
/// exactly one side of each pair serves, nothing acknowledged lost, the trees identical when it
/// went forward.
async fn lab_case(pick: impl Fn(&run::Step) -> bool, side: &str) -> (String, bool) {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    use cutover::lab::writer::{Writer, WriterConfig};
    use cutover::lab::{self, Lab, LabDir, Supervision};
    let lab = Lab::start(LabDir::temporary().unwrap(), Supervision::Owned)
        .await
        .unwrap();
    lab::prepare_app(&lab).await.unwrap();
    let password = std::fs::read_to_string(lab.dir.path().join("secrets").join("app.password"))
        .unwrap()
        .trim()
        .to_owned();
    let secret =
        cutover::secret::SecretRef::File(lab.dir.path().join("secrets").join("app.password"))
            .read()
            .unwrap();
    let health = lab::HealthServer::start(&lab, &secret).await.unwrap();
    // The app on the source host: the window-open hook stops it by its pid.
    let app_pid = lab.dir.path().join("app.pid");
    // Its output goes nowhere: a stand-in left running must not hold the test's stdout (the
    // pipe CI reads) open after the test ends.
    let app = std::process::Command::new("sh")
        .args(["-c", "echo $$ > \"$1\"; exec sleep 600", "app"])
        .arg(&app_pid)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !app_pid.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _app_stopped = StopOnDrop::watch(app);
    let path = lab.dir.path().join("plan.toml");
    std::fs::write(
        &path,
        lab::lab_plan_toml(&lab) + &lab::run_plan_extras(&lab, &app_pid, &health.url()),
    )
    .unwrap();
    let plan = cutover::plan::load(&path).unwrap();
    let steps = run::steps(&plan);
    let (index, step) = steps
        .iter()
        .enumerate()
        .find(|(_, s)| pick(s))
        .expect("the lab plan has the step");
    let case = format!("{}:{side} ({} {})", index, step.component, step.action);
    eprintln!("lab case: stop after step {case}");
    let pg_app = |pg: &lab::Postgres| {
        let mut c = pg.config(lab::APP);
        c.user(lab::APP).password(&password);
        c
    };
    let pg_writer = Writer::start(WriterConfig {
        source: pg_app(&lab.pg_source),
        target: pg_app(&lab.pg_target),
        rate: 200,
        tasks: 2,
        first_task: 0,
    });
    let my_app = |m: &lab::MariaDb| m.user_opts(lab::APP, &password, lab::APP);
    let my_writer = MyWriter::start(MyWriterConfig {
        source: my_app(&lab.maria_source),
        target: my_app(&lab.maria_target),
        rate: 200,
        tasks: 2,
    });
    let plan_arg = path.to_str().unwrap().to_owned();
    let mut child = std::process::Command::new(support::binary())
        .args(["run", "--force", &plan_arg])
        .env(run::test_stop::STEP_VAR, format!("{index}:{side}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_stopped(&mut child, Duration::from_secs(120)) {
        let out = child.wait_with_output().unwrap();
        panic!(
            "{case}: the run did not stop there:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kill9(&mut child);

    // status tells the truth about both pairs.
    let pg_serves = async || {
        (
            app_writes_pg(&pg_app(&lab.pg_source)).await,
            app_writes_pg(&pg_app(&lab.pg_target)).await,
        )
    };
    let my_serves = async || {
        (
            support::mysql_app_writes(&my_app(&lab.maria_source)).await,
            support::mysql_app_writes(&my_app(&lab.maria_target)).await,
        )
    };
    let status = run::status(&plan).await.unwrap();
    for ((s, t), (component, state)) in [pg_serves().await, my_serves().await]
        .into_iter()
        .zip(&status.pairs)
    {
        match (s, t) {
            (true, false) => assert!(
                state.contains("the source serves"),
                "{case} {component}: {state}"
            ),
            (false, false) => assert!(
                state.contains("NO server accepts"),
                "{case} {component}: {state}"
            ),
            (false, true) => assert!(
                state.contains("the target serves"),
                "{case} {component}: {state}"
            ),
            (true, true) => panic!("{case} {component}: both servers take the app's writes"),
        }
    }
    let (code, out, err) = support::run(&["run", "--resume", "--force", &plan_arg]);
    let records = journal(&path);
    let outcome = records.iter().rev().find_map(|r| match &r.entry {
        Entry::RunFinished { outcome, .. } => Some(*outcome),
        _ => None,
    });
    let forward = records
        .iter()
        .any(|r| matches!(r.entry, Entry::PointOfNoReturn));
    if forward {
        assert_eq!(
            (code, outcome),
            (0, Some(Outcome::Completed)),
            "{case}:\n{out}\n{err}"
        );
    } else {
        assert_eq!(
            (code, outcome),
            (1, Some(Outcome::RolledBack)),
            "{case}:\n{out}\n{err}"
        );
    }
    assert_eq!(pg_serves().await, (!forward, forward), "{case}: postgres");
    assert_eq!(my_serves().await, (!forward, forward), "{case}: mariadb");
    if forward {
        assert!(
            pg_writer.wait_on_target(20, Duration::from_secs(30)).await,
            "{case}"
        );
        assert!(
            my_writer.wait_on_target(20, Duration::from_secs(30)).await,
            "{case}"
        );
        let entry = cutover::files::Entry::select(&plan, None)
            .unwrap()
            .pop()
            .unwrap();
        assert!(
            cutover::files::verify::verify(&entry)
                .await
                .unwrap()
                .matches(),
            "{case}: the trees differ"
        );
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pg_ledger = pg_writer.stop().await;
    let my_ledger = my_writer.stop().await;
    let (pg_serving, my_serving) = if forward {
        (&lab.pg_target, &lab.maria_target)
    } else {
        (&lab.pg_source, &lab.maria_source)
    };
    let check = pg_ledger
        .check(&pg_serving.connect(lab::APP).await.unwrap())
        .await
        .unwrap();
    assert!(
        check.clean() && check.acked > 0,
        "{case}: postgres {check:?}"
    );
    assert_eq!(
        check.acked_on_target > 0,
        forward,
        "{case}: postgres {check:?}"
    );
    let mut conn = my_serving.connect(Some(lab::APP)).await.unwrap();
    let check = my_ledger.check(&mut conn).await.unwrap();
    assert!(
        check.clean() && check.acked > 0,
        "{case}: mariadb {check:?}"
    );
    assert_eq!(
        check.acked_on_target > 0,
        forward,
        "{case}: mariadb {check:?}"
    );
    (case, forward)
}

async fn app_writes_pg(config: &tokio_postgres::Config) -> bool {
    let mut config = config.clone();
    config.connect_timeout(Duration::from_secs(5));
    // The lab's clusters take TLS only.
    let Ok((client, conn)) = config.connect(cutover::postgres::tls::encrypt_only()).await else {
        return false;
    };
    tokio::spawn(conn);
    client
        .batch_execute("BEGIN; INSERT INTO writes (k, payload) VALUES (-1, 'probe'); ROLLBACK")
        .await
        .is_ok()
}

/// The components the PostgreSQL-only sweep does not have, each killed at its own records:
/// the files passes and their change-log watcher, a hook, the DNS switch and its wait, the
/// health check; the two pairs' window phases run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_the_files_hooks_and_dns_records_of_a_whole_lab_run_then_resume() {
    use run::Kind;
    type Pick = fn(&run::Step) -> bool;
    let cases: [(Pick, &str, bool); 7] = [
        (|s| matches!(s.kind, Kind::WarmFiles(_)), "done", false),
        (|s| matches!(s.kind, Kind::FinalFiles(_)), "begin", false),
        (|s| matches!(s.kind, Kind::FinalFiles(_)), "done", false),
        (
            |s| matches!(s.kind, Kind::Fence(db) if db.engine().section == "mysql"),
            "done",
            false,
        ),
        (|s| matches!(s.kind, Kind::DnsSwitch(_)), "begin", true),
        (|s| matches!(s.kind, Kind::DnsWait(_)), "begin", true),
        (|s| matches!(s.kind, Kind::Check(_)), "begin", true),
    ];
    for (pick, side, forward) in cases {
        let (case, went) = lab_case(pick, side).await;
        assert_eq!(went, forward, "{case}");
    }
}

/// The same plan with another state directory (another operator, another machine).
fn second_operator(plan: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(plan).unwrap();
    let state = text
        .lines()
        .find_map(|l| l.strip_prefix("state_dir = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let path = plan.with_extension("second.toml");
    std::fs::write(
        &path,
        text.replace(&state, &format!("{state}-second-operator")),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_operator_with_its_own_state_directory_is_refused_by_the_servers_lease() {
    use cutover::lab::writer::{Writer, WriterConfig};
    let pg = PgPair::start().await;
    pg.database("two").await;
    let path = write_plan(pg.dir.path(), "two", &pg.pair_toml("two", ""));
    let other = second_operator(&path);
    let (first_arg, other_arg) = (path.to_str().unwrap(), other.to_str().unwrap());
    let first_state = pg.dir.path().join("state-two");
    let other_state =
        std::path::PathBuf::from(format!("{}-second-operator", first_state.display()));
    let writer = Writer::start(WriterConfig {
        source: pg.app_config(&pg.source, "two"),
        target: pg.app_config(&pg.target, "two"),
        rate: 200,
        tasks: 2,
        first_task: 0,
    });
    assert!(writer.wait_acked(20, Duration::from_secs(30)).await);

    // The first operator's run, held inside its window: the fence is done (record 9).
    let mut first = spawn_stopping(&["run", first_arg], Some(9), None);
    assert!(
        wait_stopped(&mut first, Duration::from_secs(60)),
        "the first run stopped at its fence"
    );
    assert!(
        !std::fs::read_to_string(first_state.join("run/journal.jsonl"))
            .unwrap_or_default()
            .is_empty(),
        "the first run's journal is where the second's is looked for"
    );
    let nothing_changed = |why: &str| {
        let records =
            std::fs::read_to_string(other_state.join("run/journal.jsonl")).unwrap_or_default();
        assert!(
            records.is_empty(),
            "{why}: the second operator's journal holds nothing: {records}"
        );
    };
    // The second operator's run and cleanup are refused, naming the holder and its state
    // directory, with nothing changed.
    // Its plan also switches a DNS record: `dns update` is refused by the same lease.
    let with_dns = other.with_extension("dns.toml");
    std::fs::write(
        &with_dns,
        std::fs::read_to_string(&other).unwrap()
            + "\n[[dns]]\nname = \"shop.example.com\"\ntype = \"A\"\nvalues = [\"192.0.2.7\"]\nprovider = { kind = \"hetzner\", api_token_env = \"CUTOVER_TEST_NO_TOKEN\" }\n",
    )
    .unwrap();
    let dns_arg = with_dns.to_str().unwrap();
    for args in [
        vec!["run", other_arg],
        vec!["pg", "cleanup", other_arg],
        vec!["dns", "update", "--force", dns_arg],
    ] {
        let (code, out, err) = support::run(&args);
        assert_ne!(code, 0, "{args:?}:\n{out}\n{err}");
        assert!(
            err.contains("lease on this database is held by `run` as pid")
                && err.contains(&first_state.display().to_string()),
            "{args:?}:\n{out}\n{err}"
        );
        nothing_changed(&format!("{args:?}"));
    }

    // The holder killed inside its window: the second operator is still refused, told which
    // state directory can finish or roll back the stopped run.
    kill9(&mut first);
    let (code, out, err) = support::run(&["run", other_arg]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("stopped without releasing the migration's lease")
            && err.contains(&first_state.display().to_string()),
        "{out}\n{err}"
    );
    nothing_changed("after the kill");

    // The first state directory's resume takes the lease (its own record) and rolls back.
    let (code, out, err) = support::run(&["run", "--resume", first_arg]);
    assert!(!err.contains("lease"), "{code}\n{out}\n{err}");
    let last = journal(&path);
    assert!(
        last.iter().any(|r| matches!(
            r.entry,
            Entry::RunFinished {
                outcome: Outcome::RolledBack,
                ..
            }
        )),
        "{out}\n{err}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("two").await.unwrap())
        .await
        .unwrap();
    assert!(
        check.clean() && check.acked > 0 && check.acked_on_target == 0,
        "{check:?}"
    );
    // A run that ended lets the lease and its record go: the second operator may start now
    // (its preflight is where it would stop, not the lease).
    let c = pg.source.connect("two").await.unwrap();
    let held: i64 = c
        .query_one("SELECT count(*) FROM cutover.lease", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_edited_after_a_crash_is_resumed_and_reported_with_the_plan_the_run_began_with() {
    use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig};
    let pg = PgPair::start().await;
    pg.database("ed").await;
    let maria = MariaPair::seeded(500).await;
    let path = write_plan(
        pg.dir.path(),
        "edited",
        &(pg.pair_toml("ed", "") + &maria.pair_toml()),
    );
    let plan = cutover::plan::load(&path).unwrap();
    let steps = run::steps(&plan);
    let last_fence = steps
        .iter()
        .rposition(|s| s.phase == run::Phase::Fence)
        .unwrap();
    let pg_writer = pg.writer("ed", 200);
    let my_writer = MyWriter::start(MyWriterConfig {
        source: maria.opts(&maria.source),
        target: maria.opts(&maria.target),
        rate: 200,
        tasks: 2,
    });
    assert!(pg_writer.wait_acked(20, Duration::from_secs(30)).await);
    let plan_arg = path.to_str().unwrap().to_owned();
    // Killed right after both fences: neither source takes writes, no target is promoted.
    let mut child = std::process::Command::new(support::binary())
        .args(["run", &plan_arg])
        .env(run::test_stop::STEP_VAR, format!("{last_fence}:done"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_stopped(&mut child, Duration::from_secs(120)),
        "stopped after the fences"
    );
    kill9(&mut child);
    assert!(
        !maria.writable(&maria.source).await,
        "the MariaDB source is fenced"
    );

    // The operator edits the plan file in place and drops the MariaDB pair.
    write_plan(pg.dir.path(), "edited", &pg.pair_toml("ed", ""));
    let (code, out, err) = support::run(&["status", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("mysql app-db:") && out.contains("mysql app-db is no longer in the plan file"),
        "status still reports the pair the run began, and says the file differs:\n{out}"
    );
    // The resume undoes both fences: MariaDB serves again although the file lost it.
    let (code, out, err) = support::run(&["run", "--resume", &plan_arg]);
    assert_eq!(code, 1, "rolled back:\n{out}\n{err}");
    assert!(out.contains("note: the plan file differs"), "{out}");
    assert!(
        maria.writable(&maria.source).await,
        "the MariaDB source serves again"
    );
    assert!(
        maria.app_writes(&maria.source).await,
        "its app account is unlocked"
    );
    assert!(
        pg.app_writes(&pg.source, "ed").await,
        "the PostgreSQL source serves again"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (pg_ledger, my_ledger) = (pg_writer.stop().await, my_writer.stop().await);
    let check = pg_ledger
        .check(&pg.source.connect("ed").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean() && check.acked_on_target == 0, "{check:?}");
    let mut c = maria.source.connect(Some("app")).await.unwrap();
    let check = my_ledger.check(&mut c).await.unwrap();
    assert!(check.clean() && check.acked_on_target == 0, "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_operator_is_refused_at_every_phase_of_the_first_run_which_completes() {
    let pg = PgPair::start().await;
    // Before the warm sync, at the gate, inside the window, past the point of no return.
    for at in [3u64, 7, 10, 13] {
        let db = format!("ph{at}");
        pg.database(&db).await;
        let path = write_plan(pg.dir.path(), &db, &pg.pair_toml(&db, ""));
        let other = second_operator(&path);
        let (first_arg, other_arg) = (path.to_str().unwrap(), other.to_str().unwrap());
        let writer = pg.writer(&db, 200);
        assert!(writer.wait_acked(20, Duration::from_secs(30)).await);
        let mut first = spawn_stopping(&["run", first_arg], Some(at), None);
        assert!(
            wait_stopped(&mut first, Duration::from_secs(60)),
            "record {at}"
        );
        let (code, out, err) = support::run(&["run", other_arg]);
        assert_eq!(code, 1, "record {at}:\n{out}\n{err}");
        assert!(
            err.contains("lease on this database is held by `run` as pid"),
            "record {at}: {err}"
        );
        // The first goes on, untouched by the refused second, and completes.
        // SAFETY: kill() signals one child process by pid.
        unsafe {
            libc::kill(first.id() as i32, libc::SIGCONT);
        }
        let out = first.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "record {at}: the first run completed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            writer.wait_on_target(20, Duration::from_secs(30)).await,
            "record {at}"
        );
        let ledger = writer.stop().await;
        let check = ledger
            .check(&pg.target.connect(&db).await.unwrap())
            .await
            .unwrap();
        assert!(
            check.clean() && check.acked_on_target > 0,
            "record {at}: {check:?}"
        );
        assert_eq!(ledger.both_accepted, 0, "record {at}");
        // After it: the lease is free, and the second operator's run stops at preflight (its
        // source is the old primary of a completed cutover) with nothing changed.
        let (code, out, err) = support::run(&["run", other_arg]);
        assert_ne!(code, 0, "record {at}:\n{out}\n{err}");
        assert!(
            format!("{out}{err}").contains("moved away by a completed cutover"),
            "record {at}:\n{out}\n{err}"
        );
        // Refused at its preflight, it ended: it left no holder record on the servers.
        let held: i64 = pg
            .source
            .connect(&db)
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM cutover.lease", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 0, "record {at}: no lease record left");
        assert!(
            !pg.app_writes(&pg.source, &db).await,
            "record {at}: the old primary stays fenced"
        );
        assert!(
            pg.app_writes(&pg.target, &db).await,
            "record {at}: the new primary serves"
        );
    }
}

/// The state directory's disk fills while the run is inside its window (right after the fence
/// began): the next record cannot be written. Nothing is promoted, the source is unfenced and
/// serves, no write is lost, and the message says the journal could not be written and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_state_disk_inside_the_window_leaves_the_source_serving_and_says_why() {
    let pg = PgPair::start().await;
    pg.database("fd").await;
    let disk = support::SmallFs::mount(2);
    let path = write_plan(&disk.path, "fd", &pg.pair_toml("fd", ""));
    let plan_arg = path.to_str().unwrap().to_owned();
    let writer = pg.writer("fd", 200);
    let mut child = spawn_stopping(&["run", &plan_arg], Some(8), None);
    assert!(wait_stopped(&mut child, Duration::from_secs(120)));
    // Fill the disk to the last byte.
    {
        use std::io::Write;
        let mut fill = std::fs::File::create(disk.path.join("fill")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while fill.write_all(&block).is_ok() {}
        while fill.write_all(&block[..1]).is_ok() {}
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the cause is named:\n{stdout}\n{stderr}"
    );
    assert!(pg.app_writes(&pg.source, "fd").await, "{stdout}\n{stderr}");
    assert!(!pg.app_writes(&pg.target, "fd").await);
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.source.connect("fd").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean(), "{check:?}");
    // Room again: the one documented command ends the interrupted run (the journal on disk
    // stopped inside the window: it rolls back again, which changes nothing), and says so.
    std::fs::remove_file(disk.path.join("fill")).unwrap();
    let (code, out, err) = support::run(&["run", "--resume", &plan_arg]);
    assert_eq!(code, 1, "rolled back, not completed:\n{out}\n{err}");
    assert!(
        out.contains("every source serves writes again"),
        "{out}\n{err}"
    );
    assert!(pg.app_writes(&pg.source, "fd").await);
    assert!(!pg.app_writes(&pg.target, "fd").await);
    let (code, out, err) = support::run(&["status", &plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("rolled back"), "{out}");
}
