//! `pg verify`: row counts and content checksums, source against target, one primary-key chunk
//! at a time so no query ever has to read a whole large table at once.

use tokio_postgres::types::ToSql;

use super::Pair;
use super::catalog::{self, Table};
use super::db::{Db, PgError, ident};
use super::inventory::{Inventory, inventory_differences};

/// Rows per chunk.
pub const CHUNK_ROWS: i64 = 10_000;

use crate::engine::Differing;
pub use crate::engine::{TableVerified as TableCheck, Verified as VerifyReport};

/// Compares every table in scope. Meaningful once writes are fenced (or after promotion);
/// while replication runs, tables under write show as lagging ranges.
pub async fn verify(pair: &Pair, chunk_rows: i64) -> Result<VerifyReport, PgError> {
    let (source, target) = pair.connect().await?;
    let (tables, unknown) = catalog::in_scope(catalog::tables(&source).await?, &pair.plan.tables);
    if !unknown.is_empty() {
        return Err(PgError::Refused(format!(
            "{}: tables from the plan do not exist: {}",
            source.server(),
            unknown.join(", ")
        )));
    }
    let (source_inv, target_inv) =
        tokio::try_join!(Inventory::read(&source), Inventory::read(&target))?;
    let scope: Vec<String> = tables.iter().map(Table::display_name).collect();
    // Materialized views are compared by populated state, not row count: the cutover refreshes
    // them on the new primary, so a stale view on the old one legitimately holds other rows.
    let differences = inventory_differences(&source_inv, &target_inv, &scope);
    let mut checks = Vec::new();
    for table in &tables {
        // A table the target lacks is listed among the differences, not compared.
        if !target_inv.tables.contains_key(&table.display_name()) {
            continue;
        }
        checks.push(if table.has_primary_key {
            by_key(&source, &target, table, chunk_rows).await?
        } else {
            whole(&source, &target, table).await?
        });
    }
    Ok(VerifyReport {
        pair: pair.plan.name.clone(),
        tables: checks,
        differences,
    })
}

async fn key_types(db: &Db, table: &Table) -> Result<Vec<String>, PgError> {
    let mut types = Vec::new();
    for column in &table.key_columns {
        let r = db
            .query_one(
                "read key column types",
                "SELECT format_type(a.atttypid, a.atttypmod)
                 FROM pg_attribute a
                 WHERE a.attrelid = format('%I.%I', $1::text, $2::text)::regclass AND a.attname = $3",
                &[&table.schema, &table.name, column],
            )
            .await?;
        types.push(r.get(0));
    }
    Ok(types)
}

/// `(k1, k2) > (CAST($first AS t1), CAST($first+1 AS t2))`
fn key_condition(keys: &str, types: &[String], op: &str, first: usize) -> String {
    let values: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("CAST(${}::text AS {t})", first + i))
        .collect();
    format!("({keys}) {op} ({})", values.join(", "))
}

fn params<'a>(values: &[&'a Vec<String>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values
        .iter()
        .flat_map(|v| v.iter().map(|s| s as &(dyn ToSql + Sync)))
        .collect()
}

async fn by_key(
    source: &Db,
    target: &Db,
    table: &Table,
    chunk_rows: i64,
) -> Result<TableCheck, PgError> {
    let types = key_types(source, table).await?;
    let keys = table
        .key_columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let keys_desc = table
        .key_columns
        .iter()
        .map(|c| format!("{} DESC", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let keys_text = table
        .key_columns
        .iter()
        .map(|c| format!("{}::text", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let name = table.sql_name();
    let n = types.len();

    let mut check = TableCheck {
        table: table.display_name(),
        source_rows: 0,
        target_rows: 0,
        chunks: 0,
        differing: Vec::new(),
        whole_table: false,
    };
    let mut lower: Option<Vec<String>> = None;
    loop {
        let lower_cond = match &lower {
            Some(_) => format!("WHERE {}", key_condition(&keys, &types, ">", 1)),
            None => String::new(),
        };
        let limit_param = if lower.is_some() { n + 1 } else { 1 };
        let source_sql = format!(
            "WITH chunk AS (SELECT {keys}, md5(t::text) AS h FROM {name} AS t {lower_cond}
                            ORDER BY {keys} LIMIT ${limit_param})
             SELECT count(*), COALESCE(md5(string_agg(h, '' ORDER BY {keys})), ''),
                    (SELECT ARRAY[{keys_text}] FROM chunk ORDER BY {keys_desc} LIMIT 1)
             FROM chunk"
        );
        let mut p = lower.as_ref().map(|l| params(&[l])).unwrap_or_default();
        p.push(&chunk_rows);
        let r = source
            .query_one("checksum a chunk", &source_sql, &p)
            .await?;
        let (rows, sum, upper): (i64, String, Option<Vec<String>>) = (r.get(0), r.get(1), r.get(2));
        let last = rows < chunk_rows;

        // The same range on the target; the last chunk is open-ended so extra rows show up.
        let mut conds = Vec::new();
        let mut tp: Vec<&Vec<String>> = Vec::new();
        if let Some(l) = &lower {
            conds.push(key_condition(&keys, &types, ">", 1));
            tp.push(l);
        }
        if let (false, Some(u)) = (last, &upper) {
            conds.push(key_condition(&keys, &types, "<=", tp.len() * n + 1));
            tp.push(u);
        }
        let where_sql = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let target_sql = format!(
            "SELECT count(*), COALESCE(md5(string_agg(md5(t::text), '' ORDER BY {keys})), '')
             FROM {name} AS t {where_sql}"
        );
        let r = target
            .query_one("checksum a chunk", &target_sql, &params(&tp))
            .await?;
        let (target_rows, target_sum): (i64, String) = (r.get(0), r.get(1));

        check.chunks += 1;
        check.source_rows += rows as u64;
        check.target_rows += target_rows as u64;
        if rows != target_rows || sum != target_sum {
            check.differing.push(Differing {
                keys: format!(
                    "keys after {} up to {}",
                    lower.as_ref().map_or("the start".into(), |k| k.join(",")),
                    if last { None } else { upper.as_ref() }
                        .map_or("the end".into(), |k| k.join(","))
                ),
                source_rows: rows as u64,
                target_rows: target_rows as u64,
            });
        }
        if last {
            return Ok(check);
        }
        lower = upper;
    }
}

async fn whole(source: &Db, target: &Db, table: &Table) -> Result<TableCheck, PgError> {
    let sql = format!(
        "SELECT count(*), COALESCE(md5(string_agg(h, '' ORDER BY h)), '')
         FROM (SELECT md5(t::text) AS h FROM {} AS t) rows",
        table.sql_name()
    );
    let s = source.query_one("checksum a table", &sql, &[]).await?;
    let t = target.query_one("checksum a table", &sql, &[]).await?;
    let (source_rows, target_rows): (i64, i64) = (s.get(0), t.get(0));
    let same = source_rows == target_rows && s.get::<_, String>(1) == t.get::<_, String>(1);
    Ok(TableCheck {
        table: table.display_name(),
        source_rows: source_rows as u64,
        target_rows: target_rows as u64,
        chunks: 1,
        differing: if same {
            Vec::new()
        } else {
            vec![Differing {
                keys: "all rows".to_owned(),
                source_rows: source_rows as u64,
                target_rows: target_rows as u64,
            }]
        },
        whole_table: true,
    })
}
