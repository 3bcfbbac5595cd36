//! What a database holds beyond the rows of published tables, and how two databases differ.
//!
//! Logical replication carries the rows of published tables and nothing else: a table created
//! after `start` (an app deploy during a long sync), a column added on one side, a new
//! sequence, large objects, the contents of materialized views, unlogged tables. Each of these
//! was silently left behind once, and the app found out after the switch. This module reads
//! one inventory per server (a handful of catalog queries), so that preflight can refuse what
//! cannot be carried, the gate can stop on drift *before* the fence, status can show drift
//! while the sync runs, and verify can list every difference instead of failing on the first
//! missing relation.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::db::{Db, PgError};
use super::names::SCHEMA;

/// Schemas that are never the application's.
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'cutover')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// The objects of one database that matter to a migration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// Ordinary and partitioned (root) tables, `schema.name` -> `column type` in column order.
    pub tables: BTreeMap<String, Vec<String>>,
    /// Unlogged tables (`schema.name`).
    pub unlogged: BTreeSet<String>,
    /// Foreign tables (`schema.name`).
    pub foreign: BTreeSet<String>,
    /// Sequences, `schema.name` -> the next value `nextval` would return.
    pub sequences: BTreeMap<String, i64>,
    /// Materialized views, `schema.name` -> whether populated.
    pub matviews: BTreeMap<String, bool>,
    /// Views (`schema.name`).
    pub views: BTreeSet<String>,
    /// Functions and procedures (`schema.name(args)`).
    pub functions: BTreeSet<String>,
    /// Indexes, as `schema.table: definition` with the index's own name left out.
    pub indexes: BTreeSet<String>,
    /// Check, foreign-key and exclusion constraints, as `schema.table: definition`.
    pub constraints: BTreeSet<String>,
    /// Large objects: how many, and their size in bytes (`None` when not readable).
    pub large_objects: (i64, Option<i64>),
}

/// How long a schema read waits for a table lock another session holds.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Inventory {
    /// Reads the inventory of the connected database (not cutover's own schema, not
    /// extensions' objects).
    ///
    /// Deparsing an index or constraint takes `AccessShareLock` on its table, so a read would
    /// queue behind any DDL or `LOCK TABLE` on a replicated table, and status, the gate and the
    /// daemon with it. The read waits at most [`LOCK_WAIT`] for a lock, then is refused with the
    /// cause (retrying once the other session commits is all it takes).
    pub async fn read(db: &Db) -> Result<Inventory, PgError> {
        db.batch(
            "bound the schema read's lock waits",
            &format!("SET lock_timeout = '{}ms'", LOCK_WAIT.as_millis()),
        )
        .await?;
        let read = Inventory::read_unbounded(db).await;
        let reset = db.batch("reset lock_timeout", "RESET lock_timeout").await;
        let inv = read.map_err(|e| match e {
            PgError::Sql { ref message, .. } if message.contains("SQLSTATE 55P03") => {
                PgError::Refused(format!(
                    "{}: the schema could not be read: another session has held a lock on a table for over {} s (DDL or LOCK TABLE in progress); retry once it commits",
                    db.server(),
                    LOCK_WAIT.as_secs()
                ))
            }
            other => other,
        })?;
        reset?;
        Ok(inv)
    }

    async fn read_unbounded(db: &Db) -> Result<Inventory, PgError> {
        let mut inv = Inventory::default();
        let not_extension =
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype = 'e')";
        let rows = db
            .query(
                "list relations",
                &format!(
                    "SELECT n.nspname || '.' || c.relname, c.relkind::text, c.relpersistence::text,
                            c.relkind = 'm' AND c.relispopulated,
                            COALESCE((SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                                       ORDER BY a.attnum)
                                      FROM pg_attribute a
                                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{{}}')
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p', 'f', 'm', 'v', 'S') AND NOT c.relispartition
                       AND {SYSTEM_SCHEMAS} AND {not_extension}"
                ),
                &[],
            )
            .await?;
        let mut sequence_names = Vec::new();
        for r in &rows {
            let (name, kind, persistence, populated, columns): (
                String,
                String,
                String,
                bool,
                Vec<String>,
            ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            match kind.as_str() {
                "r" | "p" => {
                    if persistence == "u" {
                        inv.unlogged.insert(name.clone());
                    }
                    inv.tables.insert(name, columns);
                }
                "f" => {
                    inv.foreign.insert(name);
                }
                "m" => {
                    inv.matviews.insert(name, populated);
                }
                "v" => {
                    inv.views.insert(name);
                }
                _ => sequence_names.push(name),
            }
        }
        if !sequence_names.is_empty() {
            let rows = db
                .query(
                    "read sequence positions",
                    "SELECT schemaname || '.' || sequencename,
                            COALESCE(last_value + increment_by, start_value)
                     FROM pg_sequences WHERE schemaname || '.' || sequencename = ANY($1)",
                    &[&sequence_names],
                )
                .await?;
            for r in &rows {
                inv.sequences.insert(r.get(0), r.get(1));
            }
        }
        let rows = db
            .query(
                "list functions",
                &format!(
                    "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE {SYSTEM_SCHEMAS}
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                       AND d.objid = p.oid AND d.deptype = 'e')"
                ),
                &[],
            )
            .await?;
        inv.functions = rows.iter().map(|r| r.get(0)).collect();
        let rows = db
            .query(
                "list indexes",
                &format!(
                    "SELECT n.nspname || '.' || t.relname || ': ' ||
                            regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX \\S+ ON ', 'CREATE \\1INDEX ON ')
                     FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                     JOIN pg_namespace n ON n.oid = t.relnamespace
                     WHERE {SYSTEM_SCHEMAS}"
                ),
                &[],
            )
            .await?;
        inv.indexes = rows.iter().map(|r| r.get(0)).collect();
        let rows = db
            .query(
                "list constraints",
                &format!(
                    "SELECT n.nspname || '.' || t.relname || ': ' || pg_get_constraintdef(k.oid)
                     FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
                     JOIN pg_namespace n ON n.oid = t.relnamespace
                     WHERE k.contype IN ('c', 'f', 'x') AND {SYSTEM_SCHEMAS}"
                ),
                &[],
            )
            .await?;
        inv.constraints = rows.iter().map(|r| r.get(0)).collect();
        let count: i64 = db
            .query_one(
                "count large objects",
                "SELECT count(*) FROM pg_largeobject_metadata",
                &[],
            )
            .await?
            .get(0);
        // pg_largeobject itself is readable by superusers only.
        let size = if count > 0 {
            db.query_one(
                "measure large objects",
                "SELECT sum(octet_length(data))::int8 FROM pg_largeobject",
                &[],
            )
            .await
            .ok()
            .and_then(|r| r.get::<_, Option<i64>>(0))
        } else {
            Some(0)
        };
        inv.large_objects = (count, size);
        Ok(inv)
    }
}

/// One way the target differs from the source (shared by both engines).
pub use crate::engine::Difference;

/// What the schema of `target` lacks or has otherwise than `source`, for the tables in
/// `scope` (`schema.name`) and every sequence: the drift that must stop a cutover before
/// the fence.
pub fn schema_drift(source: &Inventory, target: &Inventory, scope: &[String]) -> Vec<Difference> {
    let mut out = Vec::new();
    for table in scope {
        let Some(columns) = source.tables.get(table) else {
            continue;
        };
        match target.tables.get(table) {
            None => out.push(Difference {
                kind: "table",
                object: table.clone(),
                detail: "exists on the source but not on the target".into(),
            }),
            Some(on_target) => {
                for c in columns.iter().filter(|c| !on_target.contains(c)) {
                    out.push(Difference {
                        kind: "column",
                        object: format!("{table}.{c}"),
                        detail: "on the source but not on the target (or with another type)".into(),
                    });
                }
            }
        }
    }
    let in_scope = |index: &str| scope.iter().any(|t| index.starts_with(&format!("{t}: ")));
    for (kind, s, t) in [
        ("index", &source.indexes, &target.indexes),
        ("constraint", &source.constraints, &target.constraints),
    ] {
        for object in s.iter().filter(|i| in_scope(i)) {
            if !t.contains(object) {
                out.push(Difference {
                    kind,
                    object: object.clone(),
                    detail: "on the source but not on the target".into(),
                });
            }
        }
    }
    for name in source.sequences.keys() {
        if !target.sequences.contains_key(name) {
            out.push(Difference {
                kind: "sequence",
                object: name.clone(),
                detail: "exists on the source but not on the target".into(),
            });
        }
    }
    out
}

/// Everything verify compares besides rows: tables, sequence positions, materialized views,
/// views, functions, large objects.
pub fn inventory_differences(
    source: &Inventory,
    target: &Inventory,
    scope: &[String],
) -> Vec<Difference> {
    let mut out: Vec<Difference> = schema_drift(source, target, scope)
        .into_iter()
        .filter(|d| d.kind != "sequence")
        .collect();
    for (name, next) in &source.sequences {
        match target.sequences.get(name) {
            None => out.push(Difference {
                kind: "sequence",
                object: name.clone(),
                detail: "exists on the source but not on the target".into(),
            }),
            Some(t) if t < next => out.push(Difference {
                kind: "sequence",
                object: name.clone(),
                detail: format!("behind: next value {t} on the target, {next} on the source"),
            }),
            Some(_) => {}
        }
    }
    for (name, populated) in &source.matviews {
        match target.matviews.get(name) {
            None => out.push(Difference {
                kind: "materialized view",
                object: name.clone(),
                detail: "missing on the target".into(),
            }),
            Some(false) if *populated => out.push(Difference {
                kind: "materialized view",
                object: name.clone(),
                detail: "not populated on the target (REFRESH MATERIALIZED VIEW)".into(),
            }),
            Some(_) => {}
        }
    }
    for (kind, s, t) in [
        ("view", &source.views, &target.views),
        ("function", &source.functions, &target.functions),
    ] {
        for name in s.difference(t) {
            out.push(Difference {
                kind,
                object: name.clone(),
                detail: "missing on the target".into(),
            });
        }
    }
    if source.large_objects.0 != target.large_objects.0 {
        out.push(Difference {
            kind: "large objects",
            object: "pg_largeobject".into(),
            detail: format!(
                "{} on the source, {} on the target",
                source.large_objects.0, target.large_objects.0
            ),
        });
    }
    out
}

/// The drift a cutover must not fence over: [`schema_drift`] for the tables in scope, plus
/// tables in scope that are not in `publication` (their rows would not flow).
pub async fn drift(
    source: &Db,
    source_inv: &Inventory,
    target_inv: &Inventory,
    scope: &[String],
    publication: &str,
) -> Result<Vec<Difference>, PgError> {
    let mut out = schema_drift(source_inv, target_inv, scope);
    let published: BTreeSet<String> = source
        .query(
            "list the published tables",
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in scope.iter().filter(|t| !published.contains(*t)) {
        out.push(Difference {
            kind: "table",
            object: table.clone(),
            detail: "is not replicated yet (created after replication started)".into(),
        });
    }
    Ok(out)
}

/// Refreshes on `target` every materialized view that is populated on the source, so the app's
/// first query after the switch does not fail with "has not been populated". Returns them.
pub async fn refresh_matviews(source: &Inventory, target: &Db) -> Result<Vec<String>, PgError> {
    let mut refreshed = Vec::new();
    for (name, populated) in &source.matviews {
        if !populated {
            continue;
        }
        let (schema, view) = name.split_once('.').unwrap_or(("public", name));
        target
            .batch(
                "refresh a materialized view",
                &format!(
                    "REFRESH MATERIALIZED VIEW {}",
                    super::db::qualified(schema, view)
                ),
            )
            .await?;
        refreshed.push(name.clone());
    }
    Ok(refreshed)
}

/// The source cluster's `system_identifier` and the database's name: two servers that report
/// the same are one.
pub async fn identity(db: &Db) -> Result<(i64, String), PgError> {
    let r = db
        .query_one(
            "read the cluster's identity",
            "SELECT system_identifier, current_database()::text FROM pg_control_system()",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

/// Whether `name` is in cutover's own schema.
pub fn is_own(name: &str) -> bool {
    name.starts_with(&format!("{SCHEMA}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_missing_tables_columns_indexes_and_sequences() {
        let mut source = Inventory::default();
        source.tables.insert(
            "public.a".into(),
            vec!["id integer".into(), "x text".into()],
        );
        source
            .tables
            .insert("public.new".into(), vec!["id uuid".into()]);
        source
            .indexes
            .insert("public.a: CREATE UNIQUE INDEX ON public.a USING btree (x)".into());
        source.sequences.insert("public.a_id_seq".into(), 10);
        let mut target = Inventory::default();
        source
            .constraints
            .insert("public.a: CHECK ((id > 0))".into());
        target
            .tables
            .insert("public.a".into(), vec!["id integer".into()]);
        target.sequences.insert("public.a_id_seq".into(), 3);
        let scope = vec!["public.a".to_owned(), "public.new".to_owned()];
        let drift = schema_drift(&source, &target, &scope);
        let kinds: Vec<&str> = drift.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            ["column", "table", "index", "constraint"],
            "{drift:?}"
        );
        assert!(drift[0].object.ends_with("x text"));
        assert_eq!(drift[1].object, "public.new");
        // Verify also sees the sequence behind.
        let all = inventory_differences(&source, &target, &scope);
        assert!(
            all.iter()
                .any(|d| d.kind == "sequence" && d.detail.contains("behind")),
            "{all:?}"
        );
        assert!(schema_drift(&source, &source, &scope).is_empty());
    }
}
