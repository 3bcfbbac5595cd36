//! Gandi LiveDNS v5 (`/v5/livedns/domains/{fqdn}/records/{name}/{type}`), personal access token
//! as a Bearer token. A record set is replaced with one `PUT`.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Api, Auth};
use crate::{
    DnsProvider, ProviderError, ProviderKind, RecordSet, RecordType, Secret, fqdn, relative_name,
};

/// The public API.
pub const DEFAULT_API: &str = "https://api.gandi.net/v5/livedns";

/// A Gandi organisation's LiveDNS domains.
#[derive(Debug)]
pub struct Gandi {
    api: Api,
}

#[derive(Deserialize)]
struct RRSet {
    rrset_ttl: u32,
    rrset_values: Vec<String>,
}

impl Gandi {
    /// A client.
    pub fn new(api_url: Option<&str>, token: Secret) -> Result<Gandi, ProviderError> {
        Ok(Gandi {
            api: Api::new(
                ProviderKind::Gandi,
                api_url.unwrap_or(DEFAULT_API),
                Auth::Bearer(token),
            )?,
        })
    }

    fn rrset_path(zone: &str, name: &str, record_type: RecordType) -> String {
        format!(
            "/domains/{}/records/{}/{}",
            fqdn(zone),
            relative_name(name, zone),
            record_type.as_str()
        )
    }
}

#[async_trait]
impl DnsProvider for Gandi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gandi
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        let answer = self
            .api
            .send(Method::GET, &format!("/domains/{}", fqdn(zone)), &[], None)
            .await?;
        answer.zone_exists(zone)?.success().map(|_| ())
    }

    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let answer = self
            .api
            .send(
                Method::GET,
                &Self::rrset_path(zone, name, record_type),
                &[],
                None,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let rrset: RRSet = answer.success()?.json()?;
        Ok(Some(RecordSet::new(
            name,
            record_type,
            rrset.rrset_ttl,
            &rrset.rrset_values,
        )))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        let body = json!({ "rrset_values": set.values_with_dot(), "rrset_ttl": set.ttl });
        let path = Self::rrset_path(zone, &set.name, set.record_type);
        self.api
            .send(Method::PUT, &path, &[], Some(&body))
            .await?
            .success()
            .map(|_| ())
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        let ns: Vec<String> = self
            .api
            .get_json(&format!("/domains/{}/nameservers", fqdn(zone)), &[])
            .await?;
        Ok((!ns.is_empty()).then(|| ns.iter().map(|n| fqdn(n)).collect()))
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    vec![
        serde_json::from_slice::<RRSet>(body).is_ok(),
        serde_json::from_slice::<Vec<String>>(body).is_ok(),
    ]
}
