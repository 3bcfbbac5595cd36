//! The other databases of the source server, and what the server-wide fence does to them.
//!
//! `read_only` cannot be scoped to the moved databases: from the fence on, every database of
//! the source server refuses its writers, and the old primary stays read-only after the
//! cutover. A server rarely holds one application, so preflight and the gate name every other
//! database with the accounts that write it and who is connected to it, and refuse while one
//! has writers unless the plan says how (`neighbours`: move them too by listing them in
//! `databases`, accept `read-only`, or `fence-accounts`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::dialect::literal;
use super::{Db, HEARTBEAT_DB, MyError, Pair, writers};
use crate::plan::Neighbours;

/// Schemas that belong to the server or to cutover, never a neighbour.
const NOT_NEIGHBOURS: [&str; 6] = [
    "mysql",
    "sys",
    "information_schema",
    "performance_schema",
    HEARTBEAT_DB,
    writers::LOCK_DB,
];

/// One other database of the source server.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    /// Its name.
    pub database: String,
    /// Accounts that can write it through grants on it (not administrators whose global
    /// privileges write every database), as `'u'@'h'`.
    pub writers: Vec<String>,
    /// Sessions using it now, per user (cutover's own excluded).
    pub sessions: Vec<(String, u64)>,
}

impl Neighbour {
    /// It has someone who writes it, or someone using it now.
    pub fn in_use(&self) -> bool {
        !self.writers.is_empty() || !self.sessions.is_empty()
    }

    /// Who writes and uses it, in words.
    pub fn activity(&self) -> String {
        let writers = if self.writers.is_empty() {
            "no account but administrators can write it".to_owned()
        } else {
            format!("written by {}", self.writers.join(", "))
        };
        let sessions = if self.sessions.is_empty() {
            "no session uses it now".to_owned()
        } else {
            format!(
                "{} session(s) use it now ({})",
                self.sessions.iter().map(|(_, n)| n).sum::<u64>(),
                self.sessions
                    .iter()
                    .map(|(u, n)| format!("{u} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!("{writers}; {sessions}")
    }

    /// What the fence does to it under `mode`, in words.
    pub fn effect(&self, mode: Neighbours) -> &'static str {
        match mode {
            Neighbours::FenceAccounts => {
                "unaffected: the fence locks the plan's app accounts and leaves read_only off"
            }
            _ => {
                "read-only from the fence on, and for good on the old primary (read_only is server-wide)"
            }
        }
    }
}

/// Every other database of `source`, with its writers and sessions. Changes nothing.
pub async fn read(pair: &Pair, source: &mut Db) -> Result<Vec<Neighbour>, MyError> {
    let schemata: Vec<String> = source
        .exec_all(
            "list the server's databases",
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
            (),
        )
        .await?;
    let moved = pair.replicated_databases();
    let others: Vec<String> = schemata
        .into_iter()
        .filter(|d| {
            !NOT_NEIGHBOURS.contains(&d.to_ascii_lowercase().as_str()) && !moved.contains(d)
        })
        .collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    // Read once; each database's writers are computed from it. Administrators: accounts
    // whose global privileges write every database.
    let privileges = writers::Privileges::read(source).await?;
    let global: Vec<(String, String)> = privileges
        .accounts(&[])
        .into_iter()
        .filter(|a| a.writes)
        .map(|a| (a.user, a.host))
        .collect();
    let own = [pair.plan.source.user.clone(), pair.replication_user()];
    let sessions: Vec<(String, String)> = source
        .exec_all(
            "read who uses which database",
            "SELECT USER, DB FROM information_schema.PROCESSLIST
             WHERE DB IS NOT NULL AND ID <> CONNECTION_ID() AND COMMAND <> 'Binlog Dump'",
            (),
        )
        .await?;
    let mut found = Vec::new();
    for database in others {
        let writers: Vec<String> = privileges
            .accounts(std::slice::from_ref(&database))
            .into_iter()
            .filter(|a| {
                a.writes
                    && !a.locked
                    && !own.contains(&a.user)
                    && !global.contains(&(a.user.clone(), a.host.clone()))
            })
            .map(|a| format!("{}@{}", literal(&a.user), literal(&a.host)))
            .collect();
        let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
        for (user, db) in &sessions {
            if *db == database && !own.contains(user) {
                *per_user.entry(user.clone()).or_default() += 1;
            }
        }
        found.push(Neighbour {
            database,
            writers,
            sessions: per_user.into_iter().collect(),
        });
    }
    Ok(found)
}

/// The refusal for `neighbours` in use under the default `neighbours = "refuse"`, naming each;
/// `None` when none is in use or the plan says how to treat them.
pub fn refusal(pair: &Pair, neighbours: &[Neighbour]) -> Option<String> {
    if pair.plan.neighbours != Neighbours::Refuse {
        return None;
    }
    let in_use: Vec<String> = neighbours
        .iter()
        .filter(|n| n.in_use())
        .map(|n| format!("{} ({})", n.database, n.activity()))
        .collect();
    (!in_use.is_empty()).then(|| {
        format!(
            "other databases on the source server would go read-only at the fence and stay so (read_only is server-wide): {}",
            in_use.join("; ")
        )
    })
}

/// The fix for [`refusal`].
pub fn fix(neighbours: &[Neighbour]) -> String {
    let names: Vec<String> = neighbours
        .iter()
        .filter(|n| n.in_use())
        .map(|n| format!("\"{}\"", n.database))
        .collect();
    format!(
        "move them too (add {} to `databases`), or accept that they go read-only (`neighbours = \"read-only\"`), or fence by account and leave read_only off (`neighbours = \"fence-accounts\"`)",
        names.join(", ")
    )
}
