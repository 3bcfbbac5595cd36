//! `pg status`: initial-copy state per table, lag in bytes and seconds, WAL the slot retains.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::db::{Db, PgError};
use super::{Pair, fence};

/// Initial-copy state of one table on the target.
#[derive(Debug, Clone, Serialize)]
pub struct TableState {
    /// `schema.table`.
    pub table: String,
    /// `init`, `copying`, `syncing`, `catching-up` or `ready` (`pg_subscription_rel.srsubstate`).
    pub state: &'static str,
    /// Size on the target now, while the table is still being copied or synced; `None` once it
    /// is ready. Reading the size locks the table (`AccessShareLock`), which would queue status,
    /// the gate and the daemon behind any DDL on a table that replicates; a ready table's size
    /// tells an operator nothing they need during a migration.
    pub target_bytes: Option<i64>,
    /// Bytes the running initial copy has processed, while it runs.
    pub copy_bytes_processed: Option<i64>,
}

/// Where replication of one pair stands.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The pair.
    pub pair: String,
    /// The subscription exists on the target.
    pub subscribed: bool,
    /// The subscription is enabled.
    pub enabled: bool,
    /// The target's apply worker is running.
    pub apply_running: bool,
    /// The slot exists on the source.
    pub slot_exists: bool,
    /// A walsender is streaming from the slot.
    pub slot_active: bool,
    /// Per table, in name order.
    pub tables: Vec<TableState>,
    /// Every table has finished its initial copy.
    pub all_ready: bool,
    /// Source WAL position minus the slot's `confirmed_flush_lsn`.
    pub lag_bytes: Option<i64>,
    /// Walsender `replay_lag` (0 when nothing is outstanding). Absent when bytes are behind
    /// and nothing applies them: a dead replica's lag is unknown and growing, never 0.
    pub lag_seconds: Option<f64>,
    /// Changes flow: the subscription is enabled, its apply worker runs, and a walsender
    /// streams from the slot.
    pub replication_running: bool,
    /// Times the target's apply and table-sync workers failed
    /// (`pg_stat_subscription_stats`: the error itself is in the target's server log).
    pub apply_errors: i64,
    /// Of those, the initial copy's (`sync_error_count`): each failure starts a table's copy
    /// over.
    pub sync_errors: i64,
    /// Prepared (two-phase) transactions waiting on the source: a cutover refuses while any
    /// exists (logical decoding sends one only at its `COMMIT PREPARED`).
    pub prepared: Vec<super::writers::PreparedXact>,
    /// Seconds since the target last heard from the source.
    pub last_message_age_seconds: Option<f64>,
    /// WAL kept on the source for the slot (from `restart_lsn`).
    pub wal_retained_bytes: Option<i64>,
    /// `pg_replication_slots.wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub slot_wal_status: Option<String>,
    /// Roles blocked by cutover on the source (the fence) and on the target (until promotion).
    pub blocked_roles: BlockedRoles,
    /// The same roles with what the fence holds of each (`app (no CONNECT on database shop)`,
    /// `app (NOLOGIN)`): the database scope leaves the role's other databases serving.
    pub fence_scope: BlockedRoles,
    /// Schema drift while replicating: what the source has that the target or the publication
    /// lacks (a cutover refuses at the gate while this is not empty).
    pub drift: Vec<super::inventory::Difference>,
    /// Things to look at.
    pub warnings: Vec<String>,
}

/// Roles cutover blocks on each side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlockedRoles {
    /// On the source (fenced).
    pub source: Vec<String>,
    /// On the target (until promotion).
    pub target: Vec<String>,
}

fn state_name(code: &str) -> &'static str {
    match code {
        "i" => "init",
        "d" => "copying",
        "f" => "copied",
        "s" => "syncing",
        "r" => "ready",
        _ => "unknown",
    }
}

/// How much a status reading covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything `pg status` says: replication, the fence, prepared transactions and the
    /// schema drift (two catalog inventories).
    Full,
    /// Replication only (subscription, tables' copy state, slot, lag, errors): what the
    /// daemon's poll reads every second for every pair. Fence, prepared transactions and drift
    /// are left empty: the daemon reads the fence with the pair's state, and drift is the
    /// `pg status` and cutover gate's to find.
    Replication,
}

/// Reads the status of `pair` from both servers. With `history_dir`, the retained-WAL figure is
/// remembered there and a warning is given when it grew on each of the last samples.
pub async fn status(
    pair: &Pair,
    source: &Db,
    target: &Db,
    history_dir: Option<&Path>,
) -> Result<Status, PgError> {
    read(pair, source, target, history_dir, Depth::Full).await
}

/// Reads `pair`'s status to `depth` from both servers.
pub async fn read(
    pair: &Pair,
    source: &Db,
    target: &Db,
    history_dir: Option<&Path>,
    depth: Depth,
) -> Result<Status, PgError> {
    let full = depth == Depth::Full;
    let name = &pair.names.subscription;
    let sub = target
        .query_opt(
            "read the subscription",
            "SELECT s.subenabled, st.pid IS NOT NULL,
                    EXTRACT(epoch FROM now() - st.last_msg_receipt_time)::float8
             FROM pg_subscription s
             LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
             WHERE s.subname = $1
               AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&name],
        )
        .await?;
    let tables = target
        .query(
            "read per-table copy state",
            "SELECT n.nspname || '.' || c.relname, sr.srsubstate::text,
                    CASE WHEN sr.srsubstate <> 'r' THEN pg_total_relation_size(c.oid) END,
                    (SELECT max(p.bytes_processed) FROM pg_stat_progress_copy p WHERE p.relid = c.oid)
             FROM pg_subscription_rel sr
             JOIN pg_subscription s ON s.oid = sr.srsubid
             JOIN pg_class c ON c.oid = sr.srrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE s.subname = $1
             ORDER BY 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|r| TableState {
            table: r.get(0),
            state: state_name(&r.get::<_, String>(1)),
            target_bytes: r.get(2),
            copy_bytes_processed: r.get(3),
        })
        .collect::<Vec<_>>();
    let slot = source
        .query_opt(
            "read the replication slot",
            "SELECT s.active,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::int8,
                    s.wal_status,
                    EXTRACT(epoch FROM r.replay_lag)::float8
             FROM pg_replication_slots s
             LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
             WHERE s.slot_name = $1",
            &[&pair.names.slot()],
        )
        .await?;

    let mut status = Status {
        pair: pair.plan.name.clone(),
        subscribed: sub.is_some(),
        enabled: sub.as_ref().is_some_and(|r| r.get(0)),
        apply_running: sub.as_ref().is_some_and(|r| r.get(1)),
        last_message_age_seconds: sub.as_ref().and_then(|r| r.get(2)),
        slot_exists: slot.is_some(),
        slot_active: slot.as_ref().is_some_and(|r| r.get(0)),
        all_ready: !tables.is_empty() && tables.iter().all(|t| t.state == "ready"),
        tables,
        lag_bytes: slot.as_ref().and_then(|r| r.get(1)),
        lag_seconds: None,
        replication_running: false,
        apply_errors: 0,
        sync_errors: 0,
        prepared: if full {
            super::writers::prepared(source).await?
        } else {
            Vec::new()
        },
        wal_retained_bytes: slot.as_ref().and_then(|r| r.get(2)),
        slot_wal_status: slot.as_ref().and_then(|r| r.get(3)),
        blocked_roles: BlockedRoles::default(),
        fence_scope: BlockedRoles::default(),
        drift: Vec::new(),
        warnings: Vec::new(),
    };
    if full {
        status.blocked_roles = BlockedRoles {
            source: fence::blocked(source, &pair.names.pair).await?,
            target: fence::blocked(target, &pair.names.pair).await?,
        };
        status.fence_scope = BlockedRoles {
            source: fence::blocked_described(source, &pair.names.pair).await?,
            target: fence::blocked_described(target, &pair.names.pair).await?,
        };
    }
    if full && status.subscribed {
        let (tables, _) =
            super::catalog::in_scope(super::catalog::tables(source).await?, &pair.plan.tables);
        let scope: Vec<String> = tables.iter().map(|t| t.display_name()).collect();
        match tokio::try_join!(
            super::inventory::Inventory::read(source),
            super::inventory::Inventory::read(target)
        ) {
            Ok((source_inv, target_inv)) => {
                status.drift = super::inventory::drift(
                    source,
                    &source_inv,
                    &target_inv,
                    &scope,
                    &pair.names.publication,
                )
                .await?;
            }
            // A table locked by DDL: the rest of the status is still true; say what is missing.
            Err(super::PgError::Refused(why)) => status
                .warnings
                .push(format!("schema drift not checked: {why}")),
            Err(e) => return Err(e),
        }
    }
    status.replication_running =
        status.subscribed && status.enabled && status.apply_running && status.slot_active;
    if status.subscribed
        && let Some(row) = target
            .query_opt(
                "read the subscription's error counts",
                "SELECT (st.apply_error_count + st.sync_error_count)::int8, st.sync_error_count::int8
                 FROM pg_stat_subscription_stats st WHERE st.subname = $1",
                &[&name],
            )
            .await?
    {
        status.apply_errors = row.get(0);
        status.sync_errors = row.get(1);
    }
    // A copy that fails starts over for ever: those tables are failing, not copying.
    if status.sync_errors > 0 && !status.all_ready {
        for t in status.tables.iter_mut() {
            if matches!(t.state, "init" | "copying") {
                t.state = "failing";
            }
        }
        if let Some(why) = status.failing_copy() {
            status.warnings.push(why);
        }
    }
    status.lag_seconds = lag_seconds(
        status.lag_bytes,
        slot.as_ref().and_then(|r| r.get(4)),
        status.replication_running,
    );

    if status.subscribed && !status.slot_exists {
        status.warnings.push(format!(
            "the subscription exists but its slot `{}` is missing on the source; clean the pair up, then start replication again",
            pair.names.slot()
        ));
    }
    if status.subscribed && !status.replication_running {
        status.warnings.push(format!(
            "replication is not running: {}",
            status.not_running_cause()
        ));
    }
    if !status.prepared.is_empty() {
        status
            .warnings
            .push(super::writers::prepared_refusal(&status.prepared));
    }
    // (`lost` with replication stopped is the cause above, said once.)
    if let Some(wal) = status.slot_wal_status.as_deref()
        && (wal == "unreserved" || (wal == "lost" && status.replication_running))
    {
        status.warnings.push(format!(
            "the slot's WAL is `{wal}`: the source may already have removed WAL the target needs (max_slot_wal_keep_size)"
        ));
    }
    if let (Some(dir), Some(retained)) = (history_dir, status.wal_retained_bytes)
        && let Some(warning) = record_retained(dir, &pair.plan.name, retained)
    {
        status.warnings.push(warning);
    }
    Ok(status)
}

/// Lag in seconds from the bytes behind and the walsender's `replay_lag`. Nothing outstanding
/// is 0; with bytes behind, the walsender's figure while changes flow (its `NULL` there means
/// the subscriber confirmed everything sent); when nothing applies, unknown (`None`), never 0.
fn lag_seconds(lag_bytes: Option<i64>, replay_lag: Option<f64>, running: bool) -> Option<f64> {
    match (lag_bytes, replay_lag) {
        (Some(0), _) => Some(0.0),
        (Some(_), _) if !running => None,
        (Some(_), Some(seconds)) => Some(seconds),
        (Some(_), None) => Some(0.0),
        (None, _) => None,
    }
}

impl Status {
    /// When the initial copy keeps failing (tables marked `failing`): what fails, where the
    /// reason is, what the source keeps meanwhile, and the fix. Status and the gate say it.
    pub fn failing_copy(&self) -> Option<String> {
        let failing: Vec<&str> = self
            .tables
            .iter()
            .filter(|t| t.state == "failing")
            .map(|t| t.table.as_str())
            .collect();
        (!failing.is_empty()).then(|| format!(
            "the initial copy is FAILING: {} table-copy error(s) on the target (pg_stat_subscription_stats.sync_error_count), and each retry starts over: {}; the reason is in the target's server log (a full disk says `No space left on device`, a constraint the rows break names it); meanwhile the source keeps {} of WAL for the slot; fix: correct the cause on the target (the copy retries by itself), or `cutover pg cleanup` so that the source releases the WAL",
            self.sync_errors,
            failing.join(", "),
            self.wal_retained_bytes
                .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
                .unwrap_or_else(|| "an unknown amount".to_owned())
        ))
    }

    /// Why changes do not flow, with everything this reading knows (drift, worker errors) and
    /// the fix. Engine-neutral words: a refusal and `status` say the same.
    pub fn not_running_cause(&self) -> String {
        // A slot that lost its WAL cannot recover: no retry, no schema fix brings it back.
        if self.slot_wal_status.as_deref() == Some("lost") {
            return format!(
                "the source's replication slot lost WAL the target still needed (wal_status `lost`: max_slot_wal_keep_size was reached while the target fell behind), so replication cannot resume, by retrying or otherwise; fix: start the sync again: `cutover pg cleanup <plan> --pair {0}` removes the subscription and the slot, then empty the pair's tables on the target (or drop them when `copy_schema` recreates them) and `cutover pg start <plan> --pair {0}` copies them afresh; raise max_slot_wal_keep_size on the source first, or keep the target applying",
                self.pair
            );
        }
        let mut why = Vec::new();
        if !self.enabled {
            why.push("the target's subscription is disabled".to_owned());
        } else if !self.apply_running {
            why.push("the target's apply worker is not running".to_owned());
        }
        if !self.slot_exists {
            why.push("the source's replication slot is missing".to_owned());
        } else if !self.slot_active {
            why.push("no walsender streams from the source's slot".to_owned());
        }
        if self.apply_errors > 0 {
            why.push(format!(
                "its workers failed {} time(s) (pg_stat_subscription_stats; the error is in the target's server log)",
                self.apply_errors
            ));
        }
        if !self.drift.is_empty() {
            why.push(format!(
                "the schema changed since replication started (the likely cause: the target cannot apply the source's rows): {}; fix: align the target's schema (add the changed columns, tables and indexes there), and the apply worker resumes by itself; new tables also need replication started again",
                self.drift
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        } else {
            why.push("fix: read the target's server log for the apply worker's error and correct it; the worker retries by itself".to_owned());
        }
        why.join("; ")
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RetainedHistory {
    /// (unix seconds, bytes), oldest first.
    samples: Vec<(u64, i64)>,
}

/// Samples kept per pair.
const HISTORY: usize = 6;
/// Growth over the samples that earns a warning (one WAL segment's worth, 16 MiB, times 4).
const GROWTH_WARNING_BYTES: i64 = 64 << 20;

/// Appends a retained-WAL sample; warns when it grew at every one of the last samples by more
/// than [`GROWTH_WARNING_BYTES`] in all.
fn record_retained(dir: &Path, pair: &str, retained: i64) -> Option<String> {
    let path = dir.join(format!("postgres-{pair}-retained-wal.json"));
    let mut history: RetainedHistory = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    history.samples.push((now, retained));
    let excess = history.samples.len().saturating_sub(HISTORY);
    history.samples.drain(..excess);
    if let Ok(bytes) = serde_json::to_vec(&history)
        && let Err(e) = crate::state::write_atomic(&path, &bytes)
    {
        tracing::warn!(path = %path.display(), error = %e, "retained-WAL sample not saved");
    }
    growth_warning(&history.samples)
}

fn growth_warning(samples: &[(u64, i64)]) -> Option<String> {
    if samples.len() < 3 {
        return None;
    }
    let growing = samples.windows(2).all(|w| w[1].1 > w[0].1);
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    (growing && last.1 - first.1 > GROWTH_WARNING_BYTES).then(|| {
        format!(
            "WAL retained by the slot grew from {} MiB to {} MiB over the last {} status checks ({} s): the target is not keeping up or not consuming",
            first.1 >> 20,
            last.1 >> 20,
            samples.len(),
            last.0.saturating_sub(first.0)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{growth_warning, lag_seconds};

    #[test]
    fn lag_is_never_zero_while_bytes_wait_and_nothing_applies() {
        assert_eq!(lag_seconds(Some(0), None, false), Some(0.0));
        assert_eq!(lag_seconds(Some(282_000), None, false), None);
        assert_eq!(lag_seconds(Some(282_000), Some(3.5), false), None);
        assert_eq!(lag_seconds(Some(282_000), Some(0.25), true), Some(0.25));
        assert_eq!(lag_seconds(Some(100), None, true), Some(0.0));
        assert_eq!(lag_seconds(None, None, true), None);
    }

    #[test]
    fn warns_only_on_steady_growth() {
        let mib = 1 << 20;
        assert!(growth_warning(&[(0, 10 * mib), (60, 50 * mib), (120, 90 * mib)]).is_some());
        assert!(growth_warning(&[(0, 10 * mib), (60, 50 * mib)]).is_none());
        assert!(growth_warning(&[(0, 10 * mib), (60, 90 * mib), (120, 80 * mib)]).is_none());
        assert!(growth_warning(&[(0, 10 * mib), (60, 11 * mib), (120, 12 * mib)]).is_none());
    }
}
