//! Who else can write: the fence is only as good as its role list.
//!
//! The fence blocks the roles the plan names. Any other role that can log in and write to a
//! replicated table (directly, through membership, as owner, through a `PUBLIC` grant, through
//! `pg_write_all_data`, or as a superuser) keeps writing to the old primary after promotion,
//! and those writes are lost: a background worker with its own role lost 1,529 of 2,166
//! acknowledged rows that way. So the same question is asked three times, with three answers:
//!
//! - preflight lists such roles as errors (unless the plan exempts them, with a reason);
//! - the gate refuses while one of them has a session in the database, and the fence checks
//!   again once the fenced sessions are gone;
//! - after promotion, the source's WAL since the slot's last confirmed position is decoded
//!   (`pgoutput`, the forward publication, so exactly the replicated tables) and every write
//!   that did not come from a replication origin is counted: proof, not a promise, that the
//!   old primary took nothing the new one lacks.
//!
//! A fourth writer needs no session at all: a prepared (two-phase) transaction. Logical
//! decoding sends it only at `COMMIT PREPARED`, which its transaction manager may issue on the
//! old primary after the move, so its rows would be there only. [`prepared`] lists them for
//! preflight, `status`, the gate (which refuses while any exists) and the fence (which checks
//! again once the fenced sessions are gone, for one prepared between the gate and the fence).
//!
//! The membership test uses `pg_has_role(.., 'MEMBER')`, not `USAGE`: a `NOINHERIT` member can
//! still `SET ROLE` to a role that writes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::catalog::Table;
use super::db::{Db, PgError};

/// One login role that can write to a replicated table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Writer {
    /// Role name.
    pub role: String,
    /// Superuser (writes anything, whatever the grants).
    pub superuser: bool,
    /// One replicated table it can write, for the message.
    pub example_table: String,
    /// How many replicated tables it can write.
    pub tables: i64,
}

/// SQL (a CTE named `writer`, columns `oid`, `rolname`, `rolsuper`, `example`, `n`) for the
/// login roles that can connect to the current database and write to any of the tables given
/// as `$1` (schemas) / `$2` (names).
const WRITERS_CTE: &str = "
WITH scope AS (
    SELECT c.oid AS relid
    FROM unnest($1::text[], $2::text[]) AS t(s, n)
    JOIN pg_namespace ns ON ns.nspname = t.s
    JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n
), writable AS (
    SELECT r.oid, s.relid
    FROM pg_roles r CROSS JOIN scope s
    WHERE r.rolcanlogin
      AND has_database_privilege(r.oid, current_database(), 'CONNECT')
      AND EXISTS (SELECT 1 FROM pg_roles m
                  WHERE pg_has_role(r.oid, m.oid, 'MEMBER')
                    AND has_table_privilege(m.oid, s.relid, 'INSERT, UPDATE, DELETE, TRUNCATE'))
), writer AS (
    SELECT r.oid, r.rolname::text AS rolname, r.rolsuper,
           min(w.relid::regclass::text) AS example, count(*) AS n
    FROM writable w JOIN pg_roles r ON r.oid = w.oid
    GROUP BY r.oid, r.rolname, r.rolsuper
)";

fn scope_params(tables: &[Table]) -> (Vec<String>, Vec<String>) {
    tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .unzip()
}

/// Every login role that can write to one of `tables` on this server.
pub async fn writers(db: &Db, tables: &[Table]) -> Result<Vec<Writer>, PgError> {
    let (schemas, names) = scope_params(tables);
    let rows = db
        .query(
            "list the roles that can write the replicated tables",
            &format!("{WRITERS_CTE} SELECT rolname, rolsuper, example, n FROM writer ORDER BY 1"),
            &[&schemas, &names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Writer {
            role: r.get(0),
            superuser: r.get(1),
            example_table: r.get(2),
            tables: r.get(3),
        })
        .collect())
}

/// The roles that can write one of `tables` but that neither the fence (`fenced`), an
/// exemption (`exempt`) nor cutover's own login (`own`) accounts for.
pub async fn unfenced_writers(
    db: &Db,
    tables: &[Table],
    fenced: &[String],
    exempt: &[String],
    own: &str,
) -> Result<Vec<Writer>, PgError> {
    Ok(writers(db, tables)
        .await?
        .into_iter()
        .filter(|w| w.role != own && !fenced.contains(&w.role) && !exempt.contains(&w.role))
        .collect())
}

/// Client sessions connected to this database, per role, of `roles` (other than this one).
/// Walsenders and replication workers are not client backends and never count.
pub async fn sessions_of(db: &Db, roles: &[String]) -> Result<Vec<(String, i64)>, PgError> {
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .query(
            "look for sessions of unfenced writers",
            "SELECT usename::text, count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND pid <> pg_backend_pid() AND usename = ANY($1)
             GROUP BY 1 ORDER BY 1",
            &[&roles],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// SQL counting the client sessions of `$n` (a text array) in this database, for folding the
/// post-fence check into another statement.
pub fn sessions_count_sql(param: usize) -> String {
    format!(
        "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename = ANY(${param}))"
    )
}

/// `role (n sessions)`, comma separated.
pub fn describe_sessions(sessions: &[(String, i64)]) -> String {
    sessions
        .iter()
        .map(|(role, n)| format!("`{role}` ({n} session{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A prepared (two-phase) transaction waiting for its `COMMIT PREPARED`.
#[derive(Debug, Clone, Serialize)]
pub struct PreparedXact {
    /// Its global id.
    pub gid: String,
    /// The role that prepared it.
    pub owner: String,
    /// How long ago it was prepared.
    pub age_seconds: f64,
}

impl std::fmt::Display for PreparedXact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (owner `{}`, prepared {:.0} s ago)",
            self.gid, self.owner, self.age_seconds
        )
    }
}

/// The prepared transactions of `db`'s database, oldest first.
pub async fn prepared(db: &Db) -> Result<Vec<PreparedXact>, PgError> {
    Ok(db
        .query(
            "list prepared transactions",
            "SELECT gid, owner::text, EXTRACT(epoch FROM now() - prepared)::float8
             FROM pg_prepared_xacts WHERE database = current_database() ORDER BY prepared",
            &[],
        )
        .await?
        .iter()
        .map(|r| PreparedXact {
            gid: r.get(0),
            owner: r.get(1),
            age_seconds: r.get(2),
        })
        .collect())
}

/// The refusal for pending prepared transactions: what they are, why they block, the fix.
pub fn prepared_refusal(pending: &[PreparedXact]) -> String {
    let fix: Vec<String> = pending
        .iter()
        .map(|p| {
            format!(
                "COMMIT PREPARED '{0}'; or ROLLBACK PREPARED '{0}';",
                p.gid.replace('\'', "''")
            )
        })
        .collect();
    format!(
        "prepared transactions are pending on the source: {}; logical replication carries one only at its COMMIT PREPARED, which its transaction manager would then send to the old primary, so its rows would never reach the target. Fix: let the transaction manager finish them (or, as the owner: {}), then retry",
        pending
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        fix.join(" ")
    )
}

/// What the old primary committed to replicated tables after the point the new primary has.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OldPrimaryAudit {
    /// Rows written per table (`schema.table`) by transactions that did not come from a
    /// replication origin. Empty means none.
    pub rows_by_table: BTreeMap<String, u64>,
    /// Transactions those rows came in.
    pub transactions: u64,
    /// Transactions applied by replication (reverse replication from the new primary), decoded
    /// and not counted.
    pub replicated_transactions: u64,
    /// Roles with sessions in the database when the audit ran (besides cutover's own and the
    /// fenced roles): who most likely wrote them.
    pub suspects: Vec<(String, i64)>,
    /// Source WAL position the audit decoded from (the slot's confirmed position).
    pub from_lsn: String,
}

impl OldPrimaryAudit {
    /// Rows written in all.
    pub fn rows(&self) -> u64 {
        self.rows_by_table.values().sum()
    }

    /// `table: n rows, ...`
    pub fn describe(&self) -> String {
        let tables: Vec<String> = self
            .rows_by_table
            .iter()
            .map(|(t, n)| format!("{t}: {n} row{}", if *n == 1 { "" } else { "s" }))
            .collect();
        let mut text = format!(
            "the old primary took {} row write(s) in {} transaction(s) after the fence that the new primary does not have ({})",
            self.rows(),
            self.transactions,
            tables.join(", ")
        );
        if !self.suspects.is_empty() {
            text.push_str(&format!(
                "; connected to it now: {}",
                describe_sessions(&self.suspects)
            ));
        }
        text
    }
}

/// Decodes what slot `slot` has not confirmed yet, through publication `publication`, and
/// counts the writes that did not arrive through replication (reverse replication's applies
/// carry an origin and are not counted; nor is anything in cutover's own schema). The slot
/// must not be streaming: its walsender is ended first if it still holds it. Changes nothing:
/// the changes are peeked, not consumed.
pub async fn audit_slot(
    db: &Db,
    slot: &str,
    publication: &str,
    own_schema: &str,
) -> Result<OldPrimaryAudit, PgError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let from_lsn = loop {
        let row = db
            .query_opt(
                "look up the slot to audit",
                "SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .ok_or_else(|| {
                PgError::Refused(format!(
                    "{}: slot `{slot}` is gone, so the writes after the fence cannot be checked",
                    db.server()
                ))
            })?;
        match row.get::<_, Option<i32>>(0) {
            None => break row.get::<_, Option<String>>(1).unwrap_or_default(),
            Some(pid) => {
                if Instant::now() > deadline {
                    return Err(PgError::Timeout {
                        what: format!("{}: walsender {pid} to release slot `{slot}`", db.server()),
                        after: Duration::from_secs(10),
                    });
                }
                // The subscription is disabled: nothing streams from this slot any more.
                db.execute(
                    "end the walsender of the disabled subscription",
                    "SELECT pg_terminate_backend($1)",
                    &[&pid],
                )
                .await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Logical decoding reads flushed WAL only, and a source with `synchronous_commit = off`
    // may not have flushed the latest commits yet: a synchronous commit of our own flushes
    // everything before it.
    db.batch(
        "flush the source's WAL before decoding it",
        "BEGIN; SET LOCAL synchronous_commit = on;
         SELECT pg_logical_emit_message(true, 'cutover', 'audit'); COMMIT;",
    )
    .await?;
    let quoted_publication = format!("\"{}\"", publication.replace('"', "\"\""));
    let rows = db
        .query(
            "decode the source's WAL after the fence",
            "SELECT xid::text, data FROM pg_logical_slot_peek_binary_changes(
                 $1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)",
            &[&slot, &quoted_publication],
        )
        .await?;
    let messages: Vec<(String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut audit = count_writes(&messages, own_schema);
    audit.from_lsn = from_lsn;
    if audit.rows() > 0 {
        audit.suspects = db
            .query(
                "list who is connected to the old primary",
                "SELECT usename::text, count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid() AND usename <> session_user
                 GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    }
    Ok(audit)
}

/// Counts row writes in `pgoutput` protocol-1 messages (`(xid, message)` in order), skipping
/// transactions that carry a replication origin and relations in `own_schema`.
pub fn count_writes(messages: &[(String, Vec<u8>)], own_schema: &str) -> OldPrimaryAudit {
    let mut relations: BTreeMap<u32, String> = BTreeMap::new();
    let mut audit = OldPrimaryAudit::default();
    let mut current: BTreeMap<String, u64> = BTreeMap::new();
    let mut replicated = false;
    for (_, m) in messages {
        let Some((&kind, rest)) = m.split_first() else {
            continue;
        };
        match kind {
            b'B' => {
                current.clear();
                replicated = false;
            }
            b'O' => replicated = true,
            b'R' => {
                if let Some(relid) = be_u32(rest) {
                    let mut parts = rest[4..].split(|b| *b == 0);
                    let schema = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let schema = if schema.is_empty() {
                        "pg_catalog".into()
                    } else {
                        schema
                    };
                    relations.insert(relid, format!("{schema}.{name}"));
                }
            }
            b'I' | b'U' | b'D' => {
                if let Some(relid) = be_u32(rest) {
                    let name = relations
                        .get(&relid)
                        .cloned()
                        .unwrap_or_else(|| format!("relation {relid}"));
                    *current.entry(name).or_default() += 1;
                }
            }
            b'T' => {
                // The count comes from the message: never loop past the relids it holds.
                let n = (be_u32(rest).unwrap_or(0) as usize).min(rest.len().saturating_sub(5) / 4);
                for i in 0..n {
                    let at = 5 + 4 * i;
                    if let Some(relid) = rest.get(at..).and_then(be_u32) {
                        let name = relations
                            .get(&relid)
                            .cloned()
                            .unwrap_or_else(|| format!("relation {relid}"));
                        *current.entry(format!("{name} (TRUNCATE)")).or_default() += 1;
                    }
                }
            }
            b'C' => {
                let own = format!("{own_schema}.");
                current.retain(|t, _| !t.starts_with(&own));
                if replicated && !current.is_empty() {
                    audit.replicated_transactions += 1;
                } else if !current.is_empty() {
                    audit.transactions += 1;
                    for (t, n) in std::mem::take(&mut current) {
                        *audit.rows_by_table.entry(t).or_default() += n;
                    }
                }
                current.clear();
            }
            _ => {}
        }
    }
    audit
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(relid: u32, schema: &str, name: &str) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(relid.to_be_bytes());
        m.extend(schema.as_bytes());
        m.push(0);
        m.extend(name.as_bytes());
        m.push(0);
        m.extend([b'd', 0, 1]);
        m
    }

    fn change(kind: u8, relid: u32) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend(relid.to_be_bytes());
        m.extend([b'N', 0, 0]);
        m
    }

    fn txn(body: Vec<Vec<u8>>, origin: bool) -> Vec<(String, Vec<u8>)> {
        let mut out = vec![("1".to_owned(), vec![b'B', 0, 0, 0])];
        if origin {
            out.push(("1".into(), b"O\0\0\0\0\0\0\0\0pg_1\0".to_vec()));
        }
        out.extend(body.into_iter().map(|m| ("1".to_owned(), m)));
        out.push(("1".into(), vec![b'C', 0]));
        out
    }

    #[test]
    fn counts_local_writes_per_table_and_skips_replicated_and_own() {
        let mut messages = txn(
            vec![
                relation(16384, "public", "writes"),
                change(b'I', 16384),
                change(b'U', 16384),
                relation(16390, "cutover", "fence_marker"),
                change(b'I', 16390),
            ],
            false,
        );
        // Reverse replication applying the new primary's rows: carries an origin.
        messages.extend(txn(vec![change(b'I', 16384), change(b'D', 16384)], true));
        // Cutover's own marker alone: not a transaction of the app.
        messages.extend(txn(vec![change(b'I', 16390)], false));
        let mut truncate = vec![b'T'];
        truncate.extend(1u32.to_be_bytes());
        truncate.push(0);
        truncate.extend(16384u32.to_be_bytes());
        messages.extend(txn(vec![truncate], false));

        let audit = count_writes(&messages, "cutover");
        assert_eq!(audit.transactions, 2, "{audit:?}");
        assert_eq!(audit.replicated_transactions, 1, "{audit:?}");
        assert_eq!(audit.rows_by_table.get("public.writes"), Some(&2));
        assert_eq!(
            audit.rows_by_table.get("public.writes (TRUNCATE)"),
            Some(&1)
        );
        assert_eq!(audit.rows(), 3);
        assert!(audit.describe().contains("public.writes: 2 rows"));
    }

    #[test]
    fn nothing_decoded_is_nothing_written() {
        let audit = count_writes(&txn(Vec::new(), false), "cutover");
        assert_eq!(audit.rows(), 0);
        assert_eq!(audit.transactions, 0);
    }
}
