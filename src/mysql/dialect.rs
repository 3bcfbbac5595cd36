//! Server flavour, numeric version, and the one table of every replication statement each
//! dialect uses. MySQL renamed `MASTER`/`SLAVE` in steps (8.0.22 – 8.0.26, 8.2) and removed the
//! old names in 8.4; MariaDB keeps `CHANGE MASTER` and its own GTIDs.

use std::fmt;

/// MySQL or MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// Oracle MySQL (and Percona Server).
    Mysql,
    /// MariaDB.
    Mariadb,
}

/// A numeric server version; compared as numbers, never as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `SELECT VERSION()` (e.g. `10.11.6-MariaDB-0+deb12u1-log`, `8.0.36-0ubuntu0.22.04.1`,
/// `5.5.5-10.11.6-MariaDB` from old clients' handshakes) into flavour and version.
pub fn parse_version(text: &str) -> Option<(Flavour, Version)> {
    let flavour = if text.to_ascii_lowercase().contains("mariadb") {
        Flavour::Mariadb
    } else {
        Flavour::Mysql
    };
    // MariaDB behind the 5.5.5- compatibility prefix.
    let text = text.strip_prefix("5.5.5-").unwrap_or(text);
    let numeric: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Some((flavour, Version::new(major, minor, patch)))
}

/// The SQL dialect of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// MySQL 5.7.8 to 8.0.22: the old names. (8.0.22 already has `START REPLICA` and `SHOW
    /// REPLICA STATUS`, but `CHANGE REPLICATION SOURCE TO` only arrived in 8.0.23, and the old
    /// forms still work there.) 5.7.8 is the first with `super_read_only`.
    Mysql57,
    /// MySQL 8.0.23 to 8.3: the new names (`SOURCE_POS_WAIT` and `--source-data` from 8.0.26;
    /// `SHOW MASTER STATUS` deprecated from 8.2 but still there until 8.4).
    Mysql80,
    /// MySQL 8.4 and later: the old names are gone.
    Mysql84,
    /// MariaDB 10.5.1 and later (`START REPLICA`, `SHOW REPLICA STATUS`, `RESET REPLICA` are
    /// synonyms from 10.5.1).
    Mariadb,
}

/// Where a replica starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// From a GTID set / position (MySQL: auto-positioning; MariaDB: `gtid_slave_pos`).
    Gtid,
    /// From a binary log file and position.
    File {
        /// Binlog file name.
        file: String,
        /// Position in it.
        position: u64,
    },
}

/// Everything `CHANGE ... TO` needs. The password is put in the statement as a quoted literal:
/// neither MySQL nor MariaDB accepts placeholders there.
#[derive(Debug, Clone)]
pub struct SourceSpec<'a> {
    /// Host the replica connects to.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Replication user.
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
    /// Where to start.
    pub start: StartAt,
    /// TLS for the replica's link; `None` leaves the server's default.
    pub tls: Option<ReplicaTls>,
}

/// TLS for a replica's connection to its source, as the *replica server* opens its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTls {
    /// CA file (on the replica's machine).
    pub ca: Option<String>,
    /// Check the source's certificate (chain and name).
    pub verify: bool,
    /// Client certificate and key files (on the replica's machine).
    pub identity: Option<(String, String)>,
}

/// `db.%` with the pattern's wildcards in the name escaped (`my\_app.%`), for
/// `replicate_wild_do_table`.
pub fn table_pattern(database: &str) -> String {
    let mut p = String::new();
    for c in database.chars() {
        if matches!(c, '_' | '%' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str(".%");
    p
}

/// `db.table` with the pattern's wildcards escaped in both names, matching that table only
/// (for `replicate_wild_ignore_table`).
pub fn one_table_pattern(database: &str, table: &str) -> String {
    let mut p = table_pattern(database);
    p.pop();
    for c in table.chars() {
        if matches!(c, '_' | '%' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// Quotes a string literal (backslashes and quotes escaped).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Quotes an identifier with backticks.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl Dialect {
    /// The dialect of a server, or `None` for versions cutover does not support.
    pub fn of(flavour: Flavour, version: Version) -> Option<Dialect> {
        match flavour {
            Flavour::Mariadb if version >= Version::new(10, 5, 1) => Some(Dialect::Mariadb),
            Flavour::Mariadb => None,
            Flavour::Mysql if version >= Version::new(8, 4, 0) => Some(Dialect::Mysql84),
            Flavour::Mysql if version >= Version::new(8, 0, 23) => Some(Dialect::Mysql80),
            Flavour::Mysql if version >= Version::new(5, 7, 8) => Some(Dialect::Mysql57),
            Flavour::Mysql => None,
        }
    }

    /// Configure replication from `spec` (with SSL off: the lab and tunnels; TLS is the
    /// server's `require_secure_transport` business).
    pub fn change_source(self, spec: &SourceSpec<'_>) -> String {
        let (verb, prefix) = match self {
            Dialect::Mysql57 | Dialect::Mariadb => ("CHANGE MASTER TO", "MASTER"),
            Dialect::Mysql80 | Dialect::Mysql84 => ("CHANGE REPLICATION SOURCE TO", "SOURCE"),
        };
        let mut parts = vec![
            format!("{prefix}_HOST = {}", literal(spec.host)),
            format!("{prefix}_PORT = {}", spec.port),
            format!("{prefix}_USER = {}", literal(spec.user)),
            format!("{prefix}_PASSWORD = {}", literal(spec.password)),
            format!("{prefix}_CONNECT_RETRY = 1"),
        ];
        if let Some(tls) = &spec.tls {
            parts.push(format!("{prefix}_SSL = 1"));
            if let Some(ca) = &tls.ca {
                parts.push(format!("{prefix}_SSL_CA = {}", literal(ca)));
            }
            if let Some((cert, key)) = &tls.identity {
                parts.push(format!("{prefix}_SSL_CERT = {}", literal(cert)));
                parts.push(format!("{prefix}_SSL_KEY = {}", literal(key)));
            }
            parts.push(format!(
                "{prefix}_SSL_VERIFY_SERVER_CERT = {}",
                u8::from(tls.verify)
            ));
        }
        match (&spec.start, self) {
            (StartAt::Gtid, Dialect::Mariadb) => parts.push("MASTER_USE_GTID = slave_pos".into()),
            (StartAt::Gtid, _) => parts.push(format!("{prefix}_AUTO_POSITION = 1")),
            (StartAt::File { file, position }, _) => {
                parts.push(format!("{prefix}_LOG_FILE = {}", literal(file)));
                parts.push(format!("{prefix}_LOG_POS = {position}"));
                if self == Dialect::Mariadb {
                    parts.push("MASTER_USE_GTID = no".into());
                }
            }
        }
        format!("{verb} {}", parts.join(", "))
    }

    /// Start the replica threads.
    pub fn start_replica(self) -> &'static str {
        match self {
            Dialect::Mysql57 => "START SLAVE",
            _ => "START REPLICA",
        }
    }

    /// Stop the replica threads.
    pub fn stop_replica(self) -> &'static str {
        match self {
            Dialect::Mysql57 => "STOP SLAVE",
            _ => "STOP REPLICA",
        }
    }

    /// Start the replica until the applier reaches the source's binlog position `file:position`
    /// (the IO thread keeps receiving; the applier stops there).
    pub fn start_replica_until(self, file: &str, position: u64) -> String {
        match self {
            Dialect::Mysql80 | Dialect::Mysql84 => format!(
                "START REPLICA UNTIL SOURCE_LOG_FILE = {}, SOURCE_LOG_POS = {position}",
                literal(file)
            ),
            _ => format!(
                "{} UNTIL MASTER_LOG_FILE = {}, MASTER_LOG_POS = {position}",
                self.start_replica(),
                literal(file)
            ),
        }
    }

    /// The query that reads the replica's table-ignore filter (one row, one comma-separated
    /// text column; no row when none is set).
    pub fn read_ignore_filter(self) -> &'static str {
        match self {
            Dialect::Mariadb => "SELECT @@GLOBAL.replicate_wild_ignore_table",
            _ => {
                "SELECT FILTER_RULE FROM performance_schema.replication_applier_global_filters WHERE FILTER_NAME = 'REPLICATE_WILD_IGNORE_TABLE'"
            }
        }
    }

    /// Sets the replica's table-ignore filter to exactly `patterns` (the replica stopped).
    pub fn set_ignore_filter(self, patterns: &[String]) -> String {
        match self {
            Dialect::Mariadb => format!(
                "SET GLOBAL replicate_wild_ignore_table = {}",
                literal(&patterns.join(","))
            ),
            _ => format!(
                "CHANGE REPLICATION FILTER REPLICATE_WILD_IGNORE_TABLE = ({})",
                patterns
                    .iter()
                    .map(|p| literal(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Stop the replica's applier only (the receiver keeps running).
    pub fn stop_applier(self) -> &'static str {
        match self {
            Dialect::Mysql57 => "STOP SLAVE SQL_THREAD",
            _ => "STOP REPLICA SQL_THREAD",
        }
    }

    /// Replica status (columns read by name; both spellings accepted by the reader).
    pub fn replica_status(self) -> &'static str {
        match self {
            Dialect::Mysql57 => "SHOW SLAVE STATUS",
            _ => "SHOW REPLICA STATUS",
        }
    }

    /// Forget the replica configuration entirely.
    pub fn reset_replica(self) -> &'static str {
        match self {
            Dialect::Mysql57 => "RESET SLAVE ALL",
            _ => "RESET REPLICA ALL",
        }
    }

    /// The source's binlog coordinates (`File`, `Position`, …).
    pub fn source_status(self) -> &'static str {
        match self {
            Dialect::Mysql84 => "SHOW BINARY LOG STATUS",
            _ => "SHOW MASTER STATUS",
        }
    }

    /// The set of transactions this server has executed (MySQL) or written to its binlog
    /// (MariaDB), as one string.
    pub fn executed_gtids(self) -> &'static str {
        match self {
            Dialect::Mariadb => "SELECT @@GLOBAL.gtid_binlog_pos",
            _ => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// The position a replica has applied up to (MariaDB `gtid_slave_pos`; MySQL: executed).
    pub fn applied_gtids(self) -> &'static str {
        match self {
            Dialect::Mariadb => "SELECT @@GLOBAL.gtid_slave_pos",
            _ => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// Wait until the GTID set `?` is applied, at most `?` seconds. MySQL returns 0 when
    /// reached, 1 on timeout; MariaDB returns 0 / -1.
    pub fn wait_for_gtids(self) -> &'static str {
        match self {
            Dialect::Mariadb => "SELECT MASTER_GTID_WAIT(?, ?)",
            _ => "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
        }
    }

    /// Wait until file `?` position `?` is applied, at most `?` seconds (-1 on timeout).
    pub fn wait_for_position(self, version: Version) -> &'static str {
        match self {
            Dialect::Mysql84 => "SELECT SOURCE_POS_WAIT(?, ?, ?)",
            Dialect::Mysql80 if version >= Version::new(8, 0, 26) => {
                "SELECT SOURCE_POS_WAIT(?, ?, ?)"
            }
            _ => "SELECT MASTER_POS_WAIT(?, ?, ?)",
        }
    }

    /// Refuse writes from everyone, administrators included. MariaDB has no
    /// `super_read_only`; from 10.11.1 `read_only` binds SUPER too, before that cutover also
    /// kills every session of the application users.
    pub fn fence(self) -> &'static str {
        match self {
            Dialect::Mariadb => "SET GLOBAL read_only = ON",
            _ => "SET GLOBAL super_read_only = ON",
        }
    }

    /// Ends every session of `user` (whatever its host) in one statement where the flavour has
    /// one (MariaDB `KILL CONNECTION USER`, whose affected rows are the sessions ended);
    /// `None`: they are listed and killed one by one.
    pub fn kill_user(self, user: &str) -> Option<String> {
        match self {
            Dialect::Mariadb => Some(format!("KILL CONNECTION USER {}", literal(user))),
            _ => None,
        }
    }

    /// Undo [`Dialect::fence`] (and plain `read_only`).
    pub fn unfence(self) -> &'static str {
        match self {
            Dialect::Mariadb => "SET GLOBAL read_only = OFF",
            _ => "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF",
        }
    }

    /// Replicate only the tables of `databases` (the replica threads must be stopped); an
    /// empty list clears the filter. A table pattern (`replicate_wild_do_table = 'db.%'`), not
    /// a database filter: `replicate_do_db` judges a statement by the session's default
    /// database, so `ALTER TABLE app.t ...` run from another default database was skipped,
    /// and the rows that followed were applied without the change.
    pub fn replicate_only(self, databases: &[String]) -> String {
        let patterns: Vec<String> = databases.iter().map(|d| table_pattern(d)).collect();
        match self {
            // The database filter an older cutover set is cleared in the same statement.
            Dialect::Mariadb => format!(
                "SET GLOBAL replicate_do_db = '', GLOBAL replicate_wild_do_table = {}",
                literal(&patterns.join(","))
            ),
            _ => format!(
                "CHANGE REPLICATION FILTER REPLICATE_DO_DB = (), REPLICATE_WILD_DO_TABLE = ({})",
                patterns
                    .iter()
                    .map(|p| literal(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Where a GTID replica starts, when the dialect needs it set by hand (MariaDB's
    /// `gtid_slave_pos`; MySQL takes `GTID_PURGED` from the dump itself).
    pub fn set_start_gtid(self, gtid: &str) -> Option<String> {
        match self {
            Dialect::Mariadb => Some(format!("SET GLOBAL gtid_slave_pos = {}", literal(gtid))),
            _ => None,
        }
    }

    /// The dump program and the options that make a consistent, replica-ready snapshot
    /// (coordinates written as comments, GTIDs included).
    pub fn dump_command(self, version: Version) -> (&'static str, Vec<&'static str>) {
        let common = [
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
        ];
        match self {
            Dialect::Mariadb => (
                "mariadb-dump",
                [&common[..], &["--master-data=2", "--gtid"]].concat(),
            ),
            Dialect::Mysql80 | Dialect::Mysql84 if version >= Version::new(8, 0, 26) => (
                "mysqldump",
                [&common[..], &["--source-data=2", "--set-gtid-purged=AUTO"]].concat(),
            ),
            _ => (
                "mysqldump",
                [&common[..], &["--master-data=2", "--set-gtid-purged=AUTO"]].concat(),
            ),
        }
    }

    /// The dump program and its options for a consistent copy of some tables of one database:
    /// the binlog position in a comment, no GTID statement (the target's GTID state is the
    /// replica's own), no database statement.
    pub fn table_dump_command(self, version: Version) -> (&'static str, Vec<&'static str>) {
        let common = ["--single-transaction", "--triggers", "--hex-blob"];
        match self {
            Dialect::Mariadb => ("mariadb-dump", [&common[..], &["--master-data=2"]].concat()),
            Dialect::Mysql80 | Dialect::Mysql84 if version >= Version::new(8, 0, 26) => (
                "mysqldump",
                [&common[..], &["--source-data=2", "--set-gtid-purged=OFF"]].concat(),
            ),
            _ => (
                "mysqldump",
                [&common[..], &["--master-data=2", "--set-gtid-purged=OFF"]].concat(),
            ),
        }
    }

    /// The command-line client that loads the snapshot.
    pub fn client_program(self) -> &'static str {
        match self {
            Dialect::Mariadb => "mariadb",
            _ => "mysql",
        }
    }

    /// Whether a GTID wait result means "reached".
    pub fn gtid_wait_reached(self, result: i64) -> bool {
        result == 0
    }
}

/// A replica status row's column, under its new or old name (`Source_Host` / `Master_Host`,
/// `Replica_IO_Running` / `Slave_IO_Running`, …): given the new name, both are looked up.
pub fn status_column_names(new_name: &str) -> [String; 2] {
    let old = new_name
        .replace("Source", "Master")
        .replace("Replica", "Slave")
        .replace("source", "master")
        .replace("replica", "slave");
    [new_name.to_owned(), old]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_FILE: StartAt = StartAt::Gtid;

    fn spec(start: StartAt) -> SourceSpec<'static> {
        SourceSpec {
            host: "db1.example.com",
            port: 3306,
            user: "repl",
            password: "pa'ss",
            start,
            tls: None,
        }
    }

    #[test]
    fn a_replica_link_carries_its_tls_settings() {
        let mut s = spec(StartAt::Gtid);
        s.tls = Some(ReplicaTls {
            ca: Some("/etc/ca.crt".into()),
            verify: true,
            identity: None,
        });
        let maria = Dialect::Mariadb.change_source(&s);
        assert!(
            maria.contains("MASTER_SSL = 1, MASTER_SSL_CA = '/etc/ca.crt'")
                && maria.contains("MASTER_SSL_VERIFY_SERVER_CERT = 1"),
            "{maria}"
        );
        let mysql = Dialect::Mysql80.change_source(&s);
        assert!(
            mysql.contains("SOURCE_SSL = 1") && mysql.contains("SOURCE_SSL_VERIFY_SERVER_CERT = 1"),
            "{mysql}"
        );
        assert!(
            !Dialect::Mariadb
                .change_source(&spec(StartAt::Gtid))
                .contains("SSL")
        );
    }

    #[test]
    fn versions_parse_and_compare_numerically() {
        assert_eq!(
            parse_version("10.11.6-MariaDB-0+deb12u1-log"),
            Some((Flavour::Mariadb, Version::new(10, 11, 6)))
        );
        assert_eq!(
            parse_version("5.5.5-10.5.23-MariaDB"),
            Some((Flavour::Mariadb, Version::new(10, 5, 23)))
        );
        assert_eq!(
            parse_version("8.0.36-0ubuntu0.22.04.1"),
            Some((Flavour::Mysql, Version::new(8, 0, 36)))
        );
        // As strings "8.0.9" > "8.0.22"; as numbers it is older.
        assert!(Version::new(8, 0, 9) < Version::new(8, 0, 22));
        assert_eq!(
            Dialect::of(Flavour::Mysql, Version::new(8, 0, 9)),
            Some(Dialect::Mysql57)
        );
        assert_eq!(
            Dialect::of(Flavour::Mysql, Version::new(8, 0, 22)),
            Some(Dialect::Mysql57)
        );
        assert_eq!(
            Dialect::of(Flavour::Mysql, Version::new(8, 4, 0)),
            Some(Dialect::Mysql84)
        );
        assert_eq!(
            Dialect::of(Flavour::Mysql, Version::new(9, 1, 0)),
            Some(Dialect::Mysql84)
        );
        assert_eq!(Dialect::of(Flavour::Mysql, Version::new(5, 6, 51)), None);
        assert_eq!(
            Dialect::of(Flavour::Mariadb, Version::new(10, 11, 6)),
            Some(Dialect::Mariadb)
        );
        assert_eq!(Dialect::of(Flavour::Mariadb, Version::new(10, 4, 34)), None);
        assert_eq!(parse_version("garbage"), None);
    }

    /// Every version boundary of the table, on both sides, against the servers' release notes:
    /// MySQL 5.7.8 `super_read_only`; 8.0.22 `START REPLICA` / `SHOW REPLICA STATUS` (the old
    /// forms still work); 8.0.23 `CHANGE REPLICATION SOURCE TO`; 8.0.26 `SOURCE_POS_WAIT()` and
    /// mysqldump `--source-data`; 8.4 `SHOW MASTER STATUS` and the old forms removed (8.2
    /// added `SHOW BINARY LOG STATUS`); MariaDB 10.5.1 the `REPLICA` synonyms.
    #[test]
    fn version_boundaries_follow_the_release_notes() {
        let my = |a, b, c| Dialect::of(Flavour::Mysql, Version::new(a, b, c));
        let maria = |a, b, c| Dialect::of(Flavour::Mariadb, Version::new(a, b, c));
        assert_eq!(my(5, 7, 7), None, "no super_read_only before 5.7.8");
        assert_eq!(my(5, 7, 8), Some(Dialect::Mysql57));
        let change = |d: Dialect| d.change_source(&spec(StartAt::Gtid));
        for (version, verb) in [
            ((8, 0, 22), "CHANGE MASTER TO "),
            ((8, 0, 23), "CHANGE REPLICATION SOURCE TO "),
            ((8, 3, 0), "CHANGE REPLICATION SOURCE TO "),
            ((8, 4, 0), "CHANGE REPLICATION SOURCE TO "),
        ] {
            let d = my(version.0, version.1, version.2).unwrap();
            assert!(change(d).starts_with(verb), "{version:?}: {}", change(d));
        }
        assert_eq!(my(8, 3, 0).unwrap().source_status(), "SHOW MASTER STATUS");
        assert_eq!(
            my(8, 4, 0).unwrap().source_status(),
            "SHOW BINARY LOG STATUS"
        );
        let d = my(8, 0, 25).unwrap();
        assert_eq!(
            d.wait_for_position(Version::new(8, 0, 25)),
            "SELECT MASTER_POS_WAIT(?, ?, ?)"
        );
        assert!(
            d.dump_command(Version::new(8, 0, 25))
                .1
                .contains(&"--master-data=2")
        );
        let d = my(8, 0, 26).unwrap();
        assert_eq!(
            d.wait_for_position(Version::new(8, 0, 26)),
            "SELECT SOURCE_POS_WAIT(?, ?, ?)"
        );
        assert!(
            d.dump_command(Version::new(8, 0, 26))
                .1
                .contains(&"--source-data=2")
        );
        assert_eq!(maria(10, 5, 0), None, "no START REPLICA before 10.5.1");
        assert_eq!(
            maria(10, 5, 1).map(Dialect::start_replica),
            Some("START REPLICA")
        );
    }

    /// The statement table, dialect by dialect: every statement cutover sends for replication.
    #[test]
    fn statement_table() {
        let file = StartAt::File {
            file: "binlog.000042".into(),
            position: 1234,
        };
        let v = Version::new(8, 0, 36);
        let table: [(Dialect, [&str; 12]); 4] = [
            (
                Dialect::Mysql57,
                [
                    "CHANGE MASTER TO MASTER_HOST = 'db1.example.com', MASTER_PORT = 3306, MASTER_USER = 'repl', MASTER_PASSWORD = 'pa\\'ss', MASTER_CONNECT_RETRY = 1, MASTER_AUTO_POSITION = 1",
                    "START SLAVE",
                    "STOP SLAVE",
                    "SHOW SLAVE STATUS",
                    "RESET SLAVE ALL",
                    "SHOW MASTER STATUS",
                    "SELECT @@GLOBAL.gtid_executed",
                    "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
                    "SELECT MASTER_POS_WAIT(?, ?, ?)",
                    "SET GLOBAL super_read_only = ON",
                    "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF",
                    "CHANGE MASTER TO MASTER_HOST = 'db1.example.com', MASTER_PORT = 3306, MASTER_USER = 'repl', MASTER_PASSWORD = 'pa\\'ss', MASTER_CONNECT_RETRY = 1, MASTER_LOG_FILE = 'binlog.000042', MASTER_LOG_POS = 1234",
                ],
            ),
            (
                Dialect::Mysql80,
                [
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1.example.com', SOURCE_PORT = 3306, SOURCE_USER = 'repl', SOURCE_PASSWORD = 'pa\\'ss', SOURCE_CONNECT_RETRY = 1, SOURCE_AUTO_POSITION = 1",
                    "START REPLICA",
                    "STOP REPLICA",
                    "SHOW REPLICA STATUS",
                    "RESET REPLICA ALL",
                    "SHOW MASTER STATUS",
                    "SELECT @@GLOBAL.gtid_executed",
                    "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
                    "SELECT SOURCE_POS_WAIT(?, ?, ?)",
                    "SET GLOBAL super_read_only = ON",
                    "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF",
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1.example.com', SOURCE_PORT = 3306, SOURCE_USER = 'repl', SOURCE_PASSWORD = 'pa\\'ss', SOURCE_CONNECT_RETRY = 1, SOURCE_LOG_FILE = 'binlog.000042', SOURCE_LOG_POS = 1234",
                ],
            ),
            (
                Dialect::Mysql84,
                [
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1.example.com', SOURCE_PORT = 3306, SOURCE_USER = 'repl', SOURCE_PASSWORD = 'pa\\'ss', SOURCE_CONNECT_RETRY = 1, SOURCE_AUTO_POSITION = 1",
                    "START REPLICA",
                    "STOP REPLICA",
                    "SHOW REPLICA STATUS",
                    "RESET REPLICA ALL",
                    "SHOW BINARY LOG STATUS",
                    "SELECT @@GLOBAL.gtid_executed",
                    "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
                    "SELECT SOURCE_POS_WAIT(?, ?, ?)",
                    "SET GLOBAL super_read_only = ON",
                    "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF",
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1.example.com', SOURCE_PORT = 3306, SOURCE_USER = 'repl', SOURCE_PASSWORD = 'pa\\'ss', SOURCE_CONNECT_RETRY = 1, SOURCE_LOG_FILE = 'binlog.000042', SOURCE_LOG_POS = 1234",
                ],
            ),
            (
                Dialect::Mariadb,
                [
                    "CHANGE MASTER TO MASTER_HOST = 'db1.example.com', MASTER_PORT = 3306, MASTER_USER = 'repl', MASTER_PASSWORD = 'pa\\'ss', MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos",
                    "START REPLICA",
                    "STOP REPLICA",
                    "SHOW REPLICA STATUS",
                    "RESET REPLICA ALL",
                    "SHOW MASTER STATUS",
                    "SELECT @@GLOBAL.gtid_binlog_pos",
                    "SELECT MASTER_GTID_WAIT(?, ?)",
                    "SELECT MASTER_POS_WAIT(?, ?, ?)",
                    "SET GLOBAL read_only = ON",
                    "SET GLOBAL read_only = OFF",
                    "CHANGE MASTER TO MASTER_HOST = 'db1.example.com', MASTER_PORT = 3306, MASTER_USER = 'repl', MASTER_PASSWORD = 'pa\\'ss', MASTER_CONNECT_RETRY = 1, MASTER_LOG_FILE = 'binlog.000042', MASTER_LOG_POS = 1234, MASTER_USE_GTID = no",
                ],
            ),
        ];
        for (d, expected) in table {
            let got = [
                d.change_source(&spec(SPEC_FILE)).as_str().to_owned(),
                d.start_replica().into(),
                d.stop_replica().into(),
                d.replica_status().into(),
                d.reset_replica().into(),
                d.source_status().into(),
                d.executed_gtids().into(),
                d.wait_for_gtids().into(),
                d.wait_for_position(v).into(),
                d.fence().into(),
                d.unfence().into(),
                d.change_source(&spec(file.clone())),
            ];
            for (g, e) in got.iter().zip(expected) {
                assert_eq!(g, e, "{d:?}");
            }
        }
        // MySQL 8.0 before 8.0.26 has the new replica names but still only MASTER_POS_WAIT.
        assert_eq!(
            Dialect::Mysql80.wait_for_position(Version::new(8, 0, 23)),
            "SELECT MASTER_POS_WAIT(?, ?, ?)"
        );
        assert_eq!(
            Dialect::Mariadb.applied_gtids(),
            "SELECT @@GLOBAL.gtid_slave_pos"
        );
    }

    #[test]
    fn filters_start_positions_and_dump_options() {
        let dbs = vec!["app".to_owned(), "cutover".to_owned(), "my_shop".to_owned()];
        assert_eq!(
            Dialect::Mariadb.replicate_only(&dbs),
            r"SET GLOBAL replicate_do_db = '', GLOBAL replicate_wild_do_table = 'app.%,cutover.%,my\\_shop.%'"
        );
        assert_eq!(
            Dialect::Mysql80.replicate_only(&dbs),
            r"CHANGE REPLICATION FILTER REPLICATE_DO_DB = (), REPLICATE_WILD_DO_TABLE = ('app.%', 'cutover.%', 'my\\_shop.%')"
        );
        assert_eq!(
            Dialect::Mariadb.replicate_only(&[]),
            "SET GLOBAL replicate_do_db = '', GLOBAL replicate_wild_do_table = ''"
        );
        assert_eq!(
            Dialect::Mysql57.replicate_only(&[]),
            "CHANGE REPLICATION FILTER REPLICATE_DO_DB = (), REPLICATE_WILD_DO_TABLE = ()"
        );
        assert_eq!(table_pattern("a_b%c"), r"a\_b\%c.%");
        assert_eq!(one_table_pattern("my_app", "t%1"), r"my\_app.t\%1");
        assert_eq!(
            Dialect::Mariadb.start_replica_until("binlog.000002", 4711),
            "START REPLICA UNTIL MASTER_LOG_FILE = 'binlog.000002', MASTER_LOG_POS = 4711"
        );
        assert_eq!(
            Dialect::Mysql84.start_replica_until("b.1", 7),
            "START REPLICA UNTIL SOURCE_LOG_FILE = 'b.1', SOURCE_LOG_POS = 7"
        );
        assert_eq!(
            Dialect::Mariadb.set_ignore_filter(&["a.t".into(), r"a.x\_y".into()]),
            r"SET GLOBAL replicate_wild_ignore_table = 'a.t,a.x\\_y'"
        );
        assert_eq!(
            Dialect::Mysql80.set_ignore_filter(&[]),
            "CHANGE REPLICATION FILTER REPLICATE_WILD_IGNORE_TABLE = ()"
        );
        let (_, args) = Dialect::Mysql80.table_dump_command(Version::new(8, 0, 36));
        assert!(args.contains(&"--set-gtid-purged=OFF") && args.contains(&"--source-data=2"));
        assert_eq!(
            Dialect::Mariadb.set_start_gtid("0-1-42").as_deref(),
            Some("SET GLOBAL gtid_slave_pos = '0-1-42'")
        );
        assert_eq!(Dialect::Mysql84.set_start_gtid("x"), None);
        let (program, args) = Dialect::Mariadb.dump_command(Version::new(10, 11, 6));
        assert_eq!(program, "mariadb-dump");
        assert!(
            args.contains(&"--gtid")
                && args.contains(&"--master-data=2")
                && args.contains(&"--single-transaction")
        );
        let (program, args) = Dialect::Mysql84.dump_command(Version::new(8, 4, 0));
        assert_eq!(program, "mysqldump");
        assert!(args.contains(&"--source-data=2") && args.contains(&"--set-gtid-purged=AUTO"));
        assert!(
            Dialect::Mysql57
                .dump_command(Version::new(5, 7, 44))
                .1
                .contains(&"--master-data=2")
        );
        assert!(
            Dialect::Mysql80
                .dump_command(Version::new(8, 0, 23))
                .1
                .contains(&"--master-data=2")
        );
    }

    #[test]
    fn status_columns_have_both_spellings() {
        assert_eq!(
            status_column_names("Replica_IO_Running"),
            [
                "Replica_IO_Running".to_owned(),
                "Slave_IO_Running".to_owned()
            ]
        );
        assert_eq!(
            status_column_names("Seconds_Behind_Source"),
            [
                "Seconds_Behind_Source".to_owned(),
                "Seconds_Behind_Master".to_owned()
            ]
        );
        assert_eq!(
            status_column_names("Exec_Source_Log_Pos")[1],
            "Exec_Master_Log_Pos"
        );
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(literal("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(ident("we`ird"), "`we``ird`");
    }

    #[test]
    fn sessions_end_by_user_in_one_statement_on_mariadb_only() {
        assert_eq!(
            Dialect::Mariadb.kill_user("a'pp").as_deref(),
            Some("KILL CONNECTION USER 'a\\'pp'")
        );
        assert_eq!(Dialect::Mysql80.kill_user("app"), None);
        assert_eq!(Dialect::Mysql84.kill_user("app"), None);
    }
}
