//! Schema drift between source and target while binlog replication runs.
//!
//! Row events always follow their table, and so does the table filter cutover sets
//! (`replicate_wild_do_table = 'db.%'`): `ALTER TABLE app.t` replicates whatever the session's
//! default database. A filter can still miss DDL (a replica someone set up with a database
//! filter, a statement that names no table of the plan, DDL run with `sql_log_bin = 0`), and
//! a table's rows then fail or lose the values of a missing column. So the tables and columns
//! of the plan's databases are compared on both servers, shown by status and checked at the
//! gate before the fence.

use std::collections::BTreeMap;

use super::{Db, MyError};

/// A database's base tables.
const LIST_TABLES: &str = "SELECT TABLE_NAME FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'";
/// A database's columns, table by table in order.
const LIST_COLUMNS: &str =
    "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION";

/// Prepares what [`columns`] runs, ahead of a window that will run it.
pub async fn prepare_columns(db: &mut Db) -> Result<(), MyError> {
    db.prepare("list tables", LIST_TABLES).await?;
    db.prepare("list columns", LIST_COLUMNS).await
}

/// `db.table` -> `column type` in column order, for the base tables of `databases`.
///
/// Two single-table reads per database, joined here: MariaDB answers a join of
/// `information_schema.COLUMNS` with `TABLES` by scanning every database's tables (2.5-5 ms
/// with nothing but the system schemas beside one small database), each alone by opening only
/// the named database (0.1-0.4 ms). This runs inside the write window.
pub async fn columns(
    db: &mut Db,
    databases: &[String],
) -> Result<BTreeMap<String, Vec<String>>, MyError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for database in databases {
        let tables: Vec<String> = db.exec_all("list tables", LIST_TABLES, (database,)).await?;
        if tables.is_empty() {
            continue;
        }
        let tables: std::collections::BTreeSet<String> = tables.into_iter().collect();
        let rows: Vec<(String, String, String)> = db
            .exec_all("list columns", LIST_COLUMNS, (database,))
            .await?;
        for (table, column, kind) in rows {
            if tables.contains(&table) {
                out.entry(format!("{database}.{table}"))
                    .or_default()
                    .push(format!("{column} {kind}"));
            }
        }
    }
    Ok(out)
}

/// What the target lacks or has otherwise than the source.
pub fn drift(
    source: &BTreeMap<String, Vec<String>>,
    target: &BTreeMap<String, Vec<String>>,
) -> Drift {
    let mut out = Drift::default();
    for (table, columns) in source {
        let before = out.lines.len();
        match target.get(table) {
            None => out.lines.push(format!(
                "table {table} exists on the source but not on the target"
            )),
            Some(t) => {
                for c in columns.iter().filter(|c| !t.contains(c)) {
                    out.lines.push(format!(
                        "column {table}.{c} is on the source but not on the target (or with another type)"
                    ));
                }
            }
        }
        if out.lines.len() > before {
            out.tables.push(table.clone());
        }
    }
    out
}

/// The drift between both servers: what differs, and the tables it concerns.
#[derive(Debug, Clone, Default)]
pub struct Drift {
    /// One line per difference.
    pub lines: Vec<String>,
    /// `db.table` of every table that differs, in order.
    pub tables: Vec<String>,
}

impl Drift {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The command that copies the drifted tables again (the repair that loses nothing).
    pub fn resync_command(&self, pair: &str) -> String {
        resync_command(pair, &self.tables)
    }
}

/// `cutover mysql resync <plan> --pair P --table a.t ...`
pub fn resync_command(pair: &str, tables: &[String]) -> String {
    let tables: String = tables.iter().map(|t| format!(" --table {t}")).collect();
    format!("cutover mysql resync <plan> --pair {pair}{tables}")
}

/// Reads both servers and returns the drift.
pub async fn drift_between(
    source: &mut Db,
    target: &mut Db,
    databases: &[String],
) -> Result<Drift, MyError> {
    let s = columns(source, databases).await?;
    let t = columns(target, databases).await?;
    Ok(drift(&s, &t))
}

/// The table remembering each table's definition when replication started (on the target,
/// outside the binlog).
fn shape_table() -> String {
    format!("`{}`.`started_shape`", super::writers::LOCK_DB)
}

/// Remembers `shapes` (from [`columns`] on the source at the snapshot) as the definitions
/// replication started with; a table already remembered keeps its first definition.
pub async fn remember(
    target: &mut Db,
    pair: &str,
    shapes: &BTreeMap<String, Vec<String>>,
) -> Result<(), MyError> {
    target
        .run(
            "keep cutover's bookkeeping out of the binlog",
            "SET SESSION sql_log_bin = 0",
        )
        .await?;
    target
        .run(
            "create cutover's local database",
            &format!(
                "CREATE DATABASE IF NOT EXISTS `{}`",
                super::writers::LOCK_DB
            ),
        )
        .await?;
    target
        .run(
            "create the started-shape record",
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (pair VARCHAR(64) NOT NULL, tbl VARCHAR(192) NOT NULL,
                   shape MEDIUMTEXT NOT NULL, PRIMARY KEY (pair, tbl)) ENGINE=InnoDB",
                shape_table()
            ),
        )
        .await?;
    for (table, cols) in shapes {
        target
            .exec(
                "remember a table's definition",
                &format!(
                    "INSERT IGNORE INTO {} (pair, tbl, shape) VALUES (?, ?, ?)",
                    shape_table()
                ),
                (pair, table, cols.join("\n")),
            )
            .await?;
    }
    Ok(())
}

/// The definitions remembered at `start` for `pair`, `table -> shape` (empty when nothing was
/// remembered). Read before the fence: nothing changes them during the window.
pub async fn started_shapes(
    target: &mut Db,
    pair: &str,
) -> Result<BTreeMap<String, String>, MyError> {
    let exists: Option<(String,)> = target
        .exec_opt(
            "look for the started-shape record",
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'started_shape'",
            (super::writers::LOCK_DB,),
        )
        .await?;
    if exists.is_none() {
        return Ok(BTreeMap::new());
    }
    Ok(target
        .exec_all(
            "read the started shapes",
            &format!("SELECT tbl, shape FROM {} WHERE pair = ?", shape_table()),
            (pair,),
        )
        .await?
        .into_iter()
        .collect())
}

/// Tables whose definition on `source` now differs from `then` (from [`started_shapes`]), or
/// that appeared since (none when nothing was remembered).
pub async fn changed_since(
    source: &mut Db,
    databases: &[String],
    then: &BTreeMap<String, String>,
) -> Result<Vec<String>, MyError> {
    if then.is_empty() {
        return Ok(Vec::new());
    }
    Ok(columns(source, databases)
        .await?
        .into_iter()
        .filter(|(table, cols)| then.get(table) != Some(&cols.join("\n")))
        .map(|(table, _)| table)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_missing_tables_and_changed_columns() {
        let source = BTreeMap::from([
            (
                "app.a".to_owned(),
                vec!["id int(11)".to_owned(), "x text".to_owned()],
            ),
            ("app.b".to_owned(), vec!["id int(11)".to_owned()]),
        ]);
        let target = BTreeMap::from([("app.a".to_owned(), vec!["id int(11)".to_owned()])]);
        let d = drift(&source, &target);
        assert_eq!(d.lines.len(), 2, "{d:?}");
        assert!(d.lines[0].contains("app.a.x text") && d.lines[1].contains("table app.b"));
        assert_eq!(d.tables, ["app.a", "app.b"]);
        assert!(drift(&source, &source).is_empty());
    }
}
