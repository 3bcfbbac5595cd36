//! deSEC (`/api/v1/domains/{name}/rrsets/`), `Authorization: Token`. Record sets are written with
//! one bulk `PUT` (atomic); the minimum TTL is the domain's `minimum_ttl`. deSEC rate-limits
//! writes hard and answers 429 with `Retry-After`, which [`crate::http::Api`] honours.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Api, Auth};
use crate::{
    DnsProvider, ProviderError, ProviderKind, RecordSet, RecordType, Secret, fqdn, relative_name,
};

/// The public API.
pub const DEFAULT_API: &str = "https://desec.io/api/v1";

/// A deSEC account's domains.
#[derive(Debug)]
pub struct Desec {
    api: Api,
}

#[derive(Deserialize)]
struct Domain {
    minimum_ttl: u32,
}

#[derive(Deserialize)]
struct RRSet {
    ttl: u32,
    records: Vec<String>,
}

/// deSEC's subname: empty at the apex in bodies, `@` in URLs.
fn subname(name: &str, zone: &str) -> String {
    match relative_name(name, zone).as_str() {
        "@" => String::new(),
        other => other.to_owned(),
    }
}

impl Desec {
    /// A client.
    pub fn new(api_url: Option<&str>, token: Secret) -> Result<Desec, ProviderError> {
        Ok(Desec {
            api: Api::new(
                ProviderKind::Desec,
                api_url.unwrap_or(DEFAULT_API),
                Auth::Token(token),
            )?,
        })
    }

    async fn domain(&self, zone: &str) -> Result<Domain, ProviderError> {
        let answer = self
            .api
            .send(Method::GET, &format!("/domains/{}/", fqdn(zone)), &[], None)
            .await?;
        answer.zone_exists(zone)?.success()?.json()
    }
}

#[async_trait]
impl DnsProvider for Desec {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Desec
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        self.domain(zone).await.map(|_| ())
    }

    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let sub = relative_name(name, zone);
        let path = format!(
            "/domains/{}/rrsets/{sub}/{}/",
            fqdn(zone),
            record_type.as_str()
        );
        let answer = self.api.send(Method::GET, &path, &[], None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let rrset: RRSet = answer.success()?.json()?;
        Ok(Some(RecordSet::new(
            name,
            record_type,
            rrset.ttl,
            &rrset.records,
        )))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        self.replace_many(zone, std::slice::from_ref(set)).await
    }

    async fn replace_many(&self, zone: &str, sets: &[RecordSet]) -> Result<(), ProviderError> {
        let body = json!(
            sets.iter()
                .map(|set| json!({
                    "subname": subname(&set.name, zone),
                    "type": set.record_type.as_str(),
                    "ttl": set.ttl,
                    "records": set.values_with_dot(),
                }))
                .collect::<Vec<_>>()
        );
        self.api
            .send(
                Method::PUT,
                &format!("/domains/{}/rrsets/", fqdn(zone)),
                &[],
                Some(&body),
            )
            .await?
            .success()
            .map(|_| ())
    }

    async fn nameservers(&self, _zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        Ok(None)
    }

    async fn min_ttl(&self, zone: &str) -> Result<u32, ProviderError> {
        Ok(self.domain(zone).await?.minimum_ttl)
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    vec![
        serde_json::from_slice::<Domain>(body).is_ok(),
        serde_json::from_slice::<RRSet>(body).is_ok(),
    ]
}
