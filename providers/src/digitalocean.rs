//! DigitalOcean Domains API (`/v2/domains/{zone}/records`): records stored one by one, listed
//! page by page; a record set is rewritten in place, then completed, then trimmed.

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::http::{Api, Auth};
use crate::{
    DnsProvider, ProviderError, ProviderKind, RecordChanges, RecordSet, RecordType, Secret,
    StoredRecord, fqdn, relative_name,
};

/// The public API.
pub const DEFAULT_API: &str = "https://api.digitalocean.com";
const PER_PAGE: u32 = 200;

/// A DigitalOcean account's domains.
#[derive(Debug)]
pub struct DigitalOcean {
    api: Api,
}

#[derive(Deserialize)]
struct RecordsPage {
    domain_records: Vec<DomainRecord>,
    #[serde(default)]
    links: Links,
}

#[derive(Deserialize, Default)]
struct Links {
    #[serde(default)]
    pages: Option<Pages>,
}

#[derive(Deserialize)]
struct Pages {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct DomainRecord {
    id: u64,
    data: String,
    ttl: u32,
}

impl DigitalOcean {
    /// A client.
    pub fn new(api_url: Option<&str>, token: Secret) -> Result<DigitalOcean, ProviderError> {
        Ok(DigitalOcean {
            api: Api::new(
                ProviderKind::Digitalocean,
                api_url.unwrap_or(DEFAULT_API),
                Auth::Bearer(token),
            )?,
        })
    }

    /// Every record of `name`/`rtype`, following `links.pages.next`.
    async fn records(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<DomainRecord>, ProviderError> {
        let path = format!("/v2/domains/{}/records", fqdn(zone));
        let mut all = Vec::new();
        let mut page = 1u32;
        loop {
            let answer = self
                .api
                .send(
                    Method::GET,
                    &path,
                    &[
                        ("type", rtype.to_owned()),
                        ("name", fqdn(name)),
                        ("per_page", PER_PAGE.to_string()),
                        ("page", page.to_string()),
                    ],
                    None,
                )
                .await?;
            let found: RecordsPage = answer.zone_exists(zone)?.success()?.json()?;
            all.extend(found.domain_records);
            if found.links.pages.and_then(|p| p.next).is_none() {
                return Ok(all);
            }
            page += 1;
        }
    }

    fn data(record_type: RecordType, value: &str) -> String {
        match record_type {
            RecordType::Cname => format!("{value}."),
            _ => value.to_owned(),
        }
    }
}

#[async_trait]
impl DnsProvider for DigitalOcean {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Digitalocean
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        let answer = self
            .api
            .send(
                Method::GET,
                &format!("/v2/domains/{}", fqdn(zone)),
                &[],
                None,
            )
            .await?;
        answer.zone_exists(zone)?.success().map(|_| ())
    }

    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let records = self.records(zone, name, record_type.as_str()).await?;
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let values: Vec<String> = records.iter().map(|r| r.data.clone()).collect();
        Ok(Some(RecordSet::new(name, record_type, first.ttl, &values)))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        let stored: Vec<StoredRecord<u64>> = self
            .records(zone, &set.name, set.record_type.as_str())
            .await?
            .into_iter()
            .map(|r| StoredRecord {
                value: set.record_type.normalize(&r.data).unwrap_or(r.data),
                id: r.id,
                ttl: r.ttl,
            })
            .collect();
        let changes = RecordChanges::between(&stored, set);
        let base = format!("/v2/domains/{}/records", fqdn(zone));
        let relative = relative_name(&set.name, zone);
        for (id, value, ttl) in &changes.update {
            let body = json!({
                "type": set.record_type.as_str(), "name": relative,
                "data": Self::data(set.record_type, value), "ttl": ttl,
            });
            self.api
                .send(Method::PUT, &format!("{base}/{id}"), &[], Some(&body))
                .await?
                .success()?;
        }
        for value in &changes.create {
            let body = json!({
                "type": set.record_type.as_str(), "name": relative,
                "data": Self::data(set.record_type, value), "ttl": set.ttl,
            });
            self.api
                .send(Method::POST, &base, &[], Some(&body))
                .await?
                .success()?;
        }
        for id in &changes.delete {
            self.api
                .send(Method::DELETE, &format!("{base}/{id}"), &[], None)
                .await?
                .success()?;
        }
        Ok(())
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        let ns: Vec<String> = self
            .records(zone, zone, "NS")
            .await?
            .iter()
            .map(|r| fqdn(&r.data))
            .collect();
        Ok((!ns.is_empty()).then_some(ns))
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    vec![serde_json::from_slice::<RecordsPage>(body).is_ok()]
}
