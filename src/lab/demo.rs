//! The demo: a real migration on a throwaway lab. The lab, the app (writers on both
//! databases, a live SQLite file, a health endpoint) and the proof afterwards live here; the
//! migration itself is one run of the lab plan, sequenced by `run`. The CLI renders what this
//! says (`cutover lab demo`).

use std::time::{Duration, Instant};

use super::mysql_writer::{MyWriter, MyWriterConfig};
use super::writer::{DEMO_TASKS, Writer, WriterConfig};
use super::{Lab, LabDir, Supervision};
use crate::dns::state::Records;
use crate::dns::ttl::{self, LowerOptions};
use crate::dns::{Discovery, Target};
use crate::lab;
use crate::secret::SecretRef;

/// Transactions per second the demo's writer commits.
const DEMO_RATE: u32 = 500;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A part of the demo (the lab, the app, the run) failed.
    #[error("{0}")]
    Failed(String),
    /// The proof afterwards found a problem.
    #[error("{0}")]
    Proof(String),
}

fn fail(e: impl std::fmt::Display) -> DemoError {
    DemoError::Failed(e.to_string())
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), DemoError> {
    if ok {
        Ok(())
    } else {
        Err(DemoError::Proof(why()))
    }
}

/// Runs the demo: a lab started, the app writing, the TTLs lowered, one whole run, and the
/// proof afterwards. `say` gets the narration a line at a time, `observer` every journal record
/// of the run, `on_report` the run's report; the error says which part failed.
pub async fn run(
    say: &mut (dyn FnMut(String) + Send),
    observer: &mut (dyn FnMut(&crate::run::Record) + Send),
    on_report: &mut (dyn FnMut(&crate::run::RunReport) + Send),
) -> Result<(), DemoError> {
    let began = Instant::now();
    say(
        "== starting the lab (PostgreSQL x2, MariaDB x2, PowerDNS, BIND9, sshd, HAProxy on 127.0.0.1)"
            .to_owned(),
    );
    let lab = Lab::start(LabDir::temporary().map_err(fail)?, Supervision::Owned)
        .await
        .map_err(fail)?;
    lab::prepare_app(&lab).await.map_err(fail)?;
    let password = SecretRef::File(lab.dir.path().join("secrets").join("app.password"))
        .read()
        .map_err(fail)?;
    let health = lab::HealthServer::start(&lab, &password)
        .await
        .map_err(fail)?;
    let app_pid = lab.dir.path().join("app.pid");
    let sqlite = lab.dir.path().join("files/source").join(lab::SQLITE_DB);
    let sqlite_app = start_sqlite_app(&app_pid, &sqlite).map_err(fail)?;
    // The app's web side on each host, behind a lab HAProxy that sends users to the old one.
    let old_web = lab::web::NamedServer::start("old-host app")
        .await
        .map_err(fail)?;
    let new_web = lab::web::NamedServer::start("new-host app")
        .await
        .map_err(fail)?;
    let proxy = lab::Haproxy::start(lab.dir.path(), "haproxy", old_web.addr, Supervision::Owned)
        .await
        .map_err(fail)?;
    let proxy_url = format!("http://127.0.0.1:{}/", proxy.port);
    let route = format!(
        "\n[[proxy]]\nname = \"web\"\nsource = \"{}\"\ntarget = \"{}\"\nadapter = {{ kind = \"haproxy\", socket = \"{}\", backend = \"{}\", server = \"{}\" }}\nproof = {{ url = \"{proxy_url}\", source = \"old-host\", target = \"new-host\" }}\n",
        old_web.addr,
        new_web.addr,
        proxy.socket.display(),
        lab::haproxy::BACKEND,
        lab::haproxy::SERVER,
    );
    let plan_path = lab.dir.path().join("plan.toml");
    std::fs::write(
        &plan_path,
        lab::lab_plan_toml(&lab) + &lab::run_plan_extras(&lab, &app_pid, &health.url()) + &route,
    )
    .map_err(fail)?;
    let plan = crate::plan::load(&plan_path).map_err(fail)?;
    say(format!(
        "   plan: {} ({:.1} s)",
        plan_path.display(),
        began.elapsed().as_secs_f64()
    ));

    say(format!(
        "\n== lowering the DNS TTLs (days ahead in real life; the lab's records start at {} s)",
        lab::APP_RECORD_TTL
    ));
    let discovery = Discovery::system();
    let mut targets = Vec::new();
    for (index, record) in plan.dns.iter().enumerate() {
        targets.push(
            Target::resolve(index, record, &discovery)
                .await
                .map_err(fail)?,
        );
    }
    let states = Records::new(&plan.migration.state_dir);
    let lowering = LowerOptions {
        clamp: false,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(200),
    };
    let mut safe_at = std::time::SystemTime::UNIX_EPOCH;
    for target in &targets {
        let lowered = ttl::lower(target, &states, lowering).await.map_err(fail)?;
        let safe = lowered
            .safe_at
            .ok_or_else(|| DemoError::Proof("the lowered TTL is not served everywhere".into()))?;
        safe_at = safe_at.max(safe);
        say(format!(
            "   {}: TTL {} -> {} on {} server(s); earliest safe switch {}",
            lowered.record,
            lowered.state.old_ttl,
            lowered.state.lowered_ttl,
            lowered.servers.len(),
            humantime::format_rfc3339_seconds(safe)
        ));
    }
    drop(targets);

    let app = |pg: &lab::Postgres| {
        let mut config = pg.config(lab::APP);
        config.user(lab::APP).password(password.expose());
        config
    };
    let pg_writer = Writer::start(WriterConfig {
        source: app(&lab.pg_source),
        target: app(&lab.pg_target),
        rate: DEMO_RATE,
        tasks: DEMO_TASKS,
        first_task: 0,
    });
    let maria = |m: &lab::MariaDb| m.user_opts(lab::APP, password.expose(), lab::APP);
    let maria_writer = MyWriter::start(MyWriterConfig {
        source: maria(&lab.maria_source),
        target: maria(&lab.maria_target),
        rate: DEMO_RATE,
        tasks: 2,
    });
    let users = lab::web::LoopingClient::start(proxy_url.clone());
    say(format!(
        "\n== the app writes {DEMO_RATE} transactions/s to PostgreSQL and {DEMO_RATE} rows/s to MariaDB, and notes to its SQLite file; users request {proxy_url} through HAProxy"
    ));
    if let Ok(wait) = safe_at.duration_since(std::time::SystemTime::now()) {
        say(format!(
            "   (the run refuses DNS switches before the earliest safe time: waiting {:.1} s for it)",
            wait.as_secs_f64()
        ));
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
    }

    say(format!("\n== one run of {}", plan_path.display()));
    let result = crate::run::run(
        &plan,
        &crate::run::Options::default(),
        tokio_util::sync::CancellationToken::new(),
        observer,
    )
    .await;
    // The app keeps writing to its new primaries for a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg_ledger = pg_writer.stop().await;
    let maria_ledger = maria_writer.stop().await;
    let (answers, failed_requests) = users.stop().await;
    // The window-open hook stops the app; a run that failed before its window did not.
    let (app, app_done) = sqlite_app;
    if !app_done.is_finished() {
        unsafe { libc::kill(app as i32, libc::SIGTERM) };
    }
    let _ = app_done.join();
    let (outcome, report) = result.map_err(fail)?;
    on_report(&report);
    ensure(outcome == crate::run::Outcome::Completed, || {
        format!("the run did not complete: {outcome:?}")
    })?;

    say("\n== row-by-row proof on the new primaries".to_owned());
    let check = pg_ledger
        .check(&lab.pg_target.connect(lab::APP).await.map_err(fail)?)
        .await
        .map_err(fail)?;
    let mut conn = lab
        .maria_target
        .connect(Some(lab::APP))
        .await
        .map_err(fail)?;
    let mcheck = maria_ledger.check(&mut conn).await.map_err(fail)?;
    for (engine, check) in [("PostgreSQL", &check), ("MariaDB", &mcheck)] {
        say(format!("   {engine}: {}", check.summary()));
        ensure(check.clean(), || {
            format!("the {engine} check found problems: {check:?}")
        })?;
    }
    ensure(
        check.acked_on_target > 0 && mcheck.acked_on_target > 0,
        || "the app never wrote to the new primaries".to_owned(),
    )?;

    let entry = crate::files::Entry::select(&plan, None)
        .map_err(fail)?
        .pop()
        .ok_or_else(|| DemoError::Proof("the lab plan has no files entry".into()))?;
    let verified = crate::files::verify::verify(&entry).await.map_err(fail)?;
    ensure(verified.matches(), || format!("files differ: {verified:?}"))?;
    let notes = |side: &str| -> Result<String, DemoError> {
        let db = lab.dir.path().join("files").join(side).join(lab::SQLITE_DB);
        let out = std::process::Command::new("sqlite3")
            .arg(format!("file:{}?immutable=1", db.display()))
            .arg("SELECT count(*) || ' notes, last ' || max(n) FROM notes")
            .output()
            .map_err(fail)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let (src_notes, dst_notes) = (
        notes("source").map_err(fail)?,
        notes("target").map_err(fail)?,
    );
    say(format!(
        "   files: both trees identical by checksum; SQLite: {dst_notes} on the target ({src_notes} on the source)"
    ));
    ensure(src_notes == dst_notes, || {
        "the SQLite file differs".to_owned()
    })?;
    let moved_at = answers.iter().position(|a| a.starts_with("new-host"));
    let first_answer = report
        .proxies
        .get("proxy web")
        .and_then(|p| p.first_answer_ms);
    say(format!(
        "   users: {} requests through HAProxy, {failed_requests} failed; the old host answered {} of them, then the new host every one after ({})",
        answers.len() + failed_requests,
        moved_at.unwrap_or(answers.len()),
        first_answer.map_or("not proven".to_owned(), |ms| format!(
            "its first answer {ms:.1} ms after the route was read back"
        ))
    ));
    ensure(failed_requests == 0, || {
        format!("{failed_requests} requests failed through the proxy")
    })?;
    ensure(
        moved_at.is_some_and(|i| answers[i..].iter().all(|a| a.starts_with("new-host"))),
        || "requests through the proxy did not all move to the new host".to_owned(),
    )?;
    drop(proxy);
    let hooks = std::fs::read_to_string(lab.dir.path().join("hooks.log")).unwrap_or_default();
    say(format!(
        "   hooks ran: {}",
        hooks.lines().collect::<Vec<_>>().join("; ")
    ));

    say(format!(
        "\ndemo migration done in {:.1} s: one run moved PostgreSQL ({:.1} ms of write-unavailability) and MariaDB ({:.1} ms) together, files with a live SQLite database, the HAProxy route and two DNS records; 0 lost writes, 0 failed requests.",
        began.elapsed().as_secs_f64(),
        report
            .write_unavailable_ms
            .get("postgres app-pg")
            .copied()
            .unwrap_or_default(),
        report
            .write_unavailable_ms
            .get("mysql app-mariadb")
            .copied()
            .unwrap_or_default(),
    ));
    Ok(())
}

/// The demo app's SQLite side: a shell loop inserting notes until SIGTERM (it finishes the
/// insert in progress first), its pid in `pid_file` for the window-open hook to stop it.
fn start_sqlite_app(
    pid_file: &std::path::Path,
    db: &std::path::Path,
) -> Result<(u32, std::thread::JoinHandle<()>), DemoError> {
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "trap 'exit 0' TERM; echo $$ > \"$1\"; i=0; while :; do i=$((i+1)); sqlite3 \"$2\" \"PRAGMA busy_timeout=5000; INSERT INTO notes (body) VALUES ('note $i')\" >/dev/null || exit 1; done",
            "sqlite-app",
        ])
        .arg(pid_file)
        .arg(db)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn().map_err(fail)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaped as soon as it exits, so the hook's `kill -0` sees it gone (not a zombie).
    let pid = child.id();
    Ok((
        pid,
        std::thread::spawn(move || {
            let _ = child.wait();
        }),
    ))
}
