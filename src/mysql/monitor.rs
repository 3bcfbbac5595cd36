//! Replication cutover did not set up, read as mysqld_exporter reads it: every replica
//! channel (MariaDB's `SHOW ALL SLAVES STATUS`, MySQL's `SHOW REPLICA STATUS`), for the
//! daemon's `[[watch]]` entries. Read-only; one connection the daemon keeps.

use super::dialect::Flavour;
use super::{Db, MyError};
use crate::engine::ExporterSample;

/// Every channel's threads and delay as exporter samples (`mysql_up` is the caller's), and,
/// given pt-heartbeat's table (`database`, `table`), its rows as mysqld_exporter's heartbeat
/// collector gives them.
pub async fn samples(
    db: &mut Db,
    heartbeat: Option<&(String, String)>,
) -> Result<Vec<ExporterSample>, MyError> {
    let sql = if db.flavour == Flavour::Mariadb {
        "SHOW ALL SLAVES STATUS"
    } else {
        db.dialect.replica_status()
    };
    // mysqld_exporter names its series after the columns: MySQL's `SHOW REPLICA STATUS`
    // says `Seconds_Behind_Source` (MariaDB keeps `Seconds_Behind_Master` under either name).
    let source_words = db.flavour != Flavour::Mariadb && sql.starts_with("SHOW REPLICA");
    let rows = db.rows_by_name("read every replica channel", sql).await?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(channel_samples(&r, source_words));
    }
    if let Some((database, table)) = heartbeat {
        let rows: Vec<(Option<f64>, Option<f64>, Option<u64>)> = db
            .exec_all(
                "read the heartbeat table",
                &format!(
                    "SELECT UNIX_TIMESTAMP(ts) + 0e0, UNIX_TIMESTAMP(NOW(6)) + 0e0, server_id FROM {}.{}",
                    super::dialect::ident(database),
                    super::dialect::ident(table)
                ),
                (),
            )
            .await?;
        for (stored, now, server_id) in rows {
            let labels = vec![(
                "server_id",
                server_id.map(|i| i.to_string()).unwrap_or_default(),
            )];
            if let Some(stored) = stored {
                out.push(ExporterSample {
                    name: "mysql_heartbeat_stored_timestamp_seconds",
                    help: "Timestamp stored in the heartbeat table (as mysqld_exporter)",
                    labels: labels.clone(),
                    value: stored,
                });
            }
            if let Some(now) = now {
                out.push(ExporterSample {
                    name: "mysql_heartbeat_now_timestamp_seconds",
                    help: "Timestamp of the current server, read beside the heartbeat (as mysqld_exporter)",
                    labels,
                    value: now,
                });
            }
        }
    }
    Ok(out)
}

/// One `SHOW ... STATUS` row as mysqld_exporter's `mysql_slave_status_*` samples;
/// `source_words`: the server speaks `SHOW REPLICA STATUS` (`..._seconds_behind_source`).
pub fn channel_samples(r: &super::db::NamedRow, source_words: bool) -> Vec<ExporterSample> {
    let labels = vec![
        ("channel_name", r.text("Channel_Name").unwrap_or_default()),
        (
            "connection_name",
            r.text("Connection_name").unwrap_or_default(),
        ),
        ("master_host", r.text("Source_Host").unwrap_or_default()),
        ("master_uuid", r.text("Source_UUID").unwrap_or_default()),
    ];
    let yes = |column: &str| {
        if r.text(column).as_deref() == Some("Yes") {
            1.0
        } else {
            0.0
        }
    };
    let mut out = Vec::new();
    for (name, column, help) in [
        (
            "mysql_slave_status_slave_io_running",
            "Replica_IO_Running",
            "Generic metric from SHOW SLAVE STATUS: the IO thread runs (as mysqld_exporter)",
        ),
        (
            "mysql_slave_status_slave_sql_running",
            "Replica_SQL_Running",
            "Generic metric from SHOW SLAVE STATUS: the SQL thread runs (as mysqld_exporter)",
        ),
    ] {
        out.push(ExporterSample {
            name,
            help,
            labels: labels.clone(),
            value: yes(column),
        });
    }
    let running = yes("Replica_IO_Running") == 1.0 && yes("Replica_SQL_Running") == 1.0;
    if let Some(s) = r.number("Seconds_Behind_Source").filter(|_| running) {
        out.push(ExporterSample {
            name: if source_words {
                "mysql_slave_status_seconds_behind_source"
            } else {
                "mysql_slave_status_seconds_behind_master"
            },
            help: "Generic metric from SHOW SLAVE STATUS: Seconds_Behind_Master (as mysqld_exporter)",
            labels,
            value: s as f64,
        });
    }
    out
}
