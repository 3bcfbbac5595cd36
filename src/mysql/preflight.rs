//! Checks on both servers before anything is changed; every failure says what to change on
//! which server.

use serde::Serialize;

use super::dialect::{Dialect, Flavour, ident};
use super::{Db, MyError, Pair, writers};
use crate::plan::GtidMode;

pub use crate::finding::{Finding, Severity};

/// The outcome of preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Pair name.
    pub pair: String,
    /// Everything found.
    pub findings: Vec<Finding>,
    /// `version flavour` of each side.
    pub versions: (String, String),
    /// Whether replication will follow GTIDs (else file/position).
    pub gtid: bool,
    /// Tables in scope on the source (`db.table`).
    pub tables: Vec<String>,
    /// Whether replication is already set up by cutover (a second `start` is a no-op).
    pub already_started: bool,
}

impl Report {
    /// No errors.
    pub fn passed(&self) -> bool {
        crate::finding::passed(&self.findings)
    }

    /// The errors, one per line, for a refusal message.
    pub fn errors_text(&self) -> String {
        crate::finding::errors_text(&self.findings)
    }
}

/// The findings so far, and the named check running now (every finding carries its name).
struct Collector {
    list: Vec<Finding>,
    check: &'static str,
}

impl Collector {
    fn add(
        &mut self,
        db: &Db,
        severity: Severity,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.list.push(Finding {
            check: self.check.to_owned(),
            server: db.label.clone(),
            severity,
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

fn on(value: &Option<String>) -> bool {
    value
        .as_deref()
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"))
}

/// Tables of `databases` and those without a primary key.
async fn tables(db: &mut Db, databases: &[String]) -> Result<(Vec<String>, Vec<String>), MyError> {
    let mut all = Vec::new();
    let mut keyless = Vec::new();
    for database in databases {
        let rows: Vec<(String, i64)> = db
            .exec_all(
                "list tables",
                "SELECT t.TABLE_NAME, (SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS c
                   WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
                     AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
                 FROM information_schema.TABLES t
                 WHERE t.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' ORDER BY t.TABLE_NAME",
                (database,),
            )
            .await?;
        for (table, keys) in rows {
            let name = format!("{database}.{table}");
            if keys == 0 {
                keyless.push(name.clone());
            }
            all.push(name);
        }
    }
    Ok((all, keyless))
}

/// Room on the target for the snapshot: the replicated databases' data and indexes on the
/// source (`information_schema.TABLES`) against the free space of the target's `@@datadir`,
/// read where the target runs on this machine.
async fn target_room(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    let mut copy: u64 = 0;
    for database in pair.replicated_databases() {
        let bytes: Option<Option<u64>> = source
            .exec_opt(
                "read the size of the replicated tables",
                "SELECT CAST(SUM(DATA_LENGTH + INDEX_LENGTH) AS UNSIGNED) FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                (database,),
            )
            .await?;
        copy = copy.saturating_add(bytes.flatten().unwrap_or(0));
    }
    let dir = target.variable("datadir").await?;
    let dir = dir.ok_or_else(|| "the server does not say its @@datadir".to_owned());
    let reach = crate::files::remote::reach(
        pair.machines.as_ref(),
        &pair.plan.target.host,
        dir.as_deref().ok(),
    )
    .await;
    let (severity, problem, fix) = crate::space::check(
        &reach,
        dir,
        copy,
        "the snapshot of the replicated databases",
    );
    c.add(target, severity, problem, fix);
    Ok(())
}

/// Every account that can write the plan's databases must be an app user (locked and killed
/// at the fence) or exempted with a reason; app users that bypass `read_only` must be accepted
/// by name.
fn fence_scope(c: &mut Collector, pair: &Pair, source: &Db, accounts: &[writers::Account]) {
    let plan = &pair.plan;
    let scope = writers::scope(
        accounts,
        &plan.app_users,
        &plan.exempt_users,
        &plan.privileged_app_users,
        &plan.source.user,
        &pair.replication_user(),
    );
    for a in &scope.unfenced {
        let how = if a.bypasses_read_only {
            "holds a privilege read_only does not bind"
        } else {
            "can write the replicated databases"
        };
        c.add(
            source,
            Severity::Error,
            format!(
                "account {} {how} but is not in `app_users`: whatever it writes after the fence is lost",
                a.sql()
            ),
            format!(
                "add \"{0}\" to `app_users` (its account is then locked at the fence), or REVOKE its write privileges, or, if its writes do not matter, exempt it with a reason: exempt_users = {{ {0} = \"why\" }}",
                a.user
            ),
        );
    }
    for a in &scope.privileged_app {
        c.add(
            source,
            Severity::Error,
            format!(
                "app user {} holds {} (ALL PRIVILEGES ON *.* includes it), so `read_only` does not stop its writes",
                a.sql(),
                writers::bypass_privileges(source.flavour, source.version).join(" / ")
            ),
            format!(
                "grant it only what the app needs (REVOKE ALL PRIVILEGES, GRANT OPTION FROM {0}; GRANT ALL ON `db`.* TO {0}), or accept that the fence stops it by locking its account and killing its sessions: privileged_app_users = [\"{1}\"]",
                a.sql(),
                a.user
            ),
        );
    }
    for (a, reason) in &scope.exempt {
        c.add(
            source,
            Severity::Warning,
            format!(
                "account {} can write but is exempt from the fence: {reason}",
                a.sql()
            ),
            "its writes after the fence would not reach the new primary; the plan accepts that",
        );
    }
}

/// Whether this target already replicates from this source for this pair.
pub async fn replicating(pair: &Pair, target: &mut Db) -> Result<bool, MyError> {
    let status = target
        .rows_by_name("read replica status", target.dialect.replica_status())
        .await?;
    let user = pair.replication_user();
    Ok(status
        .iter()
        .any(|row| row.text("Source_User").as_deref() == Some(user.as_str())))
}

/// Runs every check on both servers, one named check after another (each finding carries
/// its check's name). Changes nothing.
pub async fn run(pair: &Pair, source: &mut Db, target: &mut Db) -> Result<Report, MyError> {
    let mut c = Collector {
        list: Vec::new(),
        check: "distinct-servers",
    };
    if !distinct_servers(&mut c, pair, source, target).await? {
        return Ok(Report {
            pair: pair.plan.name.clone(),
            findings: c.list,
            versions: (source.version.to_string(), target.version.to_string()),
            gtid: false,
            tables: Vec::new(),
            already_started: false,
        });
    }
    c.check = "completed-cutover";
    completed_cutover(&mut c, pair, source, target).await?;
    let already_started = replicating(pair, target).await?;
    c.check = "xa-prepared";
    xa_prepared(&mut c, pair, source, target).await?;
    c.check = "binary-log";
    binary_log(&mut c, pair, source, target).await?;
    c.check = "server-ids";
    server_ids(&mut c, pair, source, target).await?;
    c.check = "flavour-and-version";
    flavour_and_version(&mut c, pair, source, target).await?;
    c.check = "gtid";
    let gtid = gtid(&mut c, pair, source, target).await?;
    c.check = "privileges";
    privileges(&mut c, pair, source, target).await?;
    c.check = "databases-and-tables";
    let all = databases_and_tables(&mut c, pair, source, target, already_started).await?;
    c.check = "snapshot-consistency";
    snapshot_consistency(&mut c, pair, source, target).await?;
    c.check = "fence-scope";
    writers_and_accounts(&mut c, pair, source, target).await?;
    c.check = "neighbours";
    neighbours(&mut c, pair, source, target).await?;
    c.check = "transport";
    transport(&mut c, pair, source, target).await?;
    c.check = "time-zone-and-charset";
    time_zone_and_charset(&mut c, pair, source, target).await?;
    Ok(Report {
        pair: pair.plan.name.clone(),
        findings: c.list,
        versions: (
            format!("{} {:?}", source.version, source.flavour),
            format!("{} {:?}", target.version, target.flavour),
        ),
        gtid,
        tables: all,
        already_started,
    })
}

/// Two distinct servers first: a replica of itself, or a fence on the only server the app
/// has, must never be attempted. A server's identity: its server_id plus where it keeps
/// its data (two servers may share an id by mistake; one server has one datadir).
async fn distinct_servers(
    c: &mut Collector,
    _pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<bool, MyError> {
    let identity = "SELECT CONCAT_WS(' ', @@GLOBAL.server_id, @@GLOBAL.hostname, @@GLOBAL.port, @@GLOBAL.datadir)";
    let (s_id, t_id): (String, String) = (
        source
            .query_one("read the server's identity", identity)
            .await?,
        target
            .query_one("read the server's identity", identity)
            .await?,
    );
    if s_id == t_id {
        c.add(
            target,
            Severity::Error,
            format!(
                "source {} and target {} are the same server ({s_id}): it cannot replicate from itself, and the fence would lock the app out of its only server",
                source.label, target.label
            ),
            "point `target` at the new server (check host and port: 127.0.0.1 and localhost are the same machine)",
        );
        return Ok(false);
    }
    Ok(true)
}

/// The old primary of a completed cutover: a new run would copy its stale rows over the
/// live side (another operator's plan, a state directory lost).
async fn completed_cutover(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    _target: &mut Db,
) -> Result<(), MyError> {
    let kept = writers::kept_locked(source, &pair.plan.name).await?;
    if !kept.is_empty() {
        c.add(
            source,
            Severity::Error,
            format!(
                "this server was moved away from by a completed cutover: it is the old primary, its app accounts kept locked ({}); a new run would replicate its stale rows over the live side",
                kept.join(", ")
            ),
            "to move back, reverse that cutover from the state directory that ran it (`cutover run --rollback`); to move again, write a plan whose source is the current primary",
        );
    }
    Ok(())
}

/// Prepared XA transactions: their commit would come later, on whichever server their
/// transaction manager reaches, and a snapshot taken meanwhile holds no trace of them.
async fn xa_prepared(
    c: &mut Collector,
    _pair: &Pair,
    source: &mut Db,
    _target: &mut Db,
) -> Result<(), MyError> {
    for xid in super::writers::xa_prepared(source).await? {
        c.add(
            source,
            Severity::Error,
            format!("a prepared XA transaction is pending ({xid}): its transaction manager would commit it later, and not on the target"),
            format!("let the transaction manager finish it, or XA COMMIT {xid}; / XA ROLLBACK {xid};"),
        );
    }
    Ok(())
}

/// Binary log on the source (and on the target when it must feed reverse replication).
async fn binary_log(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    let reverse = pair.plan.reverse_replication;
    for (db, needed) in [(&mut *source, true), (&mut *target, reverse)] {
        if !needed {
            continue;
        }
        let why = if db.label.starts_with("source") {
            "replication reads it"
        } else {
            "reverse replication reads it"
        };
        if !on(&db.variable("log_bin").await?) {
            c.add(db, Severity::Error, format!("binary log is off ({why})"), "start the server with `log_bin` (e.g. `log_bin = binlog` in [mysqld]) and restart it");
        }
        let format = db.variable("binlog_format").await?.unwrap_or_default();
        if !format.eq_ignore_ascii_case("ROW") {
            c.add(db, Severity::Error, format!("binlog_format is {format}, not ROW"), "set `binlog_format = ROW` in [mysqld] (or SET GLOBAL binlog_format = 'ROW' and reconnect the app)");
        }
        let image = db
            .variable("binlog_row_image")
            .await?
            .unwrap_or_else(|| "FULL".into());
        if !image.eq_ignore_ascii_case("FULL") {
            c.add(
                db,
                Severity::Error,
                format!("binlog_row_image is {image}, not FULL"),
                "set `binlog_row_image = FULL` in [mysqld]",
            );
        }
    }
    Ok(())
}

/// Distinct, non-zero server ids.
async fn server_ids(
    c: &mut Collector,
    _pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    let source_id = source.variable("server_id").await?.unwrap_or_default();
    let target_id = target.variable("server_id").await?.unwrap_or_default();
    for (db, id) in [(&*source, &source_id), (&*target, &target_id)] {
        if id == "0" || id.is_empty() {
            c.add(
                db,
                Severity::Error,
                "server_id is 0",
                "set a unique non-zero `server_id` in [mysqld] and restart",
            );
        }
    }
    if source_id == target_id && !source_id.is_empty() {
        c.add(
            target,
            Severity::Error,
            format!("server_id {target_id} is the same as the source's"),
            "give the target its own `server_id` in [mysqld] and restart it",
        );
    }
    Ok(())
}

/// Flavours must match (MariaDB GTIDs and MySQL GTIDs do not mix).
async fn flavour_and_version(
    c: &mut Collector,
    _pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    if source.flavour != target.flavour {
        c.add(
            target,
            Severity::Error,
            format!(
                "the source is {:?} and the target {:?}",
                source.flavour, target.flavour
            ),
            "replicate between servers of the same flavour; dump and load once instead",
        );
    }
    if target.version < source.version {
        c.add(
            target,
            Severity::Warning,
            format!(
                "target {} is older than source {}",
                target.version, source.version
            ),
            "replicating to an older server can fail on new syntax; upgrade the target first",
        );
    }
    Ok(())
}

/// GTIDs.
async fn gtid(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<bool, MyError> {
    let gtid = match source.dialect {
        Dialect::Mariadb => true,
        _ => {
            let both = on(&source.variable("gtid_mode").await?)
                && on(&target.variable("gtid_mode").await?);
            if !both && pair.plan.gtid == GtidMode::On {
                for db in [&*source, &*target] {
                    c.add(db, Severity::Error, "gtid_mode is not ON and the plan requires GTIDs (`gtid = \"on\"`)", "set `gtid_mode = ON` and `enforce_gtid_consistency = ON` in [mysqld], or set `gtid = \"auto\"` to use file/position");
                }
            }
            both
        }
    };
    let gtid = gtid && pair.plan.gtid != GtidMode::Off;
    if !gtid {
        c.add(
            target,
            Severity::Warning,
            "replication will use binlog file/position, not GTIDs",
            "enable GTIDs on both servers for a safer catch-up and reverse replication",
        );
    }
    if source.flavour == Flavour::Mariadb
        && !on(&target.variable("log_slave_updates").await?)
        && pair.plan.reverse_replication
    {
        c.add(target, Severity::Error, "log_slave_updates is off: after the cutover the old source could not follow the replicated history", "set `log_slave_updates = ON` in [mysqld] on the target");
    }
    Ok(gtid)
}

/// Privileges of the login users.
async fn privileges(
    c: &mut Collector,
    _pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    for (db, needs) in [
        (
            &mut *source,
            "RELOAD, REPLICATION CLIENT (BINLOG MONITOR), CREATE USER, SELECT, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER, PROCESS, and SUPER/CONNECTION ADMIN to end app sessions",
        ),
        (
            &mut *target,
            "SUPER or REPLICATION SLAVE ADMIN, CREATE, INSERT, ALTER, DROP, CREATE USER",
        ),
    ] {
        let grants: Vec<String> = db.exec_all("read grants", "SHOW GRANTS", ()).await?;
        let all = grants.iter().any(|g| g.contains("ALL PRIVILEGES ON *.*"));
        if !all {
            c.add(db, Severity::Warning, format!("`{}` does not hold ALL PRIVILEGES ON *.*; cutover needs {needs}", db.label), "GRANT the listed privileges to cutover's user, or check the grants below if start fails");
        }
    }
    Ok(())
}

/// Databases and tables.
async fn databases_and_tables(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
    already_started: bool,
) -> Result<Vec<String>, MyError> {
    let (all, keyless) = tables(source, &pair.plan.databases).await?;
    for database in &pair.plan.databases {
        let exists: Option<(String,)> = source
            .exec_opt(
                "look up the database",
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (database,),
            )
            .await?;
        if exists.is_none() {
            c.add(
                source,
                Severity::Error,
                format!("database {} does not exist", ident(database)),
                "fix `databases` in the plan",
            );
        }
    }
    for table in &keyless {
        c.add(source, Severity::Error, format!("table {table} has no primary key (row events would scan it and it cannot be verified in chunks)"), format!("add a primary key, e.g. `ALTER TABLE {table} ADD COLUMN id BIGINT AUTO_INCREMENT PRIMARY KEY`"));
    }
    if !already_started {
        let (on_target, _) = tables(target, &pair.replicated_databases()).await?;
        if !on_target.is_empty() {
            c.add(target, Severity::Error, format!("the target already has tables in the replicated databases: {}", on_target.join(", ")), "drop those databases on the target (start copies them), or point the plan at an empty server");
        }
        target_room(c, pair, source, target).await?;
    }
    Ok(all)
}

/// Tables whose snapshot --single-transaction cannot make consistent while they are written.
async fn snapshot_consistency(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    _target: &mut Db,
) -> Result<(), MyError> {
    for database in &pair.plan.databases {
        let rows: Vec<(String, String)> = source
            .exec_all(
                "list non-transactional tables",
                "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'
                   AND ENGINE NOT IN ('InnoDB', 'ROCKSDB', 'TokuDB')",
                (database,),
            )
            .await?;
        for (table, engine) in rows {
            c.add(
                source,
                Severity::Error,
                format!(
                    "table {database}.{table} uses {engine}, which is not transactional: the snapshot (--single-transaction) cannot be consistent while it is written, and a failed statement half-applies on the replica"
                ),
                format!("ALTER TABLE {}.{} ENGINE=InnoDB;", ident(database), ident(&table)),
            );
        }
    }
    Ok(())
}

/// Fence scope: who else can write, and app users read_only does not bind.
async fn writers_and_accounts(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    let accounts = writers::accounts(source, &pair.plan.databases).await?;
    fence_scope(c, pair, source, &accounts);
    // Accounts live in the `mysql` schema, which is neither dumped nor replicated.
    let on_target = writers::accounts(target, &pair.plan.databases).await?;
    for a in accounts
        .iter()
        .filter(|a| pair.plan.app_users.contains(&a.user))
    {
        match on_target
            .iter()
            .find(|t| t.user == a.user && t.host == a.host)
        {
            None => c.add(
                target,
                Severity::Error,
                format!(
                    "app account {} does not exist on the target: after the switch the app could not log in",
                    a.sql()
                ),
                format!(
                    "create it on the target with the source's password hash and grants (SHOW CREATE USER {0}; SHOW GRANTS FOR {0}; on the source), with sql_log_bin = 0",
                    a.sql()
                ),
            ),
            Some(t) if a.writes && !t.writes => c.add(
                target,
                Severity::Error,
                format!(
                    "app account {} cannot write the replicated databases on the target",
                    t.sql()
                ),
                format!("repeat its grants from the source: SHOW GRANTS FOR {};", a.sql()),
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The other databases of the source server: read_only is server-wide.
async fn neighbours(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    _target: &mut Db,
) -> Result<(), MyError> {
    let neighbours = super::neighbours::read(pair, source).await?;
    let refused = super::neighbours::refusal(pair, &neighbours).is_some();
    for n in &neighbours {
        let problem = format!(
            "database {} shares this server ({}): {}",
            ident(&n.database),
            n.activity(),
            n.effect(pair.plan.neighbours)
        );
        match pair.plan.neighbours {
            crate::plan::Neighbours::Refuse if refused && n.in_use() => c.add(
                source,
                Severity::Error,
                problem,
                super::neighbours::fix(&neighbours),
            ),
            crate::plan::Neighbours::ReadOnly if n.in_use() => c.add(
                source,
                Severity::Warning,
                problem,
                "the plan accepts it (`neighbours = \"read-only\"`)",
            ),
            _ => c.add(source, Severity::Info, problem, "nothing to do"),
        }
    }
    Ok(())
}

/// Transport: how each of cutover's connections is protected, and the replica's link.
async fn transport(
    c: &mut Collector,
    pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    for (db, endpoint) in [
        (&mut *source, &pair.plan.source),
        (&mut *target, &pair.plan.target),
    ] {
        let cipher: Option<(String, String)> = db
            .exec_opt(
                "read the session's cipher",
                "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
                (),
            )
            .await?;
        let encrypted = cipher.is_some_and(|(_, c)| !c.is_empty());
        let mode = endpoint.effective_ssl_mode();
        if !encrypted && mode == crate::plan::MysqlSslMode::Preferred {
            c.add(
                db,
                Severity::Warning,
                "cutover's connection is not encrypted: ssl_mode `preferred`, and the server does not offer TLS",
                "give the server a certificate (`ssl_cert`, `ssl_key`) and set ssl_mode = \"verify_identity\" with `ssl_ca`, or accept plaintext on a network you trust (ssl_mode = \"disabled\" says so)",
            );
        } else if encrypted {
            c.add(
                db,
                Severity::Info,
                format!(
                    "cutover's connection is encrypted ({})",
                    match mode {
                        crate::plan::MysqlSslMode::VerifyIdentity
                        | crate::plan::MysqlSslMode::VerifyCa =>
                            "certificate and host name verified",
                        _ => "certificate not verified",
                    }
                ),
                "nothing to do",
            );
        }
    }
    match super::tls::replica_tls(&pair.plan.source) {
        Some(link) => c.add(
            target,
            Severity::Info,
            format!(
                "the replica's link to the source will be encrypted ({}), its account {}@{} REQUIRE {}",
                if link.verify {
                    "the source's certificate verified"
                } else {
                    "the source's certificate not verified"
                },
                pair.replication_user(),
                pair.replication_user_host(),
                if link.identity.is_some() { "X509 (the link's client certificate)" } else { "SSL" }
            ),
            "nothing to do",
        ),
        None => c.add(
            target,
            Severity::Warning,
            "the replica's link to the source is not required to be encrypted (ssl_mode `preferred` or `disabled`): every row crosses the network as the server's defaults decide",
            "set the source's ssl_mode to `verify_identity` (with `ssl_ca`) to encrypt and verify the binlog stream",
        ),
    }
    Ok(())
}

/// Time zone and character set.
async fn time_zone_and_charset(
    c: &mut Collector,
    _pair: &Pair,
    source: &mut Db,
    target: &mut Db,
) -> Result<(), MyError> {
    for name in [
        "time_zone",
        "system_time_zone",
        "character_set_server",
        "collation_server",
    ] {
        let (s, t) = (source.variable(name).await?, target.variable(name).await?);
        if s != t {
            c.add(target, Severity::Warning, format!("{name} differs: source {}, target {}", s.unwrap_or_default(), t.unwrap_or_default()), format!("set `{name}` on the target to the source's value so the app sees the same times and text"));
        }
    }
    Ok(())
}
