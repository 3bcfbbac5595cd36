//! `mysql verify`: per table, row counts and checksums over primary-key chunks, source against
//! target. Run it when the source is quiet (after the cutover, or with the app stopped):
//! rows still in flight show up as differing chunks.

use super::dialect::ident;
use super::{Db, MyError, Pair};

/// Rows per chunk.
pub const CHUNK_ROWS: u64 = 10_000;

use crate::engine::Differing;
pub use crate::engine::{TableVerified as TableCheck, Verified as VerifyReport};

struct Shape {
    columns: Vec<String>,
    key: Vec<String>,
}

async fn shape(db: &mut Db, database: &str, table: &str) -> Result<Shape, MyError> {
    let columns: Vec<String> = db
        .exec_all(
            "list columns",
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    let key: Vec<String> = db
        .exec_all(
            "list primary key columns",
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    Ok(Shape { columns, key })
}

/// Count and order-independent checksum of the rows in `range` (`WHERE` clause or empty).
async fn digest(
    db: &mut Db,
    table: &str,
    shape: &Shape,
    range: &str,
    bounds: Vec<mysql_async::Value>,
) -> Result<(u64, u64), MyError> {
    let fields: Vec<String> = shape
        .columns
        .iter()
        .map(|c| format!("ISNULL({0}), {0}", ident(c)))
        .collect();
    let sql = format!(
        "SELECT COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', {}))), 0) FROM {table} {range}",
        fields.join(", ")
    );
    let row: Option<(u64, u64)> = db.exec_opt("checksum a chunk", &sql, bounds).await?;
    Ok(row.unwrap_or((0, 0)))
}

/// Compares every table of the pair's databases.
pub async fn verify(pair: &Pair, chunk_rows: u64) -> Result<VerifyReport, MyError> {
    let (mut source, mut target) = pair.connect().await?;
    let mut tables = Vec::new();
    for database in &pair.plan.databases {
        let names: Vec<String> = source
            .exec_all(
                "list tables",
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                (database,),
            )
            .await?;
        for name in names {
            tables.push(table(&mut source, &mut target, database, &name, chunk_rows).await?);
        }
    }
    source.close().await;
    target.close().await;
    Ok(VerifyReport {
        pair: pair.plan.name.clone(),
        tables,
        // The dump carried the schema; drift is what status and the gate report.
        differences: Vec::new(),
    })
}

/// Compares one table, chunk by chunk, on `source` and `target` (open connections: inside the
/// window, the fenced source and the caught-up target).
pub async fn table(
    source: &mut Db,
    target: &mut Db,
    database: &str,
    name: &str,
    chunk_rows: u64,
) -> Result<TableCheck, MyError> {
    let s = shape(source, database, name).await?;
    let qualified = format!("{}.{}", ident(database), ident(name));
    let mut check = TableCheck {
        table: format!("{database}.{name}"),
        source_rows: 0,
        target_rows: 0,
        chunks: 0,
        differing: Vec::new(),
        whole_table: s.key.len() != 1,
    };
    let ranges: Vec<(String, Vec<mysql_async::Value>, String)> = if s.key.len() == 1 {
        let key = ident(&s.key[0]);
        // Chunk boundaries from the source: every chunk_rows-th key.
        let bounds: Vec<mysql_async::Value> = source
            .exec_all(
                "find chunk boundaries",
                &format!("SELECT {key} FROM (SELECT {key}, ROW_NUMBER() OVER (ORDER BY {key}) AS n FROM {qualified}) b WHERE MOD(n - 1, ?) = 0 ORDER BY {key}"),
                (chunk_rows,),
            )
            .await?;
        let mut ranges = Vec::new();
        if bounds.is_empty() {
            ranges.push((String::new(), Vec::new(), "all rows".to_owned()));
        }
        for (i, low) in bounds.iter().enumerate() {
            let label = format!("{} >= {}", s.key[0], low.as_sql(true));
            match bounds.get(i + 1) {
                Some(high) => ranges.push((
                    format!("WHERE {key} >= ? AND {key} < ?"),
                    vec![low.clone(), high.clone()],
                    format!("{label} and < {}", high.as_sql(true)),
                )),
                None => ranges.push((format!("WHERE {key} >= ?"), vec![low.clone()], label)),
            }
        }
        // Rows below the first boundary exist only if the target has extra ones.
        if let Some(first) = bounds.first() {
            ranges.push((
                format!("WHERE {key} < ?"),
                vec![first.clone()],
                format!("{} < {}", s.key[0], first.as_sql(true)),
            ));
        }
        ranges
    } else {
        vec![(String::new(), Vec::new(), "all rows".to_owned())]
    };
    for (range, bounds, label) in ranges {
        let (sc, ss) = digest(source, &qualified, &s, &range, bounds.clone()).await?;
        let (tc, ts) = match digest(target, &qualified, &s, &range, bounds).await {
            Ok(d) => d,
            Err(MyError::Sql { message, .. }) if message.contains("error 1146") => (0, 0),
            Err(e) => return Err(e),
        };
        check.source_rows += sc;
        check.target_rows += tc;
        check.chunks += 1;
        if (sc, ss) != (tc, ts) {
            check.differing.push(Differing {
                keys: label,
                source_rows: sc,
                target_rows: tc,
            });
        }
    }
    Ok(check)
}
