//! The proof, under a fence by account, that the old primary took no write to the moved
//! databases after the fence.
//!
//! With `read_only` on, the old primary's own position not moving proves it. Fenced by account
//! (`neighbours = "fence-accounts"`), the server keeps taking its other databases' writes, so
//! its position moves; what must not appear after the fence position is an event that touches
//! a moved database: a row event's table map (`db.table`) or a statement run with one of them
//! as the default database. Cutover's own statements there are kept out of the binlog.

use std::collections::BTreeMap;

use super::{Db, MyError};

/// `file:position` of the server's binary log now.
pub async fn binlog_position(db: &mut Db) -> Result<(String, u64), MyError> {
    let rows = db
        .rows_by_name("read the binlog position", db.dialect.source_status())
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    match (row.text("File"), row.number("Position")) {
        (Some(file), Some(pos)) => Ok((file, pos)),
        _ => Err(MyError::Refused(format!(
            "{}: binary log position unavailable (is log_bin on?)",
            db.label
        ))),
    }
}

/// The moved database an event touches, from `SHOW BINLOG EVENTS`' type and info.
pub fn touches(event_type: &str, info: &str, databases: &[String]) -> Option<String> {
    match event_type {
        // `table_id: 32 (shop.t)`
        "Table_map" => {
            let inside = info.rsplit_once('(')?.1.strip_suffix(')')?;
            let (db, _) = inside.split_once('.')?;
            databases.iter().any(|d| d == db).then(|| inside.to_owned())
        }
        // `use `shop`; ALTER TABLE ...`
        "Query" => {
            let rest = info.strip_prefix("use `")?;
            let (db, _) = rest.split_once("`;")?;
            let db = db.replace("``", "`");
            databases.contains(&db).then(|| format!("{db} (statement)"))
        }
        _ => None,
    }
}

/// Events after `from` in the binary log of `db` that touch `databases`, counted per table
/// (or `db (statement)`).
pub async fn writes_since(
    db: &mut Db,
    from: &(String, u64),
    databases: &[String],
) -> Result<BTreeMap<String, u64>, MyError> {
    let logs = db
        .rows_by_name("list the binary logs", "SHOW BINARY LOGS")
        .await?;
    let files: Vec<String> = logs
        .iter()
        .filter_map(|r| r.text("Log_name"))
        .skip_while(|f| *f != from.0)
        .collect();
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let sql = if i == 0 {
            format!(
                "SHOW BINLOG EVENTS IN {} FROM {}",
                super::dialect::literal(file),
                from.1
            )
        } else {
            format!("SHOW BINLOG EVENTS IN {}", super::dialect::literal(file))
        };
        for row in db.rows_by_name("read the binlog", &sql).await? {
            let (Some(kind), Some(info)) = (row.text("Event_type"), row.text("Info")) else {
                continue;
            };
            if let Some(what) = touches(&kind, &info, databases) {
                *found.entry(what).or_default() += 1;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_moved_databases_are_recognised() {
        let dbs = vec!["shop".to_owned()];
        assert_eq!(
            touches("Table_map", "table_id: 32 (shop.orders)", &dbs).as_deref(),
            Some("shop.orders")
        );
        assert_eq!(
            touches("Table_map", "table_id: 33 (blog.posts)", &dbs),
            None
        );
        assert_eq!(
            touches("Query", "use `shop`; ALTER TABLE t ADD c int", &dbs).as_deref(),
            Some("shop (statement)")
        );
        assert_eq!(touches("Query", "use `blog`; DELETE FROM t", &dbs), None);
        assert_eq!(touches("Query", "BEGIN", &dbs), None);
        assert_eq!(touches("Gtid", "BEGIN GTID 0-1-7", &dbs), None);
    }
}
