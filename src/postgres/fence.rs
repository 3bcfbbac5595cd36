//! The write fence: application roles are made unable to log in and their sessions are ended.
//!
//! Blocking by role (not `default_transaction_read_only`, which open sessions ignore and any
//! client can undo) and remembering each role's previous LOGIN attribute in
//! `cutover.blocked_role` on the same server, so unblocking restores exactly what was there,
//! even from another process after a crash.

use std::time::{Duration, Instant};

use super::db::{Db, PgError, ident, qualified};
use super::names::{ROLE_TABLE, SCHEMA};

/// Blocks `roles` from logging in, remembering whether each could before. Roles cutover already
/// blocked keep their first remembered state. Sessions already open are not touched here.
pub async fn block(db: &Db, roles: &[String], pair: &str) -> Result<(), PgError> {
    let table = qualified(SCHEMA, ROLE_TABLE);
    db.batch("begin the fence", "BEGIN").await?;
    let result = async {
        db.execute(
            "remember the app roles' LOGIN attribute",
            &format!(
                "INSERT INTO {table} (role, pair, could_login)
                 SELECT rolname, $2, rolcanlogin FROM pg_roles WHERE rolname = ANY($1)
                 ON CONFLICT (role) DO NOTHING"
            ),
            &[&roles, &pair],
        )
        .await?;
        let alter: String = roles
            .iter()
            .map(|r| format!("ALTER ROLE {} NOLOGIN;", ident(r)))
            .collect();
        db.batch("block the app roles (NOLOGIN)", &alter).await?;
        db.batch("commit the fence", "COMMIT").await
    }
    .await;
    if result.is_err() {
        let _ = db.batch("roll back the fence", "ROLLBACK").await;
    }
    result
}

/// Sessions of `roles` in this database, except cutover's own.
pub async fn sessions(db: &Db, roles: &[String]) -> Result<i64, PgError> {
    let r = db
        .query_one(
            "count app sessions",
            "SELECT count(*) FROM pg_stat_activity
             WHERE usename = ANY($1) AND datname = current_database() AND pid <> pg_backend_pid()",
            &[&roles],
        )
        .await?;
    Ok(r.get(0))
}

/// Gives sessions of `roles` up to `drain` to end on their own, terminates the rest and waits
/// (up to `limit`) until they are gone, so nothing they wrote can commit after this returns.
/// Returns how many sessions were terminated.
pub async fn end_sessions(
    db: &Db,
    roles: &[String],
    drain: Duration,
    limit: Duration,
) -> Result<usize, PgError> {
    let drain_until = Instant::now() + drain;
    while Instant::now() < drain_until && sessions(db, roles).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let terminated = db
        .query(
            "end app sessions",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE usename = ANY($1) AND datname = current_database() AND pid <> pg_backend_pid()",
            &[&roles],
        )
        .await?
        .len();
    let deadline = Instant::now() + limit;
    loop {
        if sessions(db, roles).await? == 0 {
            return Ok(terminated);
        }
        if Instant::now() >= deadline {
            return Err(PgError::Timeout {
                what: format!(
                    "{}: app sessions to exit after pg_terminate_backend",
                    db.server()
                ),
                after: limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Restores LOGIN on the roles cutover blocked for `pair` (only those that could log in before)
/// and forgets them. Roles kept blocked on purpose after a completed cutover
/// ([`keep_after_promotion`]) stay blocked. Returns the roles unblocked. Does nothing when nothing is recorded.
pub async fn unblock(db: &Db, pair: &str) -> Result<Vec<String>, PgError> {
    if !table_exists(db).await? {
        return Ok(Vec::new());
    }
    let table = qualified(SCHEMA, ROLE_TABLE);
    db.batch("begin unblocking", "BEGIN").await?;
    let result = async {
        let rows = db
            .query(
                "read blocked roles",
                &format!(
                    "DELETE FROM {table} WHERE pair = $1 AND NOT after_promotion
                 RETURNING role::text, could_login"
                ),
                &[&pair],
            )
            .await?;
        let mut restored = Vec::new();
        let mut alter = String::new();
        for row in rows {
            let (role, could_login): (String, bool) = (row.get(0), row.get(1));
            if could_login {
                alter.push_str(&format!("ALTER ROLE {} LOGIN;", ident(&role)));
                restored.push(role);
            }
        }
        if !alter.is_empty() {
            db.batch("restore LOGIN on the app roles", &alter).await?;
        }
        db.batch("commit unblocking", "COMMIT").await?;
        Ok(restored)
    }
    .await;
    if result.is_err() {
        let _ = db.batch("roll back unblocking", "ROLLBACK").await;
    }
    result
}

/// Roles cutover currently blocks for `pair` on this server.
pub async fn blocked(db: &Db, pair: &str) -> Result<Vec<String>, PgError> {
    if !table_exists(db).await? {
        return Ok(Vec::new());
    }
    let rows = db
        .query(
            "read blocked roles",
            &format!(
                "SELECT role::text FROM {} WHERE pair = $1 ORDER BY 1",
                qualified(SCHEMA, ROLE_TABLE)
            ),
            &[&pair],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn table_exists(db: &Db) -> Result<bool, PgError> {
    super::catalog::relation_exists(db, SCHEMA, ROLE_TABLE).await
}

/// Marks the fence on the old primary as permanent: after promotion the source's app roles stay
/// blocked (so a forgotten client cannot write to the old primary), and `cleanup` leaves them.
pub async fn keep_after_promotion(db: &Db, pair: &str) -> Result<(), PgError> {
    db.execute(
        "keep the source fenced after promotion",
        &format!(
            "UPDATE {} SET after_promotion = true WHERE pair = $1",
            qualified(SCHEMA, ROLE_TABLE)
        ),
        &[&pair],
    )
    .await
    .map(|_| ())
}
