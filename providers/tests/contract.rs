//! Contract tests for the cloud adapters: a local HTTP server checks method, path, query,
//! authentication header and body shape as each provider documents them, and answers with
//! documented responses, including 429 with `Retry-After` and paginated listings.
//! Every server is strict: a request that matches no mock (a wrong path, query, header or body)
//! hits a catch-all that expects to be called zero times, so the test fails when the server is
//! dropped; bodies are matched exactly (no extra keys, no extra array items) with their
//! `Content-Type`; mocks that must be called say how often.

use std::time::{Duration, Instant};

use cutover_providers::cloudflare::Cloudflare;
use cutover_providers::desec::Desec;
use cutover_providers::digitalocean::DigitalOcean;
use cutover_providers::gandi::Gandi;
use cutover_providers::hetzner::Hetzner;
use cutover_providers::route53::{AwsKeys, Route53};
use cutover_providers::{DnsProvider, ProviderError, RecordSet, RecordType, Secret};
use serde_json::json;
use wiremock::matchers::{
    any, body_json, body_string_contains, header, header_regex, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ZONE: &str = "example.com";
const NAME: &str = "app.example.com";
const TOKEN: &str = "test-token-123";

fn a_set(ttl: u32, values: &[&str]) -> RecordSet {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    RecordSet::new(NAME, RecordType::A, ttl, &values)
}

/// A mock server on which any request no other mock matches fails the test.
async fn strict_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(418))
        .with_priority(u8::MAX)
        .named("a request the provider's API would not recognise")
        .expect(0)
        .mount(&server)
        .await;
    server
}

/// The exact JSON body (no extra keys, no extra or missing array items), sent as JSON.
fn exact_json(value: serde_json::Value) -> impl wiremock::Match {
    ExactJson(value)
}

struct ExactJson(serde_json::Value);

impl wiremock::Match for ExactJson {
    fn matches(&self, request: &wiremock::Request) -> bool {
        let json_type = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        json_type && body_json(self.0.clone()).matches(request)
    }
}

/// A 429 answered once (before the mock it shadows) with `Retry-After: 1`.
fn rate_limited_once() -> ResponseTemplate {
    ResponseTemplate::new(429).insert_header("Retry-After", "1")
}

#[tokio::test]
async fn cloudflare_pages_through_records_and_changes_them_in_one_batch() {
    let server = strict_server().await;
    let auth = || header("Authorization", format!("Bearer {TOKEN}").as_str());
    Mock::given(method("GET")).and(path("/zones")).and(query_param("name", ZONE)).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "errors": [], "result": [{"id": "zone1", "name": ZONE}],
            "result_info": {"page": 1, "per_page": 20, "count": 1, "total_count": 1, "total_pages": 1}})))
        .expect(1).mount(&server).await;
    for (page, id, ip) in [("1", "rec1", "192.0.2.1"), ("2", "rec2", "192.0.2.2")] {
        Mock::given(method("GET")).and(path("/zones/zone1/dns_records"))
            .and(query_param("type", "A")).and(query_param("name.exact", NAME)).and(query_param("page", page))
            .and(auth())
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "success": true, "errors": [], "messages": [],
                "result": [{"id": id, "name": NAME, "type": "A", "content": ip, "ttl": 300, "proxied": false}],
                "result_info": {"page": page.parse::<u32>().unwrap(), "per_page": 1, "count": 1, "total_count": 2, "total_pages": 2}})))
            .mount(&server).await;
    }
    Mock::given(method("POST"))
        .and(path("/zones/zone1/dns_records/batch"))
        .and(auth())
        .respond_with(rate_limited_once())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/zone1/dns_records/batch"))
        .and(auth())
        .and(exact_json(json!({
            "patches": [{"id": "rec1", "content": "192.0.2.9", "ttl": 60}],
            "deletes": [{"id": "rec2"}],
            "posts": []})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true, "errors": [], "result": {}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/zones/zone1")).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "result": {
            "id": "zone1", "name": ZONE, "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"]}})))
        .mount(&server).await;

    let cf = Cloudflare::new(Some(&server.uri()), Secret::new(TOKEN), None).unwrap();
    assert_eq!(
        cf.read(ZONE, NAME, RecordType::A).await.unwrap(),
        Some(a_set(300, &["192.0.2.1", "192.0.2.2"]))
    );
    let started = Instant::now();
    cf.replace(ZONE, &a_set(60, &["192.0.2.9"])).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(
        cf.nameservers(ZONE).await.unwrap(),
        Some(vec![
            "ada.ns.cloudflare.com".to_owned(),
            "bob.ns.cloudflare.com".to_owned()
        ])
    );
    cf.healthcheck(ZONE).await.unwrap();
}

#[tokio::test]
async fn cloudflare_refuses_a_bad_token_and_an_unknown_zone() {
    let server = strict_server().await;
    Mock::given(method("GET"))
        .and(path("/zones"))
        .and(header("Authorization", "Bearer bad"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "success": false, "errors": [{"code": 10000, "message": "Authentication error"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones"))
        .and(header("Authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"success": true, "result": [], "result_info": {"total_pages": 0}}),
        ))
        .mount(&server)
        .await;
    let bad = Cloudflare::new(Some(&server.uri()), Secret::new("bad"), None).unwrap();
    let err = bad.healthcheck(ZONE).await.unwrap_err();
    assert!(
        err.is_auth() && err.to_string().contains("Authentication error"),
        "{err}"
    );
    assert!(!err.to_string().contains("bad\""));
    let good = Cloudflare::new(Some(&server.uri()), Secret::new(TOKEN), None).unwrap();
    assert!(matches!(
        good.healthcheck(ZONE).await,
        Err(ProviderError::ZoneNotFound { .. })
    ));
}

fn route53_xml_list(ip: &str, truncated: bool) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ResourceRecordSets>
    <ResourceRecordSet><Name>app.example.com.</Name><Type>A</Type><TTL>300</TTL>
      <ResourceRecords><ResourceRecord><Value>{ip}</Value></ResourceRecord></ResourceRecords>
    </ResourceRecordSet>
  </ResourceRecordSets>
  <IsTruncated>{truncated}</IsTruncated><MaxItems>100</MaxItems>
</ListResourceRecordSetsResponse>"#
    )
}

fn change_xml(status: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ChangeResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ChangeInfo><Id>/change/C2682N5HXP0BZ4</Id><Status>{status}</Status><SubmittedAt>2026-11-21T10:00:00.000Z</SubmittedAt></ChangeInfo>
</ChangeResourceRecordSetsResponse>"#
    )
}

#[tokio::test]
async fn route53_signs_with_sigv4_upserts_and_waits_for_insync() {
    let server = strict_server().await;
    let signed = || {
        header_regex(
            "Authorization",
            r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/us-east-1/route53/aws4_request, SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*x-amz-date[a-z0-9;-]*, Signature=[0-9a-f]{64}$",
        )
    };
    let xml = |body: String| {
        ResponseTemplate::new(200)
            .insert_header("Content-Type", "text/xml")
            .set_body_string(body)
    };
    Mock::given(method("GET"))
        .and(path("/2013-04-01/hostedzone/Z1PA6795UKMFR9/rrset"))
        .and(query_param("name", "app.example.com."))
        .and(query_param("type", "A"))
        .and(signed())
        .and(header_regex("x-amz-date", r"^\d{8}T\d{6}Z$"))
        .respond_with(xml(route53_xml_list("192.0.2.1", false)))
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/2013-04-01/hostedzone/Z1PA6795UKMFR9/rrset/"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"))
        .up_to_n_times(1).with_priority(1).mount(&server).await;
    Mock::given(method("POST")).and(path("/2013-04-01/hostedzone/Z1PA6795UKMFR9/rrset/")).and(signed())
        .and(header("content-type", "application/xml"))
        .and(body_string_contains("<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">"))
        .and(body_string_contains("<Action>UPSERT</Action><ResourceRecordSet><Name>app.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.9</Value></ResourceRecord></ResourceRecords>"))
        .respond_with(xml(change_xml("PENDING")))
        .expect(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .and(signed())
        .respond_with(xml(
            change_xml("PENDING").replace("ChangeResourceRecordSetsResponse", "GetChangeResponse")
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .and(signed())
        .respond_with(xml(
            change_xml("INSYNC").replace("ChangeResourceRecordSetsResponse", "GetChangeResponse")
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/2013-04-01/hostedzone/Z1PA6795UKMFR9")).and(signed())
        .respond_with(xml(r#"<GetHostedZoneResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <HostedZone><Id>/hostedzone/Z1PA6795UKMFR9</Id><Name>example.com.</Name></HostedZone>
  <DelegationSet><NameServers><NameServer>ns-2048.awsdns-64.com</NameServer><NameServer>ns-2049.awsdns-65.net</NameServer></NameServers></DelegationSet>
</GetHostedZoneResponse>"#.to_owned()))
        .mount(&server).await;

    let keys = AwsKeys {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    };
    let r53 = Route53::new(Some(&server.uri()), "/hostedzone/Z1PA6795UKMFR9", keys)
        .unwrap()
        .with_change_poll(Duration::from_millis(50));
    assert_eq!(
        r53.read(ZONE, NAME, RecordType::A).await.unwrap(),
        Some(a_set(300, &["192.0.2.1"]))
    );
    r53.replace(ZONE, &a_set(60, &["192.0.2.9"])).await.unwrap();
    assert_eq!(
        r53.nameservers(ZONE).await.unwrap(),
        Some(vec![
            "ns-2048.awsdns-64.com".to_owned(),
            "ns-2049.awsdns-65.net".to_owned()
        ])
    );
}

#[tokio::test]
async fn digitalocean_follows_pages_and_rewrites_records_in_place() {
    let server = strict_server().await;
    let auth = || header("Authorization", format!("Bearer {TOKEN}").as_str());
    let record =
        |id: u64, ip: &str| json!({"id": id, "type": "A", "name": "app", "data": ip, "ttl": 1800});
    Mock::given(method("GET")).and(path("/v2/domains/example.com/records"))
        .and(query_param("type", "A")).and(query_param("name", NAME)).and(query_param("page", "1")).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "domain_records": [record(11, "192.0.2.1")],
            "links": {"pages": {"last": "https://api.digitalocean.com/v2/domains/example.com/records?page=2",
                                 "next": "https://api.digitalocean.com/v2/domains/example.com/records?page=2"}},
            "meta": {"total": 2}})))
        .mount(&server).await;
    Mock::given(method("GET")).and(path("/v2/domains/example.com/records"))
        .and(query_param("type", "A")).and(query_param("page", "2")).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "domain_records": [record(12, "192.0.2.2")],
            "links": {"pages": {"first": "https://api.digitalocean.com/v2/domains/example.com/records?page=1",
                                 "prev": "https://api.digitalocean.com/v2/domains/example.com/records?page=1"}},
            "meta": {"total": 2}})))
        .mount(&server).await;
    Mock::given(method("PUT"))
        .and(path("/v2/domains/example.com/records/11"))
        .and(auth())
        .respond_with(rate_limited_once())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2/domains/example.com/records/11"))
        .and(auth())
        .and(exact_json(
            json!({"type": "A", "name": "app", "data": "192.0.2.9", "ttl": 60}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"domain_record": record(11, "192.0.2.9")})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/domains/example.com/records/12"))
        .and(auth())
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let doc = DigitalOcean::new(Some(&server.uri()), Secret::new(TOKEN)).unwrap();
    assert_eq!(
        doc.read(ZONE, NAME, RecordType::A).await.unwrap(),
        Some(a_set(1800, &["192.0.2.1", "192.0.2.2"]))
    );
    let started = Instant::now();
    doc.replace(ZONE, &a_set(60, &["192.0.2.9"])).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn hetzner_sets_records_and_ttl_through_actions() {
    let server = strict_server().await;
    let auth = || header("Authorization", format!("Bearer {TOKEN}").as_str());
    Mock::given(method("GET"))
        .and(path("/zones/example.com"))
        .and(auth())
        .respond_with(rate_limited_once())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/zones/example.com")).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"zone": {
            "id": 42, "name": ZONE, "mode": "primary", "ttl": 3600,
            "authoritative_nameservers": {"assigned": ["hydrogen.ns.hetzner.com.", "oxygen.ns.hetzner.com."]}}})))
        .mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/zones/example.com/rrsets/app/A"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"rrset": {
            "id": "app/A", "name": "app", "type": "A", "ttl": null,
            "records": [{"value": "192.0.2.1", "comment": ""}]}})))
        .mount(&server)
        .await;
    let action = |id: u64, status: &str| json!({"action": {"id": id, "command": "set_rrset_records", "status": status, "progress": 0, "error": null}});
    Mock::given(method("POST"))
        .and(path("/zones/example.com/rrsets/app/A/actions/set_records"))
        .and(auth())
        .and(exact_json(json!({"records": [{"value": "192.0.2.9"}]})))
        .respond_with(ResponseTemplate::new(201).set_body_json(action(7, "running")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/zones/actions/7"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(action(7, "success")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/zones/example.com/rrsets/app/A/actions/change_ttl"))
        .and(auth())
        .and(exact_json(json!({"ttl": 60})))
        .respond_with(ResponseTemplate::new(201).set_body_json(action(8, "success")))
        .expect(1)
        .mount(&server)
        .await;

    let hz = Hetzner::new(Some(&server.uri()), Secret::new(TOKEN), None).unwrap();
    // A null TTL is the zone's default; the zone lookup is rate-limited once.
    assert_eq!(
        hz.read(ZONE, NAME, RecordType::A).await.unwrap(),
        Some(a_set(3600, &["192.0.2.1"]))
    );
    hz.replace(ZONE, &a_set(60, &["192.0.2.9"])).await.unwrap();
    assert_eq!(
        hz.nameservers(ZONE).await.unwrap(),
        Some(vec![
            "hydrogen.ns.hetzner.com".to_owned(),
            "oxygen.ns.hetzner.com".to_owned()
        ])
    );
}

#[tokio::test]
async fn gandi_reads_and_puts_a_record_set() {
    let server = strict_server().await;
    let auth = || header("Authorization", format!("Bearer {TOKEN}").as_str());
    Mock::given(method("GET")).and(path("/domains/example.com/records/app/A")).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "rrset_name": "app", "rrset_type": "A", "rrset_ttl": 10800, "rrset_values": ["192.0.2.1"],
            "rrset_href": "https://api.gandi.net/v5/livedns/domains/example.com/records/app/A"})))
        .mount(&server).await;
    Mock::given(method("GET")).and(path("/domains/example.com/records/gone/A")).and(auth())
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"code": 404, "message": "Unknown record", "object": "dns-record", "cause": "Not Found"})))
        .mount(&server).await;
    Mock::given(method("PUT"))
        .and(path("/domains/example.com/records/app/A"))
        .and(auth())
        .respond_with(rate_limited_once())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/domains/example.com/records/app/A"))
        .and(auth())
        .and(exact_json(
            json!({"rrset_values": ["192.0.2.9"], "rrset_ttl": 300}),
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"message": "DNS Record Created"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/domains/example.com/nameservers"))
        .and(auth())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!(["ns-1-a.gandi.net", "ns-2-b.gandi.net"])),
        )
        .mount(&server)
        .await;

    let gandi = Gandi::new(Some(&server.uri()), Secret::new(TOKEN)).unwrap();
    assert_eq!(
        gandi.read(ZONE, NAME, RecordType::A).await.unwrap(),
        Some(a_set(10800, &["192.0.2.1"]))
    );
    assert_eq!(
        gandi
            .read(ZONE, "gone.example.com", RecordType::A)
            .await
            .unwrap(),
        None
    );
    // Gandi documents 300 s as LiveDNS's minimum and no endpoint reports it: the adapter
    // answers from that constant without a request (the strict server fails on any).
    assert_eq!(gandi.min_ttl(ZONE).await.unwrap(), 300);
    gandi
        .replace(ZONE, &a_set(300, &["192.0.2.9"]))
        .await
        .unwrap();
    assert_eq!(gandi.nameservers(ZONE).await.unwrap().unwrap().len(), 2);
}

#[tokio::test]
async fn desec_reads_its_minimum_ttl_and_bulk_puts_with_token_auth() {
    let server = strict_server().await;
    let auth = || header("Authorization", format!("Token {TOKEN}").as_str());
    Mock::given(method("GET")).and(path("/domains/example.com/")).and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": ZONE, "minimum_ttl": 3600, "created": "2026-01-01T00:00:00Z", "published": "2026-01-01T00:00:00Z"})))
        .mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/domains/example.com/rrsets/app/A/"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "domain": ZONE, "subname": "app", "name": "app.example.com.", "type": "A", "ttl": 86400,
            "records": ["192.0.2.1"], "touched": "2026-01-01T00:00:00Z"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/domains/example.com/rrsets/@/A/"))
        .and(auth())
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/domains/example.com/rrsets/"))
        .and(auth())
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(
                    json!({"detail": "Request was throttled. Expected available in 1 second."}),
                ),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/domains/example.com/rrsets/"))
        .and(auth())
        .and(exact_json(
            json!([{"subname": "app", "type": "A", "ttl": 3600, "records": ["192.0.2.9"]}]),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;

    let desec = Desec::new(Some(&server.uri()), Secret::new(TOKEN)).unwrap();
    assert_eq!(desec.min_ttl(ZONE).await.unwrap(), 3600);
    assert_eq!(
        desec.read(ZONE, NAME, RecordType::A).await.unwrap(),
        Some(a_set(86400, &["192.0.2.1"]))
    );
    assert_eq!(desec.read(ZONE, ZONE, RecordType::A).await.unwrap(), None);
    let started = Instant::now();
    desec
        .replace(ZONE, &a_set(3600, &["192.0.2.9"]))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn retries_stop_when_the_provider_keeps_failing() {
    let server = strict_server().await;
    Mock::given(method("GET"))
        .and(path("/domains/example.com/records/app/A"))
        .respond_with(ResponseTemplate::new(503))
        .expect(6)
        .mount(&server)
        .await;
    let gandi = Gandi::new(Some(&server.uri()), Secret::new(TOKEN)).unwrap();
    let err = gandi.read(ZONE, NAME, RecordType::A).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::RetriesExhausted {
                attempts: 6,
                status: 503,
                ..
            }
        ),
        "{err}"
    );
}

/// AWS's published SigV4 test vector "get-vanilla": a wrong canonical request, scope, key
/// derivation or final HMAC changes the signature.
#[test]
fn route53_signature_matches_the_aws_test_vector() {
    use cutover_providers::route53::{SigV4Request, sigv4_headers};
    let keys = AwsKeys {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    };
    // 2015-08-30T12:36:00Z
    let time = std::time::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    let headers = sigv4_headers(
        &keys,
        SigV4Request {
            method: "GET",
            url: "https://example.amazonaws.com/",
            headers: &[],
            body: b"",
        },
        time,
        "us-east-1",
        "service",
    )
    .unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
    assert_eq!(
        get("authorization"),
        Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        )
    );
}
