//! Who can write, and the account lock that makes the fence hold for them too.
//!
//! `read_only` is a global switch, but it does not bind everyone: on MariaDB a user holding
//! `READ_ONLY ADMIN` (which `ALL PRIVILEGES ON *.*` includes; before 10.11, `SUPER`) writes
//! through it, and killing such a user's sessions once is no fence, because an app reconnects
//! at once (1,497 of 2,090 acknowledged rows lost that way). MySQL's `super_read_only` binds
//! them all. So:
//!
//! - preflight and the gate list every account that can write the plan's databases and is
//!   neither an app user, exempted with a reason, nor cutover's own login; and every app user
//!   whose privileges bypass `read_only`, unless the plan accepts it (`privileged_app_users`);
//! - the fence locks the app users' accounts (`ACCOUNT LOCK`, not binlogged, so the lock never
//!   reaches the target) before it sets `read_only`, kills their sessions, and checks none is
//!   left. Which accounts cutover locked is remembered in a table on the source itself, so an
//!   unfence restores exactly those, even from another process.
//!
//! A prepared XA transaction (`XA PREPARE`, listed by `XA RECOVER`) is a writer with no session:
//! its transaction manager commits it later, on whichever server it reaches, so the gate
//! refuses while one is pending and the fence checks again ([`xa_prepared`]).
//!
//! Privileges are read from `information_schema` (the same on both flavours); role grants from
//! MariaDB's `mysql.roles_mapping` or MySQL's `mysql.role_edges`; lock state from
//! `mysql.global_priv` (MariaDB) or `mysql.user` (MySQL).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::dialect::{Flavour, Version, literal};
use super::{Db, MyError};

/// Privileges that change data or schema in a database.
const WRITE_PRIVILEGES: [&str; 6] = ["INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER"];

/// Database, on each server, that remembers which accounts cutover locked there. Neither
/// replicated (outside the filter, and written with `sql_log_bin = 0`) nor dumped, so each
/// server keeps its own record.
pub const LOCK_DB: &str = "cutover_local";
/// Table (in [`LOCK_DB`]) of the accounts cutover locked.
pub const LOCK_TABLE: &str = "locked_account";

/// The prepared XA transactions of `db`, each as the xid an `XA COMMIT` or `XA ROLLBACK`
/// takes (`X'gtrid',X'bqual',formatID`, hex, whatever bytes the ids hold). Plain `XA RECOVER`
/// on both flavours: MySQL's `CONVERT XID` is not MariaDB's, and MariaDB's `FORMAT='SQL'`
/// prints printable ids unescaped.
pub async fn xa_prepared(db: &mut Db) -> Result<Vec<String>, MyError> {
    let rows = db
        .rows_by_name("list prepared XA transactions", "XA RECOVER")
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let format_id = r.number("formatID").unwrap_or(1);
            let gtrid_len = r.number("gtrid_length").unwrap_or_default() as usize;
            let data = r.bytes("data").unwrap_or_default();
            let (gtrid, bqual) = data.split_at(gtrid_len.min(data.len()));
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            format!("X'{}',X'{}',{format_id}", hex(gtrid), hex(bqual))
        })
        .collect())
}

/// The refusal for pending XA transactions: what they are, why they block, the fix.
pub fn xa_refusal(pending: &[String]) -> String {
    format!(
        "prepared XA transactions are pending on the source: {}; their transaction manager would commit them on the old primary after the move, so their rows would never reach the target. Fix: let the transaction manager finish them (or `XA COMMIT <xid>` / `XA ROLLBACK <xid>` with the xids above), then retry",
        pending.join(", ")
    )
}

/// One account (`user@host`) and what it can do to the plan's databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Host pattern.
    pub host: String,
    /// The account is locked (cannot log in).
    pub locked: bool,
    /// It can write one of the plan's databases.
    pub writes: bool,
    /// It holds a privilege `read_only` does not bind on this server.
    pub bypasses_read_only: bool,
}

impl Account {
    /// `'user'@'host'`, quoted for SQL.
    pub fn sql(&self) -> String {
        format!("{}@{}", literal(&self.user), literal(&self.host))
    }
}

/// Whether `name` matches a `LIKE`-style pattern (`%`, `_`, `\` escapes), as grants' database
/// patterns and the replica's wild filters match names.
pub fn db_pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('%', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('_', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                n.first() == Some(&rest[0]) && go(&rest[1..], &n[1..])
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// `'user'@'host'` (information_schema's GRANTEE) into its parts; a role has no host.
fn grantee(text: &str) -> (String, String) {
    match text.split_once("'@'") {
        Some((u, h)) => (
            u.trim_start_matches('\'').replace("''", "'"),
            h.trim_end_matches('\'').replace("''", "'"),
        ),
        None => (text.trim_matches('\'').replace("''", "'"), String::new()),
    }
}

/// Privileges that bypass `read_only` on this server.
pub fn bypass_privileges(flavour: Flavour, version: Version) -> &'static [&'static str] {
    match flavour {
        // super_read_only binds every user.
        Flavour::Mysql => &[],
        Flavour::Mariadb if version < Version::new(10, 11, 0) => &["READ_ONLY ADMIN", "SUPER"],
        Flavour::Mariadb => &["READ_ONLY ADMIN"],
    }
}

/// The server's accounts and grants, read once: what each account can do to any set of
/// databases is computed from it without asking the server again.
pub struct Privileges {
    global: Vec<(String, String)>,
    schema: Vec<(String, String, String)>,
    role_grants: Vec<(String, String, String)>,
    all: Vec<(String, String, bool)>,
    bypass: &'static [&'static str],
}

impl Privileges {
    /// Reads every account, its global, database and table privileges and its roles.
    pub async fn read(db: &mut Db) -> Result<Privileges, MyError> {
        let global: Vec<(String, String)> = db
            .exec_all(
                "read global privileges",
                "SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES",
                (),
            )
            .await?;
        let schema: Vec<(String, String, String)> = db
            .exec_all(
                "read database privileges",
                "SELECT GRANTEE, TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES
                 UNION ALL
                 SELECT GRANTEE, TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES",
                (),
            )
            .await?;
        let roles_sql = match db.flavour {
            Flavour::Mariadb => "SELECT User, Host, Role FROM mysql.roles_mapping",
            Flavour::Mysql => "SELECT TO_USER, TO_HOST, FROM_USER FROM mysql.role_edges",
        };
        let role_grants: Vec<(String, String, String)> =
            db.exec_all("read role grants", roles_sql, ()).await?;
        let accounts_sql = match db.flavour {
            Flavour::Mariadb => {
                "SELECT User, Host, IFNULL(JSON_VALUE(Priv, '$.account_locked'), 'false') IN ('true', '1')
                 FROM mysql.global_priv WHERE User <> ''"
            }
            Flavour::Mysql => {
                "SELECT User, Host, account_locked = 'Y' FROM mysql.user WHERE User <> ''"
            }
        };
        let all: Vec<(String, String, bool)> =
            db.exec_all("read accounts", accounts_sql, ()).await?;
        Ok(Privileges {
            global,
            schema,
            role_grants,
            all,
            bypass: bypass_privileges(db.flavour, db.version),
        })
    }

    /// Every account with what it can do to `databases`.
    pub fn accounts(&self, databases: &[String]) -> Vec<Account> {
        let (global, schema, role_grants, bypass) =
            (&self.global, &self.schema, &self.role_grants, self.bypass);
        // Privileges per grantee (user@host, or a role by name with an empty host).
        let mut writes: BTreeSet<(String, String)> = BTreeSet::new();
        let mut bypasses: BTreeSet<(String, String)> = BTreeSet::new();
        for (g, privilege) in global {
            let key = grantee(g);
            if WRITE_PRIVILEGES.contains(&privilege.as_str()) {
                writes.insert(key.clone());
            }
            if bypass.contains(&privilege.as_str()) {
                bypasses.insert(key);
            }
        }
        for (g, pattern, privilege) in schema {
            if WRITE_PRIVILEGES.contains(&privilege.as_str())
                && databases.iter().any(|d| db_pattern_matches(pattern, d))
            {
                writes.insert(grantee(g));
            }
        }
        // Roles granted to each account (transitively: a role can hold roles).
        let mut granted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (user, host, role) in role_grants {
            granted
                .entry((user.clone(), host.clone()))
                .or_default()
                .push(role.clone());
        }
        let has = |set: &BTreeSet<(String, String)>, user: &str, host: &str| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![(user.to_owned(), host.to_owned())];
            while let Some(key) = todo.pop() {
                if !seen.insert(key.clone()) {
                    continue;
                }
                if set.contains(&key) {
                    return true;
                }
                for role in granted.get(&key).into_iter().flatten() {
                    // MariaDB keys a role's own grants by an empty host; MySQL roles have one.
                    todo.push((role.clone(), String::new()));
                    todo.push((role.clone(), "%".to_owned()));
                }
            }
            false
        };
        self.all
            .iter()
            .cloned()
            .map(|(user, host, locked)| Account {
                writes: has(&writes, &user, &host),
                bypasses_read_only: has(&bypasses, &user, &host),
                user,
                host,
                locked,
            })
            .collect()
    }
}

/// Every account on the server with what it can do to `databases`.
pub async fn accounts(db: &mut Db, databases: &[String]) -> Result<Vec<Account>, MyError> {
    Ok(Privileges::read(db).await?.accounts(databases))
}

/// What the fence scope looks like on the source, for preflight and the gate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    /// Accounts that can log in and write but are neither app users, exempt, nor cutover's.
    pub unfenced: Vec<Account>,
    /// App user accounts whose privileges bypass `read_only` and the plan does not accept.
    pub privileged_app: Vec<Account>,
    /// Accounts that write and are exempt, with the plan's reason.
    pub exempt: Vec<(Account, String)>,
}

/// Sorts the source's accounts against the plan.
pub fn scope(
    accounts: &[Account],
    app_users: &[String],
    exempt: &BTreeMap<String, String>,
    privileged_ok: &[String],
    own: &str,
    replication_user: &str,
) -> Scope {
    let mut s = Scope::default();
    for a in accounts.iter().filter(|a| !a.locked) {
        if a.user == own || a.user == replication_user {
            continue;
        }
        if app_users.contains(&a.user) {
            if a.bypasses_read_only && !privileged_ok.contains(&a.user) {
                s.privileged_app.push(a.clone());
            }
        } else if a.writes || a.bypasses_read_only {
            match exempt.get(&a.user) {
                Some(reason) => s.exempt.push((a.clone(), reason.clone())),
                None => s.unfenced.push(a.clone()),
            }
        }
    }
    s
}

/// `'u'@'h', ...`
pub fn list(accounts: &[Account]) -> String {
    accounts
        .iter()
        .map(Account::sql)
        .collect::<Vec<_>>()
        .join(", ")
}

fn lock_table() -> String {
    format!("`{LOCK_DB}`.`{LOCK_TABLE}`")
}

/// Remembers, on the source and outside the binlog, the app accounts that are unlocked now
/// and that the fence will lock; returns them. Runs before the window. The session keeps
/// `sql_log_bin = 0`: nothing cutover does on the source from here on is for the replicas.
pub async fn prepare_lock(
    db: &mut Db,
    app_users: &[String],
    pair: &str,
) -> Result<Vec<Account>, MyError> {
    db.run(
        "keep cutover's fence statements out of the binlog",
        "SET SESSION sql_log_bin = 0",
    )
    .await?;
    db.run(
        "create cutover's local database",
        &format!("CREATE DATABASE IF NOT EXISTS `{LOCK_DB}`"),
    )
    .await?;
    db.run(
        "create the locked-account record",
        &format!(
            "CREATE TABLE IF NOT EXISTS {} (user VARCHAR(128) NOT NULL, host VARCHAR(255) NOT NULL,
               pair VARCHAR(64) NOT NULL, after_promotion BOOL NOT NULL DEFAULT FALSE,
               PRIMARY KEY (user, host)) ENGINE=InnoDB",
            lock_table()
        ),
    )
    .await?;
    let accounts = accounts(db, &[]).await?;
    let to_lock: Vec<Account> = accounts
        .into_iter()
        .filter(|a| !a.locked && app_users.contains(&a.user))
        .collect();
    for a in &to_lock {
        db.exec(
            "record an account to lock",
            &format!(
                "INSERT IGNORE INTO {} (user, host, pair) VALUES (?, ?, ?)",
                lock_table()
            ),
            (&a.user, &a.host, pair),
        )
        .await?;
    }
    Ok(to_lock)
}

/// The statement that locks `accounts` (one round trip inside the window).
pub fn lock_sql(accounts: &[Account]) -> Option<String> {
    (!accounts.is_empty()).then(|| format!("ALTER USER {} ACCOUNT LOCK", list(accounts)))
}

/// The accounts cutover locked for `pair` on this server (not those kept after promotion),
/// as `'u'@'h'`.
pub async fn locked(db: &mut Db, pair: &str) -> Result<Vec<String>, MyError> {
    recorded(db, pair, false).await
}

/// The accounts cutover keeps locked for good for `pair` after a promotion, as `'u'@'h'`.
pub async fn kept_locked(db: &mut Db, pair: &str) -> Result<Vec<String>, MyError> {
    recorded(db, pair, true).await
}

/// The accounts recorded for `pair`, those kept after a promotion or the others.
async fn recorded(db: &mut Db, pair: &str, kept: bool) -> Result<Vec<String>, MyError> {
    let exists: Option<(String,)> = db
        .exec_opt(
            "look for the locked-account record",
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (LOCK_DB, LOCK_TABLE),
        )
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String)> = db
        .exec_all(
            "read the locked accounts",
            &format!(
                "SELECT user, host FROM {} WHERE pair = ? AND after_promotion = ?",
                lock_table()
            ),
            (pair, kept),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|(u, h)| format!("{}@{}", literal(u), literal(h)))
        .collect())
}

/// The accounts recorded for `pair` that are locked on the server right now, as `'u'@'h'`.
/// The gate records which accounts the fence will lock before the fence runs, so the record
/// alone says what cutover meant to do; a server's state is read from the accounts themselves.
pub async fn locked_now(db: &mut Db, pair: &str) -> Result<Vec<String>, MyError> {
    let recorded = locked(db, pair).await?;
    if recorded.is_empty() {
        return Ok(recorded);
    }
    let actually: BTreeSet<String> = accounts(db, &[])
        .await?
        .into_iter()
        .filter(|a| a.locked)
        .map(|a| format!("{}@{}", literal(&a.user), literal(&a.host)))
        .collect();
    Ok(recorded
        .into_iter()
        .filter(|name| actually.contains(name))
        .collect())
}

/// Prepares the one statement that unlocks the accounts cutover locked for `pair` (for use
/// inside the window; the session is set to keep it out of the binlog). `None`: none locked.
pub async fn prepare_unlock(db: &mut Db, pair: &str) -> Result<Option<String>, MyError> {
    let names = locked(db, pair).await?;
    if names.is_empty() {
        return Ok(None);
    }
    db.run(
        "keep the unlock out of the binlog",
        "SET SESSION sql_log_bin = 0",
    )
    .await?;
    Ok(Some(format!(
        "ALTER USER IF EXISTS {} ACCOUNT UNLOCK",
        names.join(", ")
    )))
}

/// Forgets the accounts recorded for `pair` (after they were unlocked).
pub async fn forget(db: &mut Db, pair: &str) -> Result<(), MyError> {
    db.exec(
        "forget the locked accounts",
        &format!(
            "DELETE FROM {} WHERE pair = ? AND NOT after_promotion",
            lock_table()
        ),
        (pair,),
    )
    .await
}

/// Unlocks the accounts cutover locked for `pair` (not those kept after promotion) and
/// forgets them. Returns them as `'u'@'h'`.
pub async fn unlock(db: &mut Db, pair: &str) -> Result<Vec<String>, MyError> {
    let names = locked(db, pair).await?;
    if let Some(sql) = prepare_unlock(db, pair).await? {
        db.run("unlock the app accounts", &sql).await?;
        forget(db, pair).await?;
    }
    Ok(names)
}

/// After promotion: the old primary's app accounts stay locked for good.
pub async fn keep_locked(db: &mut Db, pair: &str) -> Result<(), MyError> {
    db.exec(
        "keep the old primary's app accounts locked",
        &format!(
            "UPDATE {} SET after_promotion = TRUE WHERE pair = ?",
            lock_table()
        ),
        (pair,),
    )
    .await
}

/// Which sessions [`sessions`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Every session, killed or not: until a killed session has left the server it may
    /// still commit what it was committing.
    All,
    /// Only sessions not killed yet. Enough when `read_only` binds every app user: a killed
    /// session still leaving can no longer commit anything (setting `read_only` waited for
    /// commits in flight, and every commit after it is refused).
    NotKilled,
}

/// Sessions of `users` other than this one.
pub async fn sessions(db: &mut Db, users: &[String], count: Count) -> Result<u64, MyError> {
    if users.is_empty() {
        return Ok(0);
    }
    let n: Option<(u64,)> = db
        .exec_opt(
            "count the app sessions",
            &sessions_sql(users.len(), count),
            users.to_vec(),
        )
        .await?;
    Ok(n.map_or(0, |(n,)| n))
}

/// What [`sessions`] runs for `users` names.
pub fn sessions_sql(users: usize, count: Count) -> String {
    let marks = vec!["?"; users].join(", ");
    format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER IN ({marks}) AND ID <> CONNECTION_ID(){}",
        match count {
            Count::All => "",
            // Both servers show a session `KILL CONNECTION` ended, until it has left, as
            // the command `Killed`.
            Count::NotKilled => " AND COMMAND <> 'Killed'",
        }
    )
}

/// Before a reverse cutover: the old primary's app accounts, kept locked for good after the
/// promotion, become an ordinary fence again, so promoting it back unlocks them.
pub async fn release_for_reverse(db: &mut Db, pair: &str) -> Result<(), MyError> {
    db.run(
        "keep cutover's bookkeeping out of the binlog",
        "SET SESSION sql_log_bin = 0",
    )
    .await?;
    db.exec(
        "make the old primary's account lock liftable",
        &format!(
            "UPDATE {} SET after_promotion = FALSE WHERE pair = ?",
            lock_table()
        ),
        (pair,),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_counts_killed_sessions_only_when_read_only_does_not_bind_them() {
        let all = sessions_sql(2, Count::All);
        assert!(
            all.contains("USER IN (?, ?)") && !all.contains("Killed"),
            "{all}"
        );
        let live = sessions_sql(1, Count::NotKilled);
        assert!(live.ends_with("AND COMMAND <> 'Killed'"), "{live}");
    }

    #[test]
    fn grant_patterns_match_like_the_server() {
        assert!(db_pattern_matches("app", "app"));
        assert!(db_pattern_matches("app%", "app_db"));
        assert!(db_pattern_matches("a_p", "app"));
        assert!(!db_pattern_matches("app\\_db", "appxdb"));
        assert!(db_pattern_matches("app\\_db", "app_db"));
        assert!(!db_pattern_matches("other", "app"));
    }

    #[test]
    fn grantee_text_splits_into_user_and_host() {
        assert_eq!(
            grantee("'app'@'127.0.0.1'"),
            ("app".into(), "127.0.0.1".into())
        );
        assert_eq!(
            grantee("'writer_role'"),
            ("writer_role".into(), String::new())
        );
    }

    fn account(user: &str, writes: bool, bypass: bool, locked: bool) -> Account {
        Account {
            user: user.into(),
            host: "%".into(),
            locked,
            writes,
            bypasses_read_only: bypass,
        }
    }

    #[test]
    fn scope_sorts_accounts_against_the_plan() {
        let accounts = [
            account("app", true, true, false),
            account("worker", true, false, false),
            account("reader", false, false, false),
            account("root", true, true, false),
            account("old", true, false, true),
            account("cutover", true, true, false),
        ];
        let exempt = BTreeMap::from([("root".to_owned(), "socket-only admin".to_owned())]);
        let s = scope(&accounts, &["app".into()], &exempt, &[], "cutover", "repl");
        assert_eq!(
            s.unfenced.iter().map(|a| &a.user).collect::<Vec<_>>(),
            ["worker"]
        );
        assert_eq!(s.privileged_app.len(), 1);
        assert_eq!(s.exempt.len(), 1);
        let s = scope(
            &accounts,
            &["app".into()],
            &exempt,
            &["app".into()],
            "cutover",
            "repl",
        );
        assert!(s.privileged_app.is_empty());
    }

    #[test]
    fn mysql_super_read_only_binds_everyone() {
        assert!(bypass_privileges(Flavour::Mysql, Version::new(8, 0, 36)).is_empty());
        assert!(bypass_privileges(Flavour::Mariadb, Version::new(10, 6, 0)).contains(&"SUPER"));
        assert_eq!(
            bypass_privileges(Flavour::Mariadb, Version::new(10, 11, 6)),
            &["READ_ONLY ADMIN"]
        );
    }
}
