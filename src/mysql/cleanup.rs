//! `mysql cleanup`: removes what cutover created — replica configurations that follow this
//! pair's replication user (forward on the target, reverse on the source), the replication
//! users, the heartbeat database — on both servers. Idempotent. Read-only states are reported,
//! never changed: which server may take writes is the operator's decision.

use super::dialect::literal;
use super::{Db, HEARTBEAT_DB, MyError, Pair, writers};

/// What cleanup did and what it left on purpose.
pub use crate::engine::Cleaned;

async fn clean_server(
    db: &mut Db,
    pair: &str,
    user: &str,
    done: &mut Vec<String>,
) -> Result<(), MyError> {
    let d = db.dialect;
    let status = db
        .rows_by_name("read replica status", d.replica_status())
        .await?;
    if status
        .iter()
        .any(|r| r.text("Source_User").as_deref() == Some(user))
    {
        db.run("stop the replica", d.stop_replica()).await?;
        db.run("forget the replica configuration", d.reset_replica())
            .await?;
        db.run("clear the replication filter", &d.replicate_only(&[]))
            .await?;
        done.push(format!(
            "removed the replica configuration on the {}",
            db.label
        ));
    }
    // The replica is gone: the applier settings `start` changed come back.
    let restored = super::parallel::restore(db, pair).await?;
    if !restored.is_empty() {
        done.push(format!(
            "restored {} on the {}",
            restored.join(", "),
            db.label
        ));
    }
    db.run(
        "keep cleanup out of the binlog",
        "SET SESSION sql_log_bin = 0",
    )
    .await?;
    let users: Vec<String> = db
        .exec_all(
            "look up the replication user",
            "SELECT Host FROM mysql.user WHERE User = ?",
            (user,),
        )
        .await?;
    for host in users {
        db.run(
            "drop the replication user",
            &format!("DROP USER IF EXISTS {}@{}", literal(user), literal(&host)),
        )
        .await?;
        done.push(format!("dropped user {user}@{host} on the {}", db.label));
    }
    let heartbeat: Option<(String,)> = db
        .exec_opt(
            "look up the heartbeat database",
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (HEARTBEAT_DB,),
        )
        .await?;
    if heartbeat.is_some() {
        db.run(
            "drop the heartbeat database",
            &format!("DROP DATABASE IF EXISTS `{HEARTBEAT_DB}`"),
        )
        .await?;
        done.push(format!(
            "dropped database {HEARTBEAT_DB} (heartbeat) on the {}",
            db.label
        ));
    }
    db.run("restore binlogging", "SET SESSION sql_log_bin = 1")
        .await
}

/// Cleans both servers of one pair.
pub async fn cleanup(pair: &Pair) -> Result<Cleaned, MyError> {
    let (mut source, mut target) = pair.connect().await?;
    let user = pair.replication_user();
    let mut done = Vec::new();
    clean_server(&mut target, &pair.plan.name, &user, &mut done).await?;
    clean_server(&mut source, &pair.plan.name, &user, &mut done).await?;
    let mut kept = Vec::new();
    let read_only = |v: Option<String>| v.is_some_and(|v| v == "1" || v == "ON");
    let (source_ro, target_ro) = (
        read_only(source.variable("read_only").await?),
        read_only(target.variable("read_only").await?),
    );
    if source_ro && !target_ro {
        kept.push(format!(
            "the source stays read-only: the cutover completed and the old primary must not take writes; `{}` there if you mean to",
            source.dialect.unfence()
        ));
    }
    if target_ro {
        // Never promoted: the app's accounts there get back what they had (MySQL's
        // super_read_only refuses account changes: then say what to run).
        match writers::unlock(&mut target, &pair.plan.name).await {
            Ok(unlocked) if !unlocked.is_empty() => done.push(format!(
                "unlocked the app accounts on the target: {}",
                unlocked.join(", ")
            )),
            Ok(_) => {}
            Err(e) => kept.push(format!(
                "the app accounts stay locked on the target ({e}); after making it writable, ALTER USER ... ACCOUNT UNLOCK the accounts listed in `{}`.`{}` there",
                writers::LOCK_DB,
                writers::LOCK_TABLE
            )),
        }
        kept.push(format!(
            "the target stays read-only: it was never promoted; `{}` there if you abandon the migration and want it writable",
            target.dialect.unfence()
        ));
    }
    source.close().await;
    target.close().await;
    Ok(Cleaned {
        pair: pair.plan.name.clone(),
        done,
        kept,
    })
}
