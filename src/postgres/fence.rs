//! The write fence: application roles are made unable to log in and their sessions are ended.
//!
//! Blocking by role (not `default_transaction_read_only`, which open sessions ignore and any
//! client can undo) and remembering each role's previous LOGIN attribute in
//! `cutover.blocked_role` on the same server, so unblocking restores exactly what was there,
//! even from another process after a crash.

use std::time::{Duration, Instant};

use super::db::{Db, PgError, ident, literal, qualified};
use super::names::{ROLE_TABLE, SCHEMA};

/// Blocks `roles` from logging in, remembering whether each could before, in one round trip
/// and one transaction. Roles cutover already blocked keep their first remembered state.
/// Sessions already open are not touched here (see [`end_sessions`]).
pub async fn block(db: &Db, roles: &[String], pair: &str) -> Result<(), PgError> {
    let names: Vec<String> = roles.iter().map(|r| literal(r)).collect();
    let mut sql = format!(
        "INSERT INTO {} (role, pair, could_login)
         SELECT rolname, {}, rolcanlogin FROM pg_roles WHERE rolname IN ({})
         ON CONFLICT (role) DO NOTHING;",
        qualified(SCHEMA, ROLE_TABLE),
        literal(pair),
        names.join(", ")
    );
    for role in roles {
        sql.push_str(&format!("ALTER ROLE {} NOLOGIN;", ident(role)));
    }
    // Several statements in one simple query run as one transaction.
    db.batch_role_change("block the app roles (NOLOGIN)", &sql)
        .await
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

/// Gives sessions of `roles` up to `drain` to end on their own, then terminates every session
/// of them (again at each poll, so one that slipped in is caught too) until none is left, so
/// nothing they wrote can commit after this returns. Gives up after `limit`. Returns how many
/// sessions were terminated.
pub async fn end_sessions(
    db: &Db,
    roles: &[String],
    drain: Duration,
    limit: Duration,
) -> Result<usize, PgError> {
    let drain_until = Instant::now() + drain;
    while !drain.is_zero() && Instant::now() < drain_until && sessions(db, roles).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + limit;
    let mut terminated = None;
    loop {
        let signalled = db
            .query_one(
                "end app sessions",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE usename = ANY($1) AND datname = current_database()
                   AND pid <> pg_backend_pid()",
                &[&roles],
            )
            .await?
            .get::<_, i64>(0);
        let first = *terminated.get_or_insert(signalled as usize);
        if signalled == 0 {
            return Ok(first);
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
    let state = blocked_state(db, pair).await?;
    if state.is_empty() {
        return Ok(Vec::new());
    }
    db.batch_role_change(
        "restore LOGIN on the app roles",
        &unblock_statements(pair, &state),
    )
    .await?;
    Ok(state
        .into_iter()
        .filter(|(_, could_login)| *could_login)
        .map(|(role, _)| role)
        .collect())
}

/// Roles cutover blocked for `pair` (not kept after promotion), with whether each could log in
/// before.
pub async fn blocked_state(db: &Db, pair: &str) -> Result<Vec<(String, bool)>, PgError> {
    Ok(records(db, pair)
        .await?
        .into_iter()
        .filter(|r| !r.after_promotion)
        .map(|r| (r.role, r.could_login))
        .collect())
}

/// One row of `cutover.blocked_role`.
struct Record {
    role: String,
    could_login: bool,
    after_promotion: bool,
}

async fn records(db: &Db, pair: &str) -> Result<Vec<Record>, PgError> {
    if !table_exists(db).await? {
        return Ok(Vec::new());
    }
    let rows = db
        .query(
            "read blocked roles",
            &format!(
                "SELECT role::text, could_login, after_promotion FROM {} WHERE pair = $1 ORDER BY 1",
                qualified(SCHEMA, ROLE_TABLE)
            ),
            &[&pair],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Record {
            role: r.get(0),
            could_login: r.get(1),
            after_promotion: r.get(2),
        })
        .collect())
}

/// Statements that forget `state` (from [`blocked_state`]) and give LOGIN back to the roles that
/// had it, for callers that fold unblocking into a larger transaction.
pub fn unblock_statements(pair: &str, state: &[(String, bool)]) -> String {
    let mut sql = format!(
        "DELETE FROM {} WHERE pair = {} AND NOT after_promotion;",
        qualified(SCHEMA, ROLE_TABLE),
        literal(pair)
    );
    for (role, could_login) in state {
        if *could_login {
            sql.push_str(&format!("ALTER ROLE {} LOGIN;", ident(role)));
        }
    }
    sql
}

/// Roles cutover currently blocks for `pair` on this server.
pub async fn blocked(db: &Db, pair: &str) -> Result<Vec<String>, PgError> {
    Ok(records(db, pair)
        .await?
        .into_iter()
        .map(|r| r.role)
        .collect())
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

/// Before a reverse cutover: the old primary's fence, kept for good after the promotion, becomes
/// an ordinary one again, so promoting the old primary back gives LOGIN back. Returns the roles.
pub async fn reopen_for_reverse(db: &Db, pair: &str) -> Result<u64, PgError> {
    if !table_exists(db).await? {
        return Ok(0);
    }
    db.execute(
        "make the old primary's fence liftable",
        &format!(
            "UPDATE {} SET after_promotion = false WHERE pair = $1",
            qualified(SCHEMA, ROLE_TABLE)
        ),
        &[&pair],
    )
    .await
}
