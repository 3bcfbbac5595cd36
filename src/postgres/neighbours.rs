//! The other databases of a shared cluster, and what the fence would do to each.
//!
//! A cluster rarely holds one application: the moved database's roles often serve the wiki or
//! the forge beside it. Preflight names every other database (not templates), who is connected
//! to it now, how much it has written, which of the plan's app roles can connect to it, and, in
//! words, what the fence would do to it: nothing, or `NOLOGIN` for a role it shares (see
//! [`super::fence`] for when the fence cannot be scoped to the moved database).

use serde::Serialize;

use super::db::{Db, PgError};
use super::fence::{self, RoleScope, Scope};

/// One other database of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    /// Its name.
    pub database: String,
    /// Sessions connected to it now, per role.
    pub sessions: Vec<(String, i64)>,
    /// Rows it has written (inserted, updated, deleted) since its statistics were reset.
    pub rows_written: i64,
    /// App roles of the plan that can connect to it.
    pub shared_roles: Vec<String>,
    /// Of those, the ones the fence would make `NOLOGIN` (cluster-wide), with why.
    pub locked_out: Vec<(String, String)>,
}

impl Neighbour {
    /// Sessions and writes, in words: `2 session(s) now (app x2); 1234 row(s) written`.
    pub fn activity(&self) -> String {
        let sessions: i64 = self.sessions.iter().map(|(_, n)| n).sum();
        let who = if self.sessions.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                self.sessions
                    .iter()
                    .map(|(role, n)| format!("{role} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "{sessions} session(s) now{who}; {} row(s) written since its statistics were reset",
            self.rows_written
        )
    }

    /// What the fence does to it, in words. `when` says how long the fence holds
    /// (`from the fence on, and for good on the old primary`).
    pub fn effect(&self, moved: &str, when: &str) -> String {
        if self.shared_roles.is_empty() {
            return "unaffected: no app role of the plan can connect to it".to_owned();
        }
        if self.locked_out.is_empty() {
            return format!(
                "unaffected: it shares app role(s) {}, but the fence is scoped to database {moved} (they lose CONNECT there only)",
                self.shared_roles.join(", ")
            );
        }
        format!(
            "role(s) {} unable to log in to it {when} (the fence makes them NOLOGIN cluster-wide: {})",
            self.locked_out
                .iter()
                .map(|(r, _)| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.locked_out
                .iter()
                .map(|(r, why)| format!("{r}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// Every other database of the cluster `db` is connected to, with what the fence of `roles`
/// would do to it. Changes nothing.
pub async fn read(db: &Db, roles: &[String]) -> Result<Vec<Neighbour>, PgError> {
    let scopes = fence::scopes(db, roles).await?;
    let rows = db
        .query(
            "read the cluster's other databases",
            "SELECT d.datname::text,
                    coalesce(s.tup_inserted + s.tup_updated + s.tup_deleted, 0)::int8,
                    ARRAY(SELECT a.usename::text FROM pg_stat_activity a
                          WHERE a.datname = d.datname AND a.usename IS NOT NULL
                            AND a.backend_type = 'client backend' ORDER BY 1)
             FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
             WHERE d.datname <> current_database() AND NOT d.datistemplate AND d.datallowconn
             ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let database: String = r.get(0);
            let mut sessions: Vec<(String, i64)> = Vec::new();
            for role in r.get::<_, Vec<String>>(2) {
                match sessions.last_mut() {
                    Some((last, n)) if *last == role => *n += 1,
                    _ => sessions.push((role, 1)),
                }
            }
            let reaching: Vec<&RoleScope> = scopes
                .iter()
                .filter(|s| s.reaches.contains(&database))
                .collect();
            Neighbour {
                shared_roles: reaching.iter().map(|s| s.role.clone()).collect(),
                locked_out: reaching
                    .iter()
                    .filter(|s| s.scope == Scope::Login)
                    .map(|s| (s.role.clone(), s.why_login.clone().unwrap_or_default()))
                    .collect(),
                database,
                rows_written: r.get(1),
                sessions,
            }
        })
        .collect())
}
