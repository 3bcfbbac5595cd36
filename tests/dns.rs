//! DNS against real servers the test starts: PowerDNS (HTTP API) and BIND9 (RFC 2136 + TSIG).
//! Propagation is checked against two independent PowerDNS servers, one updated later.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use base64::Engine;
use cutover::dns::probe::{self, Question, Served};
use cutover::dns::state::Records;
use cutover::dns::{Discovery, Target, propagation, update};
use cutover::lab::{Bind, LabDir, PowerDns, Supervision, bind};
use cutover_providers::powerdns::PowerDns as PowerDnsApi;
use cutover_providers::rfc2136::Rfc2136;
use cutover_providers::{DnsProvider, ProviderError, RecordSet, RecordType, Secret};

fn lab_dir() -> LabDir {
    LabDir::temporary().expect("temporary lab directory")
}

fn values(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn api(pdns: &PowerDns) -> PowerDnsApi {
    PowerDnsApi::new(&pdns.api_url(), "localhost", pdns.api_key().clone()).unwrap()
}

async fn served(port: u16, name: &str, rtype: RecordType) -> Served {
    probe::ask(&Question::new(
        name,
        rtype,
        ([127, 0, 0, 1], port).into(),
        false,
    ))
    .await
}

#[tokio::test]
async fn powerdns_adapter_reads_replaces_and_refuses_a_wrong_key() {
    let dir = lab_dir();
    let pdns = pdns_with_zone(dir.path(), "pdns", "t.example.com", "app.t.example.com").await;
    let provider = api(&pdns);
    provider.healthcheck("t.example.com").await.unwrap();
    let before = provider
        .read("t.example.com", "app.t.example.com", RecordType::A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (before.ttl, before.values.clone()),
        (300, values(&["192.0.2.1"]))
    );
    assert_eq!(
        provider
            .read("t.example.com", "none.t.example.com", RecordType::A)
            .await
            .unwrap(),
        None
    );

    let wanted = RecordSet::new(
        "app.t.example.com",
        RecordType::A,
        60,
        &values(&["192.0.2.3", "192.0.2.2"]),
    );
    provider.replace("t.example.com", &wanted).await.unwrap();
    assert_eq!(
        provider
            .read("t.example.com", "app.t.example.com", RecordType::A)
            .await
            .unwrap(),
        Some(wanted.clone())
    );
    // The server itself answers the new set, authoritatively.
    assert_eq!(
        served(pdns.dns_port, "app.t.example.com", RecordType::A).await,
        Served::Answer {
            ttl: 60,
            values: wanted.values.clone(),
            authoritative: true
        }
    );
    let cname = RecordSet::new(
        "www.t.example.com",
        RecordType::Cname,
        60,
        &values(&["app.t.example.com"]),
    );
    provider.replace("t.example.com", &cname).await.unwrap();
    assert_eq!(
        provider
            .read("t.example.com", "www.t.example.com", RecordType::Cname)
            .await
            .unwrap(),
        Some(cname)
    );
    assert_eq!(
        provider.nameservers("t.example.com").await.unwrap(),
        Some(values(&["ns1.t.example.com"]))
    );

    let wrong = PowerDnsApi::new(&pdns.api_url(), "localhost", Secret::new("not-the-key")).unwrap();
    let err = wrong.healthcheck("t.example.com").await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert!(err.to_string().contains("credentials refused"), "{err}");
    assert!(!err.to_string().contains("not-the-key"));
    let err = wrong
        .replace("t.example.com", &wanted.with_ttl(5))
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
    // ... and refused means unchanged: the record still reads as before, TTL 60 not 5.
    assert_eq!(
        provider
            .read("t.example.com", "app.t.example.com", RecordType::A)
            .await
            .unwrap(),
        Some(wanted.clone())
    );
    assert!(matches!(
        provider.healthcheck("missing.example.com").await,
        Err(ProviderError::ZoneNotFound { .. })
    ));
}

#[tokio::test]
async fn rfc2136_adapter_updates_with_tsig_and_refuses_a_wrong_key() {
    let dir = lab_dir();
    let server = Bind::start(dir.path(), "bind", Supervision::Owned)
        .await
        .unwrap();
    let addr = format!("127.0.0.1:{}", server.port);
    let zone = bind::ZONE;
    let name = format!("app.{zone}");
    let provider = Rfc2136::new(
        &addr,
        bind::TSIG_KEY_NAME,
        bind::TSIG_ALGORITHM,
        server.tsig_secret(),
    )
    .unwrap();
    provider.healthcheck(zone).await.unwrap();
    let before = provider
        .read(zone, &name, RecordType::A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (before.ttl, before.values),
        (cutover::lab::APP_RECORD_TTL, values(&["127.0.0.1"]))
    );

    let wanted = RecordSet::new(
        &name,
        RecordType::A,
        30,
        &values(&["192.0.2.7", "192.0.2.8"]),
    );
    provider.replace(zone, &wanted).await.unwrap();
    assert_eq!(
        provider.read(zone, &name, RecordType::A).await.unwrap(),
        Some(wanted.clone())
    );
    let v6 = RecordSet::new(&name, RecordType::Aaaa, 30, &values(&["2001:db8::7"]));
    provider.replace(zone, &v6).await.unwrap();
    assert_eq!(
        provider.read(zone, &name, RecordType::Aaaa).await.unwrap(),
        Some(v6)
    );
    assert_eq!(
        provider.nameservers(zone).await.unwrap(),
        Some(vec![format!("ns1.{zone}")])
    );

    // A key the server does not know, and the right key name with a wrong secret.
    let random = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    for key_name in [bind::TSIG_KEY_NAME, "someone-else"] {
        let wrong = Rfc2136::new(
            &addr,
            key_name,
            bind::TSIG_ALGORITHM,
            &Secret::new(random.clone()),
        )
        .unwrap();
        let err = wrong.replace(zone, &wanted.with_ttl(5)).await.unwrap_err();
        assert!(err.is_auth(), "{key_name}: {err}");
        assert!(err.to_string().contains("TSIG"), "{err}");
        assert!(!err.to_string().contains(&random));
        assert!(wrong.healthcheck(zone).await.unwrap_err().is_auth());
    }
    // Nothing changed through the refused updates.
    assert_eq!(
        provider.read(zone, &name, RecordType::A).await.unwrap(),
        Some(wanted)
    );
}

use support::{dns_plan as write_plan, pdns_with_zone};

fn cutover_json(args: &[&str], plan: &Path) -> (i32, serde_json::Value) {
    let out = Command::cargo_bin("cutover")
        .unwrap()
        .args(args)
        .arg(plan)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test]
async fn lower_status_restore_round_trip_keeps_the_first_saved_ttl() {
    let dir = lab_dir();
    let (zone, name) = ("r.example.com", "app.r.example.com");
    let pdns = pdns_with_zone(dir.path(), "pdns", zone, name).await;
    let plan = write_plan(dir.path(), &pdns, zone, name);

    let (code, first) = cutover_json(&["dns", "lower-ttl"], &plan);
    assert_eq!(code, 0, "{first}");
    let record = &first["records"][0];
    assert_eq!(record["state"]["old_ttl"], 300);
    assert_eq!(record["state"]["lowered_ttl"], 5);
    assert_eq!(record["changed"], true);
    assert_eq!(record["servers"][0]["served"]["ttl"], 5);
    let safe_at = record["safe_at"].as_str().unwrap().to_owned();
    let served_at =
        humantime::parse_rfc3339_weak(record["state"]["served_everywhere_at"].as_str().unwrap())
            .unwrap();
    let safe = humantime::parse_rfc3339(&safe_at).unwrap();
    let gap = safe.duration_since(served_at).unwrap();
    assert!(
        (Duration::from_secs(299)..=Duration::from_secs(300)).contains(&gap),
        "{gap:?}"
    );

    // Second run (cron): the provider already serves 5, but the saved old TTL stays 300.
    let (code, second) = cutover_json(&["dns", "lower-ttl"], &plan);
    assert_eq!(code, 0);
    assert_eq!(second["records"][0]["state"]["old_ttl"], 300);
    assert_eq!(second["records"][0]["changed"], false);
    assert_eq!(
        second["records"][0]["safe_at"].as_str(),
        Some(safe_at.as_str())
    );

    let (code, status) = cutover_json(&["dns", "status"], &plan);
    assert_eq!(code, 0);
    let s = &status["records"][0];
    assert_eq!(s["provider"]["ttl"], 5);
    assert_eq!(s["servers"][0]["served"]["ttl"], 5);
    assert_eq!(s["state"]["old_ttl"], 300);
    assert_eq!(s["safe_at"].as_str(), Some(safe_at.as_str()));
    assert!(s["serials"][0][1]["Ok"].as_u64().is_some(), "{s}");

    // Switching before the safe time is refused and changes nothing.
    let (code, refused) = cutover_json(&["dns", "update"], &plan);
    assert_eq!(code, 1);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not safe to switch yet"),
        "{refused}"
    );
    assert!(
        served(pdns.dns_port, name, RecordType::A)
            .await
            .serves(&values(&["192.0.2.1"]), true)
    );

    let (code, restored) = cutover_json(&["dns", "restore-ttl"], &plan);
    assert_eq!(code, 0);
    assert_eq!(restored["records"][0]["restored_ttl"], 300);
    assert_eq!(
        served(pdns.dns_port, name, RecordType::A).await.ttl(),
        Some(300)
    );
    let (_, status) = cutover_json(&["dns", "status"], &plan);
    assert!(status["records"][0]["state"].is_null(), "{status}");
}

#[tokio::test]
async fn forced_update_is_logged_and_served() {
    let dir = lab_dir();
    let (zone, name) = ("f.example.com", "app.f.example.com");
    let pdns = pdns_with_zone(dir.path(), "pdns", zone, name).await;
    let plan = write_plan(dir.path(), &pdns, zone, name);
    let (code, _) = cutover_json(&["dns", "update"], &plan);
    assert_eq!(code, 1, "never lowered: refused");
    let (code, forced) = cutover_json(&["dns", "update", "--force"], &plan);
    assert_eq!(code, 0, "{forced}");
    assert!(
        forced["records"][0]["forced"]
            .as_str()
            .unwrap()
            .contains("never lowered")
    );
    let log = std::fs::read_to_string(dir.path().join("state/dns/events.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"event\":\"forced_update\"")),
        "{log}"
    );
    let (code, waited) = cutover_json(&["dns", "wait"], &plan);
    assert_eq!(code, 0, "{waited}");
    assert_eq!(waited["rows"][0]["last"]["values"][0], "192.0.2.2");
}

/// Two authoritative servers with the same zone; the plan's provider updates the first, the
/// test updates the second `delay` later (a lagging secondary).
async fn two_servers(dir: &Path) -> (PowerDns, PowerDns, cutover::plan::Plan) {
    let (zone, name) = ("p.example.com", "app.p.example.com");
    let (a, b) = tokio::join!(
        pdns_with_zone(dir, "pdns-a", zone, name),
        pdns_with_zone(dir, "pdns-b", zone, name)
    );
    let mut plan_text = std::fs::read_to_string(write_plan(dir, &a, zone, name)).unwrap();
    plan_text = plan_text.replace(
        &format!("nameservers = [\"127.0.0.1:{}\"]", a.dns_port),
        &format!(
            "nameservers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
            a.dns_port, b.dns_port
        ),
    );
    let plan = cutover::plan::parse_str(&plan_text, Path::new("two.toml")).unwrap();
    (a, b, plan)
}

#[tokio::test]
async fn wait_does_not_finish_until_the_lagging_server_serves_the_new_value() {
    let dir = lab_dir();
    let (_a, b, plan) = two_servers(dir.path()).await;
    let discovery = Discovery::system();
    let target = Target::resolve(0, &plan.dns[0], &discovery).await.unwrap();
    assert_eq!(target.servers.len(), 2);
    let states = Records::new(&plan.migration.state_dir);
    update::update_all(std::slice::from_ref(&target), &states, true)
        .await
        .unwrap();

    // The second server is updated only once a round has seen the first done and the second
    // not: synchronised on what `wait` reports, not on a sleep.
    let lagging = api(&b);
    let wanted = target.wanted(5);
    let (half_tx, half_rx) = tokio::sync::oneshot::channel::<()>();
    let late = tokio::spawn(async move {
        half_rx.await.expect("a round with one server done");
        lagging.replace("p.example.com", &wanted).await.unwrap();
        Instant::now()
    });
    let mut half_tx = Some(half_tx);
    let began = Instant::now();
    let outcome = propagation::wait(
        std::slice::from_ref(&target),
        Duration::from_secs(20),
        Duration::from_millis(100),
        |rows, _| {
            if rows[0].done()
                && !rows[1].done()
                && let Some(tx) = half_tx.take()
            {
                let _ = tx.send(());
            }
        },
    )
    .await;
    let finished = Instant::now();
    let updated_at = late.await.unwrap();
    assert!(outcome.complete);
    assert!(
        half_tx.is_none(),
        "a round saw the first server done and the second not"
    );
    // `wait` kept polling while the second server lagged and finished only after it changed.
    assert!(
        finished >= updated_at,
        "wait finished before the second server changed"
    );
    let first = outcome.rows[0].done_after.unwrap();
    let second = outcome.rows[1].done_after.unwrap();
    assert!(
        first < updated_at - began && second >= updated_at - began - Duration::from_millis(1),
        "first {first:?}, second {second:?}, update at {:?}",
        updated_at - began
    );
}

#[tokio::test]
async fn wait_times_out_naming_the_server_that_still_serves_the_old_value() {
    let dir = lab_dir();
    let (_a, b, plan) = two_servers(dir.path()).await;
    let target = Target::resolve(0, &plan.dns[0], &Discovery::system())
        .await
        .unwrap();
    let states = Records::new(&plan.migration.state_dir);
    update::update_all(std::slice::from_ref(&target), &states, true)
        .await
        .unwrap();
    let outcome = propagation::wait(
        std::slice::from_ref(&target),
        Duration::from_secs(1),
        Duration::from_millis(100),
        |_, _| {},
    )
    .await;
    assert!(!outcome.complete);
    let pending: Vec<_> = outcome.pending().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].addr.port(), b.dns_port);
    assert_eq!(
        pending[0].last,
        Some(Served::Answer {
            ttl: 300,
            values: values(&["192.0.2.1"]),
            authoritative: true
        })
    );
}

#[tokio::test]
async fn discovery_finds_the_zone_and_every_nameserver_address() {
    let dir = lab_dir();
    let pdns = pdns_with_zone(dir.path(), "pdns", "d.example.com", "app.d.example.com").await;
    let discovery = Discovery::via(([127, 0, 0, 1], pdns.dns_port).into(), pdns.dns_port);
    assert_eq!(
        discovery.zone_of("app.d.example.com").await.unwrap(),
        "d.example.com"
    );
    let names = discovery.nameserver_names("d.example.com").await.unwrap();
    assert_eq!(names, values(&["ns1.d.example.com"]));
    let servers = discovery.expand(&names).await.unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].addr, ([127, 0, 0, 1], pdns.dns_port).into());
}

#[tokio::test]
async fn a_record_that_no_longer_holds_the_expected_value_is_never_switched_over() {
    let dir = lab_dir();
    // Two authoritative servers; both serve 192.0.2.1 (the source) at first.
    let (a, b, plan) = two_servers(dir.path()).await;
    let with_expect = |current: &str| {
        let mut p = plan.clone();
        p.dns[0].expect_current = vec![current.to_owned()];
        p
    };
    let discovery = Discovery::system();
    let states = Records::new(&plan.migration.state_dir);
    // Someone moved the record on the second server by hand.
    api(&b)
        .replace(
            "p.example.com",
            &RecordSet::new(
                "app.p.example.com",
                RecordType::A,
                300,
                &values(&["198.51.100.7"]),
            ),
        )
        .await
        .unwrap();
    let p = with_expect("192.0.2.1");
    let target = Target::resolve(0, &p.dns[0], &discovery).await.unwrap();
    let refused = update::update_all(std::slice::from_ref(&target), &states, true)
        .await
        .expect_err("refused before anything changes");
    let why = refused.to_string();
    assert!(
        why.contains("198.51.100.7")
            && why.contains(&format!("127.0.0.1:{}", b.dns_port))
            && !why.contains(&format!("127.0.0.1:{} answers", a.dns_port))
            && why.contains("expect_current"),
        "names the server that differs, and only it: {why}"
    );
    assert_eq!(
        served(a.dns_port, "app.p.example.com", RecordType::A).await,
        Served::Answer {
            ttl: 300,
            values: values(&["192.0.2.1"]),
            authoritative: true
        },
        "nothing was switched"
    );
    // Put back: the switch goes ahead; run again after it (a resume), the new value passes too.
    api(&b)
        .replace(
            "p.example.com",
            &RecordSet::new(
                "app.p.example.com",
                RecordType::A,
                300,
                &values(&["192.0.2.1"]),
            ),
        )
        .await
        .unwrap();
    update::update_all(std::slice::from_ref(&target), &states, true)
        .await
        .unwrap_or_else(|e| panic!("the expected value: {e}"));
    api(&b)
        .replace("p.example.com", &target.wanted(5))
        .await
        .unwrap();
    update::update_all(std::slice::from_ref(&target), &states, true)
        .await
        .unwrap_or_else(|e| panic!("already switched: {e}"));
    // A wrong expectation in the plan (both servers back on the source's value) is refused
    // with every server's answer.
    let source_value = RecordSet::new(
        "app.p.example.com",
        RecordType::A,
        300,
        &values(&["192.0.2.1"]),
    );
    for pdns in [&a, &b] {
        api(pdns)
            .replace("p.example.com", &source_value)
            .await
            .unwrap();
    }
    let p = with_expect("203.0.113.99");
    let target = Target::resolve(0, &p.dns[0], &discovery).await.unwrap();
    let why = update::update_all(std::slice::from_ref(&target), &states, true)
        .await
        .expect_err("neither the expected nor the new value")
        .to_string();
    assert!(
        why.contains("203.0.113.99") && why.matches("answers 192.0.2.1").count() == 2,
        "{why}"
    );
}
