//! The migration's lease on a pair's servers (see [`crate::engine::ServerLease`]).
//!
//! On each server a connection kept open for the command holds `GET_LOCK('cutover:<db>')` for
//! every moved database; the server lets go when the connection ends, so a crashed runner never
//! blocks its own resume. Beside it, a row in `cutover_local.lease` (written outside the
//! binlog) names the holder and stays when the holder stops without releasing: a run from
//! another state directory is then refused, since the stopped one may be mid-window.

use super::dialect::literal;
use super::writers::LOCK_DB;
use super::{Db, MyError, Pair, Server};
use crate::engine::Holder;

/// The holder table, in [`LOCK_DB`] (never replicated).
const LEASE_TABLE: &str = "lease";

fn table() -> String {
    format!("`{LOCK_DB}`.`{LEASE_TABLE}`")
}

/// `cutover:<db>`, at most 64 characters (the server's limit for a lock name).
fn lock_name(database: &str) -> String {
    format!("cutover:{database}").chars().take(64).collect()
}

/// The lease held on both servers of a pair.
pub struct MyLease {
    sessions: Vec<(Db, Vec<String>)>,
}

async fn clear(db: &mut Db, databases: &[String]) {
    for d in databases {
        // The record is bookkeeping: a read-only old primary (MySQL's super_read_only) may
        // refuse it; the lock itself goes with the connection.
        let _ = db
            .exec(
                "clear the lease's holder record",
                &format!("DELETE FROM {} WHERE db = ?", table()),
                (d,),
            )
            .await;
    }
    let _ = db.run("let the lease go", "DO RELEASE_ALL_LOCKS()").await;
}

#[async_trait::async_trait]
impl crate::engine::ServerLease for MyLease {
    async fn release(self: Box<Self>) {
        for (mut db, databases) in self.sessions {
            clear(&mut db, &databases).await;
            db.close().await;
        }
    }
}

async fn recorded(db: &mut Db, database: &str) -> Result<Option<Holder>, MyError> {
    let exists: Option<(String,)> = db
        .exec_opt(
            "look for the lease record",
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (LOCK_DB, LEASE_TABLE),
        )
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let row: Option<(String,)> = db
        .exec_opt(
            "read the lease's holder",
            &format!("SELECT holder FROM {} WHERE db = ?", table()),
            (database,),
        )
        .await?;
    Ok(row.and_then(|(h,)| serde_json::from_str(&h).ok()))
}

async fn take_on(
    server: &Server,
    databases: &[String],
    holder: &Holder,
) -> Result<(Db, Vec<String>), MyError> {
    let mut db = server.connect().await?;
    db.run(
        "keep the lease's record out of the binlog",
        "SET SESSION sql_log_bin = 0",
    )
    .await?;
    let mut held = Vec::new();
    let mut refusal = None;
    for d in databases {
        let got: Option<(Option<i64>,)> = db
            .exec_opt(
                "take the migration's lease",
                "SELECT GET_LOCK(?, 0)",
                (lock_name(d),),
            )
            .await?;
        if got.and_then(|(g,)| g) == Some(1) {
            held.push(d.clone());
            if let Some(stopped) = recorded(&mut db, d)
                .await?
                .filter(|r| !r.same_journal(holder))
            {
                refusal = Some(format!(
                    "{}: {stopped} stopped without releasing the migration's lease on database {d}; it may have stopped mid-window, and only its journal can finish or roll it back; nothing was changed. Fix: resume it from that state directory (`cutover run --resume`, or the single-pair command's `--resume`), or, if that state directory is lost and the servers' state is what you want, clear the record: DELETE FROM {} WHERE db = {};",
                    db.label,
                    table(),
                    literal(d)
                ));
                break;
            }
            continue;
        }
        let holder_conn: Option<(Option<u64>,)> = db
            .exec_opt(
                "read who holds the lease",
                "SELECT IS_USED_LOCK(?)",
                (lock_name(d),),
            )
            .await?;
        let session = match holder_conn.and_then(|(c,)| c) {
            Some(id) => {
                let who: Option<(String, String)> = db
                    .exec_opt(
                        "read the holding session",
                        "SELECT USER, HOST FROM information_schema.PROCESSLIST WHERE ID = ?",
                        (id,),
                    )
                    .await?;
                who.map(|(u, h)| format!("server connection {id} of {u} from {h}"))
                    .unwrap_or_else(|| format!("server connection {id}"))
            }
            None => "another connection".to_owned(),
        };
        let who = match recorded(&mut db, d).await? {
            Some(h) => format!("{h} ({session})"),
            None => session,
        };
        refusal = Some(format!(
            "{}: the migration's lease on database {d} is held by {who}; nothing was changed. Wait until it ends, or stop it there",
            db.label
        ));
        break;
    }
    if let Some(why) = refusal {
        let _ = db.run("let the lease go", "DO RELEASE_ALL_LOCKS()").await;
        db.close().await;
        return Err(MyError::Refused(why));
    }
    let text = serde_json::to_string(holder)
        .map_err(|e| MyError::failed("render the lease's holder", e))?;
    let recorded = async {
        db.run(
            "create cutover's local database",
            &format!("CREATE DATABASE IF NOT EXISTS `{LOCK_DB}`"),
        )
        .await?;
        db.run(
            "create the lease record",
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (db VARCHAR(64) NOT NULL PRIMARY KEY, holder TEXT NOT NULL) ENGINE=InnoDB",
                table()
            ),
        )
        .await?;
        for d in databases {
            db.exec(
                "record the lease's holder",
                &format!("REPLACE INTO {} (db, holder) VALUES (?, ?)", table()),
                (d, &text),
            )
            .await?;
        }
        Ok::<(), MyError>(())
    };
    if let Err(e) = recorded.await {
        // A read-only server (MySQL's super_read_only binds cutover too) keeps no record; the
        // lock holds all the same.
        tracing::warn!(server = %db.label, error = %e, "lease holder not recorded");
    }
    Ok((db, held))
}

/// Takes the lease on the pair's source, then its target, for every moved database. A refusal
/// on the target lets the source's go again. A server that cannot be reached holds no lease
/// (said in the log): the command fails on it anyway, and a rollback must still reach the other.
pub async fn take(pair: &Pair, holder: &Holder) -> Result<MyLease, MyError> {
    let databases = pair.plan.databases.clone();
    let mut sessions = Vec::new();
    for server in [&pair.source, &pair.target] {
        match take_on(server, &databases, holder).await {
            Ok(held) => sessions.push(held),
            Err(MyError::Connect { server, message }) => {
                tracing::warn!(%server, %message, "unreachable: the migration's lease is not held there");
            }
            Err(e) => {
                crate::engine::ServerLease::release(Box::new(MyLease { sessions })).await;
                return Err(e);
            }
        }
    }
    Ok(MyLease { sessions })
}
