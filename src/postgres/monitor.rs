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

/// The server's slots and walsenders as exporter samples (`pg_up` is the caller's).
pub async fn samples(db: &Db) -> Result<Vec<ExporterSample>, PgError> {
    let mut out = Vec::new();
    // On a standby the WAL position is the replayed one; a slot's lag is measured from it.
    let slots = db
        .query(
            "read the replication slots",
            "SELECT slot_name::text, coalesce(database::text, ''), active,
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END
                       - coalesce(confirmed_flush_lsn, restart_lsn))::bigint
               FROM pg_replication_slots ORDER BY slot_name",
            &[],
        )
        .await?;
    for row in slots {
        out.extend(slot_samples(
            &row.get::<_, String>(0),
            &row.get::<_, String>(1),
            row.get::<_, Option<i64>>(3),
            row.get::<_, bool>(2),
        ));
    }
    let senders = db
        .query(
            "read the walsenders",
            "SELECT coalesce(r.application_name, ''), coalesce(host(r.client_addr), ''),
                    coalesce(r.state, ''), coalesce(s.slot_name::text, ''),
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END
                       - r.replay_lsn)::bigint
               FROM pg_stat_replication r
               LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
              ORDER BY r.pid",
            &[],
        )
        .await?;
    for row in senders {
        if let Some(lag) = row.get::<_, Option<i64>>(4) {
            out.push(ExporterSample {
                name: "pg_stat_replication_pg_wal_lsn_diff",
                help: "Lag in bytes between the server's WAL position and what the standby or subscriber replayed (as postgres_exporter)",
                labels: vec![
                    ("application_name", row.get::<_, String>(0)),
                    ("client_addr", row.get::<_, String>(1)),
                    ("state", row.get::<_, String>(2)),
                    ("slot_name", row.get::<_, String>(3)),
                ],
                value: lag as f64,
            });
        }
    }
    Ok(out)
}
