//! The heartbeat: a pt-heartbeat compatible table (`cutover.heartbeat`) on the source. Lag is
//! measured, not estimated: write a beat on the source, and time how long until the target has
//! applied it.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Db, HEARTBEAT_DB, MyError};

/// The table, in pt-heartbeat's layout (`ts` as an ISO timestamp with microseconds, UTC).
pub fn create_statements() -> [String; 2] {
    [
        format!("CREATE DATABASE IF NOT EXISTS `{HEARTBEAT_DB}`"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{HEARTBEAT_DB}`.`heartbeat` (
               ts varchar(26) NOT NULL,
               server_id int unsigned NOT NULL PRIMARY KEY,
               file varchar(255) DEFAULT NULL,
               position bigint unsigned DEFAULT NULL,
               relay_master_log_file varchar(255) DEFAULT NULL,
               exec_master_log_pos bigint unsigned DEFAULT NULL
             ) ENGINE=InnoDB"
        ),
    ]
}

/// Creates the table on the source (replicated like any other write).
pub async fn ensure(source: &mut Db) -> Result<(), MyError> {
    for sql in create_statements() {
        source.run("create the heartbeat table", &sql).await?;
    }
    Ok(())
}

/// Writes a beat on the source; returns its timestamp.
pub async fn beat(source: &mut Db) -> Result<String, MyError> {
    let ts: String = source
        .query_one(
            "take the heartbeat time",
            "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f')",
        )
        .await?;
    source
        .exec(
            "write the heartbeat",
            &format!(
                "REPLACE INTO `{HEARTBEAT_DB}`.`heartbeat` (ts, server_id) VALUES (?, @@server_id)"
            ),
            (ts.clone(),),
        )
        .await?;
    Ok(ts)
}

/// Measured replication lag.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    /// How long the beat took to be applied on the target; `None` when it was not within the
    /// time allowed.
    #[serde(with = "opt_ms")]
    pub replicated_after: Option<Duration>,
    /// How long we waited.
    #[serde(with = "opt_ms")]
    pub waited: Option<Duration>,
}

/// Writes a beat and waits (up to `timeout`) until the target has it.
pub async fn measure(source: &mut Db, target: &mut Db, timeout: Duration) -> Result<Lag, MyError> {
    let server_id: u32 = source
        .query_one("read server_id", "SELECT @@server_id")
        .await?;
    let ts = beat(source).await?;
    let started = Instant::now();
    let sql = format!("SELECT ts FROM `{HEARTBEAT_DB}`.`heartbeat` WHERE server_id = ?");
    loop {
        let seen: Option<(String,)> = match target
            .exec_opt("read the heartbeat", &sql, (server_id,))
            .await
        {
            Ok(row) => row,
            // The table may not have arrived yet right after start.
            Err(MyError::Sql { message, .. }) if message.contains("1146") => None,
            Err(e) => return Err(e),
        };
        if seen.is_some_and(|(t,)| t >= ts) {
            let after = started.elapsed();
            return Ok(Lag {
                replicated_after: Some(after),
                waited: Some(after),
            });
        }
        if started.elapsed() >= timeout {
            return Ok(Lag {
                replicated_after: None,
                waited: Some(started.elapsed()),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

mod opt_ms {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
            None => s.serialize_none(),
        }
    }
}
