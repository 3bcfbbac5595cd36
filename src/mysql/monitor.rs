//! Replication cutover did not set up, read as mysqld_exporter reads it: every replica
//! channel (MariaDB's `SHOW ALL SLAVES STATUS`, MySQL's `SHOW REPLICA STATUS`), for the
//! daemon's `[[watch]]` entries. Read-only; one connection the daemon keeps.

use super::dialect::Flavour;
use super::{Db, MyError};
use crate::engine::ExporterSample;

/// Every channel's threads and delay as exporter samples (`mysql_up` is the caller's).
pub async fn samples(db: &mut Db) -> Result<Vec<ExporterSample>, MyError> {
    let sql = if db.flavour == Flavour::Mariadb {
        "SHOW ALL SLAVES STATUS"
    } else {
        db.dialect.replica_status()
    };
    let rows = db.rows_by_name("read every replica channel", sql).await?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(channel_samples(&r));
    }
    Ok(out)
}

/// One `SHOW ... STATUS` row as mysqld_exporter's `mysql_slave_status_*` samples.
pub fn channel_samples(r: &super::db::NamedRow) -> Vec<ExporterSample> {
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
            name: "mysql_slave_status_seconds_behind_master",
            help: "Generic metric from SHOW SLAVE STATUS: Seconds_Behind_Master (as mysqld_exporter)",
            labels,
            value: s as f64,
        });
    }
    out
}
