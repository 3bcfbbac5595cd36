//! `mysql cutover`: the write-unavailability window, top to bottom (DESIGN §5).
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

use std::time::{Duration, Instant};

use serde::Serialize;

use super::dialect::{SourceSpec, StartAt};
use super::start::{configure_replica, create_replication_user, random_password, wait_running};
use super::{Db, MyError, Pair, heartbeat, inventory, writers};

/// Seconds the fence waits for a lock (a running commit) before failing.
const FENCE_LOCK_WAIT_SECONDS: u32 = 5;

/// Progress of a cutover, reported as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The gate passed.
    GatePassed {
        /// Heartbeat lag (ms) measured at the gate.
        lag_ms: f64,
    },
    /// The source refuses writes and the app's sessions are gone.
    Fenced {
        /// Sessions killed.
        sessions_killed: usize,
    },
    /// The target has applied everything the source committed before the fence.
    CaughtUp {
        /// The source position read after the fence.
        position: String,
    },
    /// The target is writable.
    Promoted {
        /// Fence start to target writable.
        write_unavailable_ms: f64,
    },
    /// The old source replicates from the new primary.
    ReverseReady,
    /// A step failed; the source is being unfenced.
    RollingBack {
        /// Why.
        reason: String,
    },
}

/// What a cutover measured.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
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
}

/// What a failed cutover left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rollback {
    /// The source was never fenced: nothing changed.
    NotNeeded,
    /// The source was unfenced and takes writes again.
    Unfenced,
    /// Unfencing the source failed: it is still read-only. The message says what to run.
    UnfenceFailed,
    /// The failure came after promotion: the target is the primary; the source stays fenced.
    AfterPromotion,
}

/// A cutover that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{error} (rollback: {rollback:?})")]
pub struct CutoverFailed {
    /// What failed.
    pub error: MyError,
    /// What was done about it.
    pub rollback: Rollback,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Kills every session of `users` on `db`; returns how many.
pub async fn kill_sessions(db: &mut Db, users: &[String]) -> Result<usize, MyError> {
    if users.is_empty() {
        return Ok(0);
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
async fn end_sessions(db: &mut Db, users: &[String]) -> Result<usize, MyError> {
    let deadline = Instant::now() + SESSION_EXIT_LIMIT;
    let mut killed = 0;
    loop {
        killed += kill_sessions(db, users).await?;
        let left = writers::sessions(db, users).await?;
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

/// Makes the target the primary: replica stopped and forgotten, filter cleared, the app's
/// accounts unlocked, writable. Returns the target's own position at promotion (where reverse
/// replication starts).
async fn promote(target: &mut Db, gtid: bool, unlock: Option<&str>) -> Result<String, MyError> {
    let d = target.dialect;
    target.run("stop the replica", d.stop_replica()).await?;
    let position = source_position(target, gtid).await?;
    target
        .run("forget the replica configuration", d.reset_replica())
        .await?;
    target
        .run("clear the replication filter", &d.replicate_only(&[]))
        .await?;
    // Writable first: MySQL's super_read_only refuses account changes too.
    target.run("make the target writable", d.unfence()).await?;
    if let Some(sql) = unlock {
        target
            .run("unlock the app accounts on the target", sql)
            .await?;
    }
    Ok(position)
}

/// Runs the cutover of one pair; `on_event` sees each step as it happens.
pub async fn cutover(
    pair: &Pair,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<CutoverReport, CutoverFailed> {
    let not_needed = |error| CutoverFailed {
        error,
        rollback: Rollback::NotNeeded,
    };
    let (mut source, mut target) = pair.connect().await.map_err(not_needed)?;

    // 1. Gate.
    let rows = target
        .rows_by_name("read replica status", target.dialect.replica_status())
        .await
        .map_err(not_needed)?;
    let row = rows.first().cloned().unwrap_or_default();
    if row.text("Source_User").as_deref() != Some(pair.replication_user().as_str())
        || row.text("Replica_SQL_Running").as_deref() != Some("Yes")
    {
        return Err(not_needed(MyError::Refused(format!(
            "{}: the target is not replicating from the source for this pair; fix: run `cutover mysql start` (and check `mysql status`)",
            pair.plan.name
        ))));
    }
    let gtid = row.text("Using_Gtid").is_some_and(|g| g != "No")
        || row.text("Auto_Position").as_deref() == Some("1");
    let lag = heartbeat::measure(&mut source, &mut target, pair.plan.max_lag)
        .await
        .map_err(not_needed)?;
    let Some(lag) = lag.replicated_after else {
        return Err(not_needed(MyError::Refused(format!(
            "{}: a heartbeat did not reach the target within max_lag ({:?}); fix: wait for replication to catch up (`cutover mysql status`)",
            pair.plan.name, pair.plan.max_lag
        ))));
    };
    // Drift is checked before the fence: DDL the replication filter skipped would leave a
    // table or column behind.
    let drift = inventory::drift_between(&mut source, &mut target, &pair.plan.databases)
        .await
        .map_err(not_needed)?;
    if !drift.is_empty() {
        return Err(not_needed(MyError::Refused(format!(
            "{}: the target's schema differs from the source's; nothing was changed:\n  {}\nfix: apply the same DDL on the target (with `sql_log_bin = 0`), and on the source run schema changes with the table's database as the default (`USE db`) so replication carries them",
            pair.plan.name,
            drift.join("\n  ")
        ))));
    }
    // The fence holds only for the accounts it locks (DESIGN §5): refuse while another
    // account could keep writing to the old primary.
    let accounts = writers::accounts(&mut source, &pair.plan.databases)
        .await
        .map_err(not_needed)?;
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
        return Err(not_needed(MyError::Refused(format!(
            "{}: {}; nothing was changed",
            pair.plan.name,
            why.join("; ")
        ))));
    }
    on_event(&Event::GatePassed { lag_ms: ms(lag) });
    let to_lock = writers::prepare_lock(&mut source, &pair.plan.app_users, &pair.plan.name)
        .await
        .map_err(not_needed)?;
    let lock_sql = writers::lock_sql(&to_lock);
    let target_unlock = writers::prepare_unlock(&mut target, &pair.plan.name)
        .await
        .map_err(not_needed)?;

    // 2-5 with unfencing on failure.
    let t0 = Instant::now();
    let window = async {
        source
            .run(
                "bound the fence's lock wait",
                &format!("SET SESSION lock_wait_timeout = {FENCE_LOCK_WAIT_SECONDS}"),
            )
            .await?;
        // Locked first: a killed app session cannot log in again, whatever its privileges.
        if let Some(sql) = &lock_sql {
            source.run("lock the app accounts", sql).await?;
        }
        source
            .run("fence the source (read-only)", source.dialect.fence())
            .await?;
        let killed = end_sessions(&mut source, &pair.plan.app_users).await?;
        let fenced = t0.elapsed();
        on_event(&Event::Fenced {
            sessions_killed: killed,
        });
        let position = source_position(&mut source, gtid).await?;
        wait_for(&mut target, &position, gtid, pair.plan.catchup_timeout).await?;
        let caught_up = t0.elapsed();
        on_event(&Event::CaughtUp {
            position: position.clone(),
        });
        Ok::<_, MyError>((fenced, caught_up, position))
    };
    let (fenced, caught_up, position) = match window.await {
        Ok(done) => done,
        Err(error) => return Err(unfence(&mut source, &pair.plan.name, error, on_event).await),
    };
    let promoted_at = match promote(&mut target, gtid, target_unlock.as_deref()).await {
        Ok(at) => at,
        Err(error) => {
            // Did the target become writable before the failure? Then it is the primary.
            let writable = target
                .variable("read_only")
                .await
                .ok()
                .flatten()
                .is_some_and(|v| v == "0" || v == "OFF");
            if writable {
                return Err(CutoverFailed {
                    error,
                    rollback: Rollback::AfterPromotion,
                });
            }
            return Err(unfence(&mut source, &pair.plan.name, error, on_event).await);
        }
    };
    let unavailable = t0.elapsed();
    on_event(&Event::Promoted {
        write_unavailable_ms: ms(unavailable),
    });
    // The old primary's app accounts stay locked: nothing may write there any more.
    let mut warnings = Vec::new();
    if target_unlock.is_some()
        && let Err(e) = writers::forget(&mut target, &pair.plan.name).await
    {
        warnings.push(format!(
            "the new primary's record of the app accounts it locked could not be cleared ({e}); they are unlocked"
        ));
    }
    // Proof that nothing wrote to the old primary after the fence: its own binlog position
    // (GTIDs, or file:position) has not moved since it was read under the fence. Cutover's
    // own statements there since are kept out of the binlog.
    let old_primary_position = match source_position(&mut source, gtid).await {
        Ok(now) => Some(now),
        Err(e) => {
            warnings.push(format!(
                "could not check that the old primary took no writes after the fence: {e}"
            ));
            None
        }
    };
    // MySQL's super_read_only keeps even cutover from writing the record there; only a
    // rollback before promotion ever unlocks these accounts, so the record is a safeguard.
    if source.flavour == super::dialect::Flavour::Mariadb
        && let Err(e) = writers::keep_locked(&mut source, &pair.plan.name).await
    {
        warnings.push(format!(
            "could not record the old primary's app accounts as locked for good ({e}); they stay locked, but a rollback tool could unlock them"
        ));
    }

    // 6. Reverse replication, outside the window.
    if pair.plan.reverse_replication {
        let reverse = async {
            let user = pair.replication_user();
            let password = random_password();
            create_replication_user(&mut target, &user, &password).await?;
            let spec = SourceSpec {
                host: &pair.target.endpoint.host,
                port: pair.target.endpoint.port,
                user: &user,
                password: &password,
                start: match promoted_at.rsplit_once(':') {
                    Some((file, pos)) if !gtid => StartAt::File {
                        file: file.to_owned(),
                        position: pos.parse().unwrap_or(4),
                    },
                    _ => StartAt::Gtid,
                },
            };
            configure_replica(
                &mut source,
                &spec,
                Some(&promoted_at),
                &pair.replicated_databases(),
            )
            .await?;
            wait_running(&mut source, Duration::from_secs(30)).await
        };
        if let Err(error) = reverse.await {
            return Err(CutoverFailed {
                error,
                rollback: Rollback::AfterPromotion,
            });
        }
        on_event(&Event::ReverseReady);
    }
    source.close().await;
    target.close().await;
    Ok(CutoverReport {
        pair: pair.plan.name.clone(),
        write_unavailable_ms: ms(unavailable),
        fence_ms: ms(fenced),
        catchup_ms: ms(caught_up - fenced),
        promote_ms: ms(unavailable - caught_up),
        old_primary_clean: old_primary_position.as_ref().map(|now| *now == position),
        reverse_replication: pair.plan.reverse_replication,
        old_primary_position,
        position,
        warnings,
    })
}

/// Unfences the source after a failure before promotion.
async fn unfence(
    source: &mut Db,
    pair_name: &str,
    error: MyError,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> CutoverFailed {
    on_event(&Event::RollingBack {
        reason: error.to_string(),
    });
    let sql = source.dialect.unfence();
    let unfenced = match source.run("unfence the source", sql).await {
        Ok(()) => writers::unlock(source, pair_name).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match unfenced {
        Ok(()) => CutoverFailed {
            error,
            rollback: Rollback::Unfenced,
        },
        Err(e) => CutoverFailed {
            error: MyError::Refused(format!(
                "{error}; unfencing the source also failed ({e}): run `{sql}` on {} now, then ALTER USER ... ACCOUNT UNLOCK for the accounts in `{}`.`{}` (pair {pair_name})",
                source.label,
                writers::LOCK_DB,
                writers::LOCK_TABLE
            )),
            rollback: Rollback::UnfenceFailed,
        },
    }
}
