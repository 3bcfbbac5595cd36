//! `cutover lab demo`: a real migration on a throwaway lab, narrated. It lowers the DNS TTLs,
//! moves the demo app's PostgreSQL and MariaDB databases while writers keep committing, proves
//! nothing was lost, switches DNS once it is safe and waits until every authoritative server
//! serves it.

use std::time::{Duration, Instant};

use super::{EXIT_FAILED, EXIT_OK, runtime};
use crate::dns::state::StateDir;
use crate::dns::ttl::{self, LowerOptions};
use crate::dns::{Discovery, Target, propagation, update};
use crate::lab::writer::{DEMO_TASKS, Writer, WriterConfig};
use crate::lab::{self, Lab, LabDir, Supervision};
use crate::postgres::cutover::Event;
use crate::postgres::{Pair, cleanup, cutover, preflight, start, status, verify};
use crate::secret::SecretRef;

/// Transactions per second the demo's writer commits.
const DEMO_RATE: u32 = 500;

/// `lab demo`: start a lab, migrate, check, tear down. The lab lives in a temporary directory.
pub fn demo() -> u8 {
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    match rt.block_on(run()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            errln!("demo failed: {e:#}");
            EXIT_FAILED
        }
    }
}

async fn run() -> anyhow::Result<()> {
    use anyhow::Context as _;
    let began = Instant::now();
    outln!("== starting the lab (PostgreSQL x2, MariaDB x2, PowerDNS, BIND9, sshd on 127.0.0.1)");
    let lab = Lab::start(LabDir::temporary()?, Supervision::Owned).await?;
    lab::prepare_app(&lab).await?;
    let plan_path = lab.dir.path().join("plan.toml");
    std::fs::write(&plan_path, lab::lab_plan_toml(&lab))?;
    let plan = crate::plan::load(&plan_path)?;
    let pair = Pair::select(&plan, Some("app-pg"))
        .pop()
        .context("the lab plan has the app-pg pair")?;
    outln!(
        "   plan: {} ({:.1} s)",
        plan_path.display(),
        began.elapsed().as_secs_f64()
    );

    outln!(
        "\n== cutover dns lower-ttl (run days ahead in real life; the lab's records start at {} s)",
        lab::APP_RECORD_TTL
    );
    let discovery = Discovery::system();
    let mut targets = Vec::new();
    for (index, record) in plan.dns.iter().enumerate() {
        targets.push(Target::resolve(index, record, &discovery).await?);
    }
    let states = StateDir::new(&plan.migration.state_dir);
    let lowering = LowerOptions {
        clamp: false,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(200),
    };
    for target in &targets {
        let lowered = ttl::lower(target, &states, lowering).await?;
        let safe = lowered
            .safe_at
            .context("the lowered TTL is served everywhere")?;
        outln!(
            "   {}: TTL {} -> {} on {} server(s); earliest safe switch {}",
            lowered.record,
            lowered.state.old_ttl,
            lowered.state.lowered_ttl,
            lowered.servers.len(),
            humantime::format_rfc3339_seconds(safe)
        );
    }

    outln!("\n== cutover pg preflight");
    let (source, target) = pair.connect().await?;
    let report = preflight::run(&pair, &source, &target).await?;
    for f in &report.findings {
        outln!("   {:?}: [{}] {}", f.severity, f.server, f.problem);
    }
    outln!(
        "   {} tables in scope; preflight {}",
        report.tables.len(),
        if report.passed() { "passed" } else { "FAILED" }
    );
    anyhow::ensure!(
        report.passed(),
        "preflight failed:\n{}",
        report.errors_text()
    );

    outln!("\n== cutover pg start");
    let started = start::start(&pair).await?;
    outln!(
        "   schema copied: {}; publication and subscription {}; app role blocked on the target: {}",
        started.schema_copied,
        started.name,
        started.target_roles_blocked.join(", ")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let s = status::status(&pair, &source, &target, None).await?;
        if s.all_ready && s.apply_running {
            break s;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the initial copy did not finish: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    outln!(
        "\n== cutover pg status\n   {} tables ready, lag {} bytes",
        ready.tables.len(),
        ready.lag_bytes.unwrap_or(0)
    );

    let password = SecretRef::File(lab.dir.path().join("secrets").join("app.password")).read()?;
    let app = |pg: &lab::Postgres| {
        let mut config = pg.config(lab::APP);
        config.user(lab::APP).password(password.expose());
        config
    };
    let writer = Writer::start(WriterConfig {
        source: app(&lab.pg_source),
        target: app(&lab.pg_target),
        rate: DEMO_RATE,
        tasks: DEMO_TASKS,
        first_task: 0,
    });
    outln!("\n== the app writes {DEMO_RATE} transactions/s to the source as role `app`");
    tokio::time::sleep(Duration::from_secs(2)).await;

    outln!("\n== cutover pg cutover");
    let t0 = Instant::now();
    let mut on_event = |e: &Event| {
        outln!(
            "   {:>7.1} ms  {}",
            t0.elapsed().as_secs_f64() * 1000.0,
            serde_json::to_string(e).unwrap_or_default()
        );
    };
    let result = cutover::cutover(&pair, &mut on_event).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = writer.stop().await;
            anyhow::bail!("{e} (rollback: {:?})", e.rollback);
        }
    };
    outln!(
        "   writes were unavailable for {:.1} ms (fence -> target writable)",
        report.write_unavailable_ms
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ledger = writer.stop().await;

    outln!("\n== row-by-row check on the new primary");
    let check = ledger
        .check(&lab.pg_target.connect(lab::APP).await?)
        .await?;
    outln!(
        "   {} acknowledged commits ({} after the move), {} in doubt at the fence; lost {}, duplicated {}, unexpected {}",
        check.acked,
        check.acked_on_target,
        check.in_doubt,
        check.lost.len(),
        check.duplicated.len(),
        check.unexpected.len()
    );
    anyhow::ensure!(check.clean(), "the check found problems: {check:?}");

    // Reverse replication carries the new primary's writes back; then both sides match.
    let old = lab.pg_source.connect(lab::APP).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ledger.check(&old).await?.clean() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reverse replication did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outln!("\n== cutover pg verify");
    let verified = verify::verify(&pair, verify::CHUNK_ROWS).await?;
    for t in &verified.tables {
        outln!(
            "   {:<24} {:>6} rows on both sides: {}",
            t.table,
            t.target_rows,
            if t.matches() { "match" } else { "DIFFER" }
        );
    }
    anyhow::ensure!(verified.matches(), "verify found differences");

    outln!("\n== cutover pg cleanup");
    let cleaned = cleanup::cleanup(&pair).await?;
    for line in cleaned.done.iter().chain(&cleaned.kept) {
        outln!("   {line}");
    }

    let maria_unavailable_ms = migrate_mariadb(&lab, &plan, &password).await?;

    switch_dns(&targets, &states).await?;

    outln!(
        "\ndemo migration done in {:.1} s: PostgreSQL moved with {:.1} ms and MariaDB with {:.1} ms of write-unavailability, 0 lost writes; DNS switched on every authoritative server.",
        began.elapsed().as_secs_f64(),
        report.write_unavailable_ms,
        maria_unavailable_ms
    );
    outln!("(Files join the demo when their issue lands.)");
    Ok(())
}

/// The MariaDB pair: preflight, start, cutover under the app's inserts, row check, verify,
/// cleanup. Returns the write-unavailability.
async fn migrate_mariadb(
    lab: &Lab,
    plan: &crate::plan::Plan,
    password: &crate::secret::Secret,
) -> anyhow::Result<f64> {
    use anyhow::Context as _;

    use crate::lab::mysql_writer::{MyWriter, MyWriterConfig};
    use crate::mysql;

    let pair = mysql::Pair::select(plan, Some("app-mariadb"))
        .pop()
        .context("the lab plan has the app-mariadb pair")?;
    outln!("\n== cutover mysql preflight");
    let (mut source, mut target) = pair.connect().await?;
    let report = mysql::preflight::run(&pair, &mut source, &mut target).await?;
    for f in &report.findings {
        outln!("   {:?}: [{}] {}", f.severity, f.server, f.problem);
    }
    outln!(
        "   {} -> {}, {} tables; preflight {}",
        report.versions.0,
        report.versions.1,
        report.tables.len(),
        if report.passed() { "passed" } else { "FAILED" }
    );
    anyhow::ensure!(
        report.passed(),
        "preflight failed:\n{}",
        report.errors_text()
    );

    outln!("\n== cutover mysql start");
    let started = mysql::start::start(&pair).await?;
    if let Some(s) = &started.snapshot {
        outln!(
            "   snapshot streamed into the target ({} bytes, GTID {}); replica running, target read-only",
            s.bytes,
            s.coordinates.gtid.as_deref().unwrap_or("?")
        );
    }
    let app = |m: &lab::MariaDb| m.user_opts(lab::APP, password.expose(), lab::APP);
    let writer = MyWriter::start(MyWriterConfig {
        source: app(&lab.maria_source),
        target: app(&lab.maria_target),
        rate: DEMO_RATE,
        tasks: 2,
    });
    outln!("\n== the app inserts {DEMO_RATE} rows/s into MariaDB as user `app`");
    tokio::time::sleep(Duration::from_secs(2)).await;

    outln!("\n== cutover mysql cutover");
    let t0 = Instant::now();
    let mut on_event = |e: &mysql::cutover::Event| {
        outln!(
            "   {:>7.1} ms  {}",
            t0.elapsed().as_secs_f64() * 1000.0,
            serde_json::to_string(e).unwrap_or_default()
        );
    };
    let report = match mysql::cutover::cutover(&pair, &mut on_event).await {
        Ok(report) => report,
        Err(e) => {
            let _ = writer.stop().await;
            anyhow::bail!("{e}");
        }
    };
    outln!(
        "   writes were unavailable for {:.1} ms (fence -> target writable)",
        report.write_unavailable_ms
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ledger = writer.stop().await;

    outln!("\n== row-by-row check on the new MariaDB primary");
    let mut conn = lab.maria_target.connect(Some(lab::APP)).await?;
    let check = ledger.check(&mut conn).await?;
    outln!(
        "   {} acknowledged inserts ({} after the move), {} in doubt at the fence; lost {}, duplicated {}, unexpected {}; ids continue on the target: {}",
        check.acked,
        check.acked_on_target,
        check.in_doubt,
        check.lost.len(),
        check.duplicated.len(),
        check.unexpected.len(),
        check.id_problems.is_empty()
    );
    anyhow::ensure!(check.clean(), "the check found problems: {check:?}");
    // Reverse replication carries the new primary's inserts back; then both sides match.
    let mut old = lab.maria_source.connect(Some(lab::APP)).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ledger.check(&mut old).await?.clean() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reverse replication did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outln!("\n== cutover mysql verify");
    let verified = mysql::verify::verify(&pair, mysql::verify::CHUNK_ROWS).await?;
    for t in &verified.tables {
        outln!(
            "   {:<24} {:>6} rows on both sides: {}",
            t.table,
            t.target_rows,
            if t.matches() { "match" } else { "DIFFER" }
        );
    }
    anyhow::ensure!(verified.matches(), "verify found differences");
    outln!("\n== cutover mysql cleanup");
    let cleaned = mysql::cleanup::cleanup(&pair).await?;
    for line in cleaned.done.iter().chain(&cleaned.kept) {
        outln!("   {line}");
    }
    Ok(report.write_unavailable_ms)
}

/// `dns update` once the earliest safe time has passed, `dns wait`, then `dns restore-ttl`.
async fn switch_dns(targets: &[Target<'_>], states: &StateDir) -> anyhow::Result<()> {
    outln!("\n== cutover dns update");
    let mut safe_at = std::time::SystemTime::UNIX_EPOCH;
    for target in targets {
        if let Some(state) = states.load(&target.plan.name, target.plan.record_type)?
            && let Some(at) = state.safe_at()
        {
            safe_at = safe_at.max(at);
        }
    }
    if let Ok(wait) = safe_at.duration_since(std::time::SystemTime::now()) {
        outln!(
            "   switching earlier is refused (caches may hold the old TTL): waiting {:.1} s",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
    }
    for report in update::update_all(targets, states, false).await? {
        let before = report
            .previous
            .map(|p| p.values.join(","))
            .unwrap_or_default();
        outln!(
            "   {}: {before} -> {} (ttl {})",
            report.record,
            report.current.values.join(","),
            report.current.ttl
        );
    }

    outln!("\n== cutover dns wait");
    let outcome = propagation::wait(
        targets,
        Duration::from_secs(30),
        Duration::from_millis(100),
        |_, _| {},
    )
    .await;
    for row in &outcome.rows {
        let served = row.last.as_ref().map(|s| s.describe()).unwrap_or_default();
        outln!("   {:<26} {:<18} {served}", row.record, row.server);
    }
    anyhow::ensure!(
        outcome.complete,
        "not every authoritative server serves the new values"
    );
    outln!(
        "   every authoritative server serves the new values ({:.0} ms)",
        outcome.elapsed.as_secs_f64() * 1000.0
    );

    outln!("\n== cutover dns restore-ttl");
    for target in targets {
        let restored = ttl::restore(target, states).await?;
        outln!(
            "   {}: TTL back to {}",
            restored.record,
            restored.restored_ttl.unwrap_or_default()
        );
    }
    Ok(())
}
