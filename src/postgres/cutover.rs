//! `pg cutover`: the write-unavailability window, top to bottom.
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

/// Longest wait for terminated app sessions to exit.
const SESSION_EXIT_LIMIT: Duration = Duration::from_secs(10);
/// Pause between catch-up polls.
const POLL: Duration = Duration::from_millis(1);

/// Progress of a cutover, reported as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The gate passed; the fence comes next.
    GatePassed {
        /// Lag when the gate was checked.
        lag_bytes: i64,
    },
    /// App roles are blocked on the source and their sessions are gone.
    Fenced {
        /// Sessions terminated.
        sessions_ended: usize,
    },
    /// Everything committed before the fence is on the target, and sequences are set.
    CaughtUp {
        /// The source WAL position after the last app session was gone.
        fence_lsn: String,
        /// Sequences set on the target.
        sequences: usize,
    },
    /// Reverse replication is in place.
    ReverseReady,
    /// The target is writable.
    Promoted {
        /// Fence start to target writable.
        write_unavailable_ms: f64,
    },
    /// A step failed; rolling back.
    RollingBack {
        /// Why.
        reason: String,
    },
}

/// Steps of a cutover, for timings and failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Connecting to the servers.
    Connect,
    /// The gate.
    Gate,
    /// Blocking roles and ending sessions.
    Fence,
    /// Waiting for the marker and the slot; copying sequences.
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

/// A successful cutover.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    /// The pair.
    pub pair: String,
    /// Source WAL position after the fence.
    pub fence_lsn: String,
    /// App sessions terminated at the fence.
    pub sessions_ended: usize,
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

impl CutoverReport {
    /// `Some(true)` when the old primary was checked and took no write after the fence,
    /// `Some(false)` when it took some (they are not on the new primary), `None` when unchecked.
    pub fn old_primary_clean(&self) -> Option<bool> {
        self.old_primary_audit.as_ref().map(|a| a.rows() == 0)
    }
}

/// What happened to the source after a failure.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Rollback {
    /// The failure came before the fence; nothing was changed.
    NotNeeded,
    /// The source's app roles can log in again and it serves writes.
    SourceUnfenced {
        /// Roles given LOGIN back.
        roles: Vec<String>,
    },
    /// Unfencing failed or was unsafe: the source stays fenced until someone acts.
    Failed {
        /// Why, and what to run.
        error: String,
    },
}

/// A failed cutover: where, why, and what the rollback did.
#[derive(Debug, thiserror::Error)]
#[error("cutover failed at {stage:?}: {error}")]
pub struct CutoverFailed {
    /// The stage that failed.
    pub stage: Stage,
    /// The error.
    pub error: PgError,
    /// What happened to the source.
    pub rollback: Rollback,
}

/// Cuts `pair` over, reporting progress through `events`.
pub async fn cutover(
    pair: &Pair,
    events: &mut (dyn FnMut(&Event) + Send),
) -> Result<CutoverReport, CutoverFailed> {
    let early = |stage| {
        move |error| CutoverFailed {
            stage,
            error,
            rollback: Rollback::NotNeeded,
        }
    };
    let (source, target) = pair.connect().await.map_err(early(Stage::Connect))?;
    let (lag_bytes, target_roles) = gate(pair, &source, &target)
        .await
        .map_err(early(Stage::Gate))?;
    events(&Event::GatePassed { lag_bytes });

    let mut window = Window {
        pair,
        source: &source,
        target: &target,
        target_roles,
        stages: Vec::new(),
        reverse_created: false,
    };
    match window.run(events).await {
        Ok(mut report) => {
            window.after(&mut report).await;
            Ok(report)
        }
        Err((stage, error)) => {
            events(&Event::RollingBack {
                reason: error.to_string(),
            });
            let rollback = window.roll_back(stage).await;
            Err(CutoverFailed {
                stage,
                error,
                rollback,
            })
        }
    }
}

/// Checks that replication is running, complete and close enough. Returns the lag in bytes and
/// the target's blocked roles (with their LOGIN attribute before blocking).
async fn gate(
    pair: &Pair,
    source: &Db,
    target: &Db,
) -> Result<(i64, Vec<(String, bool)>), PgError> {
    let s = status::status(pair, source, target, None).await?;
    let refuse = |why: String| Err(PgError::Refused(format!("{}: {why}", pair.plan.name)));
    if !s.subscribed || !s.slot_exists {
        return refuse("replication is not set up; run `cutover pg start` first".into());
    }
    if !s.enabled || !s.apply_running {
        return refuse("the target's subscription is not running; see `cutover pg status`".into());
    }
    if !s.all_ready {
        let copying: Vec<String> = s
            .tables
            .iter()
            .filter(|t| t.state != "ready")
            .map(|t| format!("{} ({})", t.table, t.state))
            .collect();
        return refuse(format!(
            "the initial copy is not finished: {}",
            copying.join(", ")
        ));
    }
    let lag = s.lag_bytes.unwrap_or(i64::MAX);
    if lag > pair.plan.max_lag_bytes as i64 {
        return refuse(format!(
            "lag is {lag} bytes, above max_lag_bytes = {}; wait and retry",
            pair.plan.max_lag_bytes
        ));
    }
    if !s.blocked_roles.source.is_empty() {
        return refuse(format!(
            "the source is already fenced ({}): a previous cutover completed or did not roll back; see `cutover pg status`",
            s.blocked_roles.source.join(", ")
        ));
    }
    // The fence stops only the roles it lists (DESIGN §4): refuse while another role could
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
            "the schema changed since replication started; nothing was fenced:\n  {}\nfix: run `cutover pg start` again (it copies new tables' schema and rows and refreshes the subscription); align changed columns and indexes on the target by hand",
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
        .filter(|r| !target_roles.iter().any(|(name, _)| name == *r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return refuse(format!(
            "app roles are not blocked on the target ({}); run `cutover pg start` again",
            missing.join(", ")
        ));
    }
    Ok((lag, target_roles))
}

/// The fenced part of a cutover and what is needed to undo it.
struct Window<'a> {
    pair: &'a Pair,
    source: &'a Db,
    target: &'a Db,
    target_roles: Vec<(String, bool)>,
    stages: Vec<(Stage, f64)>,
    reverse_created: bool,
}

impl Window<'_> {
    fn done(&mut self, stage: Stage, since: Instant) -> Instant {
        self.stages
            .push((stage, since.elapsed().as_secs_f64() * 1000.0));
        Instant::now()
    }

    async fn run(
        &mut self,
        events: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<CutoverReport, (Stage, PgError)> {
        let (pair, source, target) = (self.pair, self.source, self.target);
        let roles = &pair.plan.app_roles;
        let names = &pair.names;
        let at = |stage| move |e| (stage, e);

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
        let promote_sql = format!(
            "ALTER SUBSCRIPTION {} DISABLE;{}",
            ident(&names.subscription),
            fence::unblock_statements(&names.pair, &self.target_roles)
        );

        let started = Instant::now();
        fence::block(source, roles, &names.pair)
            .await
            .map_err(at(Stage::Fence))?;
        let sessions_ended =
            fence::end_sessions(source, roles, pair.plan.drain, SESSION_EXIT_LIMIT)
                .await
                .map_err(at(Stage::Fence))?;
        let t = self.done(Stage::Fence, started);
        events(&Event::Fenced { sessions_ended });

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
        let caught_up = async {
            let mut seen = false;
            loop {
                if !seen {
                    seen = target
                        .client()
                        .query_one(&marker_seen, &[&token])
                        .await
                        .map_err(|e| target.error("look for the fence marker", &e))?
                        .get(0);
                }
                if seen {
                    let row = source
                        .client()
                        .query_opt(&flushed, &[&fence_lsn, &names.slot()])
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
        let mut t = self.done(Stage::CatchUp, t);
        events(&Event::CaughtUp {
            fence_lsn: fence_lsn.clone(),
            sequences: count,
        });

        if pair.plan.reverse_replication {
            self.reverse_created = true;
            self.reverse().await.map_err(at(Stage::Reverse))?;
            t = self.done(Stage::Reverse, t);
            events(&Event::ReverseReady);
        }

        // One transaction: stop applying from the source and let the app in.
        target
            .batch("promote the target", &promote_sql)
            .await
            .map_err(at(Stage::Promote))?;
        let write_unavailable_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.done(Stage::Promote, t);
        events(&Event::Promoted {
            write_unavailable_ms,
        });

        Ok(CutoverReport {
            pair: pair.plan.name.clone(),
            fence_lsn,
            sessions_ended,
            sequences: count,
            reverse_replication: pair.plan.reverse_replication,
            stages_ms: self.stages.clone(),
            write_unavailable_ms,
            warnings: Vec::new(),
            old_primary_audit: None,
            matviews_refreshed: Vec::new(),
        })
    }

    /// After the point of no return: drop the forward subscription with its slot and keep the
    /// source fenced for good. Failures here are reported, never rolled back.
    async fn after(&mut self, report: &mut CutoverReport) {
        let names = &self.pair.names;
        let t = Instant::now();
        // The subscription lets go of its slot, so the slot can be audited before it is dropped.
        if let Err(e) = cleanup::detach_subscription(self.target, &names.subscription).await {
            report.warnings.push(format!(
                "the forward subscription could not be dropped ({e}): run `cutover pg cleanup`"
            ));
        }
        match writers::audit_slot(self.source, names.slot(), &names.publication, SCHEMA).await {
            Ok(audit) => report.old_primary_audit = Some(audit),
            Err(e) => report.warnings.push(format!(
                "could not check that the old primary took no writes after the fence: {e}"
            )),
        }
        self.done(Stage::Audit, t);
        let t = Instant::now();
        match cleanup::drop_slot(self.source, names.slot()).await {
            Ok(_) => {}
            Err(e) => report.warnings.push(format!(
                "slot {} is still on the source and keeps WAL there ({e}): run `cutover pg cleanup`",
                names.slot()
            )),
        }
        self.done(Stage::DropSubscription, t);
        // Replication never carried their contents: refreshed before the app needs them.
        let t = Instant::now();
        let refreshed = match inventory::Inventory::read(self.source).await {
            Ok(inv) => inventory::refresh_matviews(&inv, self.target).await,
            Err(e) => Err(e),
        };
        match refreshed {
            Ok(refreshed) => report.matviews_refreshed = refreshed,
            Err(e) => report.warnings.push(format!(
                "materialized views could not be refreshed on the new primary ({e}): run REFRESH MATERIALIZED VIEW on each"
            )),
        }
        self.done(Stage::RefreshMatviews, t);
        report.stages_ms = self.stages.clone();
        if let Err(e) = fence::keep_after_promotion(self.source, &names.pair).await {
            report.warnings.push(format!(
                "could not mark the source's fence as permanent ({e}); `pg cleanup` would unfence the old primary"
            ));
        }
    }

    /// Publication on the target, subscription on the source (no initial copy): everything
    /// the target commits from now on flows back to the old primary.
    async fn reverse(&self) -> Result<(), PgError> {
        let (pair, source, target) = (self.pair, self.source, self.target);
        let names = &pair.names;
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
    async fn roll_back(&self, stage: Stage) -> Rollback {
        let names = &self.pair.names;
        if stage == Stage::Promote {
            match self.promotion_committed().await {
                Some(false) => {}
                Some(true) => {
                    return Rollback::Failed {
                        error: "the promotion committed on the target although its reply was lost: the target is the primary now; keep the source fenced and run `cutover pg cleanup` to drop the subscription".to_owned(),
                    };
                }
                None => {
                    return Rollback::Failed {
                        error: format!(
                            "the promotion's outcome is unknown (target unreachable); the source stays fenced. If subscription {} on the target is disabled, the target is the primary; otherwise {}",
                            names.subscription,
                            unfence_help(self.pair)
                        ),
                    };
                }
            }
        }
        // A reconnect, in case the failure broke the connection itself.
        let fresh;
        let source = if self.source.is_closed() {
            match self.pair.source.connect().await {
                Ok(db) => {
                    fresh = db;
                    &fresh
                }
                Err(e) => {
                    return Rollback::Failed {
                        error: format!("{e}; {}", unfence_help(self.pair)),
                    };
                }
            }
        } else {
            self.source
        };
        if self.reverse_created {
            // Must go before the source takes writes again, or they would loop back.
            if let Err(e) = cleanup::drop_subscription(source, &names.reverse_subscription).await {
                return Rollback::Failed {
                    error: format!(
                        "could not remove reverse subscription {} from the source ({e}); the source stays fenced. Drop it (DROP SUBSCRIPTION), then {}",
                        names.reverse_subscription,
                        unfence_help(self.pair)
                    ),
                };
            }
            if let Err(e) = cleanup::drop_publication(self.target, &names.reverse_publication).await
            {
                tracing::warn!(error = %e, "reverse publication left on the target; `pg cleanup` removes it");
            }
        }
        match fence::unblock(source, &names.pair).await {
            Ok(roles) => Rollback::SourceUnfenced { roles },
            Err(e) => Rollback::Failed {
                error: format!("{e}; {}", unfence_help(self.pair)),
            },
        }
    }

    /// Whether the promotion transaction committed (the forward subscription is disabled), from
    /// a fresh connection; `None` when the target cannot be asked.
    async fn promotion_committed(&self) -> Option<bool> {
        let db = self.pair.target.connect().await.ok()?;
        let enabled = catalog::subscription(&db, &self.pair.names.subscription)
            .await
            .ok()?;
        Some(enabled != Some(true))
    }
}

fn unfence_help(pair: &Pair) -> String {
    format!(
        "to reopen the source run `cutover pg cleanup --pair {}`, or on the source: {}",
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
