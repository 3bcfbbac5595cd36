//! TLS for cutover's own PostgreSQL connections, against real PostgreSQL 15 servers the lab
//! starts with TLS only (`hostssl` lines alone), certificates from CAs made for the test.

use std::path::Path;

use cutover::lab::tls::{LabCa, ServerTls};
use cutover::lab::{LabDir, Postgres, Supervision};
use cutover::plan::{PgEndpoint, SslMode};
use cutover::postgres::{Server, Side};

fn endpoint(pg: &Postgres, mode: Option<SslMode>, root: Option<&Path>) -> PgEndpoint {
    PgEndpoint {
        host: "127.0.0.1".into(),
        port: pg.port,
        dbname: "postgres".into(),
        user: "postgres".into(),
        password_env: None,
        password_file: Some(pg.password_file.clone()),
        passfile: None,
        sslmode: mode,
        sslrootcert: root.map(|r| r.display().to_string()),
        sslcert: None,
        sslkey: None,
        link_sslrootcert: None,
        link_sslcert: None,
        link_sslkey: None,
    }
}

async fn connect(e: PgEndpoint) -> Result<bool, String> {
    let db = Server::new(Side::Source, e)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    db.encrypted().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sslmodes_verify_as_libpq_does_and_say_why_a_handshake_failed() {
    let dir = LabDir::temporary().unwrap();
    let ca = LabCa::create(&dir.path().join("ca"), "lab").unwrap();
    let other_ca = LabCa::create(&dir.path().join("ca"), "other").unwrap();
    let tls = |names: &[&str], client_cert| ServerTls {
        ca: &ca,
        names: names.iter().map(|n| n.to_string()).collect(),
        client_cert,
        session_status: false,
    };
    let (t_good, t_misnamed, t_certs) = (
        tls(&["127.0.0.1", "localhost"], false),
        tls(&["db.example.com"], false),
        tls(&["127.0.0.1"], true),
    );
    let (good, misnamed, plain, certs) = tokio::try_join!(
        Postgres::start_with(dir.path(), "pg-tls", Supervision::Owned, Some(&t_good)),
        Postgres::start_with(
            dir.path(),
            "pg-misnamed",
            Supervision::Owned,
            Some(&t_misnamed)
        ),
        Postgres::start(dir.path(), "pg-plain", Supervision::Owned),
        Postgres::start_with(
            dir.path(),
            "pg-clientcert",
            Supervision::Owned,
            Some(&t_certs)
        ),
    )
    .unwrap();
    let root = Some(ca.ca_file.as_path());

    // verify-full with the right CA: in, encrypted.
    assert_eq!(
        connect(endpoint(&good, Some(SslMode::VerifyFull), root)).await,
        Ok(true)
    );
    // The wrong CA, named with the file used.
    let e = connect(endpoint(
        &good,
        Some(SslMode::VerifyFull),
        Some(&other_ca.ca_file),
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("signed by a CA not in the CA file") && e.contains("other-ca.crt"),
        "{e}"
    );
    // A certificate for another name: refused by verify-full (naming both), taken by verify-ca.
    let e = connect(endpoint(&misnamed, Some(SslMode::VerifyFull), root))
        .await
        .unwrap_err();
    assert!(
        e.contains("does not name host 127.0.0.1") && e.contains("db.example.com"),
        "{e}"
    );
    assert_eq!(
        connect(endpoint(&misnamed, Some(SslMode::VerifyCa), root)).await,
        Ok(true)
    );
    // A server without TLS: verify-full says so; prefer connects in plaintext.
    let e = connect(endpoint(&plain, Some(SslMode::VerifyFull), root))
        .await
        .unwrap_err();
    assert!(e.contains("does not offer TLS"), "{e}");
    assert_eq!(
        connect(endpoint(&plain, Some(SslMode::Prefer), None)).await,
        Ok(false)
    );
    // cutover's sessions have conforming strings whatever the role's default says.
    plain
        .connect("postgres")
        .await
        .unwrap()
        .batch_execute("ALTER ROLE postgres SET standard_conforming_strings = off")
        .await
        .unwrap();
    let db = Server::new(Side::Source, endpoint(&plain, Some(SslMode::Prefer), None))
        .connect()
        .await
        .unwrap();
    let scs: String = db
        .query_one("read", "SHOW standard_conforming_strings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(scs, "on");
    // require encrypts without checking (any CA, any name); prefer against a TLS-only server
    // encrypts; require with a CA file checks the chain as libpq does.
    assert_eq!(
        connect(endpoint(&misnamed, Some(SslMode::Require), None)).await,
        Ok(true)
    );
    assert_eq!(
        connect(endpoint(&good, Some(SslMode::Prefer), None)).await,
        Ok(true)
    );
    assert!(
        connect(endpoint(
            &good,
            Some(SslMode::Require),
            Some(&other_ca.ca_file)
        ))
        .await
        .unwrap_err()
        .contains("signed by a CA not in"),
    );
    // Loopback's default is prefer: encrypted here, since the server offers TLS.
    assert_eq!(connect(endpoint(&good, None, None)).await, Ok(true));

    // A server that asks for a client certificate: refused without one, in with the pair.
    let e = connect(endpoint(&certs, Some(SslMode::VerifyFull), root))
        .await
        .unwrap_err();
    assert!(e.contains("cannot connect"), "{e}");
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    ca.issue(&["postgres"], &cert, &key, None).unwrap();
    let mut with_cert = endpoint(&certs, Some(SslMode::VerifyFull), root);
    with_cert.sslcert = Some(cert.clone());
    with_cert.sslkey = Some(key.clone());
    assert_eq!(connect(with_cert.clone()).await, Ok(true));
    // A key others can read is refused, as libpq refuses it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = connect(with_cert).await.unwrap_err();
    assert!(e.contains("has group or world access"), "{e}");
}

/// Whether `pg`'s walsender for `application_name` runs over TLS (`pg_stat_ssl` joined to
/// `pg_stat_replication` on the publisher); `None` while there is none.
async fn walsender_encrypted(pg: &Postgres, application_name: &str) -> Option<bool> {
    let c = pg.connect("postgres").await.unwrap();
    c.query_opt(
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid
         WHERE r.application_name = $1",
        &[&application_name],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

async fn wait_walsender(pg: &Postgres, application_name: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(ssl) = walsender_encrypted(pg, application_name).await {
            return ssl;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no walsender for {application_name} on {}",
            pg.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_run_against_tls_only_servers_verifies_them_and_encrypts_both_links() {
    use crate::support::{self, PgPair};
    use cutover::lab::writer::{Writer, WriterConfig};
    let dir = LabDir::temporary().unwrap();
    let ca = LabCa::create(&dir.path().join("ca"), "lab").unwrap();
    let tls = ServerTls {
        ca: &ca,
        names: vec!["127.0.0.1".into()],
        client_cert: false,
        session_status: false,
    };
    let (source, target) = tokio::try_join!(
        Postgres::start_with(dir.path(), "pg-source", Supervision::Owned, Some(&tls)),
        Postgres::start_with(dir.path(), "pg-target", Supervision::Owned, Some(&tls)),
    )
    .unwrap();
    for pg in [&source, &target] {
        pg.connect("postgres")
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE ROLE app LOGIN PASSWORD '{}'",
                support::APP_PASSWORD
            ))
            .await
            .unwrap();
    }
    let pg = PgPair {
        dir,
        source,
        target,
    };
    pg.seeded("shop", 2000, 0).await;
    let endpoint = |p: &Postgres| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"shop\", user = \"postgres\", password_file = \"{}\", sslmode = \"verify-full\", sslrootcert = \"{}\" }}",
            p.port,
            p.password_file.display(),
            ca.ca_file.display()
        )
    };
    let path = support::write_plan(
        pg.dir.path(),
        "tls",
        &format!(
            "[[postgres]]\nname = \"shop\"\nsource = {}\ntarget = {}\napp_roles = [\"app\"]\ncopy_schema = true\nreverse_replication = true\n",
            endpoint(&pg.source),
            endpoint(&pg.target)
        ),
    );
    let plan_arg = path.to_str().unwrap();
    let (code, out, err) = support::run(&["pg", "start", plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The forward link: the source's walsender for the subscription runs over TLS.
    assert!(
        wait_walsender(&pg.source, "cutover_tls_shop").await,
        "forward link encrypted"
    );
    let writer = Writer::start(WriterConfig {
        source: pg.app_config(&pg.source, "shop"),
        target: pg.app_config(&pg.target, "shop"),
        rate: 200,
        tasks: 2,
        first_task: 0,
    });
    assert!(
        writer
            .wait_acked(20, std::time::Duration::from_secs(30))
            .await
    );
    let (code, out, err) = support::run(&["run", "--output", "json", plan_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The report says the forward link was encrypted, as read from the publisher.
    assert!(out.contains("forward link over TLS (pg_stat_ssl)"), "{out}");
    assert!(
        writer
            .wait_on_target(20, std::time::Duration::from_secs(30))
            .await
    );
    let ledger = writer.stop().await;
    let check = ledger
        .check(&pg.target.connect("shop").await.unwrap())
        .await
        .unwrap();
    assert!(check.clean() && check.acked_on_target > 0, "{check:?}");
    assert_eq!(ledger.both_accepted, 0);
    // The reverse link: the new primary's walsender for the old primary's subscription.
    assert!(
        wait_walsender(&pg.target, "cutover_tls_shop_rev").await,
        "reverse link encrypted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_proves_each_link_from_the_subscribing_server_with_its_own_certificate_paths() {
    use crate::support::{self, PgPair};
    use std::os::unix::fs::MetadataExt;
    let dir = LabDir::temporary().unwrap();
    let ca = LabCa::create(&dir.path().join("ca"), "lab").unwrap();
    // Both servers take TLS only; replication connections only with a client certificate.
    let tls = ServerTls {
        ca: &ca,
        names: vec!["127.0.0.1".into()],
        client_cert: false,
        session_status: false,
    };
    let (source, target) = tokio::try_join!(
        Postgres::start_with(dir.path(), "pg-source", Supervision::Owned, Some(&tls)),
        Postgres::start_with(dir.path(), "pg-target", Supervision::Owned, Some(&tls)),
    )
    .unwrap();
    // cutover's own certificate, and the one the servers present on the links (owned by the
    // servers' user, as a subscribing server needs its key).
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    ca.issue(&["cutover"], &cert, &key, None).unwrap();
    let meta = std::fs::metadata(&source.dir).unwrap();
    let side = dir.path().join("server-side");
    let (link_cert, link_key) = (side.join("link.crt"), side.join("link.key"));
    ca.issue(
        &["cutover"],
        &link_cert,
        &link_key,
        Some((meta.uid(), meta.gid())),
    )
    .unwrap();
    // cutover logs in as its own superuser, which these servers take only with a client
    // certificate (the lab's own connections, as `postgres`, need none).
    let secret = dir.path().join("cutover.password");
    std::fs::write(&secret, "cutover-secret-pw\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for pg in [&source, &target] {
        let hba = pg.dir.join("data").join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "hostssl all cutover 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n{text}"
            ),
        )
        .unwrap();
        pg.connect("postgres")
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE ROLE app LOGIN PASSWORD '{}'; CREATE ROLE cutover SUPERUSER LOGIN PASSWORD 'cutover-secret-pw'; SELECT pg_reload_conf()",
                support::APP_PASSWORD
            ))
            .await
            .unwrap();
    }
    let pg = PgPair {
        dir,
        source,
        target,
    };
    pg.seeded("shop", 100, 0).await;
    let endpoint = |p: &Postgres, link: (&Path, &Path)| {
        format!(
            "{{ host = \"127.0.0.1\", port = {}, dbname = \"shop\", user = \"cutover\", password_file = \"{}\", sslmode = \"verify-full\", sslrootcert = \"{}\", sslcert = \"{}\", sslkey = \"{}\", link_sslcert = \"{}\", link_sslkey = \"{}\" }}",
            p.port,
            secret.display(),
            ca.ca_file.display(),
            cert.display(),
            key.display(),
            link.0.display(),
            link.1.display()
        )
    };
    let plan = |source_link: (&Path, &Path)| {
        support::write_plan(
            pg.dir.path(),
            "links",
            &format!(
                "[[postgres]]\nname = \"shop\"\nsource = {}\ntarget = {}\napp_roles = [\"app\"]\nexempt_roles = {{ postgres = \"the lab's own superuser\" }}\ncopy_schema = true\nreverse_replication = true\n",
                endpoint(&pg.source, source_link),
                endpoint(&pg.target, (&link_cert, &link_key))
            ),
        )
    };
    // The forward link names a certificate the target server does not have: preflight says
    // so, from the target's own libpq, before anything is created.
    let missing = Path::new("/nonexistent/link.crt");
    let path = plan((missing, &link_key));
    let (code, out, err) = support::run(&["pg", "preflight", path.to_str().unwrap()]);
    let all = format!("{out}\n{err}");
    assert_eq!(code, 1, "{all}");
    assert!(
        all.contains("the forward replication link cannot reach the source")
            && all.contains("/nonexistent/link.crt")
            && all.contains("link_sslcert"),
        "{all}"
    );
    assert!(
        all.contains("the reverse link reaches the target"),
        "the reverse link is proven too: {all}"
    );
    let c = pg.target.connect("shop").await.unwrap();
    let subs: i64 = c
        .query_one("SELECT count(*) FROM pg_subscription", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(subs, 0, "nothing was created");
    // The paths as the servers have them: both links proven, and replication runs over TLS
    // with the link's certificate (the source accepts no connection without one).
    let path = plan((&link_cert, &link_key));
    let (code, out, err) = support::run(&["pg", "preflight", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("the forward link reaches the source")
            && out.contains(&format!("client certificate {}", link_cert.display())),
        "{out}"
    );
    let (code, out, err) = support::run(&["pg", "start", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        wait_walsender(&pg.source, "cutover_links_shop").await,
        "forward link encrypted"
    );
    // No secret in any output.
    assert!(!all.contains("cutover-secret-pw") && !out.contains("cutover-secret-pw"));
}
