//! The write fence: application roles are kept out of the moved database and their sessions
//! in it are ended.
//!
//! Blocking by role (not `default_transaction_read_only`, which open sessions ignore and any
//! client can undo), with the narrowest scope that still holds:
//!
//! - **database**: the role loses `CONNECT` on the moved database only (also where it had it
//!   through `PUBLIC`: `PUBLIC` loses it, and every other login role that had it through
//!   `PUBLIC` gets it explicitly), so the same role keeps serving the other databases of a
//!   shared cluster. Chosen whenever the role can reach another database.
//! - **login**: `NOLOGIN`, cluster-wide, for roles that reach no other database, superusers
//!   (whom `CONNECT` does not bind), roles that hold `CONNECT` through a group the plan does
//!   not fence, and when cutover's own role may not change the database's grants.
//!
//! What was changed is remembered on the same server (`cutover.blocked_role`,
//! `cutover.blocked_connect`), so unblocking restores exactly what was there, even from
//! another process after a crash. The fence transaction ends with a check that no
//! database-scoped role can still connect; it fails whole otherwise.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::db::{Db, PgError, ident, literal, qualified};
use super::names::{CONNECT_TABLE, ROLE_TABLE, SCHEMA};

/// How far a role's fence reaches on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `NOLOGIN`: the role cannot log in to any database of the cluster.
    Login,
    /// No `CONNECT` on the moved database; the role's other databases are untouched.
    Database,
}

/// The scope the fence would have for one role, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RoleScope {
    /// The role.
    pub role: String,
    /// The scope.
    pub scope: Scope,
    /// Other databases (not templates) the role can connect to.
    pub reaches: Vec<String>,
    /// Why the scope is [`Scope::Login`] although the role reaches other databases.
    pub why_login: Option<String>,
}

/// One role cutover blocked on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRole {
    /// The role.
    pub role: String,
    /// Whether it could log in before (restored for [`Scope::Login`]).
    pub could_login: bool,
    /// How it is blocked.
    pub scope: Scope,
}

/// One change a database-scoped fence made to the database's `CONNECT` grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectChange {
    /// The grantee; `None` is `PUBLIC`.
    pub grantee: Option<String>,
    /// True: cutover revoked a grant that was there; false: cutover added it.
    pub revoked: bool,
    /// The revoked grant carried `WITH GRANT OPTION`.
    pub grant_option: bool,
}

/// What cutover's fence holds on one server for one pair (not what is kept for good after a
/// promotion), as read from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    /// The database the records live in (the moved database).
    pub database: String,
    /// The roles blocked.
    pub roles: Vec<BlockedRole>,
    /// The grant changes of the database-scoped part.
    pub connect: Vec<ConnectChange>,
}

impl Fence {
    /// Nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.connect.is_empty()
    }

    /// Whether `role` is blocked.
    pub fn blocks(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.role == role)
    }

    /// What the unblock gives back, role by role: `app (LOGIN)`, `app (CONNECT on database
    /// shop)`.
    pub fn restored(&self) -> Vec<String> {
        self.roles
            .iter()
            .filter(|r| r.scope == Scope::Database || r.could_login)
            .map(|r| match r.scope {
                Scope::Login => format!("{} (LOGIN)", r.role),
                Scope::Database => format!("{} (CONNECT on database {})", r.role, self.database),
            })
            .collect()
    }
}

/// `app (NOLOGIN)`, `app (no CONNECT on database "shop")`.
pub fn describe(role: &str, scope: Scope, database: &str) -> String {
    match scope {
        Scope::Login => format!("{role} (NOLOGIN)"),
        Scope::Database => format!("{role} (no CONNECT on database {database})"),
    }
}

/// The statements that create (or bring up to date) cutover's fence tables.
pub fn table_statements() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {roles} (
             role name PRIMARY KEY,
             pair text NOT NULL,
             could_login boolean NOT NULL,
             after_promotion boolean NOT NULL DEFAULT false,
             blocked_at timestamptz NOT NULL DEFAULT now());
         ALTER TABLE {roles} ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT 'login';
         CREATE TABLE IF NOT EXISTS {connect} (
             pair text NOT NULL,
             grantee text NOT NULL,
             revoked boolean NOT NULL,
             grant_option boolean NOT NULL,
             after_promotion boolean NOT NULL DEFAULT false,
             changed_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (pair, grantee));",
        roles = qualified(SCHEMA, ROLE_TABLE),
        connect = qualified(SCHEMA, CONNECT_TABLE),
    )
}

/// What the server says about one role for the scope decision.
struct RoleFacts {
    role: String,
    superuser: bool,
    reaches: Vec<String>,
    via_group: Option<String>,
}

/// The facts the scope decision and the grant changes are made from.
struct Facts {
    database: String,
    may_change_grants: bool,
    roles: Vec<RoleFacts>,
    /// `CONNECT` grants on the database: grantee (`None`: PUBLIC), with grant option.
    grants: Vec<(Option<String>, bool)>,
    /// Login roles that are not superusers.
    login_roles: Vec<String>,
}

async fn facts(db: &Db, roles: &[String]) -> Result<Facts, PgError> {
    let by_role: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&roles];
    // Four reads pipelined on the one connection: one round trip's wait, not four.
    let (database, grants, facts, login_roles) = tokio::try_join!(
        db.query_one(
            "read the database's owner",
            "SELECT current_database()::text,
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                    OR pg_has_role(current_user, d.datdba, 'MEMBER')
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        ),
        db.query(
            "read the database's CONNECT grants",
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END,
                    a.is_grantable
             FROM pg_database d,
                  aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
             WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'",
            &[],
        ),
        db.query(
            "read the app roles' reach",
            "SELECT r.rolname::text, r.rolsuper,
                    ARRAY(SELECT o.datname::text FROM pg_database o
                          WHERE o.datname <> current_database() AND NOT o.datistemplate
                            AND o.datallowconn AND has_database_privilege(r.oid, o.oid, 'CONNECT')
                          ORDER BY 1),
                    (SELECT pg_get_userbyid(a.grantee)::text
                     FROM pg_database d,
                          aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                     WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'
                       AND a.grantee <> 0 AND a.grantee <> r.oid
                       AND NOT pg_get_userbyid(a.grantee) = ANY($1)
                       AND pg_has_role(r.oid, a.grantee, 'USAGE')
                     ORDER BY 1 LIMIT 1)
             FROM pg_roles r WHERE r.rolname = ANY($1) ORDER BY 1",
            &by_role,
        ),
        db.query(
            "read the login roles",
            "SELECT rolname::text FROM pg_roles
             WHERE rolcanlogin AND NOT rolsuper AND NOT rolname = ANY($1) ORDER BY 1",
            &by_role,
        ),
    )?;
    Ok(Facts {
        database: database.get(0),
        may_change_grants: database.get::<_, Option<bool>>(1).unwrap_or(false),
        roles: facts
            .iter()
            .map(|r| RoleFacts {
                role: r.get(0),
                superuser: r.get(1),
                reaches: r.get(2),
                via_group: r.get(3),
            })
            .collect(),
        grants: grants.iter().map(|r| (r.get(0), r.get(1))).collect(),
        login_roles: login_roles.iter().map(|r| r.get(0)).collect(),
    })
}

fn decide(facts: &Facts) -> Vec<RoleScope> {
    facts
        .roles
        .iter()
        .map(|r| {
            let why_login = if r.reaches.is_empty() {
                None
            } else if r.superuser {
                Some("it is a superuser, whom CONNECT grants do not bind".to_owned())
            } else if let Some(group) = &r.via_group {
                Some(format!(
                    "it can connect through role {group}, which the plan does not fence"
                ))
            } else if !facts.may_change_grants {
                Some(format!(
                    "cutover's own role may not change the grants of database {} (it is not a superuser and not a member of its owner)",
                    facts.database
                ))
            } else {
                None
            };
            let scope = if r.reaches.is_empty() || why_login.is_some() {
                Scope::Login
            } else {
                Scope::Database
            };
            RoleScope {
                role: r.role.clone(),
                scope,
                reaches: r.reaches.clone(),
                why_login,
            }
        })
        .collect()
}

/// The scope the fence would give each of `roles` on this server now. Changes nothing.
pub async fn scopes(db: &Db, roles: &[String]) -> Result<Vec<RoleScope>, PgError> {
    Ok(decide(&facts(db, roles).await?))
}

fn grantee_sql(grantee: &Option<String>) -> String {
    grantee.as_deref().map(ident).unwrap_or("PUBLIC".to_owned())
}

fn grantee_key(grantee: &Option<String>) -> String {
    // `public` cannot be a role's name, so it stands for PUBLIC.
    grantee.clone().unwrap_or_else(|| "public".to_owned())
}

/// The fence's statements for `facts`: records first, then the grant changes, `NOLOGIN`, and
/// the check that no database-scoped role can still connect.
fn block_statements(facts: &Facts, decided: &[RoleScope], pair: &str) -> String {
    let mut sql = String::new();
    for r in decided {
        sql.push_str(&format!(
            "INSERT INTO {} (role, pair, could_login, scope)
             SELECT rolname, {}, rolcanlogin, {} FROM pg_roles WHERE rolname = {}
             ON CONFLICT (role) DO NOTHING;",
            qualified(SCHEMA, ROLE_TABLE),
            literal(pair),
            literal(match r.scope {
                Scope::Login => "login",
                Scope::Database => "database",
            }),
            literal(&r.role)
        ));
    }
    let scoped: Vec<&str> = decided
        .iter()
        .filter(|r| r.scope == Scope::Database)
        .map(|r| r.role.as_str())
        .collect();
    let database = ident(&facts.database);
    let mut changes: Vec<(Option<String>, bool, bool)> = Vec::new();
    if !scoped.is_empty() {
        for (grantee, option) in &facts.grants {
            match grantee {
                Some(g) if scoped.contains(&g.as_str()) => {
                    changes.push((grantee.clone(), true, *option))
                }
                None => {
                    changes.push((None, true, *option));
                    // Everyone else who could connect through PUBLIC keeps connecting.
                    for role in &facts.login_roles {
                        let direct = facts
                            .grants
                            .iter()
                            .any(|(g, _)| g.as_deref() == Some(role.as_str()));
                        if !direct {
                            changes.push((Some(role.clone()), false, false));
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
    for (grantee, revoked, option) in &changes {
        sql.push_str(&format!(
            "INSERT INTO {} (pair, grantee, revoked, grant_option) VALUES ({}, {}, {}, {})
             ON CONFLICT (pair, grantee) DO NOTHING;",
            qualified(SCHEMA, CONNECT_TABLE),
            literal(pair),
            literal(&grantee_key(grantee)),
            revoked,
            option
        ));
    }
    // Grants added before any is taken away: nobody else loses CONNECT, even for a moment.
    for (grantee, revoked, _) in &changes {
        if !revoked {
            sql.push_str(&format!(
                "GRANT CONNECT ON DATABASE {database} TO {};",
                grantee_sql(grantee)
            ));
        }
    }
    for (grantee, revoked, _) in &changes {
        if *revoked {
            sql.push_str(&format!(
                "REVOKE CONNECT ON DATABASE {database} FROM {};",
                grantee_sql(grantee)
            ));
        }
    }
    for r in decided.iter().filter(|r| r.scope == Scope::Login) {
        sql.push_str(&format!("ALTER ROLE {} NOLOGIN;", ident(&r.role)));
    }
    if !scoped.is_empty() {
        let names: Vec<String> = scoped.iter().map(|r| literal(r)).collect();
        sql.push_str(&format!(
            "DO $fence$ DECLARE left_in text; BEGIN
               SELECT string_agg(r, ', ') INTO left_in FROM unnest(ARRAY[{}]::text[]) r
               WHERE has_database_privilege(r, current_database(), 'CONNECT');
               IF left_in IS NOT NULL THEN
                 RAISE EXCEPTION 'the fence would not hold: % can still connect to database %', left_in, current_database();
               END IF;
             END $fence$;",
            names.join(", ")
        ));
    }
    sql
}

/// The fence decided for one server, ready to apply: read before the window opens, so the
/// window pays only for the one transaction that applies it.
pub struct Planned {
    facts: Facts,
    /// Each role's scope.
    pub scopes: Vec<RoleScope>,
}

impl Planned {
    /// Each role with its scope, described.
    pub fn described(&self) -> Vec<String> {
        self.scopes
            .iter()
            .map(|r| describe(&r.role, r.scope, &self.facts.database))
            .collect()
    }
}

/// Decides the fence for `roles` on this server. Changes nothing but cutover's own tables.
pub async fn plan(db: &Db, roles: &[String]) -> Result<Planned, PgError> {
    // cutover's own tables brought up to date here, before the window (a pair started by an
    // older cutover lacks the newer ones): the fence transaction itself takes no DDL lock.
    db.batch("bring the fence tables up to date", &table_statements())
        .await?;
    let facts = facts(db, roles).await?;
    let scopes = decide(&facts);
    Ok(Planned { facts, scopes })
}

/// Applies `planned` in one transaction, remembering what was there. Roles cutover already
/// blocked keep their first remembered state. Sessions already open are not touched here
/// (see [`end_sessions`]). Should the grants have changed since the plan so that a
/// database-scoped role could still connect, the transaction fails whole.
pub async fn apply(db: &Db, planned: &Planned, pair: &str) -> Result<(), PgError> {
    let sql = block_statements(&planned.facts, &planned.scopes, pair);
    // Several statements in one simple query run as one transaction.
    db.batch_role_change("block the app roles", &sql).await
}

/// [`apply`] without waiting for its commit's flush, for a window whose marker, committed
/// synchronously right after, flushes it before anything depends on it (a crash before that
/// leaves a window that never promoted): under load that flush is most of the block's time.
/// The session's commits are synchronous again afterwards, whether the block committed or not.
pub async fn apply_unflushed(db: &Db, planned: &Planned, pair: &str) -> Result<(), PgError> {
    db.batch(
        "let the fence's own commit skip its flush",
        "SET synchronous_commit = off",
    )
    .await?;
    let applied = apply(db, planned, pair).await;
    let synchronous = db
        .batch(
            "make the session's commits synchronous again",
            "SET synchronous_commit = on",
        )
        .await;
    applied.and(synchronous)
}

/// [`plan`] then [`apply`].
pub async fn block(db: &Db, roles: &[String], pair: &str) -> Result<Planned, PgError> {
    let planned = plan(db, roles).await?;
    apply(db, &planned, pair).await?;
    Ok(planned)
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

/// Restores what cutover's fence took from the roles it blocked for `pair` (LOGIN for the
/// roles that had it, the database's `CONNECT` grants as they were) and forgets them. A fence
/// kept on purpose after a completed cutover ([`keep_after_promotion`]) stays. Returns the
/// roles given back, described. Does nothing when nothing is recorded.
pub async fn unblock(db: &Db, pair: &str) -> Result<Vec<String>, PgError> {
    let state = blocked_state(db, pair).await?;
    if state.is_empty() {
        return Ok(Vec::new());
    }
    db.batch_role_change(
        "give the app roles back what the fence took",
        &unblock_statements(pair, &state),
    )
    .await?;
    Ok(state.restored())
}

/// What cutover's fence holds for `pair` on this server (not what is kept after promotion).
pub async fn blocked_state(db: &Db, pair: &str) -> Result<Fence, PgError> {
    let (database, records, connect) = records(db, pair).await?;
    Ok(Fence {
        database,
        roles: records
            .into_iter()
            .filter(|r| !r.after_promotion)
            .map(|r| r.blocked)
            .collect(),
        connect: connect
            .into_iter()
            .filter(|(_, kept)| !kept)
            .map(|(c, _)| c)
            .collect(),
    })
}

/// One row of `cutover.blocked_role`.
struct Record {
    blocked: BlockedRole,
    after_promotion: bool,
}

type Records = (String, Vec<Record>, Vec<(ConnectChange, bool)>);

async fn records(db: &Db, pair: &str) -> Result<Records, PgError> {
    let database: String = db
        .query_one(
            "read the database name",
            "SELECT current_database()::text",
            &[],
        )
        .await?
        .get(0);
    if !table_exists(db).await? {
        return Ok((database, Vec::new(), Vec::new()));
    }
    // `scope` read through jsonb: a table made before the column existed reads as `login`.
    let rows = db
        .query(
            "read blocked roles",
            &format!(
                "SELECT role::text, could_login, after_promotion,
                        coalesce(to_jsonb(b) ->> 'scope', 'login') = 'database'
                 FROM {} b WHERE pair = $1 ORDER BY 1",
                qualified(SCHEMA, ROLE_TABLE)
            ),
            &[&pair],
        )
        .await?;
    let roles = rows
        .iter()
        .map(|r| Record {
            blocked: BlockedRole {
                role: r.get(0),
                could_login: r.get(1),
                scope: if r.get(3) {
                    Scope::Database
                } else {
                    Scope::Login
                },
            },
            after_promotion: r.get(2),
        })
        .collect();
    let connect = if super::catalog::relation_exists(db, SCHEMA, CONNECT_TABLE).await? {
        db.query(
            "read the fence's grant changes",
            &format!(
                "SELECT grantee, revoked, grant_option, after_promotion FROM {}
                 WHERE pair = $1 ORDER BY revoked, grantee",
                qualified(SCHEMA, CONNECT_TABLE)
            ),
            &[&pair],
        )
        .await?
        .iter()
        .map(|r| {
            let grantee: String = r.get(0);
            (
                ConnectChange {
                    grantee: (grantee != "public").then_some(grantee),
                    revoked: r.get(1),
                    grant_option: r.get(2),
                },
                r.get(3),
            )
        })
        .collect()
    } else {
        Vec::new()
    };
    Ok((database, roles, connect))
}

/// Statements that forget `state` (from [`blocked_state`]) and give back what the fence took,
/// for callers that fold unblocking into a larger transaction: revoked grants first (so
/// nobody is without `CONNECT` for a moment), then the grants cutover added, then LOGIN.
pub fn unblock_statements(pair: &str, state: &Fence) -> String {
    let mut sql = format!(
        "DELETE FROM {} WHERE pair = {} AND NOT after_promotion;",
        qualified(SCHEMA, ROLE_TABLE),
        literal(pair)
    );
    if !state.connect.is_empty() {
        sql.push_str(&format!(
            "DELETE FROM {} WHERE pair = {} AND NOT after_promotion;",
            qualified(SCHEMA, CONNECT_TABLE),
            literal(pair)
        ));
    }
    let database = ident(&state.database);
    for c in state.connect.iter().filter(|c| c.revoked) {
        sql.push_str(&format!(
            "GRANT CONNECT ON DATABASE {database} TO {}{};",
            grantee_sql(&c.grantee),
            if c.grant_option {
                " WITH GRANT OPTION"
            } else {
                ""
            }
        ));
    }
    for c in state.connect.iter().filter(|c| !c.revoked) {
        sql.push_str(&format!(
            "REVOKE CONNECT ON DATABASE {database} FROM {};",
            grantee_sql(&c.grantee)
        ));
    }
    for r in &state.roles {
        if r.scope == Scope::Login && r.could_login {
            sql.push_str(&format!("ALTER ROLE {} LOGIN;", ident(&r.role)));
        }
    }
    sql
}

/// The roles kept fenced for good on this server for `pair` (the old primary of a completed
/// cutover), with when they were blocked.
pub async fn kept_after_promotion(db: &Db, pair: &str) -> Result<Vec<(String, String)>, PgError> {
    if !table_exists(db).await? {
        return Ok(Vec::new());
    }
    let rows = db
        .query(
            "read the roles kept fenced",
            &format!(
                "SELECT role::text, to_char(blocked_at, 'YYYY-MM-DD HH24:MI:SS TZ') FROM {}
                 WHERE pair = $1 AND after_promotion ORDER BY 1",
                qualified(SCHEMA, ROLE_TABLE)
            ),
            &[&pair],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Roles cutover currently blocks for `pair` on this server (kept after promotion too).
pub async fn blocked(db: &Db, pair: &str) -> Result<Vec<String>, PgError> {
    let (_, roles, _) = records(db, pair).await?;
    Ok(roles.into_iter().map(|r| r.blocked.role).collect())
}

/// [`blocked`], each role with its scope in words (`app (no CONNECT on database shop)`).
pub async fn blocked_described(db: &Db, pair: &str) -> Result<Vec<String>, PgError> {
    let (database, roles, _) = records(db, pair).await?;
    Ok(roles
        .into_iter()
        .map(|r| describe(&r.blocked.role, r.blocked.scope, &database))
        .collect())
}

async fn table_exists(db: &Db) -> Result<bool, PgError> {
    super::catalog::relation_exists(db, SCHEMA, ROLE_TABLE).await
}

/// Marks the fence on the old primary as permanent: after promotion the source's app roles stay
/// blocked (so a forgotten client cannot write to the old primary), and `cleanup` leaves them.
pub async fn keep_after_promotion(db: &Db, pair: &str) -> Result<(), PgError> {
    db.batch(
        "keep the source fenced after promotion",
        &format!(
            "{}UPDATE {} SET after_promotion = true WHERE pair = {pair};
             UPDATE {} SET after_promotion = true WHERE pair = {pair};",
            table_statements(),
            qualified(SCHEMA, ROLE_TABLE),
            qualified(SCHEMA, CONNECT_TABLE),
            pair = literal(pair)
        ),
    )
    .await
}

/// Before a reverse cutover: the old primary's fence, kept for good after the promotion, becomes
/// an ordinary one again, so promoting the old primary back gives LOGIN back. Returns the roles.
pub async fn reopen_for_reverse(db: &Db, pair: &str) -> Result<u64, PgError> {
    if !table_exists(db).await? {
        return Ok(0);
    }
    let roles = db
        .execute(
            "make the old primary's fence liftable",
            &format!(
                "UPDATE {} SET after_promotion = false WHERE pair = $1",
                qualified(SCHEMA, ROLE_TABLE)
            ),
            &[&pair],
        )
        .await?;
    if super::catalog::relation_exists(db, SCHEMA, CONNECT_TABLE).await? {
        db.execute(
            "make the old primary's grant changes liftable",
            &format!(
                "UPDATE {} SET after_promotion = false WHERE pair = $1",
                qualified(SCHEMA, CONNECT_TABLE)
            ),
            &[&pair],
        )
        .await?;
    }
    Ok(roles)
}
