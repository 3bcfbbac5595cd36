//! TLS for MySQL/MariaDB: cutover's own connections and the replica's link, against real
//! MariaDB 10.11 servers the lab starts with `require_secure_transport = ON` and certificates
//! from CAs made for the test.

use std::path::Path;
use std::time::{Duration, Instant};

use cutover::engine;
use cutover::lab::mysql_writer::{MyWriter, MyWriterConfig, TABLE_SQL};
use cutover::lab::tls::{LabCa, ServerTls};
use cutover::lab::{LabDir, MariaDb, PLAN_EXEMPT_USERS, Supervision};
use cutover::mysql::{Pair, Server, start};
use cutover::plan::{MysqlEndpoint, MysqlSslMode};
use mysql_async::prelude::Queryable;

use crate::support::APP_PASSWORD;

fn endpoint(m: &MariaDb, mode: Option<MysqlSslMode>, ca: Option<&Path>) -> MysqlEndpoint {
    MysqlEndpoint {
        host: "127.0.0.1".into(),
        port: m.port,
        user: "cutover".into(),
        password_env: None,
        password_file: Some(m.password_file.clone()),
        option_file: None,
        ssl_mode: mode,
        ssl_ca: ca.map(|c| c.display().to_string()),
        ssl_cert: None,
        ssl_key: None,
        link_ssl_ca: None,
        link_ssl_cert: None,
        link_ssl_key: None,
    }
}

/// Connects; returns whether the session is encrypted (its cipher).
async fn connect(e: MysqlEndpoint) -> Result<bool, String> {
    let mut db = Server::new("source", &e)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let cipher: Option<(String, String)> = db
        .conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .map_err(|e| e.to_string())?;
    Ok(cipher.is_some_and(|(_, c)| !c.is_empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssl_modes_verify_as_the_mysql_client_does_and_say_why_a_handshake_failed() {
    let dir = LabDir::temporary().unwrap();
    let ca = LabCa::create(&dir.path().join("ca"), "lab").unwrap();
    let other = LabCa::create(&dir.path().join("ca"), "other").unwrap();
    let (t_good, t_misnamed) = (
        ServerTls {
            ca: &ca,
            names: vec!["127.0.0.1".into()],
            client_cert: false,
            session_status: true,
        },
        ServerTls {
            ca: &ca,
            names: vec!["db.example.com".into()],
            client_cert: false,
            session_status: true,
        },
    );
    let (good, misnamed, plain) = tokio::try_join!(
        MariaDb::start_with(dir.path(), "my-tls", 1, Supervision::Owned, Some(&t_good)),
        MariaDb::start_with(
            dir.path(),
            "my-misnamed",
            2,
            Supervision::Owned,
            Some(&t_misnamed)
        ),
        MariaDb::start(dir.path(), "my-plain", 3, Supervision::Owned),
    )
    .unwrap();
    let ca_file = Some(ca.ca_file.as_path());
    use MysqlSslMode::*;
    assert_eq!(
        connect(endpoint(&good, Some(VerifyIdentity), ca_file)).await,
        Ok(true)
    );
    let e = connect(endpoint(&good, Some(VerifyIdentity), Some(&other.ca_file)))
        .await
        .unwrap_err();
    assert!(e.contains("signed by a CA not in the CA file"), "{e}");
    let e = connect(endpoint(&misnamed, Some(VerifyIdentity), ca_file))
        .await
        .unwrap_err();
    assert!(e.contains("does not name host 127.0.0.1"), "{e}");
    // verify_ca checks the name as well here (mysql_async cannot skip only that check).
    assert_eq!(
        connect(endpoint(&good, Some(VerifyCa), ca_file)).await,
        Ok(true)
    );
    let e = connect(endpoint(&misnamed, Some(VerifyCa), ca_file))
        .await
        .unwrap_err();
    assert!(
        e.contains("does not name host 127.0.0.1") && e.contains("db.example.com"),
        "{e}"
    );
    assert_eq!(
        connect(endpoint(&misnamed, Some(Required), None)).await,
        Ok(true)
    );
    let e = connect(endpoint(&plain, Some(VerifyIdentity), ca_file))
        .await
        .unwrap_err();
    assert!(e.contains("does not offer TLS"), "{e}");
    // preferred: encrypted where offered, plaintext (said in the log) where not.
    assert_eq!(
        connect(endpoint(&good, Some(Preferred), None)).await,
        Ok(true)
    );
    assert_eq!(
        connect(endpoint(&plain, Some(Preferred), None)).await,
        Ok(false)
    );
    // cutover's sessions escape with backslashes whatever the server's sql_mode says.
    let mut root = plain.connect(None).await.unwrap();
    root.query_drop(
        "SET GLOBAL sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES,NO_ENGINE_SUBSTITUTION'",
    )
    .await
    .unwrap();
    let mut db = Server::new("source", &endpoint(&plain, Some(Preferred), None))
        .connect()
        .await
        .unwrap();
    let mode: String = db
        .conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode, "STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION");
    // A server requiring secure transport refuses plaintext.
    let e = connect(endpoint(&good, Some(Disabled), None))
        .await
        .unwrap_err();
    assert!(e.contains("cannot connect"), "{e}");
}

/// The replica status column under its new or old name.
async fn replica_column(m: &MariaDb, column: &str) -> Option<String> {
    let mut c = m.connect(None).await.unwrap();
    let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
    let row = row?;
    let old = column.replace("Source", "Master");
    row.columns_ref()
        .iter()
        .position(|c| c.name_str() == column || c.name_str() == old)
        .and_then(|i| row.get::<String, _>(i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cutover_between_servers_that_require_secure_transport_verifies_both_links() {
    let dir = LabDir::temporary().unwrap();
    let ca = LabCa::create(&dir.path().join("ca"), "lab").unwrap();
    let tls = ServerTls {
        ca: &ca,
        names: vec!["127.0.0.1".into()],
        client_cert: false,
        session_status: true,
    };
    let (source, target) = tokio::try_join!(
        MariaDb::start_with(
            dir.path(),
            "maria-source",
            1,
            Supervision::Owned,
            Some(&tls)
        ),
        MariaDb::start_with(
            dir.path(),
            "maria-target",
            2,
            Supervision::Owned,
            Some(&tls)
        ),
    )
    .unwrap();
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
         INSERT INTO writes (k, payload) SELECT -seq, MD5(seq) FROM seq_1_to_2000;"
    ))
    .await
    .unwrap();
    let side = |m: &MariaDb| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, user = \"cutover\", password_file = \"{}\", ssl_mode = \"verify_identity\", ssl_ca = \"{}\" }}",
            m.port,
            m.password_file.display(),
            ca.ca_file.display()
        )
    };
    let text = format!(
        "[migration]\nname = \"tls\"\nstate_dir = \"{}\"\n\n[[mysql]]\nname = \"app-db\"\nsource = {}\ntarget = {}\ndatabases = [\"app\"]\napp_users = [\"app\"]\n{PLAN_EXEMPT_USERS}\nreverse_replication = true\nreplication_user_host = \"127.0.0.1\"\n",
        dir.path().join("state").display(),
        side(&source),
        side(&target)
    );
    let plan = cutover::plan::parse_str(&text, Path::new("tls.toml")).unwrap();
    let pair = Pair::select(&plan, None).remove(0);
    start::start(&pair).await.unwrap();
    // The forward link is encrypted and checks the source's certificate.
    assert_eq!(
        replica_column(&target, "Source_SSL_Allowed")
            .await
            .as_deref(),
        Some("Yes")
    );
    assert_eq!(
        replica_column(&target, "Source_SSL_Verify_Server_Cert")
            .await
            .as_deref(),
        Some("Yes")
    );
    // Read from the source's side: the replica's session (its binlog dump) is encrypted.
    let ciphers = dump_ciphers(&source).await;
    assert!(
        !ciphers.is_empty() && ciphers.iter().all(|c| !c.is_empty()),
        "the source serves the replica's binlog over TLS: {ciphers:?}"
    );
    // The replication account takes TLS logins only, from the plan's host only.
    let mut c = source.connect(None).await.unwrap();
    let account: Vec<(String, String)> = c
        .query("SELECT Host, ssl_type FROM mysql.user WHERE User LIKE 'cutover\\_repl\\_%'")
        .await
        .unwrap();
    assert_eq!(account, [("127.0.0.1".to_owned(), "ANY".to_owned())]);
    // A link whose TLS handshake fails (the replica's CA file is not the one that signed the
    // source's certificate): the gate refuses with the server's own error and the fix, and
    // the source keeps serving.
    let other = LabCa::create(&dir.path().join("ca"), "other").unwrap();
    let mut t = target.connect(None).await.unwrap();
    t.query_drop(format!(
        "STOP SLAVE; CHANGE MASTER TO MASTER_SSL_CA = '{}'; START SLAVE",
        other.ca_file.display()
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica_column(&target, "Last_IO_Errno").await.as_deref() == Some("0") {
        assert!(Instant::now() < deadline, "the link fails its handshake");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = engine::cutover(&pair, &mut |_| {})
        .await
        .expect_err("the gate refuses a failing link");
    assert_eq!(failed.rollback, engine::Rollback::NotNeeded);
    let why = failed.error.to_string();
    assert!(
        why.contains("Last_IO_Error")
            && why.contains("TLS handshake")
            && why.contains("link_ssl_ca"),
        "{why}"
    );
    let read_only: i64 = c
        .query_first("SELECT @@GLOBAL.read_only")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_only, 0, "the source still serves");
    t.query_drop(format!(
        "STOP SLAVE; CHANGE MASTER TO MASTER_SSL_CA = '{}'; START SLAVE",
        ca.ca_file.display()
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica_column(&target, "Slave_IO_Running").await.as_deref() != Some("Yes") {
        assert!(Instant::now() < deadline, "the link is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opts = |m: &MariaDb| m.user_opts("app", APP_PASSWORD, "app");
    let writer = MyWriter::start(MyWriterConfig {
        source: opts(&source),
        target: opts(&target),
        rate: 200,
        tasks: 2,
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = engine::cutover(&pair, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"));
    assert!(report.finished.warnings.is_empty(), "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !writer.wait_on_target(20, Duration::from_millis(100)).await {
        assert!(
            Instant::now() < deadline,
            "the writer reached the new primary"
        );
    }
    let ledger = writer.stop().await;
    let mut t = target.connect(Some("app")).await.unwrap();
    let check = ledger.check(&mut t).await.unwrap();
    assert!(check.clean() && check.acked_on_target > 0, "{check:?}");
    // The reverse link (the old primary replicating from the new) is verified TLS too.
    assert_eq!(
        replica_column(&source, "Source_SSL_Allowed")
            .await
            .as_deref(),
        Some("Yes")
    );
    assert_eq!(
        replica_column(&source, "Source_SSL_Verify_Server_Cert")
            .await
            .as_deref(),
        Some("Yes")
    );
    assert_eq!(
        replica_column(&source, "Slave_IO_Running").await.as_deref(),
        Some("Yes")
    );
    // And from the new primary's side: the old primary's binlog dump there is encrypted.
    let ciphers = dump_ciphers(&target).await;
    assert!(
        !ciphers.is_empty() && ciphers.iter().all(|c| !c.is_empty()),
        "the new primary serves the reverse link over TLS: {ciphers:?}"
    );
}

/// The TLS cipher of every binlog-dump session `m` serves, as `m` itself reports it.
async fn dump_ciphers(m: &MariaDb) -> Vec<String> {
    let mut c = m.connect(None).await.unwrap();
    c.query(
        "SELECT s.VARIABLE_VALUE FROM performance_schema.status_by_thread s
           JOIN performance_schema.threads t ON t.THREAD_ID = s.THREAD_ID
          WHERE t.PROCESSLIST_COMMAND LIKE 'Binlog Dump%' AND s.VARIABLE_NAME = 'Ssl_cipher'",
    )
    .await
    .unwrap()
}
