//! `pg start`: schema, cutover's own tables, publication, subscription; the target's app roles
//! are blocked until promotion. Running it again converges on the same state.

use serde::Serialize;

use super::catalog::Table;
use super::db::{Db, PgError, ident, literal, qualified};
use super::names::{MARKER_TABLE, SCHEMA};
use super::{Pair, fence, preflight, schema};

/// How long the target's existing app sessions get before they are ended at start.
const TARGET_SESSION_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `start` did.
#[derive(Debug, Clone, Serialize)]
pub struct StartReport {
    /// The pair.
    pub pair: String,
    /// The schema was copied into the target.
    pub schema_copied: bool,
    /// Tables set to `REPLICA IDENTITY FULL`.
    pub identity_full: Vec<String>,
    /// Tables published (cutover's marker table not counted).
    pub tables: usize,
    /// The publication was created now (false: it existed and its table list was refreshed).
    pub publication_created: bool,
    /// The subscription was created now (false: it existed and was refreshed).
    pub subscription_created: bool,
    /// App roles blocked on the target until promotion.
    pub target_roles_blocked: Vec<String>,
    /// Publication and subscription name.
    pub name: String,
}

/// Starts (or re-converges) replication for `pair`. Refuses when preflight finds errors.
pub async fn start(pair: &Pair) -> Result<StartReport, PgError> {
    let (source, target) = pair.connect().await?;
    let report = preflight::run(pair, &source, &target).await?;
    if !report.passed() {
        return Err(PgError::Refused(format!(
            "preflight found problems; nothing was changed:\n{}",
            report.errors_text()
        )));
    }
    if report.copy_schema {
        tracing::info!(pair = %pair.plan.name, "copying the schema");
        schema::copy(&pair.source, &pair.target).await?;
    }
    if !report.new_tables.is_empty() {
        tracing::info!(pair = %pair.plan.name, tables = ?report.new_tables, "copying new tables' schema");
        schema::copy_tables(&pair.source, &pair.target, &report.new_tables).await?;
    }
    for db in [&source, &target] {
        own_tables(db).await?;
    }
    for name in &report.identity_full {
        let table = report
            .tables
            .iter()
            .find(|t| t.display_name() == *name)
            .expect("identity_full lists tables in scope");
        source
            .batch(
                "set REPLICA IDENTITY FULL",
                &format!("ALTER TABLE {} REPLICA IDENTITY FULL", table.sql_name()),
            )
            .await?;
    }

    fence::block(&target, &pair.plan.app_roles, &pair.names.pair).await?;
    fence::end_sessions(
        &target,
        &pair.plan.app_roles,
        std::time::Duration::ZERO,
        TARGET_SESSION_LIMIT,
    )
    .await?;

    let publication_created = publish(&source, &pair.names.publication, &report.tables).await?;
    let subscription_created = subscribe(pair, &target).await?;

    Ok(StartReport {
        pair: pair.plan.name.clone(),
        schema_copied: report.copy_schema,
        identity_full: report.identity_full,
        tables: report.tables.len(),
        publication_created,
        subscription_created,
        target_roles_blocked: fence::blocked(&target, &pair.names.pair).await?,
        name: pair.names.publication.clone(),
    })
}

/// Creates cutover's schema with the marker table (published) and the blocked-role table
/// (never published).
pub async fn own_tables(db: &Db) -> Result<(), PgError> {
    db.batch(
        "create cutover's schema and tables",
        &format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
             CREATE TABLE IF NOT EXISTS {marker} (
                 token text PRIMARY KEY,
                 pair text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());
             {fence}",
            schema = ident(SCHEMA),
            marker = qualified(SCHEMA, MARKER_TABLE),
            fence = fence::table_statements(),
        ),
    )
    .await
}

/// `t1, t2, cutover.fence_marker`
pub fn publication_tables(tables: &[Table]) -> String {
    tables
        .iter()
        .map(Table::sql_name)
        .chain(std::iter::once(qualified(SCHEMA, MARKER_TABLE)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates the publication, or sets its table list when it exists. Returns whether it was created.
pub async fn publish(db: &Db, name: &str, tables: &[Table]) -> Result<bool, PgError> {
    let exists = super::catalog::publication_exists(db, name).await?;
    let list = publication_tables(tables);
    if exists {
        db.batch(
            "update the publication's tables",
            &format!("ALTER PUBLICATION {} SET TABLE {list}", ident(name)),
        )
        .await?;
    } else {
        db.batch(
            "create the publication",
            &format!(
                "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true)",
                ident(name)
            ),
        )
        .await?;
    }
    Ok(!exists)
}

/// Creates the subscription, or enables and refreshes it. Returns whether it was created.
async fn subscribe(pair: &Pair, target: &Db) -> Result<bool, PgError> {
    let name = &pair.names.subscription;
    let existing = super::catalog::subscription(target, name).await?;
    match existing {
        Some(enabled) => {
            if !enabled {
                target
                    .batch(
                        "enable the subscription",
                        &format!("ALTER SUBSCRIPTION {} ENABLE", ident(name)),
                    )
                    .await?;
            }
            bounded(
                target,
                "refresh the subscription's tables (it connects to the source)",
                &format!("ALTER SUBSCRIPTION {} REFRESH PUBLICATION", ident(name)),
            )
            .await?;
            Ok(false)
        }
        None => {
            create_subscription(
                target,
                name,
                &pair.forward_conninfo()?,
                &pair.names.publication,
                true,
            )
            .await?;
            Ok(true)
        }
    }
}

/// `CREATE SUBSCRIPTION` (the slot on the publisher gets the subscription's name).
///
/// `synchronous_commit = on` for the apply worker: the subscriber then reports a flush position
/// as soon as it has applied a transaction, so the publisher's `confirmed_flush_lsn` (the
/// catch-up cross-check) advances within milliseconds instead of after the next WAL writer
/// cycle and status interval.
pub async fn create_subscription(
    db: &Db,
    name: &str,
    conninfo: &crate::secret::Secret,
    publication: &str,
    copy_data: bool,
) -> Result<(), PgError> {
    // The connection string may hold a password: it is sent to the server as a literal (there
    // are no bind parameters for utility statements) and never logged.
    bounded(
        db,
        "create the subscription (it connects to the publisher and creates a slot there)",
        &format!(
            "CREATE SUBSCRIPTION {name} CONNECTION {conninfo} PUBLICATION {publication}
             WITH (slot_name = {slot}, copy_data = {copy_data}, synchronous_commit = 'on')",
            name = ident(name),
            conninfo = literal(conninfo.expose()),
            publication = ident(publication),
            slot = literal(name),
        ),
    )
    .await
}

/// Longest wait for a statement that needs the other server (creating a slot there waits for
/// its running transactions).
pub const REMOTE_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `sql`, which waits on the other server, under [`REMOTE_STATEMENT_TIMEOUT`]; a timeout
/// says what it waited for.
pub async fn bounded(db: &Db, what: &str, sql: &str) -> Result<(), PgError> {
    db.batch(
        "bound the wait for the other server",
        &format!(
            "SET statement_timeout = {}",
            REMOTE_STATEMENT_TIMEOUT.as_millis()
        ),
    )
    .await?;
    let result = db.batch(what, sql).await;
    db.batch("reset statement_timeout", "RESET statement_timeout")
        .await?;
    result.map_err(|e| match &e {
        PgError::Sql { message, .. } if message.contains("57014") => PgError::Timeout {
            what: format!("{}: {what}", db.server()),
            after: REMOTE_STATEMENT_TIMEOUT,
        },
        _ => e,
    })
}
