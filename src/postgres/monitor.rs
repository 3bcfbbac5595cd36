//! Replication cutover did not set up, read as postgres_exporter reads it: every slot of a
//! server (logical or physical) and every walsender, for the daemon's `[[watch]]` entries.
//! Read-only; one connection the daemon keeps.

use super::{Db, PgError};
use crate::engine::ExporterSample;

/// One slot's samples: its lag in bytes (when the server can tell) and whether it is active.
pub fn slot_samples(
    slot: &str,
    database: &str,
    lag_bytes: Option<i64>,
    active: bool,
) -> Vec<ExporterSample> {
    let labels = vec![
        ("slot_name", slot.to_owned()),
        ("database", database.to_owned()),
    ];
    let mut out = Vec::new();
    if let Some(lag) = lag_bytes {
        out.push(ExporterSample {
            name: "pg_replication_slots_pg_wal_lsn_diff",
            help: "Replication lag in bytes: the server's WAL position minus the slot's confirmed (or restart) position (as postgres_exporter)",
            labels: labels.clone(),
            value: lag as f64,
        });
    }
    out.push(ExporterSample {
        name: "pg_replication_slots_active",
        help: "Flag indicating if the slot is active (as postgres_exporter)",
        labels,
        value: if active { 1.0 } else { 0.0 },
    });
    out
}

fn sample(
    name: &'static str,
    help: &'static str,
    labels: &[(&'static str, String)],
    value: f64,
) -> ExporterSample {
    ExporterSample {
        name,
        help,
        labels: labels.to_vec(),
        value,
    }
}

/// The server's slots, walsenders, standby state and (in the entry's database) logical
/// subscriptions as exporter samples (`pg_up` is the caller's). Slots come under both of
/// postgres_exporter's naming generations: `pg_replication_slots_*` (0.20.0 on) and
/// `pg_replication_slot_slot_*` (before).
pub async fn samples(db: &Db) -> Result<Vec<ExporterSample>, PgError> {
    let mut out = Vec::new();
    // On a standby the WAL position is the replayed one; a slot's lag is measured from it.
    let slots = db
        .query(
            "read the replication slots",
            "WITH here AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn)
             SELECT slot_name::text, coalesce(database::text, ''), active,
                    (here.lsn - coalesce(confirmed_flush_lsn, restart_lsn))::bigint,
                    slot_type::text, (here.lsn - '0/0')::float8,
                    (coalesce(confirmed_flush_lsn, '0/0') - '0/0')::float8,
                    safe_wal_size::float8, coalesce(wal_status::text, '')
               FROM pg_replication_slots, here ORDER BY slot_name",
            &[],
        )
        .await?;
    for row in slots {
        let (name, active) = (row.get::<_, String>(0), row.get::<_, bool>(2));
        out.extend(slot_samples(
            &name,
            &row.get::<_, String>(1),
            row.get::<_, Option<i64>>(3),
            active,
        ));
        let labels = [("slot_name", name), ("slot_type", row.get::<_, String>(4))];
        if let Some(lsn) = row.get::<_, Option<f64>>(5) {
            out.push(sample(
                "pg_replication_slot_slot_current_wal_lsn",
                "current wal lsn value (as postgres_exporter before 0.20.0)",
                &labels,
                lsn,
            ));
        }
        if active {
            out.push(sample(
                "pg_replication_slot_slot_confirmed_flush_lsn",
                "last lsn confirmed flushed to the replication slot (as postgres_exporter before 0.20.0)",
                &labels,
                row.get::<_, Option<f64>>(6).unwrap_or(0.0),
            ));
        }
        out.push(sample(
            "pg_replication_slot_slot_is_active",
            "whether the replication slot is active or not (as postgres_exporter before 0.20.0)",
            &labels,
            if active { 1.0 } else { 0.0 },
        ));
        if let Some(safe) = row.get::<_, Option<f64>>(7) {
            out.push(sample(
                "pg_replication_slot_safe_wal_size_bytes",
                "number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost (as postgres_exporter)",
                &labels,
                safe,
            ));
        }
        let status = row.get::<_, String>(8);
        if !status.is_empty() {
            let mut with_status = labels.to_vec();
            with_status.push(("wal_status", status));
            out.push(sample(
                "pg_replication_slot_wal_status",
                "availability of WAL files claimed by this slot (as postgres_exporter)",
                &with_status,
                1.0,
            ));
        }
    }
    let senders = db
        .query(
            "read the walsenders",
            "WITH here AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn)
             SELECT coalesce(r.application_name, ''), coalesce(host(r.client_addr), ''),
                    coalesce(r.state, ''), coalesce(s.slot_name::text, ''),
                    (here.lsn - r.replay_lsn)::bigint, (here.lsn - '0/0')::float8
               FROM pg_stat_replication r
               CROSS JOIN here
               LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
              ORDER BY r.pid",
            &[],
        )
        .await?;
    for row in senders {
        let labels = [
            ("application_name", row.get::<_, String>(0)),
            ("client_addr", row.get::<_, String>(1)),
            ("state", row.get::<_, String>(2)),
            ("slot_name", row.get::<_, String>(3)),
        ];
        if let Some(lag) = row.get::<_, Option<i64>>(4) {
            out.push(sample(
                "pg_stat_replication_pg_wal_lsn_diff",
                "Lag in bytes between the server's WAL position and what the standby or subscriber replayed (as postgres_exporter)",
                &labels,
                lag as f64,
            ));
        }
        if let Some(lsn) = row.get::<_, Option<f64>>(5) {
            out.push(sample(
                "pg_stat_replication_pg_current_wal_lsn_bytes",
                "WAL position in bytes (as postgres_exporter)",
                &labels,
                lsn,
            ));
        }
    }
    out.extend(standby(db).await?);
    out.extend(subscriptions(db).await?);
    Ok(out)
}

/// `pg_replication_is_replica` and `pg_replication_lag_seconds`, as postgres_exporter names
/// them. The lag differs on purpose: postgres_exporter gives the age of the last replayed
/// transaction, which grows on an idle primary although nothing is outstanding; here it is
/// that age only while received WAL waits to be replayed, else 0.
async fn standby(db: &Db) -> Result<Vec<ExporterSample>, PgError> {
    let row = db
        .query_one(
            "read the standby state",
            "SELECT pg_is_in_recovery(),
                    CASE WHEN NOT pg_is_in_recovery() THEN 0
                         WHEN pg_last_wal_receive_lsn() IS NOT NULL
                              AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
                         ELSE GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()))::float8
                    END",
            &[],
        )
        .await?;
    let replica = row.get::<_, bool>(0);
    let mut out = vec![sample(
        "pg_replication_is_replica",
        "Indicates if the server is a replica (as postgres_exporter)",
        &[],
        if replica { 1.0 } else { 0.0 },
    )];
    if let Some(lag) = row.get::<_, Option<f64>>(1) {
        out.push(sample(
            "pg_replication_lag_seconds",
            "Replication lag behind the primary in seconds: the age of the last replayed transaction while received WAL waits to be replayed, else 0",
            &[],
            lag,
        ));
    }
    Ok(out)
}

/// The subscriber side, which no exporter offers: per subscription of the entry's database,
/// whether its apply worker runs, WAL received but not yet reported applied, the age of the
/// last message from the publisher, tables whose initial copy is not done, and the error
/// counters. A subscription whose worker is not running exports no byte lag (never a
/// reassuring 0).
async fn subscriptions(db: &Db) -> Result<Vec<ExporterSample>, PgError> {
    let rows = db
        .query(
            "read the subscriptions",
            "SELECT s.subname::text, st.pid IS NOT NULL,
                    (st.received_lsn - st.latest_end_lsn)::float8,
                    EXTRACT(EPOCH FROM now() - st.last_msg_receipt_time)::float8,
                    (SELECT count(*) FROM pg_subscription_rel r
                      WHERE r.srsubid = s.oid AND r.srsubstate <> 'r')::float8,
                    coalesce(ss.apply_error_count, 0)::float8, coalesce(ss.sync_error_count, 0)::float8
               FROM pg_subscription s
               LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
               LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid
              WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              ORDER BY s.subname",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let labels = [("subname", row.get::<_, String>(0))];
        let running = row.get::<_, bool>(1);
        out.push(sample(
            "pg_stat_subscription_worker_running",
            "Whether the subscription's apply worker runs (cutover; no exporter has it)",
            &labels,
            if running { 1.0 } else { 0.0 },
        ));
        if running {
            if let Some(bytes) = row.get::<_, Option<f64>>(2) {
                out.push(sample(
                    "pg_stat_subscription_received_unapplied_bytes",
                    "WAL received from the publisher and not yet reported applied, in bytes (cutover)",
                    &labels,
                    bytes.max(0.0),
                ));
            }
            if let Some(age) = row.get::<_, Option<f64>>(3) {
                out.push(sample(
                    "pg_stat_subscription_last_msg_age_seconds",
                    "Seconds since the last message from the publisher (cutover)",
                    &labels,
                    age.max(0.0),
                ));
            }
        }
        for (name, help, column) in [
            (
                "pg_stat_subscription_tables_not_ready",
                "Tables of the subscription whose initial copy is not done (cutover)",
                4,
            ),
            (
                "pg_stat_subscription_apply_error_count",
                "Errors while applying changes (pg_stat_subscription_stats, cutover)",
                5,
            ),
            (
                "pg_stat_subscription_sync_error_count",
                "Errors during the initial table copies (pg_stat_subscription_stats, cutover)",
                6,
            ),
        ] {
            out.push(sample(name, help, &labels, row.get::<_, f64>(column)));
        }
    }
    Ok(out)
}
