//! Amazon Route 53 REST API (`/2013-04-01/…`, XML), every request signed with SigV4
//! (`aws-sigv4`, service `route53`, region `us-east-1`). A change is `UPSERT`ed in one change
//! batch and polled with `GetChange` until it is `INSYNC` on every Route 53 nameserver.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::http::{Answer, Api, Auth};
use crate::{DnsProvider, ProviderError, ProviderKind, RecordSet, RecordType, Secret, fqdn};

/// The public API.
pub const DEFAULT_API: &str = "https://route53.amazonaws.com";
const VERSION: &str = "/2013-04-01";
const NAMESPACE: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
/// Route 53 accepts at most 1,000 changes per batch; stay well under it.
const BATCH: usize = 500;

/// AWS credentials for signing.
#[derive(Debug, Clone)]
pub struct AwsKeys {
    /// Access key id (not secret on its own, but never printed either).
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token for temporary credentials.
    pub session_token: Option<Secret>,
}

/// One hosted zone.
#[derive(Debug)]
pub struct Route53 {
    api: Api,
    keys: AwsKeys,
    zone_id: String,
    client: reqwest::Client,
    poll: Duration,
    change_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResponse {
    resource_record_sets: RecordSets,
    is_truncated: bool,
    #[serde(default)]
    next_record_name: Option<String>,
    #[serde(default)]
    next_record_type: Option<String>,
}

#[derive(Deserialize, Default)]
struct RecordSets {
    #[serde(rename = "ResourceRecordSet", default)]
    sets: Vec<ResourceRecordSet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceRecordSet {
    name: String,
    #[serde(rename = "Type")]
    rtype: String,
    #[serde(rename = "TTL", default)]
    ttl: Option<u32>,
    #[serde(default)]
    set_identifier: Option<String>,
    #[serde(default)]
    alias_target: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    resource_records: Option<ResourceRecords>,
}

#[derive(Deserialize)]
struct ResourceRecords {
    #[serde(rename = "ResourceRecord", default)]
    records: Vec<ResourceRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceRecord {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeResponse {
    change_info: ChangeInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeInfo {
    id: String,
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HostedZoneResponse {
    #[serde(default)]
    delegation_set: Option<DelegationSet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DelegationSet {
    name_servers: NameServers,
}

#[derive(Deserialize)]
struct NameServers {
    #[serde(rename = "NameServer", default)]
    names: Vec<String>,
}

/// Route 53 signals throttling with HTTP 400 and an error code in the body.
/// A request to sign: what SigV4 covers of it.
pub struct SigV4Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Full URL with its query.
    pub url: &'a str,
    /// Headers sent besides the signature's own (lower-case names).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// The headers (`authorization`, `x-amz-date`, and `x-amz-security-token` with a session
/// token) that sign `request` with AWS Signature Version 4 at `time`. A pure function, so it is
/// checked against AWS's published test vectors.
pub fn sigv4_headers(
    keys: &AwsKeys,
    request: SigV4Request<'_>,
    time: SystemTime,
    region: &str,
    service: &str,
) -> Result<Vec<(String, String)>, String> {
    let identity = Credentials::new(
        keys.access_key_id.expose(),
        keys.secret_access_key.expose(),
        keys.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "cutover-plan",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

fn retryable(status: StatusCode, body: &[u8]) -> bool {
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return true;
    }
    let text = String::from_utf8_lossy(body);
    status == StatusCode::BAD_REQUEST
        && (text.contains("<Code>Throttling</Code>")
            || text.contains("<Code>PriorRequestNotComplete</Code>"))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn decode<T: for<'de> Deserialize<'de>>(answer: &Answer) -> Result<T, ProviderError> {
    quick_xml::de::from_str(&answer.text()).map_err(|e| answer.decode_error(e))
}

/// The `ChangeResourceRecordSetsRequest` document that UPSERTs `sets`.
pub fn change_batch_xml(sets: &[RecordSet]) -> String {
    let mut changes = String::new();
    for set in sets {
        let records: String = set
            .values_with_dot()
            .iter()
            .map(|v| {
                format!(
                    "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                    xml_escape(v)
                )
            })
            .collect();
        changes.push_str(&format!(
            "<Change><Action>UPSERT</Action><ResourceRecordSet><Name>{}.</Name><Type>{}</Type><TTL>{}</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet></Change>",
            xml_escape(&set.name),
            set.record_type.as_str(),
            set.ttl
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"{NAMESPACE}\"><ChangeBatch><Comment>cutover</Comment><Changes>{changes}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
    )
}

impl Route53 {
    /// A client for hosted zone `hosted_zone_id` (`Z…` or `/hostedzone/Z…`).
    pub fn new(
        api_url: Option<&str>,
        hosted_zone_id: &str,
        keys: AwsKeys,
    ) -> Result<Route53, ProviderError> {
        let api = Api::new(
            ProviderKind::Route53,
            api_url.unwrap_or(DEFAULT_API),
            Auth::None,
        )?
        .with_retryable(retryable);
        Ok(Route53 {
            api,
            keys,
            zone_id: hosted_zone_id.trim_start_matches("/hostedzone/").to_owned(),
            client: reqwest::Client::new(),
            poll: Duration::from_secs(2),
            change_timeout: Duration::from_secs(300),
        })
    }

    /// Polls change status every `poll` (tests use a short interval).
    pub fn with_change_poll(mut self, poll: Duration) -> Route53 {
        self.poll = poll;
        self
    }

    /// Sends a signed request; the signature is computed anew for each attempt.
    async fn signed(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<String>,
    ) -> Result<Answer, ProviderError> {
        let url = if query.is_empty() {
            self.api.url(path)
        } else {
            format!("{}?{query}", self.api.url(path))
        };
        let body = body.unwrap_or_default();
        self.api
            .send_built(method.clone(), path, || {
                let content_type = [("content-type", "application/xml")];
                let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &content_type };
                let signature = sigv4_headers(
                    &self.keys,
                    SigV4Request {
                        method: method.as_str(),
                        url: &url,
                        headers,
                        body: body.as_bytes(),
                    },
                    SystemTime::now(),
                    "us-east-1",
                    "route53",
                )
                .map_err(|e| self.signing_error(e))?;
                let mut request = self.client.request(method.clone(), &url);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                for (name, value) in &signature {
                    request = request.header(name, value);
                }
                if !body.is_empty() {
                    request = request.body(body.clone());
                }
                request.build().map_err(|e| ProviderError::Transport {
                    provider: ProviderKind::Route53,
                    what: path.to_owned(),
                    detail: e.to_string(),
                })
            })
            .await
    }

    fn signing_error(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Dns {
            provider: ProviderKind::Route53,
            detail: format!("cannot sign the request: {e}"),
        }
    }

    async fn hosted_zone(&self, zone: &str) -> Result<HostedZoneResponse, ProviderError> {
        let answer = self
            .signed(
                Method::GET,
                &format!("{VERSION}/hostedzone/{}", self.zone_id),
                "",
                None,
            )
            .await?;
        decode(&answer.zone_exists(zone)?.success()?)
    }

    async fn wait_insync(&self, mut change: ChangeInfo) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.change_timeout;
        while change.status != "INSYNC" {
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::ChangeTimeout {
                    provider: ProviderKind::Route53,
                    change: change.id,
                    seconds: self.change_timeout.as_secs(),
                });
            }
            tokio::time::sleep(self.poll).await;
            let id = change.id.trim_start_matches("/change/").to_owned();
            let answer = self
                .signed(Method::GET, &format!("{VERSION}/change/{id}"), "", None)
                .await?
                .success()?;
            change = decode::<ChangeResponse>(&answer)?.change_info;
        }
        Ok(())
    }
}

fn query_string(pairs: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

#[async_trait]
impl DnsProvider for Route53 {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Route53
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        self.hosted_zone(zone).await.map(|_| ())
    }

    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let wanted = format!("{}.", fqdn(name));
        let path = format!("{VERSION}/hostedzone/{}/rrset", self.zone_id);
        let (mut start_name, mut start_type) = (wanted.clone(), record_type.as_str().to_owned());
        let mut found: Vec<ResourceRecordSet> = Vec::new();
        loop {
            let query = query_string(&[
                ("name", start_name.clone()),
                ("type", start_type.clone()),
                ("maxitems", "100".into()),
            ]);
            let answer = self.signed(Method::GET, &path, &query, None).await?;
            let page: ListResponse = decode(&answer.zone_exists(zone)?.success()?)?;
            let before = found.len();
            let mut past = false;
            for set in page.resource_record_sets.sets {
                if set.name.eq_ignore_ascii_case(&wanted) && set.rtype == record_type.as_str() {
                    found.push(set);
                } else {
                    past = true;
                }
            }
            // Listing starts at our name and type; stop once the page moved past them.
            let more = page.is_truncated && !past && found.len() > before;
            match (more, page.next_record_name, page.next_record_type) {
                (true, Some(n), Some(t)) => {
                    start_name = n;
                    start_type = t;
                }
                _ => break,
            }
        }
        if found
            .iter()
            .any(|s| s.set_identifier.is_some() || s.alias_target.is_some())
        {
            return Err(ProviderError::Unsupported {
                provider: ProviderKind::Route53,
                detail: format!(
                    "{name} {record_type} uses an alias or a routing policy; cutover switches plain record sets only"
                ),
            });
        }
        let Some(set) = found.into_iter().next() else {
            return Ok(None);
        };
        let values: Vec<String> = set
            .resource_records
            .map(|r| r.records.into_iter().map(|r| r.value).collect())
            .unwrap_or_default();
        Ok(Some(RecordSet::new(
            name,
            record_type,
            set.ttl.unwrap_or(0),
            &values,
        )))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        self.replace_many(zone, std::slice::from_ref(set)).await
    }

    async fn replace_many(&self, zone: &str, sets: &[RecordSet]) -> Result<(), ProviderError> {
        let path = format!("{VERSION}/hostedzone/{}/rrset/", self.zone_id);
        for chunk in sets.chunks(BATCH) {
            let answer = self
                .signed(Method::POST, &path, "", Some(change_batch_xml(chunk)))
                .await?;
            let change =
                decode::<ChangeResponse>(&answer.zone_exists(zone)?.success()?)?.change_info;
            self.wait_insync(change).await?;
        }
        Ok(())
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        Ok(self
            .hosted_zone(zone)
            .await?
            .delegation_set
            .map(|d| d.name_servers.names.iter().map(|n| fqdn(n)).collect()))
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    let text = String::from_utf8_lossy(body);
    vec![
        quick_xml::de::from_str::<ListResponse>(&text).is_ok(),
        quick_xml::de::from_str::<ChangeResponse>(&text).is_ok(),
        quick_xml::de::from_str::<HostedZoneResponse>(&text).is_ok(),
    ]
}
