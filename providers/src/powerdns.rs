//! PowerDNS Authoritative HTTP API (`/api/v1/servers/{server}/zones/{zone}`), key in `X-API-Key`.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Api, Auth};
use crate::{DnsProvider, ProviderError, ProviderKind, RecordSet, RecordType, Secret, fqdn};

/// A PowerDNS server's API.
#[derive(Debug, Clone)]
pub struct PowerDns {
    api: Api,
    server_id: String,
}

#[derive(Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RRSet>,
}

#[derive(Deserialize)]
struct RRSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: u32,
    records: Vec<Rec>,
}

#[derive(Deserialize)]
struct Rec {
    content: String,
    #[serde(default)]
    disabled: bool,
}

impl PowerDns {
    /// A client for the API at `api_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(api_url: &str, server_id: &str, api_key: Secret) -> Result<PowerDns, ProviderError> {
        Ok(PowerDns {
            api: Api::new(
                ProviderKind::Powerdns,
                &format!("{}/api/v1", api_url.trim_end_matches('/')),
                Auth::Header("X-API-Key", api_key),
            )?,
            server_id: server_id.to_owned(),
        })
    }

    fn zone_path(&self, zone: &str) -> String {
        format!("/servers/{}/zones/{}.", self.server_id, fqdn(zone))
    }

    /// The zone, with the rrsets `query` selects (`rrset_name`/`rrset_type` filter on
    /// PowerDNS 4.8+, older servers send every rrset and the caller filters).
    async fn zone(&self, zone: &str, query: &[(&str, String)]) -> Result<Zone, ProviderError> {
        let answer = self
            .api
            .send(Method::GET, &self.zone_path(zone), query, None)
            .await?;
        // PowerDNS answers 404 (newer) or 422 (older) for an unknown zone.
        if matches!(
            answer.status,
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY
        ) {
            return Err(ProviderError::ZoneNotFound {
                provider: ProviderKind::Powerdns,
                zone: zone.to_owned(),
            });
        }
        answer.success()?.json()
    }

    async fn values_of(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Option<(u32, Vec<String>)>, ProviderError> {
        let wanted = format!("{}.", fqdn(name));
        let filter = [
            ("rrset_name", wanted.clone()),
            ("rrset_type", rtype.to_owned()),
        ];
        Ok(self
            .zone(zone, &filter)
            .await?
            .rrsets
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(&wanted) && r.rtype == rtype)
            .map(|r| {
                let values = r
                    .records
                    .into_iter()
                    .filter(|rec| !rec.disabled)
                    .map(|rec| rec.content)
                    .collect();
                (r.ttl, values)
            }))
    }
}

#[async_trait]
impl DnsProvider for PowerDns {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Powerdns
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        self.zone(zone, &[("rrsets", "false".to_owned())])
            .await
            .map(|_| ())
    }

    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        Ok(self
            .values_of(zone, name, record_type.as_str())
            .await?
            .filter(|(_, values)| !values.is_empty())
            .map(|(ttl, values)| RecordSet::new(name, record_type, ttl, &values)))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        self.replace_many(zone, std::slice::from_ref(set)).await
    }

    async fn replace_many(&self, zone: &str, sets: &[RecordSet]) -> Result<(), ProviderError> {
        let rrsets: Vec<_> = sets
            .iter()
            .map(|set| {
                json!({
                    "name": format!("{}.", set.name),
                    "type": set.record_type.as_str(),
                    "ttl": set.ttl,
                    "changetype": "REPLACE",
                    "records": set.values_with_dot().into_iter()
                        .map(|content| json!({"content": content, "disabled": false}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let answer = self
            .api
            .send(
                Method::PATCH,
                &self.zone_path(zone),
                &[],
                Some(&json!({ "rrsets": rrsets })),
            )
            .await?;
        answer.zone_exists(zone)?.success().map(|_| ())
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        Ok(self
            .values_of(zone, zone, "NS")
            .await?
            .map(|(_, values)| values.iter().map(|v| fqdn(v)).collect()))
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    vec![serde_json::from_slice::<Zone>(body).is_ok()]
}
