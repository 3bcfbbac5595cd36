//! Support shared by the run tests: real servers on loopback, plan texts, the binary, and a
//! way to catch the runner at an exact journal record.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cutover::lab::mysql_writer::TABLE_SQL;
use cutover::lab::writer::{self, Writer, WriterConfig};
use cutover::lab::{LabDir, MariaDb, Postgres, PowerDns, Supervision};
use mysql_async::prelude::Queryable;

/// The app's password on every server.
pub const APP_PASSWORD: &str = "app-test-password";

/// The built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cutover"))
}

/// Two PostgreSQL clusters with the `app` role; databases are added per case.
pub struct PgPair {
    pub dir: LabDir,
    pub source: Postgres,
    pub target: Postgres,
}

impl PgPair {
    pub async fn start() -> PgPair {
        PgPair::start_roles(true).await
    }

    /// Two clusters with the `app` role on the source, and on the target if `on_target`.
    pub async fn start_roles(on_target: bool) -> PgPair {
        PgPair::start_in(on_target, None).await
    }

    /// As [`PgPair::start_roles`], the target's cluster under `target_root` when given (a
    /// small filesystem, say).
    pub async fn start_in(on_target: bool, target_root: Option<&Path>) -> PgPair {
        let dir = LabDir::temporary().expect("lab dir");
        let (source, target) = tokio::try_join!(
            Postgres::start(dir.path(), "pg-source", Supervision::Owned),
            Postgres::start(
                target_root.unwrap_or(dir.path()),
                "pg-target",
                Supervision::Owned
            ),
        )
        .expect("clusters start");
        for (pg, with_role) in [(&source, true), (&target, on_target)] {
            if with_role {
                let c = pg.connect("postgres").await.unwrap();
                c.batch_execute(&format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"))
                    .await
                    .unwrap();
            }
        }
        PgPair {
            dir,
            source,
            target,
        }
    }

    /// A database `db` on both clusters, the writer's tables and some rows on the source.
    pub async fn database(&self, db: &str) {
        self.seeded(db, 2000, 0).await
    }

    /// A database `db` on both clusters, the writer's tables on the source and `writes` and
    /// `idents` rows there (so the initial copy has work to do).
    pub async fn seeded(&self, db: &str, writes: u32, idents: u32) {
        for pg in [&self.source, &self.target] {
            let c = pg.connect("postgres").await.unwrap();
            c.batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
        }
        let c = self.source.connect(db).await.unwrap();
        writer::create_tables(&c, "app").await.unwrap();
        writer::seed_counters(&c, 2).await.unwrap();
        c.batch_execute(&format!(
            "INSERT INTO writes (k, payload) SELECT -g, md5(g::text) FROM generate_series(1, {writes}) g;
             INSERT INTO idents (k, n) SELECT -g, 1 FROM generate_series(1, {idents}) g;"
        ))
        .await
        .unwrap();
    }

    /// A `[[postgres]]` entry for database `db`.
    pub fn pair_toml(&self, db: &str, extra: &str) -> String {
        let endpoint = |pg: &Postgres| {
            format!(
                "{{ host = \"127.0.0.1\", port = {}, dbname = \"{db}\", user = \"postgres\", password_file = \"{}\" }}",
                pg.port,
                pg.password_file.display()
            )
        };
        format!(
            "[[postgres]]\nname = \"{db}\"\nsource = {}\ntarget = {}\napp_roles = [\"app\"]\ncopy_schema = true\nreverse_replication = true\n{extra}\n",
            endpoint(&self.source),
            endpoint(&self.target)
        )
    }

    pub fn app_config(&self, pg: &Postgres, db: &str) -> tokio_postgres::Config {
        let mut config = pg.config(db);
        config
            .user("app")
            .password(APP_PASSWORD)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// A writer on database `db` (source first, the target once the source refuses it).
    pub fn writer(&self, db: &str, rate: u32) -> Writer {
        Writer::start(WriterConfig {
            source: self.app_config(&self.source, db),
            target: self.app_config(&self.target, db),
            rate,
            tasks: 2,
            first_task: 0,
        })
    }

    /// Whether the app role can log in and write on `pg`'s database `db`.
    pub async fn app_writes(&self, pg: &Postgres, db: &str) -> bool {
        let Ok((client, conn)) = self.app_config(pg, db).connect(tokio_postgres::NoTls).await
        else {
            return false;
        };
        tokio::spawn(conn);
        client
            .execute("UPDATE counters SET n = n WHERE id = 0", &[])
            .await
            .is_ok()
    }
}

/// Whether the app can log in with `opts` and write (an insert into the writer's table,
/// rolled back).
pub async fn mysql_app_writes(opts: &mysql_async::Opts) -> bool {
    let Ok(mut c) = mysql_async::Conn::new(opts.clone()).await else {
        return false;
    };
    let ok = c.query_drop("START TRANSACTION").await.is_ok()
        && c.query_drop("INSERT INTO writes (k, payload) VALUES (-1, 'probe')")
            .await
            .is_ok();
    let _ = c.query_drop("ROLLBACK").await;
    let _ = c.disconnect().await;
    ok
}

/// Two MariaDB servers with the `app` user and database.
pub struct MariaPair {
    pub dir: LabDir,
    pub source: MariaDb,
    pub target: MariaDb,
}

impl MariaPair {
    pub async fn start() -> MariaPair {
        MariaPair::seeded(2000).await
    }

    /// Two servers; on the source the `app` database with `rows` rows in `writes`.
    pub async fn seeded(rows: u32) -> MariaPair {
        MariaPair::seeded_in(rows, None).await
    }

    /// [`MariaPair::seeded`], the target's data under `target_root` when given (a small disk).
    pub async fn seeded_in(rows: u32, target_root: Option<&Path>) -> MariaPair {
        let dir = LabDir::temporary().expect("lab dir");
        let (source, target) = tokio::try_join!(
            MariaDb::start(dir.path(), "maria-source", 1, Supervision::Owned),
            MariaDb::start(
                target_root.unwrap_or(dir.path()),
                "maria-target",
                2,
                Supervision::Owned
            ),
        )
        .expect("servers start");
        for m in [&source, &target] {
            let mut c = m.connect(None).await.unwrap();
            c.query_drop(format!(
                "SET SESSION sql_log_bin = 0;
                 CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}';
                 GRANT ALL PRIVILEGES ON app.* TO 'app'@'127.0.0.1';"
            ))
            .await
            .unwrap();
        }
        let mut c = source.connect(None).await.unwrap();
        c.query_drop(format!(
            "CREATE DATABASE app; USE app; {TABLE_SQL};
             INSERT INTO writes (k, payload) SELECT -seq, MD5(seq) FROM seq_1_to_{rows};"
        ))
        .await
        .unwrap();
        MariaPair {
            dir,
            source,
            target,
        }
    }

    pub fn pair_toml(&self) -> String {
        let endpoint = |m: &MariaDb| {
            format!(
                "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\" }}",
                m.port,
                m.password_file.display()
            )
        };
        format!(
            "[[mysql]]\nname = \"app-db\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\n{}\nreverse_replication = true\n",
            endpoint(&self.source),
            endpoint(&self.target),
            cutover::lab::PLAN_EXEMPT_USERS
        )
    }

    pub fn opts(&self, m: &MariaDb) -> mysql_async::Opts {
        m.user_opts("app", APP_PASSWORD, "app")
    }

    /// Whether the app user can log in on `m` and write (an insert, rolled back).
    pub async fn app_writes(&self, m: &MariaDb) -> bool {
        mysql_app_writes(&self.opts(m)).await
    }

    /// Whether `m` is writable (read_only off).
    pub async fn writable(&self, m: &MariaDb) -> bool {
        let mut c = m.connect(None).await.unwrap();
        let ro: Option<u8> = c.query_first("SELECT @@read_only").await.unwrap();
        ro == Some(0)
    }
}

/// A plan file in `dir` with `[migration]` named `name` and `body` after it.
pub fn write_plan(dir: &Path, name: &str, body: &str) -> PathBuf {
    let state = dir.join(format!("state-{name}"));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[migration]\nname = \"{name}\"\nstate_dir = \"{}\"\n\n{body}",
            state.display()
        ),
    )
    .unwrap();
    path
}

/// Starts the binary with `args`, stopping itself at journal record `record` (or at the event
/// named by `event`).
pub fn spawn_stopping(args: &[&str], record: Option<u64>, event: Option<&str>) -> Child {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(n) = record {
        cmd.env(cutover::run::test_stop::VAR, n.to_string());
    }
    if let Some(e) = event {
        cmd.env(cutover::run::test_stop::EVENT_VAR, e);
    }
    cmd.spawn().expect("the binary starts")
}

/// Waits until `child` has stopped itself (state `T`) or exited; returns true when stopped.
pub fn wait_stopped(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("");
        if state == "T" || state == "t" {
            return true;
        }
        if Instant::now() >= deadline {
            kill9(child);
            let mut out = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut out);
            }
            if let Some(mut o) = child.stdout.take() {
                use std::io::Read;
                let _ = o.read_to_string(&mut out);
            }
            panic!("the runner neither stopped nor exited:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `kill -9`.
pub fn kill9(child: &mut Child) {
    // SAFETY: kill() signals one process by pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Runs the binary to completion; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until every PostgreSQL pair of the plan at `path` has copied every table and its
/// subscription's apply worker runs.
pub async fn wait_pg_ready(path: &Path) {
    let plan = cutover::plan::load(path).unwrap();
    for p in cutover::postgres::Pair::select(&plan, None) {
        let (s, t) = p.connect().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = cutover::postgres::status::status(&p, &s, &t, None)
                .await
                .unwrap();
            if st.all_ready && st.apply_running {
                break;
            }
            assert!(Instant::now() < deadline, "replication not ready: {st:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A PowerDNS server with `zone`, and in it `app` A 192.0.2.1 with TTL 300.
pub async fn pdns_with_zone(root: &Path, name: &str, zone: &str, app: &str) -> PowerDns {
    let pdns = PowerDns::start(root, name, Supervision::Owned)
        .await
        .unwrap();
    pdns.create_zone(zone, &[(app, "A", 300, vec!["192.0.2.1".to_owned()])])
        .await
        .unwrap();
    pdns
}

/// A plan (migration `dns-test`) switching `name` in `zone` on `pdns` to 192.0.2.2 with a
/// cutover TTL of 5.
pub fn dns_plan(dir: &Path, pdns: &PowerDns, zone: &str, name: &str) -> PathBuf {
    let plan = format!(
        r#"[migration]
name = "dns-test"
state_dir = "{state}"

[[dns]]
name = "{name}"
type = "A"
zone = "{zone}"
values = ["192.0.2.2"]
cutover_ttl = 5
nameservers = ["127.0.0.1:{port}"]
propagation_timeout = "20s"
provider = {{ kind = "powerdns", api_url = "{url}", api_key_file = "{key}" }}
"#,
        state = dir.join("state").display(),
        port = pdns.dns_port,
        url = pdns.api_url(),
        key = pdns.api_key_file.display(),
    );
    let path = dir.join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    path
}

/// A neighbour's writer: calls `write` (which opens a new connection for every insert, as a
/// restarted app or a recycling pool would) every 20 ms until stopped, so a fence that reaches
/// the neighbour shows at once. Returns when each write was acknowledged, and every failure.
pub struct NeighbourWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Instant>, Vec<String>)>,
}

impl NeighbourWriter {
    pub fn start<F, Fut>(write: F) -> NeighbourWriter
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match write().await {
                    Ok(()) => acked.push(Instant::now()),
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failed)
        });
        NeighbourWriter { stop, task }
    }

    pub async fn stop(self) -> (Vec<Instant>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The CONNECT grants on database `db` of `pg`, one line per grantee, sorted.
pub async fn connect_grants(pg: &Postgres, db: &str) -> Vec<String> {
    pg.connect(db)
        .await
        .unwrap()
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                    || ' ' || a.is_grantable
             FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
             WHERE d.datname = $1 AND a.privilege_type = 'CONNECT' ORDER BY 1",
            &[&db],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A plan's `[hosts]` naming the lab sshd's two aliases (both this machine), to append at
/// the end of a plan's text.
pub fn lab_hosts(sshd: &cutover::lab::Sshd) -> String {
    let config = sshd.ssh_config.display();
    format!(
        "\n[hosts.source]\nssh = \"lab-source\"\nssh_config = \"{config}\"\n[hosts.target]\nssh = \"lab-target\"\nssh_config = \"{config}\"\n"
    )
}

/// A tmpfs of `mib` MiB mounted on a fresh directory (a small disk for a server's data),
/// unmounted when dropped. Needs root, as the lab's CI has it.
pub struct SmallFs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a {mib} MiB tmpfs needs root");
        SmallFs { path, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
