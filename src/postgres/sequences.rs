//! Sequence sync: logical replication does not carry sequence positions, so after the fence
//! every sequence on the target is set to the source's position (SERIAL and IDENTITY included).

use super::catalog;
use super::db::{Db, PgError};

/// Copies every sequence's position from the (fenced) source to the target in one round trip
/// each way. Returns how many sequences were set.
pub async fn sync(source: &Db, target: &Db) -> Result<usize, PgError> {
    let called: Vec<_> = catalog::sequences(source)
        .await?
        .into_iter()
        .filter_map(|s| s.last_value.map(|v| (s.schema, s.name, v)))
        .collect();
    if called.is_empty() {
        return Ok(0);
    }
    let schemas: Vec<&str> = called.iter().map(|s| s.0.as_str()).collect();
    let names: Vec<&str> = called.iter().map(|s| s.1.as_str()).collect();
    let values: Vec<i64> = called.iter().map(|s| s.2).collect();
    let r = target
        .query_one(
            "set sequences to the source's positions",
            "SELECT count(setval(format('%I.%I', s, n)::regclass, v, true))
             FROM unnest($1::text[], $2::text[], $3::int8[]) AS x(s, n, v)",
            &[&schemas, &names, &values],
        )
        .await?;
    Ok(r.get::<_, i64>(0) as usize)
}
