//! The demo application's objects in a fresh lab: database, roles, a DNS zone, a file tree.

use mysql_async::prelude::Queryable;

use super::env::{random_token, write_secret};
use super::mariadb::quote_literal;
use super::plan::{APP, APP_RECORD, APP_RECORD_TTL, PDNS_ZONE, SQLITE_DB};
use super::{Lab, LabError};
use crate::postgres::db::{error_message as pg_error_message, ident as quote_ident};

/// Creates the `app` database and role on both PostgreSQL clusters and both MariaDB servers,
/// the PowerDNS zone with the record the lab plan switches, and a small file tree to sync.
pub async fn prepare(lab: &Lab) -> Result<(), LabError> {
    let root = lab.dir.path();
    let app_password = random_token(24);
    write_secret(
        &root.join("secrets").join("app.password"),
        &app_password,
        None,
    )?;

    for pg in [&lab.pg_source, &lab.pg_target] {
        let client = pg.connect("postgres").await?;
        let role = quote_ident(APP);
        // CREATE DATABASE cannot share an (implicit) transaction with other statements.
        for sql in [
            format!("CREATE ROLE {role} LOGIN PASSWORD '{app_password}'"),
            format!("CREATE DATABASE {role} OWNER {role}"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| LabError::Sql {
                    server: pg.name.clone(),
                    context: "create the app role and database".into(),
                    message: pg_error_message(&e),
                })?;
        }
    }

    // The demo application's tables and some history, on the source only: the target gets the
    // schema from `pg start` (copy_schema) and the rows from replication.
    let client = lab.pg_source.connect(APP).await?;
    let sql_error = |e: tokio_postgres::Error| LabError::Sql {
        server: lab.pg_source.name.clone(),
        context: "create the app tables".into(),
        message: pg_error_message(&e),
    };
    super::writer::create_tables(&client, APP)
        .await
        .map_err(sql_error)?;
    super::writer::seed_counters(&client, super::writer::DEMO_TASKS)
        .await
        .map_err(sql_error)?;
    client
        .batch_execute(
            "INSERT INTO writes (k, payload) SELECT -g, md5(g::text) FROM generate_series(1, 10000) g;
             INSERT INTO idents (k, n) SELECT -g, 1 FROM generate_series(1, 1000) g;",
        )
        .await
        .map_err(sql_error)?;

    for maria in [&lab.maria_source, &lab.maria_target] {
        let mut conn = maria.connect(None).await?;
        let statements = [
            "SET SESSION sql_log_bin = 0".to_owned(),
            format!("CREATE DATABASE `{APP}`"),
            format!(
                "CREATE USER '{APP}'@'127.0.0.1' IDENTIFIED BY {}",
                quote_literal(&app_password)
            ),
            format!("GRANT ALL PRIVILEGES ON `{APP}`.* TO '{APP}'@'127.0.0.1'"),
        ];
        for sql in statements {
            conn.query_drop(&sql).await.map_err(|e| LabError::Sql {
                server: maria.name.clone(),
                context: "create the app database and user".into(),
                message: e.to_string(),
            })?;
        }
        let _ = conn.disconnect().await;
    }

    // The demo app's MariaDB table and some history, on the source only (`mysql start`
    // streams it to the target).
    let mut conn = lab.maria_source.connect(Some(APP)).await?;
    conn.query_drop(format!(
        "SET SESSION sql_log_bin = 0; {}; \
         INSERT INTO writes (k, payload) SELECT -seq, MD5(seq) FROM seq_1_to_1000;",
        super::mysql_writer::TABLE_SQL
    ))
    .await
    .map_err(|e| LabError::Sql {
        server: lab.maria_source.name.clone(),
        context: "create the app table".into(),
        message: e.to_string(),
    })?;
    let _ = conn.disconnect().await;

    create_pdns_zone(lab).await?;

    let files = root.join("files");
    for (rel, body) in [
        ("source/README.txt", "files the demo app keeps on disk\n"),
        ("source/avatars/1.txt", "avatar 1\n"),
        ("source/avatars/2.txt", "avatar 2\n"),
    ] {
        let path = files.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
        }
        std::fs::write(&path, body).map_err(|e| LabError::io(&path, e))?;
    }
    // The app's live SQLite database (WAL mode, as Vaultwarden and Headscale run theirs).
    let db = files.join("source").join(SQLITE_DB);
    if let Some(parent) = db.parent() {
        std::fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
    }
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA journal_mode=WAL; CREATE TABLE notes (n INTEGER PRIMARY KEY, body TEXT NOT NULL);")
        .output()
        .map_err(|e| LabError::io(std::path::Path::new("sqlite3"), e))?;
    if !out.status.success() {
        return Err(LabError::io(
            &db,
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ));
    }
    let target = files.join("target");
    std::fs::create_dir_all(&target).map_err(|e| LabError::io(&target, e))?;
    Ok(())
}

async fn create_pdns_zone(lab: &Lab) -> Result<(), LabError> {
    lab.powerdns
        .create_zone(
            PDNS_ZONE,
            &[(
                APP_RECORD,
                "A",
                APP_RECORD_TTL,
                vec!["127.0.0.1".to_owned()],
            )],
        )
        .await
}
