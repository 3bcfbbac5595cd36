//! `pg cutover`: the write-unavailability window, top to bottom.
//!
//! 1. Gate: subscription running, every table copied, lag under `max_lag_bytes`.
//! 2. Fence: app roles NOLOGIN on the source, sessions drained then terminated and gone.
//! 3. Exact catch-up: `fence_lsn` is read after the last app session is gone; a marker row is
//!    committed (flushed) after it; done when the marker is on the target *and* the slot's
//!    `confirmed_flush_lsn >= fence_lsn`. Never "lag = 0".
//! 4. Sequences copied from the fenced source.
//! 5. Reverse replication (optional): publication on the target, subscription on the source
//!    with `copy_data = false`, before the target takes a single write.
//! 6. Promote: the forward subscription is dropped together with its slot on the source.
//! 7. Target app roles unblocked: the target is writable (the point of no return).
//!
//! Any failure in 2-7 rolls back: reverse replication removed, source unfenced. After 7, the
//! source's roles stay blocked on purpose.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::cleanup::{self, SubscriptionDrop};
use super::db::{Db, PgError, qualified};
use super::names::{MARKER_TABLE, SCHEMA};
use super::start::{create_subscription, own_tables, publish};
use super::{Pair, catalog, fence, sequences, status};

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
    /// Everything committed before the fence is on the target.
    CaughtUp {
        /// The source WAL position after the last app session was gone.
        fence_lsn: String,
    },
    /// Sequences set on the target.
    SequencesSynced {
        /// How many.
        count: usize,
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

/// Steps of the window, for timings and failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Connecting to the servers.
    Connect,
    /// The gate.
    Gate,
    /// Blocking roles and ending sessions.
    Fence,
    /// Waiting for the marker and the slot.
    CatchUp,
    /// Copying sequence positions.
    Sequences,
    /// Setting up reverse replication.
    Reverse,
    /// Dropping the forward subscription.
    Promote,
    /// Unblocking the target's app roles.
    UnblockTarget,
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
        /// The forward subscription was already dropped: run `pg cleanup` and `pg start` again.
        replication_lost: bool,
    },
    /// Unfencing failed too: the source stays fenced until someone acts.
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
    let lag_bytes = gate(pair, &source, &target)
        .await
        .map_err(early(Stage::Gate))?;
    events(&Event::GatePassed { lag_bytes });

    let mut window = Window {
        pair,
        source: &source,
        target: &target,
        started: Instant::now(),
        stages: Vec::new(),
        reverse_created: false,
        forward_dropped: false,
    };
    match window.run(events).await {
        Ok(report) => Ok(report),
        Err((stage, error)) => {
            events(&Event::RollingBack {
                reason: error.to_string(),
            });
            let rollback = window.roll_back().await;
            Err(CutoverFailed {
                stage,
                error,
                rollback,
            })
        }
    }
}

/// Checks that replication is running, complete and close enough. Returns the lag in bytes.
async fn gate(pair: &Pair, source: &Db, target: &Db) -> Result<i64, PgError> {
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
    let missing: Vec<&String> = pair
        .plan
        .app_roles
        .iter()
        .filter(|r| !s.blocked_roles.target.contains(r))
        .collect();
    if !missing.is_empty() {
        return refuse(format!(
            "app roles are not blocked on the target ({}); run `cutover pg start` again",
            missing
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !s.blocked_roles.source.is_empty() {
        return refuse(format!(
            "the source is already fenced ({}); a previous cutover completed or did not roll back; see `cutover pg status`",
            s.blocked_roles.source.join(", ")
        ));
    }
    Ok(lag)
}

/// The fenced part of a cutover and what is needed to undo it.
struct Window<'a> {
    pair: &'a Pair,
    source: &'a Db,
    target: &'a Db,
    started: Instant,
    stages: Vec<(Stage, f64)>,
    reverse_created: bool,
    forward_dropped: bool,
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

        // Prepared before the fence so the window holds no planning round trips.
        let marker = qualified(SCHEMA, MARKER_TABLE);
        let marker_seen = target
            .client()
            .prepare(&format!(
                "SELECT EXISTS (SELECT 1 FROM {marker} WHERE token = $1)"
            ))
            .await
            .map_err(|e| (Stage::CatchUp, target.error("prepare the marker check", &e)))?;
        let flushed = source
            .client()
            .prepare(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots
                 WHERE slot_name = $2",
            )
            .await
            .map_err(|e| (Stage::CatchUp, source.error("prepare the slot check", &e)))?;
        // The marker's commit must be flushed at once: logical decoding only sends flushed WAL.
        source
            .batch(
                "make the marker commit synchronous",
                "SET synchronous_commit = on",
            )
            .await
            .map_err(at(Stage::CatchUp))?;
        let token = marker_token();

        self.started = Instant::now();
        let t = self.started;
        fence::block(source, roles, &names.pair)
            .await
            .map_err(at(Stage::Fence))?;
        let sessions_ended =
            fence::end_sessions(source, roles, pair.plan.drain, SESSION_EXIT_LIMIT)
                .await
                .map_err(at(Stage::Fence))?;
        let t = self.done(Stage::Fence, t);
        events(&Event::Fenced { sessions_ended });

        let fence_lsn: String = source
            .query_one(
                "read the fence position",
                "SELECT pg_current_wal_insert_lsn()::text",
                &[],
            )
            .await
            .map_err(at(Stage::CatchUp))?
            .get(0);
        source
            .execute(
                "commit the fence marker",
                &format!("INSERT INTO {marker} (token, pair) VALUES ($1, $2)"),
                &[&token, &names.pair],
            )
            .await
            .map_err(at(Stage::CatchUp))?;
        let wait = async {
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
        match tokio::time::timeout(pair.plan.catchup_timeout, wait).await {
            Ok(result) => result.map_err(at(Stage::CatchUp))?,
            Err(_) => {
                return Err((
                    Stage::CatchUp,
                    PgError::Timeout {
                        what: format!(
                            "the target to apply everything up to {fence_lsn} (catchup_timeout)"
                        ),
                        after: pair.plan.catchup_timeout,
                    },
                ));
            }
        }
        let t = self.done(Stage::CatchUp, t);
        events(&Event::CaughtUp {
            fence_lsn: fence_lsn.clone(),
        });

        let count = sequences::sync(source, target)
            .await
            .map_err(at(Stage::Sequences))?;
        let mut t = self.done(Stage::Sequences, t);
        events(&Event::SequencesSynced { count });

        if pair.plan.reverse_replication {
            self.reverse_created = true;
            self.reverse().await.map_err(at(Stage::Reverse))?;
            t = self.done(Stage::Reverse, t);
            events(&Event::ReverseReady);
        }

        self.forward_dropped = true;
        match cleanup::drop_subscription(target, &names.subscription)
            .await
            .map_err(at(Stage::Promote))?
        {
            SubscriptionDrop::Dropped => {}
            other => {
                return Err((
                    Stage::Promote,
                    PgError::Refused(format!(
                        "{}: dropping the subscription ended as {other:?}",
                        target.server()
                    )),
                ));
            }
        }
        let t = self.done(Stage::Promote, t);

        fence::unblock(target, &names.pair)
            .await
            .map_err(at(Stage::UnblockTarget))?;
        let write_unavailable_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.done(Stage::UnblockTarget, t);
        events(&Event::Promoted {
            write_unavailable_ms,
        });

        // Past the point of no return: failures here are reported, not rolled back.
        if let Err(e) = fence::keep_after_promotion(source, &names.pair).await {
            tracing::warn!(error = %e, "could not mark the source fence as permanent");
        }
        Ok(CutoverReport {
            pair: pair.plan.name.clone(),
            fence_lsn,
            sessions_ended,
            sequences: count,
            reverse_replication: pair.plan.reverse_replication,
            stages_ms: self.stages.clone(),
            write_unavailable_ms,
        })
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

    /// Undoes the window: reverse replication removed, source unfenced.
    async fn roll_back(&self) -> Rollback {
        let names = &self.pair.names;
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
                        error: unfence_help(self.pair, &e),
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
                        unfence_help(self.pair, &e)
                    ),
                };
            }
            if let Err(e) = cleanup::drop_publication(self.target, &names.reverse_publication).await
            {
                tracing::warn!(error = %e, "reverse publication left on the target; `pg cleanup` removes it");
            }
        }
        match fence::unblock(source, &names.pair).await {
            Ok(roles) => Rollback::SourceUnfenced {
                roles,
                replication_lost: self.forward_dropped,
            },
            Err(e) => Rollback::Failed {
                error: unfence_help(self.pair, &e),
            },
        }
    }
}

fn unfence_help(pair: &Pair, e: &PgError) -> String {
    format!(
        "the source is still fenced ({e}); to reopen it run `cutover pg cleanup` for pair {}, or on the source: {}",
        pair.plan.name,
        pair.plan
            .app_roles
            .iter()
            .map(|r| format!("ALTER ROLE {} LOGIN;", super::db::ident(r)))
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
