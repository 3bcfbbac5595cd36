//! `mysql start`: replication user, heartbeat, snapshot streamed into the read-only target,
//! replica configured from exactly the snapshot's coordinates and started. Idempotent: a pair
//! already replicating is left as it is.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;

use super::dialect::{SourceSpec, StartAt, literal};
use super::snapshot::{self, Snapshot};
use super::{Db, MyError, Pair, heartbeat, preflight, writers};

/// How long the replica threads get to come up after `START REPLICA`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What `start` did.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// Pair name.
    pub pair: String,
    /// Replication was already running; nothing was changed.
    pub already_running: bool,
    /// The snapshot streamed into the target.
    pub snapshot: Option<Snapshot>,
    /// GTID replication (else file/position).
    pub gtid: bool,
    /// The replication user cutover created on the source.
    pub replication_user: String,
    /// Parallel-apply settings made on the target (`name = value`), restored after promotion.
    pub parallel_apply: Vec<String>,
}

/// A random password for a user cutover creates (never stored by cutover; the replica keeps it).
pub fn random_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Creates (or resets the password of) a replication user, without writing it to the binlog.
pub async fn create_replication_user(
    db: &mut Db,
    user: &str,
    host: &str,
    password: &str,
    link: Option<&super::dialect::ReplicaTls>,
) -> Result<(), MyError> {
    let account = format!("{}@{}", literal(user), literal(host));
    // An encrypted link's account refuses plaintext logins: its password never crosses the
    // network in the clear, whoever uses it; with a client certificate, one the server's CA
    // signed is required too.
    let require = match link {
        Some(l) if l.identity.is_some() => "X509",
        Some(_) => "SSL",
        None => "NONE",
    };
    for sql in [
        "SET SESSION sql_log_bin = 0".to_owned(),
        format!(
            "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {}",
            literal(password)
        ),
        format!(
            "ALTER USER {account} IDENTIFIED BY {} REQUIRE {require}",
            literal(password)
        ),
        format!("GRANT REPLICATION SLAVE ON *.* TO {account}"),
        "SET SESSION sql_log_bin = 1".to_owned(),
    ] {
        db.run("create the replication user", &sql).await?;
    }
    Ok(())
}

/// Waits until both replica threads run; a thread error is returned verbatim.
pub async fn wait_running(target: &mut Db, timeout: Duration) -> Result<(), MyError> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = target
            .rows_by_name("read replica status", target.dialect.replica_status())
            .await?;
        let row = rows.first().cloned().unwrap_or_default();
        let io = row.text("Replica_IO_Running").unwrap_or_default();
        let sql = row.text("Replica_SQL_Running").unwrap_or_default();
        if io == "Yes" && sql == "Yes" {
            return Ok(());
        }
        for (thread, column) in [("SQL", "Last_SQL_Error"), ("IO", "Last_IO_Error")] {
            if let Some(error) = row.text(column).filter(|e| !e.is_empty()) {
                return Err(MyError::Refused(format!(
                    "{}: replica {thread} thread stopped: {error}",
                    target.label
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(MyError::Timeout {
                what: format!(
                    "{}: replica threads running (IO {io}, SQL {sql})",
                    target.label
                ),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Points `replica` at `host:port` from `start` and starts it, replicating `databases` only.
pub async fn configure_replica(
    replica: &mut Db,
    spec: &SourceSpec<'_>,
    start_gtid: Option<&str>,
    databases: &[String],
) -> Result<(), MyError> {
    let d = replica.dialect;
    let _ = replica.run("stop the replica", d.stop_replica()).await;
    replica.run("reset the replica", d.reset_replica()).await?;
    replica
        .run("set the replication filter", &d.replicate_only(databases))
        .await?;
    if let (StartAt::Gtid, Some(gtid)) = (&spec.start, start_gtid)
        && let Some(sql) = d.set_start_gtid(gtid)
    {
        replica.run("set the GTID start position", &sql).await?;
    }
    replica
        .run("configure replication", &d.change_source(spec))
        .await?;
    replica.run("start the replica", d.start_replica()).await
}

/// Runs `start` for one pair.
pub async fn start(pair: &Pair) -> Result<Started, MyError> {
    let (mut source, mut target) = pair.connect().await?;
    let report = preflight::run(pair, &mut source, &mut target).await?;
    let user = pair.replication_user();
    if report.already_started {
        lock_target_app_accounts(pair, &mut target).await?;
        wait_running(&mut target, START_TIMEOUT).await?;
        return Ok(Started {
            pair: pair.plan.name.clone(),
            already_running: true,
            snapshot: None,
            gtid: report.gtid,
            replication_user: user,
            parallel_apply: Vec::new(),
        });
    }
    if !report.passed() {
        return Err(MyError::Refused(format!(
            "preflight failed for {}:\n{}",
            pair.plan.name,
            report.errors_text()
        )));
    }
    let password = random_password();
    create_replication_user(
        &mut source,
        &user,
        pair.replication_user_host(),
        &password,
        super::tls::replica_tls(&pair.plan.source).as_ref(),
    )
    .await?;
    heartbeat::ensure(&mut source).await?;
    heartbeat::beat(&mut source).await?;
    // The app cannot write to the target until promotion: its accounts are locked (a user
    // holding READ_ONLY ADMIN is not bound by read_only) and the target is read-only (the
    // replica's applier is bound by neither).
    lock_target_app_accounts(pair, &mut target).await?;
    target
        .run("make the target read-only", target.dialect.fence())
        .await?;
    let databases = pair.replicated_databases();
    let snapshot = snapshot::stream(
        &pair.source,
        &source,
        &pair.target,
        target.dialect,
        &databases,
    )
    .await?;
    // The definitions replication starts with: a table whose definition changes during the
    // sync is compared row by row inside the window.
    let shapes = super::inventory::columns(&mut source, &pair.plan.databases).await?;
    super::inventory::remember(&mut target, &pair.plan.name, &shapes).await?;
    let c = &snapshot.coordinates;
    let start = match (&c.gtid, report.gtid) {
        (Some(_), true) => StartAt::Gtid,
        _ => StartAt::File {
            file: c.file.clone().unwrap_or_default(),
            position: c.position.unwrap_or_default(),
        },
    };
    let (host, port) = pair.replication_address();
    let spec = SourceSpec {
        host: &host,
        port,
        user: &user,
        password: &password,
        start,
        tls: super::tls::replica_tls(&pair.plan.source),
    };
    // The replica's threads are stopped here (none runs yet for this pair): the only time
    // the applier settings may change.
    let _ = target
        .run("stop the replica", target.dialect.stop_replica())
        .await;
    let parallel_apply =
        super::parallel::enable(&mut target, &pair.plan.name, pair.plan.apply_workers).await?;
    configure_replica(&mut target, &spec, c.gtid.as_deref(), &databases).await?;
    wait_running(&mut target, START_TIMEOUT).await?;
    let gtid = matches!(spec.start, StartAt::Gtid);
    source.close().await;
    target.close().await;
    Ok(Started {
        pair: pair.plan.name.clone(),
        already_running: false,
        snapshot: Some(snapshot),
        gtid,
        replication_user: user,
        parallel_apply,
    })
}

/// Locks the app's accounts on the target until promotion (outside the binlog, remembered in
/// the target's own record) and ends any session they have there.
async fn lock_target_app_accounts(pair: &Pair, target: &mut Db) -> Result<(), MyError> {
    let to_lock = writers::prepare_lock(target, &pair.plan.app_users, &pair.plan.name).await?;
    if let Some(sql) = writers::lock_sql(&to_lock) {
        target
            .run("lock the app accounts on the target", &sql)
            .await?;
    }
    super::cutover::kill_sessions(target, &pair.plan.app_users).await?;
    Ok(())
}
