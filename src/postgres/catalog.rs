//! What a database holds that matters to replication: tables in scope with their keys and
//! replica identity, sequences, extensions, roles.

use serde::Serialize;

use super::db::{Db, PgError, qualified};
use super::names::SCHEMA;

/// A table in the migration's scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Whether it has a primary key.
    pub has_primary_key: bool,
    /// `pg_class.relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    /// Whether the replica-identity index (for `i`) exists.
    pub has_identity_index: bool,
    /// Size on disk including indexes and TOAST.
    pub bytes: i64,
    /// Primary-key columns in key order (empty without a primary key).
    pub key_columns: Vec<String>,
}

impl Table {
    /// `"schema"."name"`, quoted for SQL.
    pub fn sql_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// `schema.name` for people.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether logical replication can apply UPDATE and DELETE for it.
    pub fn has_usable_identity(&self) -> bool {
        match self.replica_identity {
            'f' => true,
            'i' => self.has_identity_index,
            'd' => self.has_primary_key,
            _ => false,
        }
    }
}

/// Every user table of the database (not cutover's own, not an extension's, partitions
/// represented by their root).
pub async fn tables(db: &Db) -> Result<Vec<Table>, PgError> {
    let rows = db
        .query(
            "list tables",
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                    pg_total_relation_size(c.oid),
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
                    COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord)
                              FROM pg_index i
                              CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                              WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                 AND d.deptype = 'e')
             ORDER BY 1, 2",
            &[&SCHEMA],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let key_columns: Vec<String> = r.get(5);
            Table {
                schema: r.get(0),
                name: r.get(1),
                replica_identity: r.get::<_, String>(2).chars().next().unwrap_or('d'),
                bytes: r.get(3),
                has_identity_index: r.get(4),
                has_primary_key: !key_columns.is_empty(),
                key_columns,
            }
        })
        .collect())
}

/// The tables a pair replicates: the plan's `tables` (as `schema.table`) or every table.
/// Returns the tables found and the plan entries that matched nothing.
pub fn in_scope(all: Vec<Table>, wanted: &[String]) -> (Vec<Table>, Vec<String>) {
    if wanted.is_empty() {
        return (all, Vec::new());
    }
    let mut missing = Vec::new();
    let mut chosen = Vec::new();
    for w in wanted {
        let (schema, name) = w.split_once('.').unwrap_or(("public", w));
        match all.iter().find(|t| t.schema == schema && t.name == name) {
            Some(t) if !chosen.contains(t) => chosen.push(t.clone()),
            Some(_) => {}
            None => missing.push(w.clone()),
        }
    }
    (chosen, missing)
}

/// A sequence and its position.
#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    /// Schema name.
    pub schema: String,
    /// Sequence name.
    pub name: String,
    /// `last_value`, or `None` when `nextval` was never called.
    pub last_value: Option<i64>,
}

/// Every user sequence (including those behind SERIAL and IDENTITY columns), not cutover's.
pub async fn sequences(db: &Db) -> Result<Vec<Sequence>, PgError> {
    let rows = db
        .query(
            "read sequences",
            "SELECT schemaname::text, sequencename::text, last_value
             FROM pg_sequences WHERE schemaname <> $1 ORDER BY 1, 2",
            &[&SCHEMA],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Sequence {
            schema: r.get(0),
            name: r.get(1),
            last_value: r.get(2),
        })
        .collect())
}

/// Installed extensions and their versions.
pub async fn extensions(db: &Db) -> Result<Vec<(String, String)>, PgError> {
    let rows = db
        .query(
            "list extensions",
            "SELECT extname::text, extversion FROM pg_extension ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Column names and types of a table, in order, as `name type` strings.
pub async fn columns(db: &Db, schema: &str, table: &str) -> Result<Vec<String>, PgError> {
    let rows = db
        .query(
            "list columns",
            "SELECT a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What cutover's login role may do.
#[derive(Debug, Clone, Serialize)]
pub struct Privileges {
    /// The role cutover is logged in as.
    pub user: String,
    /// Superuser.
    pub superuser: bool,
    /// REPLICATION attribute.
    pub replication: bool,
    /// CREATEROLE attribute (needed to block roles when not superuser).
    pub createrole: bool,
    /// Member of `pg_signal_backend` (needed to end sessions when not superuser).
    pub signal_backend: bool,
    /// CREATE on the database (needed for publications and cutover's schema).
    pub create_on_database: bool,
}

/// Reads the privileges of the connected role.
pub async fn privileges(db: &Db) -> Result<Privileges, PgError> {
    let r = db
        .query_one(
            "read role privileges",
            "SELECT current_user::text, rolsuper, rolreplication, rolcreaterole,
                    pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'),
                    has_database_privilege(current_database(), 'CREATE')
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    Ok(Privileges {
        user: r.get(0),
        superuser: r.get(1),
        replication: r.get(2),
        createrole: r.get(3),
        signal_backend: r.get(4),
        create_on_database: r.get(5),
    })
}

/// The server's numeric version (`server_version_num`, e.g. 150004).
pub async fn version_num(db: &Db) -> Result<i32, PgError> {
    let r = db
        .query_one(
            "read server version",
            "SELECT current_setting('server_version_num')::int",
            &[],
        )
        .await?;
    Ok(r.get(0))
}

/// A server setting as text.
pub async fn setting(db: &Db, name: &str) -> Result<String, PgError> {
    let r = db
        .query_one("read a setting", "SELECT current_setting($1)", &[&name])
        .await?;
    Ok(r.get(0))
}

/// Which of `roles` exist on the server, with whether they can log in.
pub async fn roles(db: &Db, roles: &[String]) -> Result<Vec<(String, bool)>, PgError> {
    let rows = db
        .query(
            "read roles",
            "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname = ANY($1)",
            &[&roles],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Subscription `name` in the connected database: `Some(enabled)`, or `None` when absent.
pub async fn subscription(db: &Db, name: &str) -> Result<Option<bool>, PgError> {
    Ok(db
        .query_opt(
            "look up the subscription",
            "SELECT subenabled FROM pg_subscription WHERE subname = $1
               AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&name],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Whether publication `name` exists in the connected database.
pub async fn publication_exists(db: &Db, name: &str) -> Result<bool, PgError> {
    Ok(db
        .query_opt(
            "look up the publication",
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await?
        .is_some())
}

/// Whether a relation `schema.name` exists.
pub async fn relation_exists(db: &Db, schema: &str, name: &str) -> Result<bool, PgError> {
    let r = db
        .query_one(
            "look up a table",
            "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
            &[&schema, &name],
        )
        .await?;
    Ok(r.get(0))
}
