//! Cloudflare API v4: zones looked up by name, DNS records listed page by page and changed in
//! one `dns_records/batch` request (deletes, patches and posts applied atomically).

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::http::{Api, Auth};
use crate::{
    DnsProvider, ProviderError, ProviderKind, RecordChanges, RecordSet, RecordType, Secret,
    StoredRecord, fqdn,
};

/// The public API.
pub const DEFAULT_API: &str = "https://api.cloudflare.com/client/v4";
const PER_PAGE: u32 = 100;

/// A Cloudflare account's DNS.
#[derive(Debug)]
pub struct Cloudflare {
    api: Api,
    zone_id: OnceCell<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Deserialize)]
struct ResultInfo {
    #[serde(default)]
    total_pages: Option<u32>,
}

#[derive(Deserialize)]
struct ZoneRef {
    id: String,
    #[serde(default)]
    name_servers: Vec<String>,
}

#[derive(Deserialize)]
struct DnsRecord {
    id: String,
    content: String,
    ttl: u32,
    #[serde(default)]
    proxied: bool,
}

/// Cloudflare's `ttl = 1` means "automatic", which it serves as 300 seconds.
const AUTOMATIC_TTL: u32 = 300;

impl Cloudflare {
    /// A client; `zone_id` skips the lookup by name.
    pub fn new(
        api_url: Option<&str>,
        token: Secret,
        zone_id: Option<String>,
    ) -> Result<Cloudflare, ProviderError> {
        let cell = OnceCell::new();
        if let Some(id) = zone_id {
            let _ = cell.set(id);
        }
        Ok(Cloudflare {
            api: Api::new(
                ProviderKind::Cloudflare,
                api_url.unwrap_or(DEFAULT_API),
                Auth::Bearer(token),
            )?,
            zone_id: cell,
        })
    }

    async fn zone_id(&self, zone: &str) -> Result<&str, ProviderError> {
        self.zone_id
            .get_or_try_init(|| async {
                let found: Envelope<Vec<ZoneRef>> =
                    self.api.get_json("/zones", &[("name", fqdn(zone))]).await?;
                found
                    .result
                    .into_iter()
                    .next()
                    .map(|z| z.id)
                    .ok_or_else(|| ProviderError::ZoneNotFound {
                        provider: ProviderKind::Cloudflare,
                        zone: zone.to_owned(),
                    })
            })
            .await
            .map(String::as_str)
    }

    async fn zone(&self, zone: &str) -> Result<ZoneRef, ProviderError> {
        let id = self.zone_id(zone).await?;
        let answer = self
            .api
            .send(Method::GET, &format!("/zones/{id}"), &[], None)
            .await?;
        Ok(answer
            .zone_exists(zone)?
            .success()?
            .json::<Envelope<ZoneRef>>()?
            .result)
    }

    /// Every record of `name`/`type`, following the pages.
    async fn records(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Vec<DnsRecord>, ProviderError> {
        let path = format!("/zones/{}/dns_records", self.zone_id(zone).await?);
        let mut all = Vec::new();
        let mut page = 1;
        loop {
            let found: Envelope<Vec<DnsRecord>> = self
                .api
                .get_json(
                    &path,
                    &[
                        ("type", record_type.as_str().to_owned()),
                        ("name.exact", fqdn(name)),
                        ("per_page", PER_PAGE.to_string()),
                        ("page", page.to_string()),
                    ],
                )
                .await?;
            all.extend(found.result);
            let pages = found.result_info.and_then(|i| i.total_pages).unwrap_or(1);
            if page >= pages {
                return Ok(all);
            }
            page += 1;
        }
    }
}

fn effective_ttl(ttl: u32) -> u32 {
    if ttl == 1 { AUTOMATIC_TTL } else { ttl }
}

#[async_trait]
impl DnsProvider for Cloudflare {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Cloudflare
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        self.zone(zone).await.map(|_| ())
    }

    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let records = self.records(zone, name, record_type).await?;
        if records.iter().any(|r| r.proxied) {
            return Err(ProviderError::Unsupported {
                provider: ProviderKind::Cloudflare,
                detail: format!(
                    "{name} is proxied: Cloudflare serves its own addresses, so propagation of the new host cannot be checked; fix: turn the proxy off for the migration"
                ),
            });
        }
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let values: Vec<String> = records.iter().map(|r| r.content.clone()).collect();
        Ok(Some(RecordSet::new(
            name,
            record_type,
            effective_ttl(first.ttl),
            &values,
        )))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        let stored: Vec<StoredRecord<String>> = self
            .records(zone, &set.name, set.record_type)
            .await?
            .into_iter()
            .map(|r| StoredRecord {
                value: set.record_type.normalize(&r.content).unwrap_or(r.content),
                id: r.id,
                ttl: r.ttl,
            })
            .collect();
        let changes = RecordChanges::between(&stored, set);
        if changes.is_empty() {
            return Ok(());
        }
        let body = json!({
            "deletes": changes.delete.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "patches": changes.update.iter()
                .map(|(id, value, ttl)| json!({"id": id, "content": value, "ttl": ttl}))
                .collect::<Vec<_>>(),
            "posts": changes.create.iter()
                .map(|value| json!({
                    "name": set.name, "type": set.record_type.as_str(),
                    "content": value, "ttl": set.ttl, "proxied": false,
                }))
                .collect::<Vec<_>>(),
        });
        let path = format!("/zones/{}/dns_records/batch", self.zone_id(zone).await?);
        self.api
            .send(Method::POST, &path, &[], Some(&body))
            .await?
            .success()
            .map(|_| ())
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        let ns = self.zone(zone).await?.name_servers;
        Ok((!ns.is_empty()).then(|| ns.iter().map(|n| fqdn(n)).collect()))
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    vec![
        serde_json::from_slice::<Envelope<Vec<ZoneRef>>>(body).is_ok(),
        serde_json::from_slice::<Envelope<ZoneRef>>(body).is_ok(),
        serde_json::from_slice::<Envelope<Vec<DnsRecord>>>(body).is_ok(),
    ]
}
