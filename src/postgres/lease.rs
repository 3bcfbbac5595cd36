//! The migration's lease on a pair's servers: two operators (two state directories, two
//! machines, a cron job beside a terminal) must never drive one database at once.
//!
//! On each server, a session kept open for the command holds a session-level advisory lock
//! keyed by the database; it dies with the holder's session, so a crashed runner never blocks
//! its own resume. Beside it, a row in `cutover.lease` names the holder (host, process, state
//! directory, since when) for whoever is refused, and stays when the holder stops without
//! releasing: a run from another state directory is then refused too, since the stopped one
//! may be mid-window and only its journal can finish or roll it back.

use crate::engine::Holder;

use super::db::{Db, PgError, literal, qualified};
use super::names::SCHEMA;
use super::{Pair, Server};

/// First key of the advisory lock (`cut`); the second is the database name's hash.
const LOCK_CLASS: i32 = 0x0063_7574;
/// The holder table, in [`SCHEMA`], never published.
pub const LEASE_TABLE: &str = "lease";

/// The lease held on both servers of a pair.
pub struct PgLease {
    sessions: Vec<Db>,
}

#[async_trait::async_trait]
impl crate::engine::ServerLease for PgLease {
    async fn release(self: Box<Self>) {
        for db in &self.sessions {
            let cleared = db
                .batch(
                    "clear the lease's holder record",
                    &format!(
                        "DO $lease$ BEGIN
                           IF to_regclass({table}) IS NOT NULL THEN
                             DELETE FROM {name} WHERE database = current_database();
                           END IF;
                         END $lease$;
                         SELECT pg_advisory_unlock_all();",
                        table = literal(&qualified(SCHEMA, LEASE_TABLE)),
                        name = qualified(SCHEMA, LEASE_TABLE)
                    ),
                )
                .await;
            if let Err(e) = cleared {
                tracing::warn!(server = db.server(), error = %e, "lease record not cleared");
            }
        }
    }
}

/// The holder recorded on `db`, if the record exists.
async fn recorded(db: &Db) -> Result<Option<Holder>, PgError> {
    if !super::catalog::relation_exists(db, SCHEMA, LEASE_TABLE).await? {
        return Ok(None);
    }
    let row = db
        .query_opt(
            "read the lease's holder",
            &format!(
                "SELECT holder FROM {} WHERE database = current_database()",
                qualified(SCHEMA, LEASE_TABLE)
            ),
            &[],
        )
        .await?;
    Ok(row.and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok()))
}

/// The session holding the lock on `db` now, in words (`pid 123 from 10.0.0.5`).
async fn holding_session(db: &Db) -> Result<Option<String>, PgError> {
    let row = db
        .query_opt(
            "read who holds the lease",
            "SELECT a.pid, coalesce(host(a.client_addr), 'a local socket'), a.application_name
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                     SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid = $1::int4::oid AND l.objid = hashtext(current_database())::oid
               AND l.objsubid = 2",
            &[&LOCK_CLASS],
        )
        .await?;
    Ok(row.map(|r| {
        format!(
            "server session pid {} from {} ({})",
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        )
    }))
}

async fn take_on(server: &Server, holder: &Holder) -> Result<Db, PgError> {
    let db = server.connect().await?;
    // Named in pg_stat_activity too, for whoever finds the lock held.
    let name: String = format!("cutover lease {}@{}", holder.pid, holder.host)
        .chars()
        .take(63)
        .collect();
    db.batch(
        "name the lease's session",
        &format!("SET application_name = {}", literal(&name)),
    )
    .await?;
    let got: bool = db
        .query_one(
            "take the migration's lease",
            "SELECT pg_try_advisory_lock($1, hashtext(current_database()))",
            &[&LOCK_CLASS],
        )
        .await?
        .get(0);
    let record = recorded(&db).await?;
    if !got {
        let who = match (record, holding_session(&db).await?) {
            (Some(h), Some(s)) => format!("{h} ({s})"),
            (Some(h), None) => h.to_string(),
            (None, Some(s)) => s,
            (None, None) => "another session".to_owned(),
        };
        return Err(PgError::Refused(format!(
            "{}: the migration's lease on this database is held by {who}; nothing was changed. Wait until it ends, or stop it there",
            db.server()
        )));
    }
    if let Some(stopped) = record.filter(|r| !r.same_journal(holder)) {
        // Free, but its holder stopped without releasing it: possibly mid-window.
        db.batch("let the lease go", "SELECT pg_advisory_unlock_all()")
            .await?;
        return Err(PgError::Refused(format!(
            "{}: {stopped} stopped without releasing the migration's lease on this database; it may have stopped mid-window, and only its journal can finish or roll it back; nothing was changed. Fix: resume it from that state directory (`cutover run --resume`, or the single-pair command's `--resume`), or, if that state directory is lost and the servers' state is what you want, clear the record: DELETE FROM {} WHERE database = current_database();",
            db.server(),
            qualified(SCHEMA, LEASE_TABLE)
        )));
    }
    let text = serde_json::to_string(holder)
        .map_err(|e| PgError::failed("render the lease's holder", e))?;
    db.batch(
        "record the lease's holder",
        &format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
             CREATE TABLE IF NOT EXISTS {table} (database name PRIMARY KEY, holder text NOT NULL);
             INSERT INTO {table} (database, holder) VALUES (current_database(), {text})
             ON CONFLICT (database) DO UPDATE SET holder = excluded.holder;",
            schema = super::db::ident(SCHEMA),
            table = qualified(SCHEMA, LEASE_TABLE),
            text = literal(&text)
        ),
    )
    .await?;
    Ok(db)
}

/// Takes the lease on the pair's source, then its target. A refusal on the target lets the
/// source's go again. A server that cannot be reached holds no lease (said in the log): the
/// command fails on it anyway, and a rollback must still reach the other.
pub async fn take(pair: &Pair, holder: &Holder) -> Result<PgLease, PgError> {
    let mut sessions = Vec::new();
    for server in [&pair.source, &pair.target] {
        match take_on(server, holder).await {
            Ok(db) => sessions.push(db),
            Err(PgError::Connect { server, message }) => {
                tracing::warn!(%server, %message, "unreachable: the migration's lease is not held there");
            }
            Err(e) => {
                crate::engine::ServerLease::release(Box::new(PgLease { sessions })).await;
                return Err(e);
            }
        }
    }
    Ok(PgLease { sessions })
}
