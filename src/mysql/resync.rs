//! `mysql resync --table db.t`: copies some tables of a running pair again, without copying
//! the pair again. The repair for a table whose rows were applied under another definition
//! (a DDL the replica did not get): aligning the target's schema by hand would keep rows that
//! lost a column's values, a fresh copy of the table does not.
//!
//! The shape, per database: the replica is stopped and told to ignore the tables; a consistent
//! copy of them is dumped with its binlog position P; the replica's applier runs until exactly
//! P (the other tables catch up, the copied ones are untouched); the copy replaces the tables
//! on the target outside its binlog; the ignore filter is put back as it was and the replica
//! started. Every event after P applies to the copy, nothing before P does twice.
//!
//! Interrupted anywhere, the replica is left stopped (the gate refuses a stopped replica) and
//! running the same command again completes the repair: it starts over from a new copy.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::dialect::{Dialect, one_table_pattern};
use super::snapshot::{self, Coordinates};
use super::{Db, MyError, Pair};

/// How long the applier gets to reach the copy's position (a lagging replica catches up here).
const UNTIL_TIMEOUT: Duration = Duration::from_secs(600);

/// One database's tables copied again.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    /// `db.table` names.
    pub tables: Vec<String>,
    /// Where in the source's binlog the copy was taken (`file:position`).
    pub position: String,
    /// Bytes of the dump.
    pub bytes: u64,
    /// Seconds from stopping the replica to starting it again.
    pub seconds: f64,
}

/// What `resync` did.
#[derive(Debug, Clone, Serialize)]
pub struct Resynced {
    /// Pair name.
    pub pair: String,
    /// Per database.
    pub copied: Vec<Copied>,
}

/// The tables asked for, grouped by database, or every problem with them at once.
pub fn group(pair: &Pair, tables: &[String]) -> Result<Vec<(String, Vec<String>)>, MyError> {
    let mut problems = Vec::new();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    if tables.is_empty() {
        problems.push("name at least one table (--table db.table)".to_owned());
    }
    for name in tables {
        let Some((database, table)) = name.split_once('.') else {
            problems.push(format!(
                "{name:?}: name the table with its database (db.table)"
            ));
            continue;
        };
        if !pair.plan.databases.iter().any(|d| d == database) {
            problems.push(format!(
                "{name:?}: database {database:?} is not one of the pair's ({})",
                pair.plan.databases.join(", ")
            ));
            continue;
        }
        // The replica's filters are comma-separated lists.
        if table.is_empty() || table.contains(',') || database.contains(',') {
            problems.push(format!(
                "{name:?}: a table name with a comma cannot be filtered; copy the pair again instead"
            ));
            continue;
        }
        match groups.iter_mut().find(|(d, _)| d == database) {
            Some((_, list)) if !list.iter().any(|t| t == table) => list.push(table.to_owned()),
            Some(_) => {}
            None => groups.push((database.to_owned(), vec![table.to_owned()])),
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(MyError::Refused(format!(
            "{}: nothing was changed:\n  {}",
            pair.plan.name,
            problems.join("\n  ")
        )))
    }
}

/// The replica's ignore filter now, as a list.
async fn ignore_filter(target: &mut Db) -> Result<Vec<String>, MyError> {
    let sql = target.dialect.read_ignore_filter();
    let rule: Option<Option<String>> = target
        .exec_opt("read the replica's ignore filter", sql, ())
        .await?;
    Ok(rule
        .flatten()
        .map(|r| {
            r.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// Where the applier is, in the source's binlog: (file, position), and whether it runs.
async fn applier(target: &mut Db) -> Result<(String, u64, bool, Option<String>), MyError> {
    let rows = target
        .rows_by_name("read replica status", target.dialect.replica_status())
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    Ok((
        row.text("Relay_Source_Log_File").unwrap_or_default(),
        row.number("Exec_Source_Log_Pos").unwrap_or_default(),
        row.text("Replica_SQL_Running").as_deref() == Some("Yes"),
        row.text("Last_SQL_Error").filter(|e| !e.is_empty()),
    ))
}

/// Where the applier ended after [`run_until`].
enum Until {
    /// Stopped exactly at the copy's position.
    Reached,
    /// Went past it (the copied tables may miss the events in between): copy again.
    Overshot(String),
}

/// Runs the applier until exactly `at`. A replica whose last events before `at` were filtered
/// may sit at `at` without stopping: it is stopped there, and a position past `at` reported.
async fn run_until(target: &mut Db, at: &Coordinates) -> Result<Until, MyError> {
    let (file, position) = (
        at.file.clone().unwrap_or_default(),
        at.position.unwrap_or_default(),
    );
    let d = target.dialect;
    target
        .run(
            "run the replica up to the copy's position",
            &d.start_replica_until(&file, position),
        )
        .await?;
    let deadline = Instant::now() + UNTIL_TIMEOUT;
    let mut at_since: Option<Instant> = None;
    loop {
        let (f, p, running, error) = applier(target).await?;
        if let Some(error) = error {
            return Err(MyError::Refused(format!(
                "{}: the replica's applier stopped before the copy's position {file}:{position}: {error}; the replica is stopped; fix: correct the error, then run the same resync again",
                target.label
            )));
        }
        let here = (f.as_str(), p);
        let goal = (file.as_str(), position);
        if here > goal {
            target
                .run("stop the replica's applier", d.stop_applier())
                .await?;
            return Ok(Until::Overshot(format!("{f}:{p}")));
        }
        if here == goal {
            if !running {
                return Ok(Until::Reached);
            }
            // At the position but still running: nothing after it to stop on yet.
            let since = *at_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(200) {
                target
                    .run("stop the replica's applier", d.stop_applier())
                    .await?;
                let (f, p, _, _) = applier(target).await?;
                return Ok(if (f.as_str(), p) == goal {
                    Until::Reached
                } else {
                    Until::Overshot(format!("{f}:{p}"))
                });
            }
        } else {
            at_since = None;
        }
        if Instant::now() >= deadline {
            return Err(MyError::Timeout {
                what: format!(
                    "{}: the replica's applier reaching {file}:{position} (at {f}:{p}); the replica is stopped",
                    target.label
                ),
                after: UNTIL_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Attempts at one database's copy when the applier goes past the copy's position.
const ATTEMPTS: usize = 3;

/// Copies `tables` (`db.table`) of `pair` again; the dump is spooled in `spool_dir`.
pub async fn resync(pair: &Pair, tables: &[String], spool_dir: &Path) -> Result<Resynced, MyError> {
    let groups = group(pair, tables)?;
    let (mut source, mut target) = pair.connect().await?;
    let configured = target
        .rows_by_name("read replica status", target.dialect.replica_status())
        .await?;
    if configured.is_empty() {
        return Err(MyError::Refused(format!(
            "{}: the target has no replica configuration; nothing was changed; fix: `cutover mysql start` copies every table",
            pair.plan.name
        )));
    }
    let mut missing = Vec::new();
    for (database, names) in &groups {
        let present: Vec<String> = source
            .exec_all(
                "list tables",
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                (database,),
            )
            .await?;
        missing.extend(
            names
                .iter()
                .filter(|n| !present.contains(n))
                .map(|n| format!("{database}.{n}")),
        );
    }
    if !missing.is_empty() {
        return Err(MyError::Refused(format!(
            "{}: no such table on the source: {}; nothing was changed",
            pair.plan.name,
            missing.join(", ")
        )));
    }
    let mut copied = Vec::new();
    for (database, names) in &groups {
        let began = Instant::now();
        let patterns: Vec<String> = names
            .iter()
            .map(|t| one_table_pattern(database, t))
            .collect();
        target
            .run("stop the replica", target.dialect.stop_replica())
            .await?;
        // What was there before, without patterns an interrupted resync of these tables left.
        let before: Vec<String> = ignore_filter(&mut target)
            .await?
            .into_iter()
            .filter(|p| !patterns.contains(p))
            .collect();
        let ignoring: Vec<String> = before.iter().chain(&patterns).cloned().collect();
        let dialect: Dialect = target.dialect;
        target
            .run(
                "ignore the tables being copied",
                &dialect.set_ignore_filter(&ignoring),
            )
            .await?;
        let mut attempt = 0;
        let copy = loop {
            attempt += 1;
            let copy =
                snapshot::dump_tables(&pair.source, &source, database, names, spool_dir).await?;
            // An event after the copy's position, for the applier to stop on.
            super::heartbeat::beat(&mut source).await?;
            match run_until(&mut target, &copy.coordinates).await? {
                Until::Reached => break copy,
                Until::Overshot(at) if attempt < ATTEMPTS => {
                    tracing::info!(pair = %pair.plan.name, %at, "the applier went past the copy's position; copying again");
                    target
                        .run("stop the replica", target.dialect.stop_replica())
                        .await?;
                }
                Until::Overshot(at) => {
                    return Err(MyError::Refused(format!(
                        "{}: the replica's applier went past the copy's position ({at}) {ATTEMPTS} times; the replica is stopped and ignores {}; fix: run the same resync again",
                        pair.plan.name,
                        names.join(", ")
                    )));
                }
            }
        };
        snapshot::load_tables(&pair.target, dialect, database, &copy).await?;
        target
            .run(
                "restore the replica's ignore filter",
                &dialect.set_ignore_filter(&before),
            )
            .await?;
        target
            .run("start the replica", dialect.start_replica())
            .await?;
        super::start::wait_running(&mut target, Duration::from_secs(30)).await?;
        let c = &copy.coordinates;
        copied.push(Copied {
            tables: names.iter().map(|n| format!("{database}.{n}")).collect(),
            position: format!(
                "{}:{}",
                c.file.as_deref().unwrap_or("?"),
                c.position.unwrap_or_default()
            ),
            bytes: copy.bytes,
            seconds: began.elapsed().as_secs_f64(),
        });
    }
    source.close().await;
    target.close().await;
    Ok(Resynced {
        pair: pair.plan.name.clone(),
        copied,
    })
}

/// The database part of a `db.table` wild pattern (up to the first unescaped dot) and the rest.
fn split_pattern(pattern: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in pattern.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '.' if !escaped => return Some((&pattern[..i], &pattern[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

/// A pattern's name with its escapes removed (`my\_app` -> `my_app`).
fn unescape(pattern: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in pattern.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// Entries of the replica's ignore filter that can match a table of `databases` (an
/// interrupted `resync`, or a filter set by hand): the rows of those tables are not
/// replicated. Returned as the `db.table` names `resync` takes.
pub async fn ignored_plan_tables(
    target: &mut Db,
    databases: &[String],
) -> Result<Vec<String>, MyError> {
    Ok(ignore_filter(target)
        .await?
        .into_iter()
        .filter_map(|entry| {
            let (db, table) = split_pattern(&entry)?;
            databases
                .iter()
                .find(|d| super::writers::db_pattern_matches(db, d))
                .map(|d| format!("{d}.{}", unescape(table)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::dialect::one_table_pattern;

    #[test]
    fn ignore_patterns_are_matched_as_the_replica_matches_them() {
        let p = one_table_pattern("my_app", "t_1");
        assert_eq!(split_pattern(&p), Some((r"my\_app", r"t\_1")));
        let like = crate::mysql::writers::db_pattern_matches;
        assert!(like(r"my\_app", "my_app") && !like(r"my\_app", "myXapp"));
        assert!(like("%", "anything") && like("a%", "app") && !like("b%", "app"));
        assert_eq!(unescape(r"t\_1"), "t_1");
        assert_eq!(split_pattern("nodot"), None);
        assert_eq!(split_pattern(r"a\.b.c"), Some((r"a\.b", "c")));
    }
}
