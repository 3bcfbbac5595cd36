//! A PostgreSQL pair's write-unavailability window ([`crate::engine::Window`]), top to bottom.
//!
//! 1. Gate: subscription running, every table copied, lag under `max_lag_bytes`, the target's
//!    app roles still blocked, the source not already fenced, no role outside the fence (and
//!    its exemptions) able to write the replicated tables, and no schema drift (a table,
//!    column, index or sequence on the source that the target or the publication lacks).
//! 2. Fence: app roles NOLOGIN on the source (one transaction), sessions drained, terminated,
//!    and gone.
//! 3. Exact catch-up: once the last app session is gone, a marker row is committed (and
//!    flushed); `fence_lsn` is read inside the marker's transaction; done when the marker is on the target *and* the slot's
//!    `confirmed_flush_lsn >= fence_lsn`. Never "lag = 0". Sequences are copied from the fenced
//!    source at the same time (they are final once the fence holds).
//! 4. Reverse replication (optional): publication on the target, subscription on the source
//!    with `copy_data = false`, before the target takes a single write.
//! 5. Promote, in one target transaction: the forward subscription is disabled (no more
//!    applying from the source) and the app roles get LOGIN back. The point of no return.
//! 6. After the window: the forward subscription lets go of its slot; the slot's unconfirmed
//!    WAL is decoded to prove the old primary took no write after the fence (any is reported
//!    as lost); the slot is dropped; materialized views are refreshed on the new primary; the
//!    source's fence is marked permanent.
//!
//! Any failure in 2-5 rolls back: reverse replication removed, source unfenced.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::cleanup;
use super::db::{Db, PgError, ident, qualified};
use super::names::{MARKER_TABLE, SCHEMA};
use super::start::{create_subscription, own_tables, publish};
use super::{Pair, catalog, fence, inventory, sequences, status, writers};
use crate::engine::{self, DbError};

/// Longest wait for terminated app sessions to exit.
const SESSION_EXIT_LIMIT: Duration = Duration::from_secs(10);
/// Pause between catch-up polls.
const POLL: Duration = Duration::from_millis(1);

/// Steps of a cutover, for timings and failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Connecting to the servers.
    Connect,
    /// The gate.
    Gate,
    /// Blocking the app roles (one transaction).
    Blocked,
    /// Then ending their sessions until none is left.
    Fence,
    /// Waiting until the marker is visible on the target (everything committed before it
    /// is applied).
    Applied,
    /// Then until the slot confirms it flushed (and the sequences are copied).
    CatchUp,
    /// Setting up reverse replication.
    Reverse,
    /// Disabling the subscription and unblocking the target's app roles.
    Promote,
    /// Decoding what the old primary committed after the fence (after the window).
    Audit,
    /// Dropping the forward subscription and its slot (after the window).
    DropSubscription,
    /// Refreshing materialized views on the new primary (after the window).
    RefreshMatviews,
}

/// What a promoted window measured and did, as a run's report and the single-pair command
/// show it (the engine-specific detail of [`engine::Finished`]).
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// The pair.
    pub pair: String,
    /// Source WAL position after the fence.
    pub fence_lsn: String,
    /// App sessions terminated at the fence.
    pub sessions_ended: usize,
    /// What the fence held on the source, role by role (`app (no CONNECT on database shop)`,
    /// `app (NOLOGIN)`): the database scope leaves the role's other databases serving.
    pub fence_scope: Vec<String>,
    /// The subscription's link at the gate, as the publisher's `pg_stat_ssl` said: `true`
    /// over TLS, `false` in plaintext, `None` when it was not read (a resumed window).
    pub forward_link_tls: Option<bool>,
    /// Sequences copied.
    pub sequences: usize,
    /// Reverse replication was set up.
    pub reverse_replication: bool,
    /// Milliseconds per stage, in order.
    pub stages_ms: Vec<(Stage, f64)>,
    /// Fence start to target writable, in milliseconds.
    pub write_unavailable_ms: f64,
    /// Problems after the point of no return that need a hand (e.g. a slot left behind).
    pub warnings: Vec<String>,
    /// What the old primary committed after the fence that was not replicated (decoded from
    /// its WAL); `None` when it could not be checked (see `warnings`).
    pub old_primary_audit: Option<writers::OldPrimaryAudit>,
    /// Materialized views refreshed on the new primary.
    pub matviews_refreshed: Vec<String>,
}

impl Detail {
    /// `Some(true)` when the old primary was checked and took no write after the fence,
    /// `Some(false)` when it took some (they are not on the new primary), `None` when unchecked.
    pub fn old_primary_clean(&self) -> Option<bool> {
        self.old_primary_audit.as_ref().map(|a| a.rows() == 0)
    }
}

/// Checks that replication is running, complete and close enough. Returns the lag in bytes and
/// the target's blocked roles (with their LOGIN attribute before blocking).
async fn gate(pair: &Pair, source: &Db, target: &Db) -> Result<(i64, fence::Fence), PgError> {
    let s = status::status(pair, source, target, None).await?;
    let refuse = |why: String| Err(PgError::Refused(format!("{}: {why}", pair.plan.name)));
    if !s.subscribed || !s.slot_exists {
        return Err(PgError::NotStarted(format!(
            "{}: replication is not set up; start it first",
            pair.plan.name
        )));
    }
    if !s.enabled || !s.apply_running {
        return refuse(format!(
            "replication is not running, so nothing was fenced: {}",
            s.not_running_cause()
        ));
    }
    if !s.all_ready {
        let copying: Vec<String> = s
            .tables
            .iter()
            .filter(|t| t.state != "ready")
            .map(|t| format!("{} ({})", t.table, t.state))
            .collect();
        // A failing copy says why and what to do (status's words), not "wait".
        let failing = s
            .failing_copy()
            .map(|w| format!("; {w}"))
            .unwrap_or_default();
        return refuse(format!(
            "the initial copy is not finished: {}{failing}",
            copying.join(", ")
        ));
    }
    if !s.prepared.is_empty() {
        return refuse(writers::prepared_refusal(&s.prepared));
    }
    let lag = s.lag_bytes.unwrap_or(i64::MAX);
    if lag > pair.plan.max_lag_bytes as i64 {
        let why = format!(
            "lag is {} bytes, above max_lag_bytes = {}; wait and retry",
            s.lag_bytes.map_or("unknown".to_owned(), |l| l.to_string()),
            pair.plan.max_lag_bytes
        );
        return match s.lag_bytes {
            Some(_) => Err(PgError::Behind(format!("{}: {why}", pair.plan.name))),
            None => refuse(why),
        };
    }
    if !s.blocked_roles.source.is_empty() {
        return Err(PgError::Interrupted(format!(
            "{}: the source is already fenced ({}): an earlier cutover was interrupted; resume it (it finishes or rolls back) instead of starting another",
            pair.plan.name,
            s.blocked_roles.source.join(", ")
        )));
    }
    // The fence stops only the roles it lists: refuse while another role could
    // keep writing to the old primary.
    let (tables, _) = catalog::in_scope(catalog::tables(source).await?, &pair.plan.tables);
    let exempt: Vec<String> = pair.plan.exempt_roles.keys().cloned().collect();
    let unfenced = writers::unfenced_writers(
        source,
        &tables,
        &pair.plan.app_roles,
        &exempt,
        &pair.plan.source.user,
    )
    .await?;
    if !unfenced.is_empty() {
        let roles: Vec<String> = unfenced.iter().map(|w| w.role.clone()).collect();
        let sessions = writers::sessions_of(source, &roles).await?;
        return refuse(format!(
            "roles that can write the replicated tables are neither fenced nor exempt: {}{}; their writes after the fence would be lost. Add them to `app_roles` or `exempt_roles`",
            roles.join(", "),
            if sessions.is_empty() {
                String::new()
            } else {
                format!(
                    " (connected now: {})",
                    writers::describe_sessions(&sessions)
                )
            }
        ));
    }
    // Drift is checked before the fence, never after it: a table created during the sync
    // (an app deploy) would otherwise be left behind with its rows.
    if !s.drift.is_empty() {
        return refuse(format!(
            "the schema changed since replication started; nothing was fenced:\n  {}\nfix: start replication again (it copies new tables' schema and rows and refreshes the subscription); align changed columns and indexes on the target by hand",
            s.drift
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    let target_roles = fence::blocked_state(target, &pair.names.pair).await?;
    let missing: Vec<&str> = pair
        .plan
        .app_roles
        .iter()
        .filter(|r| !target_roles.blocks(r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return refuse(format!(
            "app roles are not blocked on the target ({}); start replication again to block them",
            missing.join(", ")
        ));
    }
    Ok((lag, target_roles))
}

/// Statements prepared before the fence, so the fenced part sends only what it must.
struct Prepared {
    marker_seen: tokio_postgres::Statement,
    flushed: tokio_postgres::Statement,
}

/// One pair's window, phase by phase ([`crate::engine::Window`]). Every phase reads what the
/// servers already have, so a fresh window can resume one a crashed process left.
pub struct PgWindow {
    pair: Pair,
    source: Db,
    target: Db,
    prepared: Option<Prepared>,
    /// The target's blocked roles read at the gate (`None`: read at promotion).
    target_roles: Option<fence::Fence>,
    stages: Vec<(Stage, f64)>,
    last: Instant,
    started: Option<Instant>,
    reverse_created: bool,
    promote_attempted: bool,
    sessions_ended: usize,
    /// What the fence held on the source, role by role.
    fence_scope: Vec<String>,
    /// Whether the subscription's link ran over TLS at the gate (`None`: not read).
    forward_link_tls: Option<bool>,
    fence_lsn: String,
    sequences: usize,
    write_unavailable_ms: Option<f64>,
    /// The gate reads the subscription's replication origin on the target (`false` once the
    /// target refused: a role without the right; the subscriber's reports alone then).
    read_origin: bool,
}

impl PgWindow {
    /// Connects to both servers of `pair`.
    pub async fn open(pair: &Pair) -> Result<PgWindow, PgError> {
        let (source, target) = pair.connect().await?;
        Ok(PgWindow {
            pair: pair.clone(),
            source,
            target,
            prepared: None,
            target_roles: None,
            stages: Vec::new(),
            last: Instant::now(),
            started: None,
            reverse_created: false,
            promote_attempted: false,
            sessions_ended: 0,
            fence_scope: Vec::new(),
            forward_link_tls: None,
            fence_lsn: String::new(),
            sequences: 0,
            write_unavailable_ms: None,
            read_origin: true,
        })
    }

    /// A window for a pair whose history is unknown (a resume): rolling back double-checks
    /// the promotion and removes reverse replication if it exists.
    pub async fn open_for_resume(pair: &Pair) -> Result<PgWindow, PgError> {
        let mut w = PgWindow::open(pair).await?;
        w.promote_attempted = true;
        w.reverse_created = pair.plan.reverse_replication;
        Ok(w)
    }

    fn done(&mut self, stage: Stage) {
        self.stages
            .push((stage, self.last.elapsed().as_secs_f64() * 1000.0));
        self.last = Instant::now();
    }

    /// The gate (changes nothing). Returns the lag in bytes.
    pub async fn gate(&mut self) -> Result<i64, PgError> {
        self.last = Instant::now();
        let (lag, target_roles) = gate(&self.pair, &self.source, &self.target).await?;
        self.target_roles = Some(target_roles);
        // What the report says of the forward link: read from the publisher's walsender.
        self.forward_link_tls = self
            .source
            .query_opt(
                "read whether the subscription's link is encrypted",
                "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid
                 WHERE r.application_name = $1",
                &[&self.pair.names.subscription],
            )
            .await?
            .map(|r| r.get(0));
        self.done(Stage::Gate);
        Ok(lag)
    }

    /// Blocks the app roles on the source and ends their sessions. Returns sessions ended.
    pub async fn fence(&mut self) -> Result<usize, (Stage, PgError)> {
        let at = |stage| move |e| (stage, e);
        let (pair, source, target) = (&self.pair, &self.source, &self.target);
        let roles = &pair.plan.app_roles;
        // Everything that can be prepared is prepared before the fence.
        let marker = qualified(SCHEMA, MARKER_TABLE);
        let marker_seen = target
            .client()
            .prepare(&format!(
                "SELECT EXISTS (SELECT 1 FROM {marker} WHERE token = $1)"
            ))
            .await
            .map_err(|e| (Stage::Fence, target.error("prepare the marker check", &e)))?;
        let flushed = source
            .client()
            .prepare(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots
                 WHERE slot_name = $2",
            )
            .await
            .map_err(|e| (Stage::Fence, source.error("prepare the slot check", &e)))?;
        // The marker's commit must be flushed at once: logical decoding only sends flushed WAL.
        source
            .batch(
                "make the marker commit synchronous",
                "SET synchronous_commit = on",
            )
            .await
            .map_err(at(Stage::Fence))?;
        self.prepared = Some(Prepared {
            marker_seen,
            flushed,
        });
        let planned = fence::plan(source, roles).await.map_err(at(Stage::Fence))?;
        self.last = Instant::now();
        self.started = Some(self.last);
        // The marker's synchronous commit, right after, flushes the block's.
        fence::apply_unflushed(source, &planned, &pair.names.pair)
            .await
            .map_err(at(Stage::Fence))?;
        self.done(Stage::Blocked);
        let (source, pair) = (&self.source, &self.pair);
        let roles = &pair.plan.app_roles;
        self.fence_scope = planned.described();
        self.sessions_ended =
            fence::end_sessions(source, roles, pair.plan.drain, SESSION_EXIT_LIMIT)
                .await
                .map_err(at(Stage::Fence))?;
        // One prepared between the gate and the fence: its COMMIT PREPARED would come after
        // the move (the fence ends sessions, not prepared transactions). Refused here, so the
        // window rolls back and the source serves again.
        let pending = writers::prepared(source).await.map_err(at(Stage::Fence))?;
        if !pending.is_empty() {
            return Err((
                Stage::Fence,
                PgError::Refused(format!(
                    "{}: {}",
                    pair.plan.name,
                    writers::prepared_refusal(&pending)
                )),
            ));
        }
        self.done(Stage::Fence);
        Ok(self.sessions_ended)
    }

    /// Exact catch-up (marker + slot), sequences, then reverse replication when the plan asks.
    /// Returns the fence LSN and the sequences set.
    pub async fn catch_up(&mut self) -> Result<(String, usize), (Stage, PgError)> {
        let at = |stage| move |e| (stage, e);
        let (pair, source, target) = (&self.pair, &self.source, &self.target);
        let roles = &pair.plan.app_roles;
        let names = &pair.names;
        let Some(prepared) = &self.prepared else {
            return Err((
                Stage::CatchUp,
                PgError::Refused("catch-up before the fence".into()),
            ));
        };
        let marker = qualified(SCHEMA, MARKER_TABLE);
        // The WAL position read inside the marker's own transaction: after every app commit
        // (their sessions are gone) and before the marker's commit record. The same statement
        // proves no fenced session is left at that point; one that finished logging in after
        // the last termination is ended and the marker committed again.
        let marker_sql = format!(
            "INSERT INTO {marker} (token, pair) VALUES ($1, $2)
             RETURNING pg_current_wal_insert_lsn()::text, {}",
            writers::sessions_count_sql(3)
        );
        let mut attempts = 0;
        let (token, fence_lsn) = loop {
            let token = marker_token();
            let row = source
                .query_one(
                    "commit the fence marker",
                    &marker_sql,
                    &[&token, &names.pair, roles],
                )
                .await
                .map_err(at(Stage::CatchUp))?;
            let (lsn, left): (String, i64) = (row.get(0), row.get(1));
            if left == 0 {
                break (token, lsn);
            }
            attempts += 1;
            if attempts >= 5 {
                return Err((
                    Stage::Fence,
                    PgError::Refused(format!(
                        "{}: sessions of the app roles keep appearing after the fence ({left} at the last check)",
                        source.server()
                    )),
                ));
            }
            fence::end_sessions(source, roles, Duration::ZERO, SESSION_EXIT_LIMIT)
                .await
                .map_err(at(Stage::Fence))?;
        };
        let mut applied_at: Option<Instant> = None;
        let caught_up = async {
            let mut seen = false;
            loop {
                if !seen {
                    seen = target
                        .client()
                        .query_one(&prepared.marker_seen, &[&token])
                        .await
                        .map_err(|e| target.error("look for the fence marker", &e))?
                        .get(0);
                    if seen {
                        applied_at = Some(Instant::now());
                    }
                }
                if seen {
                    let row = source
                        .client()
                        .query_opt(&prepared.flushed, &[&fence_lsn, &names.slot()])
                        .await
                        .map_err(|e| source.error("compare confirmed_flush_lsn", &e))?;
                    match row {
                        Some(r) if r.get::<_, Option<bool>>(0) == Some(true) => return Ok(()),
                        Some(_) => {}
                        None => {
                            return Err(PgError::Refused(format!(
                                "{}: slot {} disappeared during catch-up",
                                source.server(),
                                names.slot()
                            )));
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        };
        let timed = async {
            match tokio::time::timeout(pair.plan.catchup_timeout, caught_up).await {
                Ok(result) => result,
                Err(_) => Err(PgError::Timeout {
                    what: format!(
                        "the target to apply everything up to {fence_lsn} (catchup_timeout)"
                    ),
                    after: pair.plan.catchup_timeout,
                }),
            }
        };
        // Sequences are final once the fence holds; set them while the marker travels.
        let (caught_up, synced) = tokio::join!(timed, sequences::sync(source, target));
        caught_up.map_err(at(Stage::CatchUp))?;
        let count = synced.map_err(at(Stage::CatchUp))?;
        if let Some(applied) = applied_at {
            // Split from the stage: the apply, then the flush feedback and the sequences.
            self.stages.push((
                Stage::Applied,
                applied.duration_since(self.last).as_secs_f64() * 1000.0,
            ));
            self.last = applied;
        }
        self.fence_lsn = fence_lsn.clone();
        self.sequences = count;
        self.done(Stage::CatchUp);
        if self.pair.plan.reverse_replication {
            self.reverse_created = true;
            self.reverse().await.map_err(at(Stage::Reverse))?;
            self.done(Stage::Reverse);
        }
        Ok((fence_lsn, count))
    }

    /// One target transaction: stop applying from the source and let the app in. Already
    /// promoted (a resume): does nothing. Returns fence-to-writable when this process fenced.
    pub async fn promote(&mut self) -> Result<Option<f64>, (Stage, PgError)> {
        let at = |stage| move |e| (stage, e);
        let names = &self.pair.names;
        // Read at the gate in this process; otherwise (a resume) from the target itself.
        let (target_roles, enabled) = match self.target_roles.clone() {
            Some(roles) => (roles, Some(true)),
            None => {
                let roles = fence::blocked_state(&self.target, &names.pair)
                    .await
                    .map_err(at(Stage::Promote))?;
                let enabled = catalog::subscription(&self.target, &names.subscription)
                    .await
                    .map_err(at(Stage::Promote))?;
                (roles, enabled)
            }
        };
        if target_roles.is_empty() && enabled != Some(true) {
            self.done(Stage::Promote);
            return Ok(self.write_unavailable_ms);
        }
        let mut sql = String::new();
        if enabled.is_some() {
            sql.push_str(&format!(
                "ALTER SUBSCRIPTION {} DISABLE;",
                ident(&names.subscription)
            ));
        }
        sql.push_str(&fence::unblock_statements(&names.pair, &target_roles));
        self.promote_attempted = true;
        self.target
            .batch_role_change("promote the target", &sql)
            .await
            .map_err(at(Stage::Promote))?;
        self.write_unavailable_ms = self.started.map(|t| t.elapsed().as_secs_f64() * 1000.0);
        self.done(Stage::Promote);
        Ok(self.write_unavailable_ms)
    }

    /// The report of a promoted window (before [`PgWindow::after`] adds to it).
    pub fn report(&self) -> Detail {
        Detail {
            pair: self.pair.plan.name.clone(),
            fence_lsn: self.fence_lsn.clone(),
            sessions_ended: self.sessions_ended,
            fence_scope: self.fence_scope.clone(),
            forward_link_tls: self.forward_link_tls,
            sequences: self.sequences,
            reverse_replication: self.pair.plan.reverse_replication,
            stages_ms: self.stages.clone(),
            write_unavailable_ms: self.write_unavailable_ms.unwrap_or_default(),
            warnings: Vec::new(),
            old_primary_audit: None,
            matviews_refreshed: Vec::new(),
        }
    }

    /// After the point of no return: drop the forward subscription with its slot and keep the
    /// source fenced for good. Failures here are reported, never rolled back.
    pub async fn after(&mut self, report: &mut Detail) {
        let names = self.pair.names.clone();
        self.last = Instant::now();
        // The subscription lets go of its slot, so the slot can be audited before it is dropped.
        if let Err(e) = cleanup::detach_subscription(&self.target, &names.subscription).await {
            report.warnings.push(format!(
                "the forward subscription could not be dropped ({e}): clean the pair up"
            ));
        }
        match writers::audit_slot(&self.source, names.slot(), &names.publication, SCHEMA).await {
            Ok(audit) => report.old_primary_audit = Some(audit),
            Err(e) => report.warnings.push(format!(
                "could not check that the old primary took no writes after the fence: {e}"
            )),
        }
        self.done(Stage::Audit);
        match cleanup::drop_slot(&self.source, names.slot()).await {
            Ok(_) => {}
            Err(e) => report.warnings.push(format!(
                "slot {} is still on the source and keeps WAL there ({e}): clean the pair up",
                names.slot()
            )),
        }
        self.done(Stage::DropSubscription);
        // Replication never carried their contents: refreshed before the app needs them.
        let refreshed = match inventory::Inventory::read(&self.source).await {
            Ok(inv) => inventory::refresh_matviews(&inv, &self.target).await,
            Err(e) => Err(e),
        };
        match refreshed {
            Ok(refreshed) => report.matviews_refreshed = refreshed,
            Err(e) => report.warnings.push(format!(
                "materialized views could not be refreshed on the new primary ({e}): run REFRESH MATERIALIZED VIEW on each"
            )),
        }
        self.done(Stage::RefreshMatviews);
        report.stages_ms = self.stages.clone();
        if let Err(e) = fence::keep_after_promotion(&self.source, &names.pair).await {
            report.warnings.push(format!(
                "could not mark the source's fence as permanent ({e}); a cleanup would unfence the old primary"
            ));
        }
    }

    /// Publication on the target, subscription on the source (no initial copy): everything
    /// the target commits from now on flows back to the old primary. Already there: kept.
    async fn reverse(&self) -> Result<(), PgError> {
        let (pair, source, target) = (&self.pair, &self.source, &self.target);
        let names = &pair.names;
        if catalog::subscription(source, &names.reverse_subscription)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let (tables, _) = catalog::in_scope(catalog::tables(target).await?, &pair.plan.tables);
        own_tables(target).await?;
        publish(target, &names.reverse_publication, &tables).await?;
        let conninfo = pair
            .target
            .subscription_conninfo(&pair.plan.target.host, pair.plan.target.port)?;
        create_subscription(
            source,
            &names.reverse_subscription,
            &conninfo,
            &names.reverse_publication,
            false,
        )
        .await
    }

    /// Undoes the window: reverse replication removed, source unfenced. When the promotion's
    /// own outcome is unknown (the target went away while committing it), the source stays
    /// fenced: unfencing it next to a promoted target would split writes between two primaries.
    pub async fn roll_back(&mut self) -> engine::Rollback {
        let names = &self.pair.names;
        if self.promote_attempted {
            match self.promotion_committed().await {
                Some(false) => {}
                Some(true) => return engine::Rollback::AfterPromotion,
                None => {
                    return engine::Rollback::Failed {
                        error: format!(
                            "the promotion's outcome is unknown (target unreachable); the source stays fenced. If subscription {} on the target is disabled, the target is the primary; otherwise {}",
                            names.subscription,
                            unfence_help(&self.pair)
                        ),
                    };
                }
            }
        }
        // A reconnect, in case the failure broke the connection itself.
        if self.source.is_closed() {
            match self.pair.source.connect().await {
                Ok(db) => self.source = db,
                Err(e) => {
                    return engine::Rollback::Failed {
                        error: format!("{e}; {}", unfence_help(&self.pair)),
                    };
                }
            }
        }
        let source = &self.source;
        if self.reverse_created {
            // Must go before the source takes writes again, or they would loop back.
            if let Err(e) = cleanup::drop_subscription(source, &names.reverse_subscription).await {
                return engine::Rollback::Failed {
                    error: format!(
                        "could not remove reverse subscription {} from the source ({e}); the source stays fenced. Drop it (DROP SUBSCRIPTION), then {}",
                        names.reverse_subscription,
                        unfence_help(&self.pair)
                    ),
                };
            }
            if let Err(e) =
                cleanup::drop_publication(&self.target, &names.reverse_publication).await
            {
                tracing::warn!(error = %e, "reverse publication left on the target; a cleanup removes it");
            }
        }
        match fence::unblock(source, &names.pair).await {
            Ok(roles) => engine::Rollback::SourceReopened {
                detail: if roles.is_empty() {
                    "nothing was fenced".to_owned()
                } else {
                    format!("given back: {}", roles.join(", "))
                },
            },
            Err(e) => engine::Rollback::Failed {
                error: format!("{e}; {}", unfence_help(&self.pair)),
            },
        }
    }

    /// Whether the promotion transaction committed (the forward subscription is disabled or
    /// gone and the target's app roles are not blocked), from a fresh connection; `None` when
    /// the target cannot be asked.
    async fn promotion_committed(&self) -> Option<bool> {
        let db = self.pair.target.connect().await.ok()?;
        let enabled = catalog::subscription(&db, &self.pair.names.subscription)
            .await
            .ok()?;
        let blocked = fence::blocked_state(&db, &self.pair.names.pair)
            .await
            .ok()?;
        Some(enabled != Some(true) && blocked.is_empty())
    }

    /// Both servers' state, read from them.
    pub async fn state(&self) -> Result<engine::PairState, PgError> {
        pair_state(&self.pair, &self.source, &self.target).await
    }
}

/// Both servers' state, read from them (a window's, or the daemon's kept connections').
pub async fn pair_state(
    pair: &Pair,
    source: &Db,
    target: &Db,
) -> Result<engine::PairState, PgError> {
    let names = &pair.names;
    let fenced = fence::blocked_described(source, &names.pair).await?;
    let temporary = fence::blocked_state(source, &names.pair).await?;
    let target_blocked = fence::blocked_state(target, &names.pair).await?;
    let enabled = catalog::subscription(target, &names.subscription).await?;
    // Only a fenced source can have a promoted target: before any cutover the target is
    // just as unblocked and unsubscribed.
    let promoted = enabled != Some(true) && target_blocked.is_empty() && !fenced.is_empty();
    let mut lines = vec![if fenced.is_empty() {
        format!("source {}: app roles can log in", source.server())
    } else {
        format!("source {}: fenced ({})", source.server(), fenced.join(", "))
    }];
    lines.push(match (enabled, promoted) {
        (Some(true), _) => format!(
            "target {}: replicating from the source, app roles blocked",
            target.server()
        ),
        (_, true) => format!("target {}: promoted, app roles can log in", target.server()),
        _ => format!(
            "target {}: subscription {}, app roles blocked",
            target.server(),
            if enabled.is_some() {
                "disabled"
            } else {
                "absent"
            }
        ),
    });
    Ok(engine::PairState {
        source_fenced: !fenced.is_empty(),
        target_promoted: promoted,
        replicating: enabled == Some(true),
        completed: promoted && !fenced.is_empty() && temporary.is_empty(),
        lines,
    })
}

#[async_trait::async_trait]
impl engine::Window for PgWindow {
    fn component(&self) -> String {
        format!("postgres {}", self.pair.plan.name)
    }

    async fn gate(&mut self) -> Result<engine::Gated, DbError> {
        let lag = PgWindow::gate(self).await?;
        Ok(engine::Gated {
            lag: format!("{lag} bytes"),
        })
    }

    async fn progress(&mut self) -> Result<Option<engine::Progress>, DbError> {
        let (source, target) = (&self.source, &self.target);
        let subscription: [&(dyn tokio_postgres::types::ToSql + Sync); 1] =
            [&self.pair.names.subscription];
        // WAL written on the source and WAL the subscriber reports applied (its walsender's
        // replay position: committed there, not waiting for its own WAL flush as the slot's
        // confirmed position does), both read on the source in one statement.
        let reported = source.query_opt(
            "read the source's WAL position and the subscriber's applied position",
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
                    (replay_lsn - '0/0'::pg_lsn)::bigint
               FROM pg_stat_replication WHERE application_name = $1
              ORDER BY backend_start DESC LIMIT 1",
            &subscription,
        );
        // At the same time, on the target, the source position of the last commit the
        // subscription applied (its replication origin, moved by every applied commit). The
        // subscriber reports what it applied only between bursts of the stream, so under a
        // saturating load its report can trail by 100 ms; the origin does not. Idle, the
        // report runs ahead instead (past WAL nothing needed applied: other databases',
        // checkpoints'), so the applied position is the later of the two.
        let origin = async {
            if !self.read_origin {
                return None;
            }
            Some(
                target
                    .query_opt(
                        "read the subscription's applied position on the target",
                        "SELECT (pg_replication_origin_progress('pg_' || oid, false) - '0/0'::pg_lsn)::bigint
                           FROM pg_subscription
                          WHERE subname = $1
                            AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        &subscription,
                    )
                    .await,
            )
        };
        let (reported, origin) = tokio::join!(reported, origin);
        let origin = match origin {
            Some(Ok(row)) => row
                .and_then(|r| r.get::<_, Option<i64>>(0))
                .and_then(|v| u64::try_from(v).ok()),
            Some(Err(e)) => {
                tracing::debug!(pair = %self.pair.plan.name, error = %e, "the subscription's origin is unreadable on the target; the gate reads the subscriber's reports alone");
                self.read_origin = false;
                None
            }
            None => None,
        };
        Ok(reported?.and_then(|r| {
            let (current, confirmed): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
            let reported = u64::try_from(confirmed?).ok()?;
            let committed = u64::try_from(current?).ok()?;
            tracing::trace!(pair = %self.pair.plan.name, committed, reported, origin, "applied positions");
            Some(engine::Progress {
                committed,
                applied: origin.map_or(reported, |o| o.max(reported)),
                unit: engine::Unit::Bytes,
                settled: SETTLED_WAL_BYTES,
            })
        }))
    }

    async fn fence(&mut self) -> Result<engine::Fenced, DbError> {
        let sessions_ended = PgWindow::fence(self).await.map_err(|(_, e)| e)?;
        Ok(engine::Fenced {
            sessions_ended,
            scope: self.fence_scope.clone(),
        })
    }

    async fn catch_up(&mut self) -> Result<engine::CaughtUp, DbError> {
        if self.prepared.is_none() {
            // A resumed window: the fence is in place from the crashed run; re-apply it (it
            // keeps the first remembered state) so the marker can be committed.
            PgWindow::fence(self).await.map_err(|(_, e)| e)?;
        }
        let (position, _) = PgWindow::catch_up(self).await.map_err(|(_, e)| e)?;
        Ok(engine::CaughtUp { position })
    }

    async fn promote(&mut self) -> Result<engine::Promoted, DbError> {
        let ms = PgWindow::promote(self).await.map_err(|(_, e)| e)?;
        Ok(engine::Promoted {
            write_unavailable_ms: ms,
            position: None,
        })
    }

    async fn finish(&mut self) -> engine::Finished {
        let mut report = self.report();
        self.after(&mut report).await;
        engine::Finished {
            old_primary_clean: report.old_primary_clean(),
            lost: report
                .old_primary_audit
                .as_ref()
                .filter(|a| a.rows() > 0)
                .map(|a| a.describe()),
            warnings: report.warnings.clone(),
            links: match report.forward_link_tls {
                Some(true) => vec!["forward link over TLS (pg_stat_ssl)".to_owned()],
                Some(false) => vec!["forward link in PLAINTEXT (pg_stat_ssl)".to_owned()],
                None => Vec::new(),
            },
            detail: engine::to_json("the audit report", &report)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        }
    }

    async fn roll_back(&mut self) -> engine::Rollback {
        PgWindow::roll_back(self).await
    }

    async fn state(&mut self) -> Result<engine::PairState, DbError> {
        Ok(PgWindow::state(self).await?)
    }
}

/// The WAL a subscriber's reported replay position trails by while it keeps pace (it reports
/// in steps: one or two WAL pages measured under a steady writer), not work left; with nothing
/// written it is an idle subscriber's unreported tail (the adaptive gate's `settled`).
const SETTLED_WAL_BYTES: u64 = 16 * 1024;

fn unfence_help(pair: &Pair) -> String {
    format!(
        "to reopen the source, clean up pair {} or run on the source: {}",
        pair.plan.name,
        pair.plan
            .app_roles
            .iter()
            .map(|r| format!("ALTER ROLE {} LOGIN;", ident(r)))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A random marker token (hex).
fn marker_token() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
