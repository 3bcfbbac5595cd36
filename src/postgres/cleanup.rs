//! `pg cleanup`: removes what cutover created for a pair on both servers. Safe to run again,
//! and after a failed or abandoned migration.

use std::time::Duration;

use serde::Serialize;

use super::db::{Db, PgError, ident, qualified};
use super::names::{MARKER_TABLE, ROLE_TABLE, SCHEMA};
use super::{Pair, fence};

/// How long dropping a subscription may wait for the publisher before the slot is left for a
/// separate drop.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// What dropping a subscription did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionDrop {
    /// There was none.
    Absent,
    /// Dropped together with its slot on the publisher.
    Dropped,
    /// The publisher was unreachable: dropped locally, the slot is still on the publisher.
    DroppedSlotLeft,
}

/// Drops subscription `name`. When the publisher cannot be reached, the subscription is
/// detached from its slot and dropped locally, and the caller must drop the slot.
pub async fn drop_subscription(db: &Db, name: &str) -> Result<SubscriptionDrop, PgError> {
    if super::catalog::subscription(db, name).await?.is_none() {
        return Ok(SubscriptionDrop::Absent);
    }
    db.batch(
        "limit the drop's wait for the publisher",
        &format!("SET statement_timeout = {}", DROP_TIMEOUT.as_millis()),
    )
    .await?;
    let dropped = db
        .batch(
            "drop the subscription",
            &format!("DROP SUBSCRIPTION {}", ident(name)),
        )
        .await;
    db.batch("reset statement_timeout", "RESET statement_timeout")
        .await?;
    match dropped {
        Ok(()) => Ok(SubscriptionDrop::Dropped),
        Err(e) => {
            tracing::warn!(error = %e, "dropping the subscription with its slot failed; detaching it");
            detach_subscription(db, name).await?;
            Ok(SubscriptionDrop::DroppedSlotLeft)
        }
    }
}

/// Drops subscription `name` on this (subscriber) server without touching its slot on the
/// publisher, which the caller audits and drops. The subscription must be disabled.
pub async fn detach_subscription(db: &Db, name: &str) -> Result<(), PgError> {
    if super::catalog::subscription(db, name).await?.is_none() {
        return Ok(());
    }
    let name = ident(name);
    for (context, sql) in [
        (
            "disable the subscription",
            format!("ALTER SUBSCRIPTION {name} DISABLE"),
        ),
        (
            "detach the subscription from its slot",
            format!("ALTER SUBSCRIPTION {name} SET (slot_name = NONE)"),
        ),
        ("drop the subscription", format!("DROP SUBSCRIPTION {name}")),
    ] {
        db.batch(context, &sql).await?;
    }
    Ok(())
}

/// Drops replication slot `slot` if it exists, ending the walsender that holds it first.
/// Returns whether a slot was dropped.
pub async fn drop_slot(db: &Db, slot: &str) -> Result<bool, PgError> {
    for _ in 0..50 {
        let Some(row) = db
            .query_opt(
                "look up the slot",
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
        else {
            return Ok(false);
        };
        match row.get::<_, Option<i32>>(0) {
            Some(pid) => {
                db.execute(
                    "end the walsender holding the slot",
                    "SELECT pg_terminate_backend($1)",
                    &[&pid],
                )
                .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                db.execute(
                    "drop the slot",
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = $1 AND NOT active",
                    &[&slot],
                )
                .await?;
            }
        }
    }
    Err(PgError::Refused(format!(
        "{}: slot `{slot}` stays in use; find who streams from it in pg_stat_replication",
        db.server()
    )))
}

/// Drops publication `name` if it exists. Returns whether one was dropped.
pub async fn drop_publication(db: &Db, name: &str) -> Result<bool, PgError> {
    let exists = super::catalog::publication_exists(db, name).await?;
    if exists {
        db.batch(
            "drop the publication",
            &format!("DROP PUBLICATION {}", ident(name)),
        )
        .await?;
    }
    Ok(exists)
}

/// What cleanup did, in order, plus what it deliberately left.
pub use crate::engine::Cleaned as CleanupReport;

/// Removes the pair's subscriptions, publications, slots, marker table, and the target's role
/// blocks; source roles fenced by a completed cutover stay blocked (reported in `kept`).
pub async fn cleanup(pair: &Pair) -> Result<CleanupReport, PgError> {
    let (source, target) = pair.connect().await?;
    let n = &pair.names;
    let mut done = Vec::new();
    let mut kept = Vec::new();

    match drop_subscription(&target, &n.subscription).await? {
        SubscriptionDrop::Absent => {}
        SubscriptionDrop::Dropped => done.push(format!(
            "dropped subscription {} on the target and its slot on the source",
            n.subscription
        )),
        SubscriptionDrop::DroppedSlotLeft => done.push(format!(
            "dropped subscription {} on the target (its slot is dropped below)",
            n.subscription
        )),
    }
    match drop_subscription(&source, &n.reverse_subscription).await? {
        SubscriptionDrop::Absent => {}
        _ => done.push(format!(
            "dropped reverse subscription {} on the source",
            n.reverse_subscription
        )),
    }
    if drop_slot(&source, n.slot()).await? {
        done.push(format!("dropped slot {} on the source", n.slot()));
    }
    if drop_slot(&target, n.reverse_slot()).await? {
        done.push(format!("dropped slot {} on the target", n.reverse_slot()));
    }
    if drop_publication(&source, &n.publication).await? {
        done.push(format!(
            "dropped publication {} on the source",
            n.publication
        ));
    }
    if drop_publication(&target, &n.reverse_publication).await? {
        done.push(format!(
            "dropped publication {} on the target",
            n.reverse_publication
        ));
    }

    for (side, db) in [("source", &source), ("target", &target)] {
        let unblocked = fence::unblock(db, &n.pair).await?;
        if !unblocked.is_empty() {
            done.push(format!(
                "gave back what the fence took on the {side}: {}",
                unblocked.join(", ")
            ));
        }
        let still = fence::blocked_described(db, &n.pair).await?;
        if !still.is_empty() {
            kept.push(format!(
                "app roles stay blocked on the {side} ({}): the cutover completed, and the old \
                 primary must not take writes; ALTER ROLE ... LOGIN (or GRANT CONNECT ON \
                 DATABASE ...) there if you mean to",
                still.join(", ")
            ));
        }
        match drop_own_objects(db).await? {
            Dropped::Nothing => {}
            Dropped::Schema => done.push(format!("dropped schema cutover on the {side}")),
            Dropped::MarkerTable => done.push(format!(
                "dropped the marker table on the {side} (schema cutover keeps the fence record)"
            )),
        }
    }
    Ok(CleanupReport {
        pair: pair.plan.name.clone(),
        done,
        kept,
    })
}

/// What [`drop_own_objects`] removed.
enum Dropped {
    Nothing,
    Schema,
    MarkerTable,
}

/// Drops the whole `cutover` schema, or only the marker table while role records remain.
async fn drop_own_objects(db: &Db) -> Result<Dropped, PgError> {
    let schema_exists = db
        .query_opt(
            "look up cutover's schema",
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&SCHEMA],
        )
        .await?
        .is_some();
    if !schema_exists {
        return Ok(Dropped::Nothing);
    }
    let records = super::catalog::relation_exists(db, SCHEMA, ROLE_TABLE).await?
        && db
            .query_one(
                "count role records",
                &format!("SELECT count(*) FROM {}", qualified(SCHEMA, ROLE_TABLE)),
                &[],
            )
            .await?
            .get::<_, i64>(0)
            > 0;
    if !records {
        // Only the lease's holder record (a command's own bookkeeping): not worth a word.
        let own_only = db
            .query_one(
                "look into cutover's schema",
                "SELECT NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                    WHERE n.nspname = $1 AND c.relname <> $2 AND c.relkind IN ('r', 'p', 'v', 'm'))",
                &[&SCHEMA, &super::lease::LEASE_TABLE],
            )
            .await?
            .get::<_, bool>(0);
        db.batch(
            "drop cutover's schema",
            &format!("DROP SCHEMA {} CASCADE", ident(SCHEMA)),
        )
        .await?;
        return Ok(if own_only {
            Dropped::Nothing
        } else {
            Dropped::Schema
        });
    }
    if !super::catalog::relation_exists(db, SCHEMA, MARKER_TABLE).await? {
        return Ok(Dropped::Nothing);
    }
    db.batch(
        "drop the marker table",
        &format!("DROP TABLE {}", qualified(SCHEMA, MARKER_TABLE)),
    )
    .await?;
    Ok(Dropped::MarkerTable)
}
