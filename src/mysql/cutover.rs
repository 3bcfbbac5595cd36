//! A MySQL / MariaDB pair's write-unavailability window ([`crate::engine::Window`]), top to
//! bottom.
//!
//! 1. Gate: replica threads running, a heartbeat written now reaches the target within
//!    `max_lag`, and no account outside the fence (and its exemptions) able to write.
//! 2. Fence: the app users' accounts are locked (outside the binlog), the source goes read-only
//!    (`super_read_only` / MariaDB `read_only`) under a short `lock_wait_timeout`, so a stuck
//!    commit fails the fence instead of hanging it; then the app users' sessions are killed
//!    until none is left. The lock is what stops a user `read_only` does not bind.
//! 3. Position: read on the source **after** the fence holds (GTIDs, or file/position).
//! 4. Exact catch-up: the dialect's wait function on the target, bounded by `catchup_timeout`.
//! 5. Promote: stop the replica, forget its configuration and filter, make the target
//!    writable. The point of no return.
//! 6. Reverse replication (optional, after the window): the old source, still read-only,
//!    replicates from the new primary from the position read at promotion.
//!
//! Any failure in 2-5 unfences the source: it stays the writable primary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::dialect::{SourceSpec, StartAt};
use super::start::{configure_replica, create_replication_user, random_password, wait_running};
use super::{Db, MyError, Pair, heartbeat, inventory, writers};
use crate::engine::{self, DbError};
use crate::plan::{Neighbours, VerifyInWindow};

/// Seconds the fence waits for a lock (a running commit) before failing.
const FENCE_LOCK_WAIT_SECONDS: u32 = 5;

/// What a promoted window measured and did (the engine-specific detail of
/// [`engine::Finished`]).
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// Pair name.
    pub pair: String,
    /// Fence start to target writable.
    pub write_unavailable_ms: f64,
    /// Fence (read-only + killing sessions).
    pub fence_ms: f64,
    /// Catch-up wait.
    pub catchup_ms: f64,
    /// Promotion.
    pub promote_ms: f64,
    /// The source position the target caught up to.
    pub position: String,
    /// Whether reverse replication runs.
    pub reverse_replication: bool,
    /// Problems after the point of no return that need a hand.
    pub warnings: Vec<String>,
    /// The old primary's own position read after promotion (`None`: could not be read).
    pub old_primary_position: Option<String>,
    /// `Some(true)` when the old primary's position is still the fence position (nothing
    /// wrote there after the fence), `Some(false)` when it moved, `None` when unchecked.
    pub old_primary_clean: Option<bool>,
    /// The new primary's applier settings put back after promotion (`name = value`).
    pub restored_settings: Vec<String>,
    /// Tables compared row by row (equal) inside the window before the promotion.
    pub verified_in_window: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Kills every session of `users` on `db` but this one; returns how many.
pub async fn kill_sessions(db: &mut Db, users: &[String]) -> Result<usize, MyError> {
    if users.is_empty() {
        return Ok(0);
    }
    // One statement per user (no listing first), unless this session is one of them.
    if !users.contains(&db.user)
        && let Some(kills) = users
            .iter()
            .map(|u| db.dialect.kill_user(u))
            .collect::<Option<Vec<String>>>()
    {
        let mut killed = 0;
        for sql in kills {
            killed += db.run_counted("end the app sessions", &sql).await? as usize;
        }
        return Ok(killed);
    }
    let marks = vec!["?"; users.len()].join(", ");
    let ids: Vec<u64> = db
        .exec_all(
            "list the app sessions",
            &format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN ({marks}) AND ID <> CONNECTION_ID()"),
            users.to_vec(),
        )
        .await?;
    let mut killed = 0;
    for id in ids {
        match db
            .run("kill an app session", &format!("KILL CONNECTION {id}"))
            .await
        {
            Ok(()) => killed += 1,
            // ER_NO_SUCH_THREAD: it ended on its own meanwhile.
            Err(MyError::Sql { message, .. }) if message.contains("error 1094") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(killed)
}

/// Longest wait for the app sessions to be gone after the fence.
const SESSION_EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Kills the sessions of `users` until none is left (a session that was logging in while the
/// account was locked is caught by the next round); returns how many were killed.
async fn end_sessions(
    db: &mut Db,
    users: &[String],
    count: writers::Count,
) -> Result<usize, MyError> {
    let deadline = Instant::now() + SESSION_EXIT_LIMIT;
    let mut killed = 0;
    loop {
        killed += kill_sessions(db, users).await?;
        let left = writers::sessions(db, users, count).await?;
        if left == 0 {
            return Ok(killed);
        }
        if Instant::now() >= deadline {
            return Err(MyError::Timeout {
                what: format!("{}: {left} app session(s) to end after KILL", db.label),
                after: SESSION_EXIT_LIMIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A server's own position: executed GTIDs, or `file:position` of its binary log.
async fn source_position(source: &mut Db, gtid: bool) -> Result<String, MyError> {
    if gtid {
        return source
            .query_one(
                "read the fenced source's GTIDs",
                source.dialect.executed_gtids(),
            )
            .await;
    }
    let rows = source
        .rows_by_name(
            "read the fenced source's binlog position",
            source.dialect.source_status(),
        )
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    match (row.text("File"), row.number("Position")) {
        (Some(file), Some(pos)) => Ok(format!("{file}:{pos}")),
        _ => Err(MyError::Refused(format!(
            "{}: binary log position unavailable",
            source.label
        ))),
    }
}

/// Waits on the target until `position` is applied, at most `timeout`.
async fn wait_for(
    target: &mut Db,
    position: &str,
    gtid: bool,
    timeout: Duration,
) -> Result<(), MyError> {
    let seconds = timeout.as_secs_f64();
    let reached = if gtid {
        let r: Option<(Option<i64>,)> = target
            .exec_opt(
                "wait for the fence position",
                target.dialect.wait_for_gtids(),
                (position, seconds),
            )
            .await?;
        r.and_then(|(v,)| v)
            .is_some_and(|v| target.dialect.gtid_wait_reached(v))
    } else {
        let (file, pos) = position.rsplit_once(':').unwrap_or((position, "0"));
        let sql = target.dialect.wait_for_position(target.version);
        let r: Option<(Option<i64>,)> = target
            .exec_opt(
                "wait for the fence position",
                sql,
                (file, pos.parse::<u64>().unwrap_or(0), seconds),
            )
            .await?;
        r.and_then(|(v,)| v).is_some_and(|v| v >= 0)
    };
    if reached {
        Ok(())
    } else {
        Err(MyError::Timeout {
            what: format!("{}: applying up to {position}", target.label),
            after: timeout,
        })
    }
}

/// Makes the target the primary inside the window: the replica's applier stopped, the app's
/// accounts unlocked, writable. Returns the target's own position at promotion (where reverse
/// replication starts). The receiver keeps running until [`forget_replica`], after the window:
/// stopping it waits for its network session to close (with TLS, a shutdown exchange), and
/// with the applier stopped nothing it receives reaches the tables.
async fn promote(target: &mut Db, gtid: bool, unlock: Option<&str>) -> Result<String, MyError> {
    let d = target.dialect;
    target
        .run("stop the replica's applier", d.stop_applier())
        .await?;
    let position = source_position(target, gtid).await?;
    // Writable first: MySQL's super_read_only refuses account changes too. One round trip:
    // the server stops at the first statement that fails.
    match unlock {
        Some(unlock) => {
            target
                .run(
                    "make the target writable and unlock the app accounts",
                    &format!("{}; {unlock}", d.unfence()),
                )
                .await?
        }
        None => target.run("make the target writable", d.unfence()).await?,
    }
    Ok(position)
}

/// The rest of a promotion, after the window: the receiver stopped, the replication filter
/// cleared, the replica configuration forgotten (in that order, so a replica status row left
/// by a crash means this is not done). Does nothing when no replica is configured.
async fn forget_replica(target: &mut Db) -> Result<bool, MyError> {
    let d = target.dialect;
    let rows = target
        .rows_by_name("read replica status", d.replica_status())
        .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    target.run("stop the replica", d.stop_replica()).await?;
    target
        .run("clear the replication filter", &d.replicate_only(&[]))
        .await?;
    target
        .run("forget the replica configuration", d.reset_replica())
        .await?;
    Ok(true)
}

/// Both servers' state, read from them (a window's, or the daemon's kept connections').
pub async fn pair_state(
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<engine::PairState, MyError> {
    let name = pair.plan.name.clone();
    let on = |v: Option<String>| v.is_some_and(|v| v == "1" || v == "ON");
    let source_ro = on(source.variable("read_only").await?);
    let locked = writers::locked_now(source, &name).await?;
    let target_ro = on(target.variable("read_only").await?);
    let rows = target
        .rows_by_name("read replica status", target.dialect.replica_status())
        .await?;
    let replicating = rows.first().is_some_and(|r| {
        r.text("Source_User").as_deref() == Some(pair.replication_user().as_str())
    });
    // A promotion stopped between its two halves leaves the replica configured with its
    // applier stopped: said as it is, not as replicating.
    let applier_stopped = replicating
        && rows
            .first()
            .is_some_and(|r| r.text("Replica_SQL_Running").as_deref() != Some("Yes"));
    // Fenced by account, read_only stays off: the locked accounts (kept locked for good
    // after a promotion) are the fence.
    let by_account = pair.plan.neighbours == Neighbours::FenceAccounts;
    let kept = if by_account {
        !writers::kept_locked(source, &name).await?.is_empty()
    } else {
        false
    };
    let fenced = source_ro || !locked.is_empty() || kept;
    let held = source_ro || (by_account && fenced);
    Ok(engine::PairState {
        source_fenced: fenced,
        target_promoted: !target_ro && held,
        replicating,
        // The lock record is moved to "after promotion" at the end of a MariaDB cutover.
        completed: !target_ro && held && locked.is_empty() && !replicating,
        lines: vec![
            format!(
                "source {}: {}{}",
                source.label,
                if source_ro { "read-only" } else { "writable" },
                if locked.is_empty() {
                    String::new()
                } else {
                    format!(", app accounts locked: {}", locked.join(", "))
                }
            ),
            format!(
                "target {}: {}{}",
                target.label,
                if target_ro { "read-only" } else { "writable" },
                match (replicating, applier_stopped) {
                    (true, false) => ", replicating from the source",
                    (true, true) => ", its replica of the source configured, applier stopped",
                    _ => "",
                }
            ),
        ],
    })
}

/// A MariaDB GTID list (`0-1-100,1-2-5`) as sequence number per domain.
pub fn gtid_sequences(list: &str) -> std::collections::BTreeMap<u32, u64> {
    list.split(',')
        .filter_map(|g| {
            let mut parts = g.trim().split('-');
            let domain = parts.next()?.parse().ok()?;
            let _server = parts.next()?;
            let seq = parts.next()?.parse().ok()?;
            Some((domain, seq))
        })
        .collect()
}

/// A MySQL GTID set (`@@GLOBAL.gtid_executed`: `uuid:1-5:7,uuid2[:tag]:1-3`, commas often
/// followed by a newline) as sorted, merged intervals per source UUID (and tag, MySQL 8.4).
/// Unreadable parts are skipped: a set that cannot be read counts as fewer transactions,
/// which only makes the gate wait longer.
pub fn gtid_set(text: &str) -> std::collections::BTreeMap<String, Vec<(u64, u64)>> {
    let mut set: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    for member in text.split(',') {
        let mut parts = member.trim().split(':');
        let Some(uuid) = parts.next().map(str::trim).filter(|u| !u.is_empty()) else {
            continue;
        };
        let mut key = uuid.to_ascii_lowercase();
        for part in parts {
            let part = part.trim();
            let interval = match part.split_once('-') {
                Some((a, b)) => a.parse::<u64>().ok().zip(b.parse::<u64>().ok()),
                None => part.parse::<u64>().ok().map(|n| (n, n)),
            };
            match interval {
                Some((a, b)) if a <= b && a > 0 => set.entry(key.clone()).or_default().push((a, b)),
                Some(_) => {}
                // A tag names the transactions after it (`uuid:tag:1-3`).
                None => key = format!("{}:{}", uuid.to_ascii_lowercase(), part),
            }
        }
    }
    for intervals in set.values_mut() {
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(a, b) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *intervals = merged;
    }
    set
}

/// Transactions in a GTID set.
pub fn gtid_count(set: &std::collections::BTreeMap<String, Vec<(u64, u64)>>) -> u64 {
    set.values()
        .flatten()
        .map(|(a, b)| b - a + 1)
        .fold(0u64, u64::saturating_add)
}

/// Transactions of `source` that `target` also has (per UUID and tag): what the target
/// applied of what the source committed, whatever else the target executed itself.
pub fn gtid_overlap(
    source: &std::collections::BTreeMap<String, Vec<(u64, u64)>>,
    target: &std::collections::BTreeMap<String, Vec<(u64, u64)>>,
) -> u64 {
    let mut n = 0u64;
    for (key, ours) in source {
        let Some(theirs) = target.get(key) else {
            continue;
        };
        let (mut i, mut j) = (0, 0);
        while i < ours.len() && j < theirs.len() {
            let (a, b) = (ours[i].0.max(theirs[j].0), ours[i].1.min(theirs[j].1));
            if a <= b {
                n = n.saturating_add(b - a + 1);
            }
            if ours[i].1 < theirs[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    n
}

/// One pair's window, phase by phase ([`crate::engine::Window`]). Each phase reads the
/// servers' state, so a fresh window can finish or undo what a crashed process left.
pub struct MyWindow {
    pair: Pair,
    source: Db,
    target: Db,
    gtid: bool,
    lock_sql: Option<String>,
    target_unlock: Option<String>,
    started: Option<Instant>,
    fenced: Duration,
    caught_up: Duration,
    position: Option<String>,
    promoted_at: Option<String>,
    write_unavailable_ms: Option<f64>,
    /// Under a fence by account: the source's binlog position once the fence held, where the
    /// audit after promotion starts reading.
    fence_binlog: Option<(String, u64)>,
    /// Tables compared row by row inside the window.
    verified_in_window: Vec<String>,
    /// The table definitions remembered at `start`, read by the gate (`verify_in_window =
    /// "changed"`); `None` in a resumed window, which reads them in the window.
    started_shapes: Option<BTreeMap<String, String>>,
    /// Which app sessions the fence waits to see gone, decided at the gate (a resumed
    /// window, which has no gate, waits for all of them).
    count: writers::Count,
}

impl MyWindow {
    /// Connects to both servers of `pair`.
    pub async fn open(pair: &Pair) -> Result<MyWindow, MyError> {
        let (source, mut target) = pair.connect().await?;
        // GTID or file/position: what the target's replica uses; when it is gone (a promotion
        // began), what the source's own executed GTID set says.
        let rows = target
            .rows_by_name("read replica status", target.dialect.replica_status())
            .await?;
        let gtid = match rows.first() {
            Some(row) => {
                row.text("Using_Gtid").is_some_and(|g| g != "No")
                    || row.text("Auto_Position").as_deref() == Some("1")
            }
            None => pair.plan.gtid != crate::plan::GtidMode::Off,
        };
        Ok(MyWindow {
            pair: pair.clone(),
            source,
            target,
            gtid,
            lock_sql: None,
            target_unlock: None,
            started: None,
            fenced: Duration::ZERO,
            caught_up: Duration::ZERO,
            fence_binlog: None,
            verified_in_window: Vec::new(),
            started_shapes: None,
            count: writers::Count::All,
            position: None,
            promoted_at: None,
            write_unavailable_ms: None,
        })
    }

    /// The gate (changes nothing); prepares the fence's and the promotion's statements.
    /// Returns the heartbeat lag.
    pub async fn gate(&mut self) -> Result<Duration, MyError> {
        let pair = &self.pair;
        let (source, target) = (&mut self.source, &mut self.target);
        let rows = target
            .rows_by_name("read replica status", target.dialect.replica_status())
            .await?;
        let row = rows.first().cloned().unwrap_or_default();
        if row.text("Source_User").as_deref() != Some(pair.replication_user().as_str()) {
            return Err(MyError::NotStarted(format!(
                "{}: the target is not replicating from the source for this pair; fix: start replication",
                pair.plan.name
            )));
        }
        if row.text("Replica_SQL_Running").as_deref() != Some("Yes")
            || row.text("Replica_IO_Running").as_deref() != Some("Yes")
        {
            if let Some(refusal) = row
                .text("Last_IO_Error")
                .and_then(|e| super::status::purged_binlog_refusal(&e, &pair.plan.name))
            {
                return Err(MyError::Refused(format!(
                    "{}: replication is not running, so nothing was fenced: {}: {refusal}",
                    pair.plan.name,
                    row.text("Last_IO_Error").unwrap_or_default()
                )));
            }
            let mut why = vec![format!(
                "IO thread {}, SQL thread {}",
                row.text("Replica_IO_Running")
                    .unwrap_or_else(|| "No".into()),
                row.text("Replica_SQL_Running")
                    .unwrap_or_else(|| "No".into())
            )];
            for column in ["Last_SQL_Error", "Last_IO_Error"] {
                if let Some(e) = row.text(column).filter(|e| !e.is_empty()) {
                    why.push(format!("{column}: {e}"));
                    if column == "Last_IO_Error"
                        && let Some(fix) = super::tls::link_error_fix(&e)
                    {
                        why.push(fix.to_owned());
                    }
                }
            }
            let drift = inventory::drift_between(source, target, &pair.plan.databases).await?;
            if !drift.is_empty() {
                why.push(format!(
                    "the schema differs (the likely cause): {}; fix: copy those tables again: `{}` (it stops the replica, copies each table consistently and starts the replica right after the copy)",
                    drift.lines.join("; "),
                    drift.resync_command(&pair.plan.name)
                ));
            }
            return Err(MyError::Refused(format!(
                "{}: replication is not running, so nothing was fenced: {}; fix: correct the error named above on the target, then `START SLAVE`/`START REPLICA` there, or start replication again",
                pair.plan.name,
                why.join("; ")
            )));
        }
        self.gtid = row.text("Using_Gtid").is_some_and(|g| g != "No")
            || row.text("Auto_Position").as_deref() == Some("1");
        // Fenced by account, read_only stays off: locked accounts alone are the fence.
        if (pair.plan.neighbours == Neighbours::FenceAccounts
            || source
                .variable("read_only")
                .await?
                .as_deref()
                .is_some_and(|v| v == "1" || v == "ON"))
            && !writers::locked_now(source, &pair.plan.name)
                .await?
                .is_empty()
        {
            return Err(MyError::Interrupted(format!(
                "{}: the source is already fenced by an earlier cutover that was interrupted; resume it (it finishes or rolls back) instead of starting another",
                pair.plan.name
            )));
        }
        let pending = writers::xa_prepared(source).await?;
        if !pending.is_empty() {
            return Err(MyError::Refused(format!(
                "{}: {}",
                pair.plan.name,
                writers::xa_refusal(&pending)
            )));
        }
        let lag = heartbeat::measure(source, target, pair.plan.max_lag).await?;
        let Some(lag) = lag.replicated_after else {
            return Err(MyError::Behind(format!(
                "{}: a heartbeat did not reach the target within max_lag ({:?}); fix: wait for replication to catch up",
                pair.plan.name, pair.plan.max_lag
            )));
        };
        // Tables the replica skips (an interrupted resync): their rows would stay behind.
        let ignored = super::resync::ignored_plan_tables(target, &pair.plan.databases).await?;
        if !ignored.is_empty() {
            return Err(MyError::Refused(format!(
                "{}: the replica's ignore filter skips {} (an interrupted `resync`, or a filter set by hand), so their rows are not replicated; nothing was changed; fix: copy them again: `{}`",
                pair.plan.name,
                ignored.join(", "),
                inventory::resync_command(&pair.plan.name, &ignored)
            )));
        }
        // Drift is checked before the fence: DDL the replication filter skipped would leave a
        // table or column behind.
        let drift = inventory::drift_between(source, target, &pair.plan.databases).await?;
        if !drift.is_empty() {
            return Err(MyError::Refused(format!(
                "{}: the target's schema differs from the source's; nothing was changed:\n  {}\nrows written to these tables since the change may have been applied without it (a replica drops the values of columns it lacks), so aligning the target's schema by hand would lose them. fix: copy those tables again: `{}` (a consistent copy of each, the replica positioned right after it; the rows written meanwhile arrive with every value), or copy the pair again (clean it up, drop its databases on the target, start it); the replica filter follows the table a statement names, so such drift comes from a statement that names no table of the plan",
                pair.plan.name,
                drift.lines.join("\n  "),
                drift.resync_command(&pair.plan.name)
            )));
        }
        // read_only is server-wide: the other databases' writers are named, never surprised.
        let neighbours = super::neighbours::read(pair, source).await?;
        if let Some(why) = super::neighbours::refusal(pair, &neighbours) {
            return Err(MyError::Refused(format!(
                "{}: {why}; nothing was changed; fix: {}",
                pair.plan.name,
                super::neighbours::fix(&neighbours)
            )));
        }
        // The fence holds only for the accounts it locks: refuse while another
        // account could keep writing to the old primary.
        let accounts = writers::accounts(source, &pair.plan.databases).await?;
        let scope = writers::scope(
            &accounts,
            &pair.plan.app_users,
            &pair.plan.exempt_users,
            &pair.plan.privileged_app_users,
            &pair.plan.source.user,
            &pair.replication_user(),
        );
        if !scope.unfenced.is_empty() || !scope.privileged_app.is_empty() {
            let mut why = Vec::new();
            if !scope.unfenced.is_empty() {
                why.push(format!(
                    "accounts that can write are neither app users nor exempt: {} (add them to `app_users` or `exempt_users`)",
                    writers::list(&scope.unfenced)
                ));
            }
            if !scope.privileged_app.is_empty() {
                why.push(format!(
                    "app users hold a privilege read_only does not bind: {} (narrow their grants, or list them in `privileged_app_users`)",
                    writers::list(&scope.privileged_app)
                ));
            }
            return Err(MyError::Refused(format!(
                "{}: {}; nothing was changed",
                pair.plan.name,
                why.join("; ")
            )));
        }
        let to_lock = writers::prepare_lock(source, &pair.plan.app_users, &pair.plan.name).await?;
        self.lock_sql = writers::lock_sql(&to_lock);
        self.target_unlock = writers::prepare_unlock(target, &pair.plan.name).await?;
        if pair.plan.verify_in_window == VerifyInWindow::Changed {
            self.started_shapes =
                Some(super::inventory::started_shapes(target, &pair.plan.name).await?);
        }
        // Under read_only, binding every app user, a killed session that is still leaving
        // can commit nothing more: the fence need not wait for it to be gone (a TLS session
        // takes a while: its shutdown on the server's side).
        self.count = if pair.plan.neighbours != Neighbours::FenceAccounts
            && !accounts
                .iter()
                .any(|a| pair.plan.app_users.contains(&a.user) && a.bypasses_read_only)
        {
            writers::Count::NotKilled
        } else {
            writers::Count::All
        };
        // The window's statements with values, prepared now: each is then one round trip.
        if !pair.plan.app_users.is_empty() {
            let sql = writers::sessions_sql(pair.plan.app_users.len(), self.count);
            source.prepare("count the app sessions", &sql).await?;
        }
        if pair.plan.verify_in_window != VerifyInWindow::Off {
            super::inventory::prepare_columns(source).await?;
        }
        let wait = if self.gtid {
            target.dialect.wait_for_gtids()
        } else {
            target.dialect.wait_for_position(target.version)
        };
        target.prepare("wait for the fence position", wait).await?;
        Ok(lag)
    }

    /// Locks the app accounts, makes the source read-only, kills their sessions until none is
    /// left. Returns the sessions killed.
    pub async fn fence(&mut self) -> Result<usize, MyError> {
        let pair = &self.pair;
        let source = &mut self.source;
        source
            .run(
                "bound the fence's lock wait",
                &format!("SET SESSION lock_wait_timeout = {FENCE_LOCK_WAIT_SECONDS}"),
            )
            .await?;
        let t0 = Instant::now();
        self.started = Some(t0);
        // Locked first: a killed app session cannot log in again, whatever its privileges.
        let lock_sql = match &self.lock_sql {
            Some(sql) => Some(sql.clone()),
            // A resumed window: whatever is not locked yet is locked now.
            None => writers::lock_sql(
                &writers::prepare_lock(source, &pair.plan.app_users, &pair.plan.name).await?,
            ),
        };
        let by_account = pair.plan.neighbours == Neighbours::FenceAccounts;
        // One round trip: the server runs them in order and stops at the first that fails.
        let fence = match (lock_sql, by_account) {
            (Some(lock), false) => Some(format!("{lock}; {}", source.dialect.fence())),
            (Some(lock), true) => Some(lock),
            (None, false) => Some(source.dialect.fence().to_owned()),
            (None, true) => None,
        };
        if let Some(sql) = fence {
            let what = if by_account {
                "lock the app accounts"
            } else {
                "lock the app accounts and make the source read-only"
            };
            source.run(what, &sql).await?;
        }
        let killed = end_sessions(source, &pair.plan.app_users, self.count).await?;
        if by_account {
            // Every app session is gone and none can come back: what the binlog holds for the
            // moved databases from here on was written after the fence.
            self.fence_binlog = Some(super::audit::binlog_position(source).await?);
        }
        // One prepared between the gate and the fence: ending its session does not end it.
        let pending = writers::xa_prepared(source).await?;
        if !pending.is_empty() {
            return Err(MyError::Refused(format!(
                "{}: {}",
                pair.plan.name,
                writers::xa_refusal(&pending)
            )));
        }
        self.fenced = t0.elapsed();
        Ok(killed)
    }

    /// Reads the fenced source's position and waits until the target has applied it; then
    /// compares row by row the tables `verify_in_window` names (by default those whose
    /// definition changed since `start`: their rows may have been applied under two
    /// definitions), and refuses on a difference, so the window rolls back.
    pub async fn catch_up(&mut self) -> Result<String, MyError> {
        let position = source_position(&mut self.source, self.gtid).await?;
        wait_for(
            &mut self.target,
            &position,
            self.gtid,
            self.pair.plan.catchup_timeout,
        )
        .await?;
        let databases = self.pair.plan.databases.clone();
        let tables = match self.pair.plan.verify_in_window {
            VerifyInWindow::Off => Vec::new(),
            VerifyInWindow::All => super::inventory::columns(&mut self.source, &databases)
                .await?
                .into_keys()
                .collect(),
            VerifyInWindow::Changed => {
                let then = match self.started_shapes.take() {
                    Some(then) => then,
                    None => {
                        super::inventory::started_shapes(&mut self.target, &self.pair.plan.name)
                            .await?
                    }
                };
                super::inventory::changed_since(&mut self.source, &databases, &then).await?
            }
        };
        for table in &tables {
            let Some((database, name)) = table.split_once('.') else {
                continue;
            };
            let check = super::verify::table(
                &mut self.source,
                &mut self.target,
                database,
                name,
                super::verify::CHUNK_ROWS,
            )
            .await?;
            if !check.differing.is_empty() {
                return Err(MyError::Refused(format!(
                    "{}: table {table} differs between the fenced source and the caught-up target ({}); its definition changed while it replicated, so rows were applied under two definitions. Nothing was promoted. fix: copy it again: `{}` (a consistent copy, the replica positioned right after it), or copy the pair again (clean it up, drop its databases on the target, start it)",
                    self.pair.plan.name,
                    check
                        .differing
                        .iter()
                        .map(|d| format!(
                            "keys {}: {} rows on the source, {} on the target",
                            d.keys, d.source_rows, d.target_rows
                        ))
                        .collect::<Vec<_>>()
                        .join("; "),
                    super::inventory::resync_command(
                        &self.pair.plan.name,
                        std::slice::from_ref(table)
                    )
                )));
            }
        }
        self.verified_in_window = tables;
        self.caught_up = self.started.map(|t| t.elapsed()).unwrap_or_default();
        self.position = Some(position.clone());
        Ok(position)
    }

    /// Whether the target takes writes (read_only off).
    pub async fn target_writable(&mut self) -> bool {
        self.target
            .variable("read_only")
            .await
            .ok()
            .flatten()
            .is_some_and(|v| v == "0" || v == "OFF")
    }

    /// Makes the target the primary; already writable (a resume): does nothing.
    pub async fn promote(&mut self) -> Result<(), MyError> {
        if self.target_writable().await {
            return Ok(());
        }
        let unlock = match &self.target_unlock {
            Some(sql) => Some(sql.clone()),
            None => writers::prepare_unlock(&mut self.target, &self.pair.plan.name).await?,
        };
        let at = promote(&mut self.target, self.gtid, unlock.as_deref()).await?;
        self.promoted_at = Some(at);
        self.write_unavailable_ms = self.started.map(|t| ms(t.elapsed()));
        Ok(())
    }

    /// The report of a promoted window (before [`MyWindow::after`] adds to it).
    pub fn report(&self) -> Detail {
        let unavailable = self.write_unavailable_ms.unwrap_or_default();
        Detail {
            pair: self.pair.plan.name.clone(),
            write_unavailable_ms: unavailable,
            fence_ms: ms(self.fenced),
            catchup_ms: ms(self.caught_up.saturating_sub(self.fenced)),
            promote_ms: (unavailable - ms(self.caught_up)).max(0.0),
            position: self.position.clone().unwrap_or_default(),
            reverse_replication: self.pair.plan.reverse_replication,
            warnings: Vec::new(),
            old_primary_position: None,
            old_primary_clean: None,
            restored_settings: Vec::new(),
            verified_in_window: self.verified_in_window.clone(),
        }
    }

    /// After promotion: the target's lock record cleared, the old primary proven untouched,
    /// its accounts kept locked, reverse replication set up. Only reverse replication fails
    /// the call; the rest are warnings.
    pub async fn after(&mut self, report: &mut Detail) -> Result<(), MyError> {
        let pair = self.pair.clone();
        let (source, target) = (&mut self.source, &mut self.target);
        // The promotion's second half: the new primary's replica (applier already stopped in
        // the window) is stopped and forgotten; its settings can only change after that.
        if let Err(e) = forget_replica(target).await {
            report.warnings.push(format!(
                "the new primary {} still has the replica configuration from the migration ({e}); it takes writes and its applier is stopped; fix: run `{}; {}; {}` there",
                target.label,
                target.dialect.stop_replica(),
                target.dialect.replicate_only(&[]),
                target.dialect.reset_replica()
            ));
        }
        // The new primary no longer replicates: its own applier settings come back.
        match super::parallel::restore(target, &pair.plan.name).await {
            Ok(restored) => report.restored_settings = restored,
            Err(e) => report.warnings.push(format!(
                "the new primary's parallel-apply settings could not be restored ({e}); set them back by hand (the values are in `cutover_local`.`replica_setting` there)"
            )),
        }
        // The old primary's app accounts stay locked: nothing may write there any more.
        if let Err(e) = writers::forget(target, &pair.plan.name).await {
            report.warnings.push(format!(
                "the new primary's record of the app accounts it locked could not be cleared ({e}); they are unlocked"
            ));
        }
        // Fenced by account, the old primary keeps taking its other databases' writes: the
        // proof reads its binlog since the fence for events on the moved databases.
        if pair.plan.neighbours == Neighbours::FenceAccounts {
            match &self.fence_binlog {
                Some(from) => {
                    match super::audit::writes_since(source, from, &pair.plan.databases).await {
                        Ok(found) => {
                            report.old_primary_clean = Some(found.is_empty());
                            if !found.is_empty() {
                                report.warnings.push(format!(
                                    "the old primary took writes on the moved databases after the fence (binlog events per table): {}",
                                    found
                                        .iter()
                                        .map(|(t, n)| format!("{t} x{n}"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ));
                            }
                        }
                        Err(e) => report.warnings.push(format!(
                            "could not check that the old primary took no writes after the fence: {e}"
                        )),
                    }
                }
                None => report.warnings.push(
                    "the old primary's binlog position was not read under the fence by this process (a resumed cutover): that it took no writes after the fence is not checked".to_owned(),
                ),
            }
            report.old_primary_position = source_position(source, self.gtid).await.ok();
        } else {
            // Proof that nothing wrote to the old primary after the fence: its own binlog position
            // (GTIDs, or file:position) has not moved since it was read under the fence. Cutover's
            // own statements there since are kept out of the binlog.
            match source_position(source, self.gtid).await {
                Ok(now) => {
                    report.old_primary_clean = self.position.as_ref().map(|p| *p == now);
                    if self.position.is_none() {
                        report.warnings.push(
                        "the old primary's position was not read under the fence by this process (a resumed cutover): that it took no writes after the fence is not checked".to_owned(),
                    );
                    }
                    report.old_primary_position = Some(now);
                }
                Err(e) => report.warnings.push(format!(
                    "could not check that the old primary took no writes after the fence: {e}"
                )),
            }
        }
        // MySQL's super_read_only keeps even cutover from writing the record there; only a
        // rollback before promotion ever unlocks these accounts, so the record is a safeguard.
        if (source.flavour == super::dialect::Flavour::Mariadb
            || pair.plan.neighbours == Neighbours::FenceAccounts)
            && let Err(e) = writers::keep_locked(source, &pair.plan.name).await
        {
            report.warnings.push(format!(
                "could not record the old primary's app accounts as locked for good ({e}); they stay locked, but a rollback tool could unlock them"
            ));
        }
        if !pair.plan.reverse_replication {
            return Ok(());
        }
        // 6. Reverse replication, outside the window. Already running (a resume): kept.
        let rows = source
            .rows_by_name(
                "read the old primary's replica status",
                source.dialect.replica_status(),
            )
            .await?;
        if rows
            .first()
            .and_then(|r| r.text("Source_User"))
            .is_some_and(|u| u == pair.replication_user())
        {
            return Ok(());
        }
        // Where the new primary stood at promotion; after a resume, the old primary's own
        // executed GTIDs are that same point (the target had exactly those and was read-only).
        let start_at = match &self.promoted_at {
            Some(at) => at.clone(),
            None if self.gtid => source_position(source, true).await?,
            None => {
                report.warnings.push(
                    "reverse replication was not set up: the new primary's binlog position at promotion is unknown after a resume; configure the old primary as its replica by hand".to_owned(),
                );
                return Ok(());
            }
        };
        let user = pair.replication_user();
        let password = random_password();
        create_replication_user(
            target,
            &user,
            pair.replication_user_host(),
            &password,
            super::tls::replica_tls(&pair.target.endpoint).as_ref(),
        )
        .await?;
        let spec = SourceSpec {
            host: &pair.target.endpoint.host,
            port: pair.target.endpoint.port,
            user: &user,
            password: &password,
            start: match start_at.rsplit_once(':') {
                Some((file, pos)) if !self.gtid => StartAt::File {
                    file: file.to_owned(),
                    position: pos.parse().unwrap_or(4),
                },
                _ => StartAt::Gtid,
            },
            tls: super::tls::replica_tls(&pair.target.endpoint),
        };
        configure_replica(source, &spec, Some(&start_at), &pair.replicated_databases()).await?;
        wait_running(source, Duration::from_secs(30)).await
    }

    /// Unfences the source after a failure before promotion; the error says what to run by
    /// hand when it fails.
    pub async fn unfence(&mut self) -> Result<(), MyError> {
        let source = &mut self.source;
        let pair_name = &self.pair.plan.name;
        let sql = source.dialect.unfence();
        let unfenced = match source.run("unfence the source", sql).await {
            Ok(()) => writers::unlock(source, pair_name).await.map(|_| ()),
            Err(e) => Err(e),
        };
        unfenced.map_err(|e| {
            MyError::Refused(format!(
                "unfencing the source failed ({e}): run `{sql}` on {} now, then ALTER USER ... ACCOUNT UNLOCK for the accounts in `{}`.`{}` (pair {pair_name})",
                source.label,
                writers::LOCK_DB,
                writers::LOCK_TABLE
            ))
        })
    }

    /// Starts the target's replica again when a promotion that stopped its applier was rolled
    /// back; says what it did (or the fix) as a clause of the rollback's detail.
    async fn restart_applier(&mut self) -> String {
        let d = self.target.dialect;
        let running = match self
            .target
            .rows_by_name("read replica status", d.replica_status())
            .await
        {
            Ok(rows) => rows
                .first()
                .is_none_or(|r| r.text("Replica_SQL_Running").as_deref() == Some("Yes")),
            Err(e) => {
                return format!(
                    "; the target's replica status could not be read ({e}): if its applier is stopped, run `{}` there",
                    d.start_replica()
                );
            }
        };
        if running {
            return String::new();
        }
        match self
            .target
            .run("start the replica again", d.start_replica())
            .await
        {
            Ok(()) => "; the target's replica applier started again".to_owned(),
            Err(e) => format!(
                "; the target's replica applier is stopped and could not be started ({e}): run `{}` there",
                d.start_replica()
            ),
        }
    }

    /// Both servers' state, read from them.
    pub async fn state(&mut self) -> Result<engine::PairState, MyError> {
        pair_state(&self.pair, &mut self.source, &mut self.target).await
    }

    /// The source's and the target's counters for the adaptive gate: MariaDB GTID sequence
    /// numbers summed over the source's domains (`@@gtid_binlog_pos` against the replica's
    /// `@@gtid_slave_pos`, which advances for filtered transactions too), or binlog bytes of
    /// the file the applier is in. `None`: MySQL GTID sets (not measured yet), or the applier
    /// in another file than the source's current one.
    pub async fn progress(&mut self) -> Result<Option<engine::Progress>, MyError> {
        if self.gtid {
            if self.source.flavour != super::dialect::Flavour::Mariadb {
                // MySQL: transactions per source UUID, what the source executed against what
                // the replica executed of it.
                let committed = self.source.variable("gtid_executed").await?;
                let applied = self.target.variable("gtid_executed").await?;
                let (Some(committed), Some(applied)) = (committed, applied) else {
                    return Ok(None);
                };
                let source = gtid_set(&committed);
                return Ok(Some(engine::Progress {
                    committed: gtid_count(&source),
                    applied: gtid_overlap(&source, &gtid_set(&applied)),
                    unit: engine::Unit::Transactions,
                    settled: 0,
                }));
            }
            let committed = self.source.variable("gtid_binlog_pos").await?;
            let applied = self.target.variable("gtid_slave_pos").await?;
            let (Some(committed), Some(applied)) = (committed, applied) else {
                return Ok(None);
            };
            let source = gtid_sequences(&committed);
            let target = gtid_sequences(&applied);
            let sum = |of: &std::collections::BTreeMap<u32, u64>| {
                source
                    .keys()
                    .map(|d| of.get(d).copied().unwrap_or(0))
                    .sum::<u64>()
            };
            return Ok(Some(engine::Progress {
                committed: sum(&source),
                applied: sum(&target),
                unit: engine::Unit::Transactions,
                settled: 0,
            }));
        }
        let rows = self
            .source
            .rows_by_name(
                "read the source's binlog position",
                self.source.dialect.source_status(),
            )
            .await?;
        let replica = self
            .target
            .rows_by_name("read replica status", self.target.dialect.replica_status())
            .await?;
        let (Some(s), Some(t)) = (rows.first(), replica.first()) else {
            return Ok(None);
        };
        let same_file =
            s.text("File").is_some() && s.text("File") == t.text("Relay_Source_Log_File");
        Ok(
            match (
                same_file,
                s.number("Position"),
                t.number("Exec_Source_Log_Pos"),
            ) {
                (true, Some(committed), Some(applied)) => Some(engine::Progress {
                    committed,
                    applied,
                    unit: engine::Unit::Bytes,
                    settled: 0,
                }),
                _ => None,
            },
        )
    }

    /// Closes both connections.
    pub async fn close(self) {
        self.source.close().await;
        self.target.close().await;
    }
}

#[async_trait::async_trait]
impl engine::Window for MyWindow {
    fn component(&self) -> String {
        format!("mysql {}", self.pair.plan.name)
    }

    async fn gate(&mut self) -> Result<engine::Gated, DbError> {
        let lag = MyWindow::gate(self).await?;
        Ok(engine::Gated {
            lag: format!("{:.1} ms", ms(lag)),
        })
    }

    async fn progress(&mut self) -> Result<Option<engine::Progress>, DbError> {
        Ok(MyWindow::progress(self).await?)
    }

    async fn fence(&mut self) -> Result<engine::Fenced, DbError> {
        let sessions_ended = MyWindow::fence(self).await?;
        let mut scope: Vec<String> = self
            .pair
            .plan
            .app_users
            .iter()
            .map(|u| format!("{u} (account locked)"))
            .collect();
        scope.push(
            match self.pair.plan.neighbours {
                Neighbours::FenceAccounts => {
                    "read_only left off (fenced by account: the other databases keep serving)"
                }
                _ => "read_only (server-wide: every database of the source)",
            }
            .to_owned(),
        );
        Ok(engine::Fenced {
            sessions_ended,
            scope,
        })
    }

    async fn catch_up(&mut self) -> Result<engine::CaughtUp, DbError> {
        if self.started.is_none() {
            // A resumed window: the fence from the crashed run is re-applied (idempotent).
            MyWindow::fence(self).await?;
        }
        let position = MyWindow::catch_up(self).await?;
        Ok(engine::CaughtUp { position })
    }

    async fn promote(&mut self) -> Result<engine::Promoted, DbError> {
        MyWindow::promote(self).await?;
        Ok(engine::Promoted {
            write_unavailable_ms: self.write_unavailable_ms,
            position: self.promoted_at.clone(),
        })
    }

    async fn finish(&mut self) -> engine::Finished {
        let mut report = self.report();
        if let Err(e) = self.after(&mut report).await {
            report
                .warnings
                .push(format!("reverse replication could not be set up: {e}"));
        }
        engine::Finished {
            old_primary_clean: report.old_primary_clean,
            lost: match (report.old_primary_clean, &report.old_primary_position) {
                (Some(false), Some(now)) => Some(format!(
                    "the old primary's position moved from {} (fence) to {now} after the fence; find those writes in its binlog (mariadb-binlog/mysqlbinlog)",
                    report.position
                )),
                _ => None,
            },
            warnings: report.warnings.clone(),
            links: [
                ("forward", &self.pair.plan.source),
                ("reverse", &self.pair.plan.target),
            ]
            .into_iter()
            .filter(|(way, _)| *way == "forward" || self.pair.plan.reverse_replication)
            .map(|(way, e)| match super::tls::replica_tls(e) {
                Some(t) if t.verify => format!("{way} link over TLS, certificate verified"),
                Some(_) => format!("{way} link over TLS, certificate not verified"),
                None => format!("{way} link: TLS as the servers default"),
            })
            .collect(),
            detail: engine::to_json("the audit report", &report)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        }
    }

    async fn roll_back(&mut self) -> engine::Rollback {
        if self.target_writable().await {
            return engine::Rollback::AfterPromotion;
        }
        // A promotion that began (the replica forgotten) cannot be undone by unfencing: the
        // source's new writes would reach no one.
        if let Ok(rows) = self
            .target
            .rows_by_name("read replica status", self.target.dialect.replica_status())
            .await
            && rows.is_empty()
        {
            return engine::Rollback::Failed {
                error: format!(
                    "the target's replica was already reset by the promotion; finish the cutover instead (the source {} stays fenced)",
                    self.source.label
                ),
            };
        }
        match self.unfence().await {
            Ok(()) => {
                // A promotion stopped at its first statement left the applier stopped: the
                // reopened source's writes must reach the target again.
                let restarted = self.restart_applier().await;
                engine::Rollback::SourceReopened {
                    detail: format!("read_only off, app accounts unlocked{restarted}"),
                }
            }
            Err(e) => engine::Rollback::Failed {
                error: e.to_string(),
            },
        }
    }

    async fn state(&mut self) -> Result<engine::PairState, DbError> {
        Ok(MyWindow::state(self).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::{gtid_count, gtid_overlap, gtid_set};

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f2b0c1d-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn a_gtid_set_is_read_as_mysql_prints_it() {
        // Newlines after commas, single transactions, overlapping and adjacent intervals,
        // upper case, a tag (MySQL 8.4), and parts that are not GTIDs at all.
        let set = gtid_set(&format!(
            "{A}:1-5:7:6:10-12,\n{}:1-3,\n{B}:orders:1-4, junk, {B}:0, {B}:9-2",
            B.to_uppercase()
        ));
        assert_eq!(set[A], vec![(1, 7), (10, 12)]);
        assert_eq!(set[B], vec![(1, 3)]);
        assert_eq!(set[&format!("{B}:orders")], vec![(1, 4)]);
        assert_eq!(gtid_count(&set), 7 + 3 + 3 + 4);
        assert_eq!(gtid_count(&gtid_set("")), 0);
    }

    #[test]
    fn the_target_counts_only_what_it_applied_of_the_source() {
        let source = gtid_set(&format!("{A}:1-100,{B}:1-10"));
        // The replica is 20 transactions behind on A, has all of B, and executed 50 of its
        // own (another UUID) that are no part of the source's history.
        let target = gtid_set(&format!(
            "{A}:1-80,{B}:1-10,aaaaaaaa-0000-0000-0000-000000000000:1-50"
        ));
        assert_eq!(gtid_count(&source), 110);
        assert_eq!(gtid_overlap(&source, &target), 90);
        // A gap in the middle (parallel apply out of order) is not counted as applied.
        let target = gtid_set(&format!("{A}:1-40:46-100,{B}:1-10"));
        assert_eq!(gtid_overlap(&source, &target), 105);
        assert_eq!(gtid_overlap(&source, &source), gtid_count(&source));
        assert_eq!(gtid_overlap(&source, &gtid_set("")), 0);
    }
}
