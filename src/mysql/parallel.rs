//! Parallel apply on the target while it is a replica.
//!
//! A busy source commits on many connections at once; a replica applying one transaction
//! after another falls behind it for good (MariaDB 10.11 under four saturating writers
//! committed ~3,500 transactions/s while its single applier managed ~2,450/s), and then no
//! window can ever open. Several applier threads that keep the source's commit order close
//! that gap: the target's changes stay in the source's order, so exact catch-up to one
//! position still means "everything committed before the fence".
//!
//! The settings are the target's own server variables, so `start` remembers the values it
//! found (on the target, in cutover's local database, outside the binlog) before it changes
//! them, and the first thing after the promotion puts them back; cleanup does the same for a
//! migration that is abandoned. A value already recorded is never overwritten, so starting
//! again keeps the operator's original.

use super::dialect::{Dialect, Version, literal};
use super::writers::LOCK_DB;
use super::{Db, MyError};

/// The table of remembered settings (in [`LOCK_DB`], never replicated).
const TABLE: &str = "replica_setting";

fn table() -> String {
    format!("`{LOCK_DB}`.`{TABLE}`")
}

/// The variables that make `workers` appliers keep the source's commit order, in the order
/// they must be set (the worker count last: MySQL refuses commit order without its
/// prerequisites). Values are SQL literals.
pub fn settings(dialect: Dialect, version: Version, workers: u32) -> Vec<(&'static str, String)> {
    match dialect {
        // Optimistic mode applies transactions in parallel and commits them in binlog order; a
        // conflict rolls the later one back and retries it.
        Dialect::Mariadb => vec![
            ("slave_parallel_mode", "'optimistic'".into()),
            ("slave_parallel_threads", workers.to_string()),
        ],
        Dialect::Mysql84 => vec![
            ("replica_preserve_commit_order", "ON".into()),
            ("replica_parallel_workers", workers.to_string()),
        ],
        Dialect::Mysql80 if version >= Version::new(8, 0, 26) => vec![
            ("replica_parallel_type", "'LOGICAL_CLOCK'".into()),
            ("replica_preserve_commit_order", "ON".into()),
            ("replica_parallel_workers", workers.to_string()),
        ],
        Dialect::Mysql80 | Dialect::Mysql57 => vec![
            ("slave_parallel_type", "'LOGICAL_CLOCK'".into()),
            ("slave_preserve_commit_order", "ON".into()),
            ("slave_parallel_workers", workers.to_string()),
        ],
    }
}

/// A value read back from `@@GLOBAL` as a literal that sets it again.
fn as_literal(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
        value.to_owned()
    } else {
        literal(value)
    }
}

/// Applied settings, as `name = value` words.
pub type Applied = Vec<String>;

/// On `target`, whose replica threads are stopped: remembers each setting's current value
/// (unless one is remembered already) and sets `workers` parallel appliers. `workers = 0`
/// changes nothing.
pub async fn enable(target: &mut Db, pair: &str, workers: u32) -> Result<Applied, MyError> {
    if workers == 0 {
        return Ok(Vec::new());
    }
    target
        .run(
            "keep cutover's records out of the binlog",
            "SET SESSION sql_log_bin = 0",
        )
        .await?;
    target
        .run(
            "create cutover's local database",
            &format!("CREATE DATABASE IF NOT EXISTS `{LOCK_DB}`"),
        )
        .await?;
    target
        .run(
            "create the replica settings record",
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (pair VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL,
                   value VARCHAR(255) NOT NULL, PRIMARY KEY (pair, name)) ENGINE=InnoDB",
                table()
            ),
        )
        .await?;
    let mut applied = Vec::new();
    for (name, value) in settings(target.dialect, target.version, workers) {
        let Some(before) = target.variable(name).await? else {
            // This server does not have the variable: nothing to set or restore.
            continue;
        };
        target
            .exec(
                "remember a replica setting",
                &format!(
                    "INSERT IGNORE INTO {} (pair, name, value) VALUES (?, ?, ?)",
                    table()
                ),
                (pair, name, before),
            )
            .await?;
        target
            .run(
                "set parallel apply",
                &format!("SET GLOBAL {name} = {value}"),
            )
            .await?;
        applied.push(format!("{name} = {value}"));
    }
    Ok(applied)
}

/// Puts back every setting remembered for `pair` on `db` (its replica threads stopped or
/// gone) and forgets them. Returns them as `name = value`.
pub async fn restore(db: &mut Db, pair: &str) -> Result<Applied, MyError> {
    let exists: Option<(String,)> = db
        .exec_opt(
            "look for the replica settings record",
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (LOCK_DB, TABLE),
        )
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String)> = db
        .exec_all(
            "read the replica settings to restore",
            &format!("SELECT name, value FROM {} WHERE pair = ?", table()),
            (pair,),
        )
        .await?;
    // Set in reverse: the worker count first, so the prerequisites may change after it.
    let known: Vec<&str> = settings(db.dialect, db.version, 1)
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut ordered: Vec<&(String, String)> = rows.iter().collect();
    ordered.sort_by_key(|(n, _)| std::cmp::Reverse(known.iter().position(|k| k == n)));
    db.run(
        "keep cutover's records out of the binlog",
        "SET SESSION sql_log_bin = 0",
    )
    .await?;
    let mut restored = Vec::new();
    for (name, value) in ordered {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = as_literal(value);
        db.run(
            "restore a replica setting",
            &format!("SET GLOBAL {name} = {value}"),
        )
        .await?;
        restored.push(format!("{name} = {value}"));
    }
    db.exec(
        "forget the restored replica settings",
        &format!("DELETE FROM {} WHERE pair = ?", table()),
        (pair,),
    )
    .await?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_keeps_commit_order_and_sets_the_worker_count_last() {
        for (dialect, version) in [
            (Dialect::Mariadb, Version::new(10, 11, 6)),
            (Dialect::Mysql84, Version::new(8, 4, 3)),
            (Dialect::Mysql80, Version::new(8, 0, 36)),
            (Dialect::Mysql80, Version::new(8, 0, 23)),
            (Dialect::Mysql57, Version::new(5, 7, 44)),
        ] {
            let s = settings(dialect, version, 4);
            let (last, value) = s.last().unwrap();
            assert!(
                last.ends_with("_workers") || last.ends_with("_threads"),
                "{s:?}"
            );
            assert_eq!(value, "4");
            assert!(
                s.iter()
                    .any(|(n, v)| n.ends_with("preserve_commit_order") && v == "ON"
                        || *n == "slave_parallel_mode" && v == "'optimistic'"),
                "{dialect:?}: {s:?}"
            );
        }
    }

    #[test]
    fn read_back_values_become_literals() {
        assert_eq!(as_literal("0"), "0");
        assert_eq!(as_literal("conservative"), "'conservative'");
        assert_eq!(as_literal("O'Brien"), literal("O'Brien"));
    }
}
