//! `mysql status`: replica threads, lag three ways (heartbeat measured, `Seconds_Behind_*`,
//! GTID/position comparison) and thread errors verbatim.

use std::time::Duration;

use serde::Serialize;

use super::heartbeat::{self, Lag};
use super::{Db, MyError, Pair};

/// One pair's replication state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Pair name.
    pub pair: String,
    /// Whether the target has a replica configuration at all.
    pub configured: bool,
    /// IO thread state (`Yes`, `No`, `Connecting`).
    pub io_running: String,
    /// SQL thread state.
    pub sql_running: String,
    /// `Seconds_Behind_Source`/`_Master` (None when the threads are stopped).
    pub seconds_behind: Option<u64>,
    /// Last IO thread error, verbatim.
    pub last_io_error: Option<String>,
    /// Last SQL thread error, verbatim.
    pub last_sql_error: Option<String>,
    /// What the source has written (GTIDs) or its binlog position.
    pub source_position: String,
    /// What the target has applied.
    pub target_position: String,
    /// Whether the target has applied everything the source has written.
    pub caught_up: bool,
    /// Heartbeat lag, measured.
    pub lag: Lag,
    /// Tables and columns of the plan's databases the target lacks (a cutover refuses while
    /// this is not empty).
    pub drift: Vec<String>,
    /// Tables of the plan's databases the replica's ignore filter skips (an interrupted
    /// `resync`, or a filter set by hand): a cutover refuses while this is not empty.
    pub ignored: Vec<String>,
    /// Prepared XA transactions on the source, as `XA COMMIT` names them (a cutover refuses
    /// while any is pending).
    pub xa_prepared: Vec<String>,
}

impl Status {
    /// Both threads run.
    pub fn running(&self) -> bool {
        self.io_running == "Yes" && self.sql_running == "Yes"
    }
}

/// How long `status` waits for the heartbeat to reach the target.
pub const STATUS_LAG_LIMIT: Duration = Duration::from_secs(10);

/// Reads the state of one pair; the heartbeat wait is bounded by `lag_timeout`.
pub async fn status(
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
    lag_timeout: Duration,
) -> Result<Status, MyError> {
    let rows = target
        .rows_by_name("read replica status", target.dialect.replica_status())
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let source_gtids: String = source
        .query_one("read the source position", source.dialect.executed_gtids())
        .await?;
    let target_gtids: String = target
        .query_one("read the target position", target.dialect.applied_gtids())
        .await?;
    let configured = !rows.is_empty();
    let lag = if configured && row.text("Replica_SQL_Running").as_deref() == Some("Yes") {
        heartbeat::measure(source, target, lag_timeout).await?
    } else {
        Lag {
            replicated_after: None,
            waited: None,
        }
    };
    let drift = if configured {
        super::inventory::drift_between(source, target, &pair.plan.databases)
            .await?
            .lines
    } else {
        Vec::new()
    };
    let ignored = if configured {
        super::resync::ignored_plan_tables(target, &pair.plan.databases).await?
    } else {
        Vec::new()
    };
    let xa_prepared = super::writers::xa_prepared(source).await?;
    Ok(Status {
        drift,
        ignored,
        xa_prepared,
        pair: pair.plan.name.clone(),
        configured,
        io_running: row
            .text("Replica_IO_Running")
            .unwrap_or_else(|| "No".into()),
        sql_running: row
            .text("Replica_SQL_Running")
            .unwrap_or_else(|| "No".into()),
        seconds_behind: row.number("Seconds_Behind_Source"),
        last_io_error: non_empty(row.text("Last_IO_Error")),
        last_sql_error: non_empty(row.text("Last_SQL_Error")),
        caught_up: configured && source_gtids == target_gtids,
        source_position: source_gtids,
        target_position: target_gtids,
        lag,
    })
}

/// When a replica I/O error says the source no longer has the binlog the replica needs
/// (error 1236: purged, or a GTID position no binlog holds), the refusal that fits: nothing
/// resumes by retrying; the pair is copied again.
pub fn purged_binlog_refusal(io_error: &str, pair: &str) -> Option<String> {
    let e = io_error.to_ascii_lowercase();
    (e.contains("1236") || e.contains("purged") || e.contains("could not find first log"))
        .then(|| format!(
            "the source no longer has the binary log the replica needs (purged: binlog_expire_logs_seconds, or PURGE BINARY LOGS, while the replica was behind), so replication cannot resume, by retrying or otherwise; fix: copy the pair again: `cutover mysql cleanup <plan> --pair {pair}`, drop its databases on the target, `cutover mysql start <plan> --pair {pair}`; keep binlogs longer on the source meanwhile"
        ))
}
