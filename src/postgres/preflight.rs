//! Preflight: everything that would make replication or the cutover fail, checked on both
//! servers before anything is changed. Every finding names the server and the fix.

use serde::Serialize;

use super::catalog::{self, Table};
use super::db::{Db, PgError, ident};
use super::{Pair, Side};
use super::{inventory, writers};

pub use crate::finding::{Finding, Severity};

/// The result of a preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The pair name.
    pub pair: String,
    /// Everything found, source first.
    pub findings: Vec<Finding>,
    /// Tables replication covers (on the source).
    pub tables: Vec<Table>,
    /// Tables that get `REPLICA IDENTITY FULL` at start.
    pub identity_full: Vec<String>,
    /// The target has none of the tables and `copy_schema` will copy them.
    pub copy_schema: bool,
    /// Replication for this pair was already started (its subscription exists).
    pub already_started: bool,
    /// `server_version_num` of source and target.
    pub versions: (i32, i32),
    /// Tables in scope that appeared on the source after replication started and are missing
    /// on the target: `start` copies their schema and adds them to the publication.
    pub new_tables: Vec<String>,
}

impl Report {
    /// True when nothing blocks replication.
    pub fn passed(&self) -> bool {
        crate::finding::passed(&self.findings)
    }

    /// The errors, one per line, for a refusal message.
    pub fn errors_text(&self) -> String {
        crate::finding::errors_text(&self.findings)
    }
}

struct Findings<'a> {
    list: Vec<Finding>,
    source: &'a Db,
    target: &'a Db,
    /// The check running now: every finding carries its name.
    check: &'static str,
}

impl Findings<'_> {
    fn add(&mut self, side: Side, severity: Severity, problem: String, fix: String) {
        let server = match side {
            Side::Source => self.source.server(),
            Side::Target => self.target.server(),
        };
        self.list.push(Finding {
            check: self.check.to_owned(),
            server: server.to_owned(),
            severity,
            problem,
            fix,
        });
    }
    fn error(&mut self, side: Side, problem: impl Into<String>, fix: impl Into<String>) {
        self.add(side, Severity::Error, problem.into(), fix.into());
    }
    fn warning(&mut self, side: Side, problem: impl Into<String>, fix: impl Into<String>) {
        self.add(side, Severity::Warning, problem.into(), fix.into());
    }
    fn info(&mut self, side: Side, problem: impl Into<String>, fix: impl Into<String>) {
        self.add(side, Severity::Info, problem.into(), fix.into());
    }
}

/// Checks both servers of `pair`, one named check after another (each finding carries its
/// check's name). Changes nothing.
pub async fn run(pair: &Pair, source: &Db, target: &Db) -> Result<Report, PgError> {
    let mut f = Findings {
        list: Vec::new(),
        source,
        target,
        check: "distinct-servers",
    };
    if !distinct_servers(&mut f, source, target).await? {
        return Ok(Report {
            pair: pair.plan.name.clone(),
            findings: f.list,
            tables: Vec::new(),
            identity_full: Vec::new(),
            copy_schema: false,
            already_started: false,
            versions: (0, 0),
            new_tables: Vec::new(),
        });
    }
    let x = Facts::read(pair, source, target).await?;
    f.check = "transport";
    transport(&mut f, &x).await?;
    f.check = "completed-cutover";
    completed_cutover(&mut f, &x).await?;
    f.check = "versions";
    versions(&mut f, &x).await?;
    f.check = "apply-workers";
    apply_workers(&mut f, &x).await?;
    f.check = "replication-links";
    replication_links(&mut f, &x).await?;
    f.check = "publisher-capacity";
    publisher(&mut f, &x).await?;
    f.check = "privileges";
    privileges(&mut f, &x).await?;
    f.check = "tables-in-scope";
    tables_in_scope(&mut f, &x).await?;
    f.check = "target-room";
    if !x.already_started && !x.tables.is_empty() {
        target_room(&mut f, pair, target, &x.tables).await;
    }
    f.check = "replica-identity";
    let identity_full = replica_identity(&mut f, &x).await?;
    f.check = "table-owners";
    table_owners(&mut f, &x).await?;
    f.check = "open-transactions";
    open_transactions(&mut f, &x).await?;
    f.check = "app-roles";
    app_roles(&mut f, &x).await?;
    f.check = "fence-scope";
    fence_scope(&mut f, pair, source, &x.tables).await?;
    f.check = "neighbours";
    neighbours(&mut f, pair, source, target).await?;
    f.check = "not-carried";
    let source_inventory = inventory::Inventory::read(source).await?;
    not_carried(&mut f, &source_inventory, &x.tables);
    f.check = "target-schema";
    let (copy_schema, new_tables) =
        schema_on_target(&mut f, pair, source, target, &x.tables, x.already_started).await?;
    if copy_schema || !new_tables.is_empty() {
        roles_for_schema_copy(&mut f, source, target).await?;
    }
    Ok(Report {
        pair: pair.plan.name.clone(),
        findings: f.list,
        tables: x.tables,
        identity_full,
        copy_schema,
        already_started: x.already_started,
        versions: x.versions,
        new_tables,
    })
}

/// What the checks read once and share.
struct Facts<'a> {
    pair: &'a Pair,
    source: &'a Db,
    target: &'a Db,
    /// The pair's subscription exists (replication was started).
    already_started: bool,
    /// `max_sync_workers_per_subscription` on the target.
    sync_workers: i64,
    /// `server_version_num` of source and target.
    versions: (i32, i32),
    source_privs: catalog::Privileges,
    target_privs: catalog::Privileges,
    /// Tables in scope on the source, and names the plan gives that do not exist.
    tables: Vec<Table>,
    unknown: Vec<String>,
}

impl<'a> Facts<'a> {
    async fn read(pair: &'a Pair, source: &'a Db, target: &'a Db) -> Result<Facts<'a>, PgError> {
        let already_started = catalog::subscription(target, &pair.names.subscription)
            .await?
            .is_some();
        let sync_workers: i64 = catalog::setting(target, "max_sync_workers_per_subscription")
            .await?
            .parse()
            .unwrap_or(2);
        let versions = (
            catalog::version_num(source).await?,
            catalog::version_num(target).await?,
        );
        let (tables, unknown) =
            catalog::in_scope(catalog::tables(source).await?, &pair.plan.tables);
        Ok(Facts {
            pair,
            source,
            target,
            already_started,
            sync_workers,
            versions,
            source_privs: catalog::privileges(source).await?,
            target_privs: catalog::privileges(target).await?,
            tables,
            unknown,
        })
    }
}

/// Two distinct servers first: a subscription to its own cluster waits forever, and a fence
/// on it would lock the app out of its only server. `false`: the same cluster, stop here.
async fn distinct_servers(f: &mut Findings<'_>, source: &Db, target: &Db) -> Result<bool, PgError> {
    match (
        inventory::identity(source).await,
        inventory::identity(target).await,
    ) {
        (Ok(s), Ok(t)) if s.0 == t.0 => {
            f.error(
                Side::Target,
                format!(
                    "source and target are the same PostgreSQL cluster (system_identifier {}; databases `{}` and `{}`): a subscription to its own cluster hangs, and the fence would lock the app out of its only server",
                    s.0, s.1, t.1
                ),
                "point `target` at the new server (check host and port: 127.0.0.1 and localhost are the same machine)",
            );
            return Ok(false);
        }
        (Err(e), _) | (_, Err(e)) => f.warning(
            Side::Source,
            format!("could not compare the servers' identities: {e}"),
            "make sure source and target are two different servers",
        ),
        _ => {}
    }
    Ok(true)
}

/// What each of cutover's connections is, and what the replication link will be.
async fn transport(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let (pair, source, target) = (x.pair, x.source, x.target);
    for (side, db, endpoint) in [
        (Side::Source, source, &pair.plan.source),
        (Side::Target, target, &pair.plan.target),
    ] {
        let mode = endpoint.effective_sslmode();
        let encrypted = db.encrypted().await?;
        if !encrypted && mode == crate::plan::SslMode::Prefer {
            f.warning(
                side,
                "cutover's connection is not encrypted: sslmode `prefer`, and the server does not offer TLS",
                "enable `ssl` on the server and set sslmode = \"verify-full\" with `sslrootcert`, or accept plaintext on a network you trust (sslmode = \"disable\" says so)",
            );
        } else if encrypted {
            f.info(
                side,
                format!(
                    "cutover's connection is encrypted ({})",
                    match super::tls::check_of(endpoint) {
                        super::tls::Check::Full => "certificate and host name verified",
                        super::tls::Check::Chain => "certificate chain verified, name not checked",
                        super::tls::Check::Nothing => "certificate not verified",
                    }
                ),
                "nothing to do",
            );
        }
    }
    let link = &pair.plan.source;
    if matches!(
        link.effective_sslmode(),
        crate::plan::SslMode::VerifyCa | crate::plan::SslMode::VerifyFull
    ) && link.sslrootcert.as_deref().is_none_or(|r| r == "system")
    {
        f.warning(
            Side::Target,
            "the subscription's link to the source will be encrypted but not verified (sslmode `require`): PostgreSQL 15's libpq has no `sslrootcert=system`",
            "set the source's `sslrootcert` to a CA file that exists at the same path on the target server",
        );
    }
    Ok(())
}

/// The old primary of a completed cutover: a new run would copy its stale rows over the live
/// side (another operator's plan, a state directory lost).
async fn completed_cutover(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let (pair, source) = (x.pair, x.source);
    let kept = super::fence::kept_after_promotion(source, &pair.names.pair).await?;
    if let Some((_, since)) = kept.first() {
        f.error(
            Side::Source,
            format!(
                "this database was moved away by a completed cutover: it is the old primary, its app roles kept fenced since {since} ({}); a new run would replicate its stale rows over the live side",
                kept.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "to move back, reverse that cutover from the state directory that ran it (`cutover run --rollback`); to move again, write a plan whose source is the current primary",
        );
    }
    Ok(())
}

/// The target runs the same or a newer major version.
async fn versions(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    if x.versions.1 / 10000 < x.versions.0 / 10000 {
        f.error(
            Side::Target,
            format!(
                "target runs PostgreSQL {} but the source runs {}",
                x.versions.1 / 10000,
                x.versions.0 / 10000
            ),
            "install the same or a newer major version on the target",
        );
    }

    Ok(())
}

/// Subscriber side: every enabled subscription holds an apply worker for good, and the initial
/// copy needs one more; without a free one the copy waits forever, silently.
async fn apply_workers(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let target = x.target;
    if !x.already_started {
        let workers: i64 = catalog::setting(target, "max_logical_replication_workers")
            .await?
            .parse()
            .unwrap_or(4);
        let enabled: i64 = target
            .query_one(
                "count enabled subscriptions",
                "SELECT count(*) FROM pg_subscription WHERE subenabled",
                &[],
            )
            .await?
            .get(0);
        if workers - enabled < 2 {
            f.error(
                Side::Target,
                format!(
                    "max_logical_replication_workers = {workers} and {enabled} enabled subscription(s) already hold an apply worker each: this pair needs one for applying and one for its initial copy"
                ),
                format!(
                    "raise max_logical_replication_workers to at least {} on the target (and max_worker_processes with it; restart), or drop unused subscriptions",
                    enabled + 2
                ),
            );
        }
    }

    Ok(())
}

/// The replication links as the subscribing servers will open them: their libpq reads the
/// certificate paths on their own machine, so only they can prove the paths work.
async fn replication_links(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let (pair, source, target) = (x.pair, x.source, x.target);
    let mut links = Vec::new();
    if !x.already_started {
        links.push((
            Side::Target,
            target,
            "source",
            &pair.plan.source,
            pair.forward_conninfo()?,
        ));
    }
    if pair.plan.reverse_replication {
        links.push((
            Side::Source,
            source,
            "target",
            &pair.plan.target,
            pair.target
                .subscription_conninfo(&pair.plan.target.host, pair.plan.target.port)?,
        ));
    }
    for (side, subscriber, publisher, endpoint, conninfo) in links {
        let link = if side == Side::Target {
            "forward"
        } else {
            "reverse"
        };
        match probe_link(subscriber, &conninfo).await {
            Ok(()) => f.info(
                side,
                format!(
                    "the {link} link reaches the {publisher} with the plan's settings ({})",
                    link_words(endpoint)
                ),
                "nothing to do",
            ),
            Err(why) if why.contains("permission denied") || why.contains("must be superuser") => f.warning(
                side,
                format!("could not test the {link} replication link: this role may not create a subscription here ({why})"),
                "run cutover as a role that may create subscriptions on this server (a superuser on PostgreSQL 15); `start` needs it too",
            ),
            Err(why) => f.error(
                side,
                format!(
                    "the {link} replication link cannot reach the {publisher} from this server ({}): {why}",
                    link_words(endpoint)
                ),
                format!(
                    "the paths are opened by this server's own PostgreSQL, on its machine, as its user: put the files there (key mode 0600, owned by that user), or name them as this server sees them with the {publisher}'s `link_sslrootcert`, `link_sslcert` and `link_sslkey`; check the {publisher}'s pg_hba.conf allows this server's replication connection"
                ),
            ),
        }
    }

    Ok(())
}

/// Publisher side: WAL, slots, senders, for the forward link and the reverse one.
async fn publisher(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let (pair, source, target) = (x.pair, x.source, x.target);
    publisher_capacity(
        f,
        source,
        Side::Source,
        &pair.names.subscription,
        if x.already_started {
            0
        } else {
            1 + x.sync_workers
        },
    )
    .await?;
    if pair.plan.reverse_replication {
        publisher_capacity(f, target, Side::Target, &pair.names.reverse_subscription, 1).await?;
    }
    Ok(())
}

/// What cutover's roles may do on each server.
async fn privileges(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let pair = x.pair;
    let (source_privs, target_privs) = (&x.source_privs, &x.target_privs);
    if !source_privs.superuser {
        if !source_privs.replication {
            f.error(
                Side::Source,
                format!(
                    "role `{}` has neither REPLICATION nor SUPERUSER",
                    source_privs.user
                ),
                format!("ALTER ROLE {} REPLICATION;", ident(&source_privs.user)),
            );
        }
        if !source_privs.create_on_database {
            f.error(
                Side::Source,
                format!(
                    "role `{}` cannot create publications in this database",
                    source_privs.user
                ),
                format!(
                    "GRANT CREATE ON DATABASE {} TO {};",
                    ident(&pair.plan.source.dbname),
                    ident(&source_privs.user)
                ),
            );
        }
        if !source_privs.createrole || !source_privs.signal_backend {
            f.error(
                Side::Source,
                format!(
                    "role `{}` cannot block the app roles and end their sessions at the fence",
                    source_privs.user
                ),
                format!(
                    "ALTER ROLE {0} CREATEROLE; GRANT pg_signal_backend TO {0}; (or use a superuser)",
                    ident(&source_privs.user)
                ),
            );
        }
    }
    if !target_privs.superuser {
        f.error(
            Side::Target,
            format!(
                "role `{}` is not a superuser; PostgreSQL {} only lets superusers create subscriptions",
                target_privs.user,
                x.versions.1 / 10000
            ),
            format!("ALTER ROLE {} SUPERUSER; (or log in as one)", ident(&target_privs.user)),
        );
    }
    if pair.plan.reverse_replication && !source_privs.superuser {
        f.error(
            Side::Source,
            "reverse replication needs a subscription on the source, which only a superuser can create",
            "log in to the source as a superuser, or set `reverse_replication = false`",
        );
    }

    Ok(())
}

/// The plan's tables exist, and there is something to replicate.
async fn tables_in_scope(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    for name in &x.unknown {
        f.error(
            Side::Source,
            format!("table `{name}` from the plan's `tables` does not exist"),
            "correct the name in `tables` (write it as schema.table)",
        );
    }
    if x.tables.is_empty() {
        f.error(
            Side::Source,
            "there are no tables to replicate",
            "create the schema on the source, or check `dbname`",
        );
    }
    Ok(())
}

/// Every table can be updated through replication: a usable identity, or `REPLICA IDENTITY
/// FULL` at start when the plan allows it (returned: those tables).
async fn replica_identity(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<Vec<String>, PgError> {
    let pair = x.pair;
    let tables = &x.tables;
    let no_identity: Vec<String> = tables
        .iter()
        .filter(|t| !t.has_usable_identity())
        .map(Table::display_name)
        .collect();
    let mut identity_full = Vec::new();
    if !no_identity.is_empty() {
        if pair.plan.replica_identity_full {
            f.warning(
                Side::Source,
                format!(
                    "tables without a primary key get REPLICA IDENTITY FULL at start: {}",
                    no_identity.join(", ")
                ),
                "fine for small tables; for large ones add a primary key, as every update then scans the target table",
            );
            identity_full = no_identity;
        } else {
            f.error(
                Side::Source,
                format!(
                    "tables without a primary key or usable replica identity (their UPDATE and DELETE would fail once published): {}",
                    no_identity.join(", ")
                ),
                "add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX <unique index>, or set `replica_identity_full = true` in the plan",
            );
        }
    }
    Ok(identity_full)
}

/// Without superuser, cutover's role must own the tables it publishes.
async fn table_owners(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let source = x.source;
    let (source_privs, tables) = (&x.source_privs, &x.tables);
    if !source_privs.superuser {
        let not_owned = tables_not_owned(source, tables).await?;
        if !not_owned.is_empty() {
            f.error(
                Side::Source,
                format!(
                    "role `{}` does not own these tables, so it cannot publish them: {}",
                    source_privs.user,
                    not_owned.join(", ")
                ),
                format!(
                    "GRANT <owner role> TO {}; (or use a superuser)",
                    ident(&source_privs.user)
                ),
            );
        }
    }

    Ok(())
}

/// Transactions that would block slot creation or the fence.
async fn open_transactions(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let source = x.source;
    for p in super::writers::prepared(source).await? {
        let gid = p.gid;
        f.error(
            Side::Source,
            format!(
                "prepared transaction `{gid}` is open (owner `{}`, {:.0} s old): it blocks the replication slot, and logical replication would carry it only at its COMMIT PREPARED",
                p.owner, p.age_seconds
            ),
            format!(
                "COMMIT PREPARED '{0}'; or ROLLBACK PREPARED '{0}';",
                gid.replace('\'', "''")
            ),
        );
    }
    let long = source
        .query(
            "list long transactions",
            "SELECT pid, usename::text, EXTRACT(epoch FROM now() - xact_start)::float8,
                    backend_xid IS NOT NULL
             FROM pg_stat_activity
             WHERE xact_start < now() - interval '1 minute' AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND datname = current_database()",
            &[],
        )
        .await?;
    for row in long {
        let (pid, user, age, writer): (i32, Option<String>, f64, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let what = format!(
            "session {pid} of `{}` has had a {} transaction open for {:.0} s",
            user.unwrap_or_default(),
            if writer { "writing" } else { "read-only" },
            age
        );
        let fix = format!("let it finish, or end it: SELECT pg_terminate_backend({pid});");
        if writer {
            f.error(
                Side::Source,
                format!("{what} (creating the replication slot waits for it)"),
                fix,
            );
        } else if age > 300.0 {
            f.warning(Side::Source, what, fix);
        }
    }

    Ok(())
}

/// The app roles exist on both servers, and cutover does not log in as one it would block.
async fn app_roles(f: &mut Findings<'_>, x: &Facts<'_>) -> Result<(), PgError> {
    let (pair, source, target) = (x.pair, x.source, x.target);
    for (side, db) in [(Side::Source, source), (Side::Target, target)] {
        let found = catalog::roles(db, &pair.plan.app_roles).await?;
        for role in &pair.plan.app_roles {
            if !found.iter().any(|(name, _)| name == role) {
                f.error(
                    side,
                    format!("app role `{role}` does not exist"),
                    match side {
                        Side::Source => "correct `app_roles` in the plan".to_owned(),
                        Side::Target => format!(
                            "create it on the target (pg_dumpall --roles-only from the source, or CREATE ROLE {} LOGIN PASSWORD ...)",
                            ident(role)
                        ),
                    },
                );
            }
        }
    }
    for (side, endpoint) in [
        (Side::Source, &pair.plan.source),
        (Side::Target, &pair.plan.target),
    ] {
        if pair.plan.app_roles.contains(&endpoint.user) {
            f.error(
                side,
                format!("cutover logs in as `{}`, which is also an app role it would block", endpoint.user),
                "give cutover its own role (superuser, or REPLICATION + CREATEROLE + pg_signal_backend)",
            );
        }
    }

    Ok(())
}

/// The schema copy replays `OWNER TO` and `GRANT ... TO` for every role the source's objects
/// name; one missing on the target aborts the whole copy with a raw server error.
async fn roles_for_schema_copy(
    f: &mut Findings<'_>,
    source: &Db,
    target: &Db,
) -> Result<(), PgError> {
    let named: Vec<String> = source
        .query(
            "list the roles the schema names",
            "WITH objects AS (
                 SELECT c.relowner AS owner, c.relacl AS acl FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cutover')
                   AND n.nspname NOT LIKE 'pg\\_%'
                 UNION ALL
                 SELECT n.nspowner, n.nspacl FROM pg_namespace n
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cutover')
                   AND n.nspname NOT LIKE 'pg\\_%'
                 UNION ALL
                 SELECT p.proowner, p.proacl FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cutover')
                   AND n.nspname NOT LIKE 'pg\\_%'
             ), named AS (
                 SELECT owner AS oid FROM objects
                 UNION SELECT (aclexplode(acl)).grantee FROM objects WHERE acl IS NOT NULL
             )
             SELECT DISTINCT r.rolname::text FROM named JOIN pg_roles r ON r.oid = named.oid
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let present: Vec<String> = catalog::roles(target, &named)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let missing: Vec<&String> = named.iter().filter(|r| !present.contains(r)).collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        f.error(
            Side::Target,
            format!("the schema copy needs roles the target lacks (they own objects or hold grants): {list}"),
            format!(
                "create them on the target first: pg_dumpall --roles-only on the source, keep the lines for {list}, and run them with psql on the target"
            ),
        );
    }
    Ok(())
}

/// Unlogged tables, large objects, materialized views and foreign tables: data logical
/// replication does not carry, refused or handled with the fix.
fn not_carried(f: &mut Findings<'_>, inv: &inventory::Inventory, tables: &[Table]) {
    let unlogged: Vec<String> = tables
        .iter()
        .map(Table::display_name)
        .filter(|t| inv.unlogged.contains(t))
        .collect();
    if !unlogged.is_empty() {
        f.error(
            Side::Source,
            format!(
                "unlogged tables cannot be published, so their rows would not reach the target: {}",
                unlogged.join(", ")
            ),
            format!(
                "make them logged ({}), or leave them out with the plan's `tables` list if their contents may be lost",
                unlogged
                    .iter()
                    .map(|t| format!("ALTER TABLE {t} SET LOGGED;"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
    let (count, size) = inv.large_objects;
    if count > 0 {
        f.error(
            Side::Source,
            format!(
                "{count} large object(s){} are not carried by logical replication, and cutover does not copy them",
                size.map(|b| format!(" ({b} bytes)")).unwrap_or_default()
            ),
            "store the data in bytea columns instead, or migrate this database with pg_dump/pg_restore in a maintenance window",
        );
    }
    let matviews: Vec<&String> = inv.matviews.keys().collect();
    if !matviews.is_empty() {
        f.info(
            Side::Target,
            format!(
                "materialized views are not replicated: {}",
                matviews
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "the cutover refreshes them on the target right after promotion (REFRESH MATERIALIZED VIEW)",
        );
    }
    if !inv.foreign.is_empty() {
        f.warning(
            Side::Source,
            format!(
                "foreign tables hold no rows here, so nothing of them is replicated: {}",
                inv.foreign.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            "create the same foreign servers and user mappings on the target",
        );
    }
}

/// Every other database of both clusters, named with its activity and what the fence does to
/// it: on the source from the fence on (and for good, the old primary stays fenced), on the
/// target from `start` until promotion. A neighbour whose role would lose its login is a
/// warning with the fix; the others are listed as unaffected.
async fn neighbours(
    f: &mut Findings<'_>,
    pair: &Pair,
    source: &Db,
    target: &Db,
) -> Result<(), PgError> {
    let roles = &pair.plan.app_roles;
    for (side, db, when, moved) in [
        (
            Side::Source,
            source,
            "from the fence on, and for good after the cutover (the old primary stays fenced)",
            &pair.plan.source.dbname,
        ),
        (
            Side::Target,
            target,
            "from `start` until the promotion",
            &pair.plan.target.dbname,
        ),
    ] {
        for n in super::neighbours::read(db, roles).await? {
            let problem = format!(
                "database {} shares this server ({}): {}",
                n.database,
                n.activity(),
                n.effect(moved, when)
            );
            if n.locked_out.is_empty() {
                f.info(side, problem, "nothing to do");
            } else {
                f.warning(
                    side,
                    problem,
                    format!(
                        "give database {} its own role, or move it in the same run (a [[postgres]] entry of its own); otherwise stop its writers for the move",
                        n.database
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Every role that can log in to the source database and write a replicated table must be
/// fenced or exempted by name: the fence stops only the roles it lists.
async fn fence_scope(
    f: &mut Findings<'_>,
    pair: &Pair,
    source: &Db,
    tables: &[Table],
) -> Result<(), PgError> {
    if tables.is_empty() {
        return Ok(());
    }
    let plan = &pair.plan;
    for w in writers::writers(source, tables).await? {
        if plan.app_roles.contains(&w.role) || w.role == plan.source.user {
            continue;
        }
        let how = if w.superuser {
            "is a superuser".to_owned()
        } else {
            format!(
                "can write {} of the replicated tables (e.g. {})",
                w.tables, w.example_table
            )
        };
        if let Some(reason) = plan.exempt_roles.get(&w.role) {
            f.info(
                Side::Source,
                format!(
                    "role `{}` {how} and is exempt from the fence: {reason}",
                    w.role
                ),
                "its writes after the fence would not reach the new primary; the plan accepts that",
            );
            continue;
        }
        f.error(
            Side::Source,
            format!(
                "role `{}` can log in and {how}, but the fence does not stop it: whatever it writes after the fence is lost",
                w.role
            ),
            format!(
                "add \"{0}\" to `app_roles` (it is then fenced too), or take its access away (ALTER ROLE {1} NOLOGIN; or REVOKE the grants), or, if its writes do not matter, exempt it with a reason: exempt_roles = {{ {0} = \"why\" }}",
                w.role,
                ident(&w.role)
            ),
        );
    }
    let existing = catalog::roles(
        source,
        &plan.exempt_roles.keys().cloned().collect::<Vec<_>>(),
    )
    .await?;
    for role in plan.exempt_roles.keys() {
        if !existing.iter().any(|(name, _)| name == role) {
            f.warning(
                Side::Source,
                format!("exempt role `{role}` does not exist"),
                "correct or remove it in `exempt_roles`",
            );
        }
    }
    Ok(())
}

async fn publisher_capacity(
    f: &mut Findings<'_>,
    db: &Db,
    side: Side,
    own_slot: &str,
    slots_needed: i64,
) -> Result<(), PgError> {
    let wal_level = catalog::setting(db, "wal_level").await?;
    if wal_level != "logical" {
        f.error(
            side,
            format!("wal_level is `{wal_level}`, logical replication needs `logical`"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        );
    }
    if slots_needed == 0 {
        return Ok(());
    }
    let r = db
        .query_one(
            "count replication slots and senders",
            "SELECT current_setting('max_replication_slots')::int8,
                    (SELECT count(*) FROM pg_replication_slots WHERE slot_name <> $1),
                    current_setting('max_wal_senders')::int8,
                    (SELECT count(*) FROM pg_stat_replication)",
            &[&own_slot],
        )
        .await?;
    let (max_slots, used_slots, max_senders, used_senders): (i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    if max_slots - used_slots < slots_needed {
        f.error(
            side,
            format!(
                "{} of max_replication_slots = {max_slots} are free; replication needs {slots_needed} (one slot, plus one per initial-copy worker)",
                max_slots - used_slots
            ),
            format!(
                "ALTER SYSTEM SET max_replication_slots = {}; then restart PostgreSQL (or drop unused slots)",
                used_slots + slots_needed + 2
            ),
        );
    }
    if max_senders - used_senders < slots_needed {
        f.error(
            side,
            format!(
                "{} of max_wal_senders = {max_senders} are free; replication needs {slots_needed}",
                max_senders - used_senders
            ),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {}; then restart PostgreSQL",
                used_senders + slots_needed + 2
            ),
        );
    }
    Ok(())
}

/// Room on the target for the initial copy: the tables' size on the source (indexes and
/// TOAST included) against the free space of the filesystem the target database writes to
/// (its tablespace, else the data directory), read where the target runs on this machine.
async fn target_room(f: &mut Findings<'_>, pair: &Pair, target: &Db, tables: &[Table]) {
    let copy: u64 = tables.iter().map(|t| t.bytes.max(0) as u64).sum();
    let dir = target
        .query_one(
            "read the target's data directory",
            "SELECT coalesce(nullif(pg_tablespace_location(d.dattablespace), ''),
                             current_setting('data_directory'))
               FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map(|r| r.get::<_, String>(0))
        .map_err(|e| {
            format!(
                "the data directory is not readable to this account ({e}; pg_read_all_settings allows it)"
            )
        });
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
        &format!("the initial copy of {} table(s)", tables.len()),
    );
    f.add(Side::Target, severity, problem, fix);
}

async fn tables_not_owned(db: &Db, tables: &[Table]) -> Result<Vec<String>, PgError> {
    let mut out = Vec::new();
    for t in tables {
        let r = db
            .query_one(
                "check table ownership",
                "SELECT pg_has_role(current_user, c.relowner, 'USAGE')
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&t.schema, &t.name],
            )
            .await?;
        if !r.get::<_, bool>(0) {
            out.push(t.display_name());
        }
    }
    Ok(out)
}

/// Extensions and tables on the target. Returns whether the schema will be copied.
async fn schema_on_target(
    f: &mut Findings<'_>,
    pair: &Pair,
    source: &Db,
    target: &Db,
    tables: &[Table],
    already_started: bool,
) -> Result<(bool, Vec<String>), PgError> {
    let on_target = catalog::tables(target).await?;
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for t in tables {
        if on_target
            .iter()
            .any(|o| o.schema == t.schema && o.name == t.name)
        {
            present.push(t);
        } else {
            missing.push(t.display_name());
        }
    }
    let copy_schema = present.is_empty() && !missing.is_empty() && pair.plan.copy_schema;
    // Tables created on the source during the sync: copied like the first schema was.
    let new_tables = if already_started && pair.plan.copy_schema && !copy_schema {
        std::mem::take(&mut missing)
    } else {
        Vec::new()
    };
    if !new_tables.is_empty() {
        f.info(
            Side::Target,
            format!(
                "tables created on the source since replication started: {}",
                new_tables.join(", ")
            ),
            "`start` copies their schema to the target and adds them to the publication (their rows are copied)",
        );
    }

    let target_extensions = catalog::extensions(target).await?;
    let available = target
        .query(
            "list available extensions",
            "SELECT name::text FROM pg_available_extensions",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    for (name, version) in catalog::extensions(source).await? {
        if target_extensions.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if !available.contains(&name) {
            f.error(
                Side::Target,
                format!("extension `{name}` (version {version} on the source) is not installed"),
                format!("install the package that provides `{name}` on the target server"),
            );
        } else if !copy_schema {
            f.error(
                Side::Target,
                format!("extension `{name}` is available but not created in this database"),
                format!("CREATE EXTENSION {};", ident(&name)),
            );
        }
    }

    if !missing.is_empty() {
        if copy_schema {
            f.info(
                Side::Target,
                format!("the target has none of the {} tables", missing.len()),
                "`start` copies the schema (pg_dump --schema-only piped into the target)",
            );
        } else if present.is_empty() {
            f.error(
                Side::Target,
                format!("the target has none of the tables: {}", missing.join(", ")),
                "set `copy_schema = true` in the plan, or restore the schema yourself: pg_dump --schema-only <source> | psql <target>",
            );
        } else {
            f.error(
                Side::Target,
                format!("the target lacks these tables: {}", missing.join(", ")),
                "create them on the target (the schema is only copied automatically into an empty target)",
            );
        }
    }
    for t in present {
        let (s, d) = (
            catalog::columns(source, &t.schema, &t.name).await?,
            catalog::columns(target, &t.schema, &t.name).await?,
        );
        let absent: Vec<&String> = s.iter().filter(|c| !d.contains(c)).collect();
        if !absent.is_empty() {
            f.error(
                Side::Target,
                format!(
                    "table `{}` lacks columns the source has (or has them with another type): {}",
                    t.display_name(),
                    absent
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "ALTER TABLE on the target to match the source",
            );
        }
        if !already_started {
            let has_rows = target
                .query_one(
                    "check for existing rows",
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", t.sql_name()),
                    &[],
                )
                .await?
                .get::<_, bool>(0);
            if has_rows {
                f.error(
                    Side::Target,
                    format!("table `{}` already has rows; the initial copy would clash with them", t.display_name()),
                    format!("TRUNCATE {} on the target (after making sure it is the copy you mean to replace)", t.sql_name()),
                );
            }
        }
    }
    Ok((copy_schema, new_tables))
}

/// The TLS settings a link to `e` carries, in words.
fn link_words(e: &crate::plan::PgEndpoint) -> String {
    let root = e
        .link_sslrootcert
        .as_deref()
        .or(e.sslrootcert.as_deref())
        .filter(|r| *r != "system");
    let mut words = match (e.effective_sslmode(), root) {
        (crate::plan::SslMode::Disable, _) => "no TLS".to_owned(),
        (crate::plan::SslMode::Prefer, _) => "TLS if offered".to_owned(),
        (crate::plan::SslMode::Require, None) => "TLS, certificate not verified".to_owned(),
        (crate::plan::SslMode::VerifyCa | crate::plan::SslMode::Require, Some(r)) => {
            format!("TLS, chain verified against {r}")
        }
        (crate::plan::SslMode::VerifyFull, Some(r)) => {
            format!("TLS, certificate and name verified against {r}")
        }
        (_, None) => "TLS, certificate not verified (no CA file for the server's libpq)".to_owned(),
    };
    let cert = e
        .link_sslcert
        .clone()
        .or_else(|| e.sslcert.as_ref().map(|p| p.display().to_string()));
    if let Some(cert) = cert {
        words.push_str(&format!(", client certificate {cert}"));
    }
    words
}

/// Makes `subscriber` open a replication connection with `conninfo`, inside a transaction
/// that is rolled back: a subscription that creates no slot connects and reads the
/// publication's tables, and nothing is left behind. Returns the server's reason on failure
/// (libpq's own words: the file it could not open, the certificate it refused).
async fn probe_link(subscriber: &Db, conninfo: &crate::secret::Secret) -> Result<(), String> {
    let name = format!("cutover_link_probe_{}", std::process::id());
    let sql = format!(
        "BEGIN; CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (connect = true, enabled = false, create_slot = false, slot_name = NONE, copy_data = false); ROLLBACK",
        super::db::ident(&name),
        super::db::literal(conninfo.expose()),
        super::db::ident(&name)
    );
    let result = subscriber.client().batch_execute(&sql).await;
    // A failed statement leaves the transaction open and aborted.
    let _ = subscriber.client().batch_execute("ROLLBACK").await;
    result.map_err(|e| {
        let message = super::db::error_message(&e);
        // Never the conninfo: it may carry the password.
        message.replace(conninfo.expose(), "<conninfo>")
    })
}
