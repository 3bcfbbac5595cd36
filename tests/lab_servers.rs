//! Each lab server is real: a test talks to it the way cutover and its users will.
//! Servers are started per test (owned: they stop when the test ends, even on panic).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cutover::lab::{Bind, LabDir, MariaDb, Postgres, PowerDns, Sshd, Supervision, bind};
use mysql_async::prelude::Queryable;

fn lab_dir() -> LabDir {
    LabDir::temporary().expect("temporary lab directory")
}

fn dig(port: u16, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args([
            "+norec",
            "+noall",
            "+answer",
            "+comments",
            "@127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args([name, rtype])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn postgres_clusters_answer_sql_and_have_logical_wal() {
    let dir = lab_dir();
    let (source, target) = tokio::try_join!(
        Postgres::start(dir.path(), "pg-source", Supervision::Owned),
        Postgres::start(dir.path(), "pg-target", Supervision::Owned),
    )
    .unwrap();
    assert_ne!(source.port, target.port);
    for pg in [&source, &target] {
        let client = pg.connect("postgres").await.unwrap();
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'), current_setting('server_version_num')::int",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "logical");
        let version: i32 = row.get(1);
        assert!(
            (150000..160000).contains(&version),
            "PostgreSQL 15 expected, got {version}"
        );
    }
    // A wrong password is refused: the lab really authenticates over TCP.
    let mut config = source.config("postgres");
    config.password("wrong");
    assert!(config.connect(tokio_postgres::NoTls).await.is_err());
    // Tests sharing a cluster use their own databases.
    source.create_database("test_db_one").await.unwrap();
    let client = source.connect("test_db_one").await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn mariadb_servers_answer_sql_with_binlog_and_gtid() {
    let dir = lab_dir();
    let (source, target) = tokio::try_join!(
        MariaDb::start(dir.path(), "maria-source", 1, Supervision::Owned),
        MariaDb::start(dir.path(), "maria-target", 2, Supervision::Owned),
    )
    .unwrap();
    for m in [&source, &target] {
        let mut conn = m.connect(None).await.unwrap();
        let row: (String, u32, u8, u8, String, String) = conn
            .query_first(
                "SELECT VERSION(), @@server_id, @@log_bin, @@gtid_strict_mode, @@binlog_format, @@binlog_row_image",
            )
            .await
            .unwrap()
            .unwrap();
        assert!(row.0.contains("MariaDB"), "{}", row.0);
        assert!(
            row.0.starts_with("10.11"),
            "MariaDB 10.11 expected, got {}",
            row.0
        );
        assert_eq!(row.1, m.server_id);
        assert_eq!((row.2, row.3), (1, 1));
        assert_eq!((row.4.as_str(), row.5.as_str()), ("ROW", "FULL"));
        // No passwordless TCP root account is left behind.
        let roots: Vec<String> = conn
            .query("SELECT Host FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'")
            .await
            .unwrap();
        assert!(roots.is_empty(), "{roots:?}");
        conn.disconnect().await.unwrap();
    }
    assert_ne!(source.server_id, target.server_id);
}

#[tokio::test]
async fn powerdns_zone_created_through_the_api_is_served_on_its_dns_port() {
    let dir = lab_dir();
    let pdns = PowerDns::start(dir.path(), "powerdns", Supervision::Owned)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let zones = format!("{}/api/v1/servers/localhost/zones", pdns.api_url());
    let body = serde_json::json!({
        "name": "t1.example.com.",
        "kind": "Native",
        "nameservers": ["ns1.t1.example.com."],
        "rrsets": [{"name": "www.t1.example.com.", "type": "A", "ttl": 120, "changetype": "REPLACE",
                    "records": [{"content": "192.0.2.44", "disabled": false}]}],
    });
    let created = http
        .post(&zones)
        .header("X-API-Key", pdns.api_key().expose())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    let answer = dig(pdns.dns_port, "www.t1.example.com", "A");
    assert!(
        answer.contains("flags: qr aa"),
        "authoritative answer expected:\n{answer}"
    );
    assert!(answer.contains("120\tIN\tA\t192.0.2.44"), "{answer}");

    let refused = http
        .get(&zones)
        .header("X-API-Key", "wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

fn nsupdate(bind: &Bind, dir: &Path, key_secret: &str, address: &str) -> std::process::Output {
    let script = dir.join(format!("update-{address}"));
    std::fs::write(
        &script,
        format!(
            "server 127.0.0.1 {}\nzone {zone}\nupdate delete app.{zone} A\nupdate add app.{zone} 60 A {address}\nsend\n",
            bind.port,
            zone = bind::ZONE
        ),
    )
    .unwrap();
    // The key goes in a file, never on the command line.
    let key_file = dir.join(format!("key-{address}"));
    std::fs::write(
        &key_file,
        format!(
            "key \"{}\" {{ algorithm {}; secret \"{key_secret}\"; }};\n",
            bind::TSIG_KEY_NAME,
            bind::TSIG_ALGORITHM
        ),
    )
    .unwrap();
    Command::new("nsupdate")
        .arg("-k")
        .arg(&key_file)
        .arg(&script)
        .output()
        .expect("nsupdate runs")
}

#[tokio::test]
async fn bind_accepts_updates_signed_with_the_right_tsig_key_only() {
    let dir = lab_dir();
    let bind = Bind::start(dir.path(), "bind", Supervision::Owned)
        .await
        .unwrap();
    let name = format!("app.{}", bind::ZONE);
    assert!(dig(bind.port, &name, "A").contains("127.0.0.1"));

    let ok = nsupdate(&bind, dir.path(), bind.tsig_secret().expose(), "192.0.2.10");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let answer = dig(bind.port, &name, "A");
    assert!(answer.contains("60\tIN\tA\t192.0.2.10"), "{answer}");

    let wrong_secret = "c2VjcmV0LWJ1dC1ub3QtdGhlLXJpZ2h0LW9uZS0zMmJ5dGVzIQ==";
    let refused = nsupdate(&bind, dir.path(), wrong_secret, "192.0.2.66");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("BADSIG") || stderr.contains("tsig"),
        "{stderr}"
    );
    assert!(
        dig(bind.port, &name, "A").contains("192.0.2.10"),
        "value unchanged"
    );
}

#[tokio::test]
async fn rsync_runs_through_the_lab_sshd() {
    let dir = lab_dir();
    let sshd = Sshd::start(dir.path(), "sshd", Supervision::Owned)
        .await
        .unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    std::fs::write(src.join("nested/file.txt"), "payload\n").unwrap();
    let dst = dir.path().join("dst");
    let out = Command::new("rsync")
        .arg("-a")
        .arg("-e")
        .arg(format!("ssh -F {}", sshd.ssh_config.display()))
        .arg(format!("{}/", src.display()))
        .arg(format!("lab-target:{}/", dst.display()))
        .output()
        .expect("rsync runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dst.join("nested/file.txt")).unwrap(),
        "payload\n"
    );
    let log = std::fs::read_to_string(sshd.dir.join("server.log")).unwrap();
    assert!(
        log.contains("Accepted publickey"),
        "the copy went through sshd:\n{log}"
    );
}

#[tokio::test]
async fn a_server_dropped_by_a_panicking_test_is_stopped() {
    let dir = lab_dir();
    let pg_dir = dir.path().to_owned();
    let pid = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&pid);
    let task = tokio::spawn(async move {
        let mut pg = Postgres::start(&pg_dir, "pg-doomed", Supervision::Owned)
            .await
            .unwrap();
        seen.store(pg.process().pid(), Ordering::SeqCst);
        panic!("a test fails while it holds a server");
    });
    assert!(task.await.unwrap_err().is_panic());
    let pid = pid.load(Ordering::SeqCst);
    assert_ne!(pid, 0, "the server had started");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "postgres {pid} still running after the panic: {stat}"
    );
}
