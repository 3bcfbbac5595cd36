//! Hetzner DNS through the Hetzner Cloud API (`/v1/zones/{zone}/rrsets/{name}/{type}`): record
//! sets are replaced with the `set_records` and `change_ttl` actions, polled until `success`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Api, Auth};
use crate::{
    DnsProvider, ProviderError, ProviderKind, RecordSet, RecordType, Secret, fqdn, relative_name,
};

/// The public API.
pub const DEFAULT_API: &str = "https://api.hetzner.cloud/v1";
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A Hetzner Cloud project's DNS zones.
#[derive(Debug)]
pub struct Hetzner {
    api: Api,
    zone_id: Option<String>,
    action_poll: Duration,
}

#[derive(Deserialize)]
struct ZoneEnvelope {
    zone: Zone,
}

#[derive(Deserialize)]
struct Zone {
    ttl: u32,
    #[serde(default)]
    authoritative_nameservers: Option<Nameservers>,
}

#[derive(Deserialize)]
struct Nameservers {
    #[serde(default)]
    assigned: Vec<String>,
}

#[derive(Deserialize)]
struct RRSetEnvelope {
    rrset: RRSet,
}

#[derive(Deserialize)]
struct RRSet {
    #[serde(default)]
    ttl: Option<u32>,
    records: Vec<Rec>,
}

#[derive(Deserialize)]
struct Rec {
    value: String,
}

#[derive(Deserialize)]
struct ActionEnvelope {
    action: Action,
}

#[derive(Deserialize)]
struct Action {
    id: u64,
    status: String,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Hetzner {
    /// A client; `zone_id` is used in paths instead of the zone name when given.
    pub fn new(
        api_url: Option<&str>,
        token: Secret,
        zone_id: Option<String>,
    ) -> Result<Hetzner, ProviderError> {
        Ok(Hetzner {
            api: Api::new(
                ProviderKind::Hetzner,
                api_url.unwrap_or(DEFAULT_API),
                Auth::Bearer(token),
            )?,
            zone_id,
            action_poll: Duration::from_millis(500),
        })
    }

    fn zone_ref(&self, zone: &str) -> String {
        self.zone_id.clone().unwrap_or_else(|| fqdn(zone))
    }

    fn rrset_path(&self, zone: &str, name: &str, record_type: RecordType) -> String {
        format!(
            "/zones/{}/rrsets/{}/{}",
            self.zone_ref(zone),
            relative_name(name, zone),
            record_type.as_str()
        )
    }

    async fn zone(&self, zone: &str) -> Result<Zone, ProviderError> {
        let answer = self
            .api
            .send(
                Method::GET,
                &format!("/zones/{}", self.zone_ref(zone)),
                &[],
                None,
            )
            .await?;
        Ok(answer
            .zone_exists(zone)?
            .success()?
            .json::<ZoneEnvelope>()?
            .zone)
    }

    /// Posts an action and waits until Hetzner reports it finished.
    async fn run_action(&self, path: &str, body: serde_json::Value) -> Result<(), ProviderError> {
        let mut action = self
            .api
            .send(Method::POST, path, &[], Some(&body))
            .await?
            .success()?
            .json::<ActionEnvelope>()?
            .action;
        let deadline = tokio::time::Instant::now() + ACTION_TIMEOUT;
        loop {
            match action.status.as_str() {
                "success" => return Ok(()),
                "error" => {
                    return Err(ProviderError::Dns {
                        provider: ProviderKind::Hetzner,
                        detail: format!(
                            "action {} failed: {}",
                            action.id,
                            action.error.unwrap_or_default()
                        ),
                    });
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(ProviderError::ChangeTimeout {
                        provider: ProviderKind::Hetzner,
                        change: action.id.to_string(),
                        seconds: ACTION_TIMEOUT.as_secs(),
                    });
                }
                _ => {}
            }
            tokio::time::sleep(self.action_poll).await;
            action = self
                .api
                .get_json::<ActionEnvelope>(&format!("/zones/actions/{}", action.id), &[])
                .await?
                .action;
        }
    }

    fn value(record_type: RecordType, value: &str) -> String {
        match record_type {
            RecordType::Cname => format!("{value}."),
            _ => value.to_owned(),
        }
    }
}

#[async_trait]
impl DnsProvider for Hetzner {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
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
        let answer = self
            .api
            .send(
                Method::GET,
                &self.rrset_path(zone, name, record_type),
                &[],
                None,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let rrset = answer.success()?.json::<RRSetEnvelope>()?.rrset;
        // A null TTL means the zone's default TTL.
        let ttl = match rrset.ttl {
            Some(ttl) => ttl,
            None => self.zone(zone).await?.ttl,
        };
        let values: Vec<String> = rrset.records.into_iter().map(|r| r.value).collect();
        Ok(Some(RecordSet::new(name, record_type, ttl, &values)))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        let records: Vec<_> = set
            .values
            .iter()
            .map(|v| json!({"value": Self::value(set.record_type, v)}))
            .collect();
        match self.read(zone, &set.name, set.record_type).await? {
            None => {
                let body = json!({
                    "name": relative_name(&set.name, zone),
                    "type": set.record_type.as_str(),
                    "ttl": set.ttl,
                    "records": records,
                });
                let path = format!("/zones/{}/rrsets", self.zone_ref(zone));
                self.api
                    .send(Method::POST, &path, &[], Some(&body))
                    .await?
                    .success()?;
                Ok(())
            }
            Some(current) => {
                let path = self.rrset_path(zone, &set.name, set.record_type);
                if current.values != set.values {
                    self.run_action(
                        &format!("{path}/actions/set_records"),
                        json!({ "records": records }),
                    )
                    .await?;
                }
                if current.ttl != set.ttl {
                    self.run_action(
                        &format!("{path}/actions/change_ttl"),
                        json!({ "ttl": set.ttl }),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        let assigned = self
            .zone(zone)
            .await?
            .authoritative_nameservers
            .map(|n| n.assigned)
            .unwrap_or_default();
        Ok((!assigned.is_empty()).then(|| assigned.iter().map(|n| fqdn(n)).collect()))
    }
}

/// Decodes `body` as each answer this adapter reads, as it reads them (the fuzz targets' way
/// in): whether each one decoded.
#[doc(hidden)]
pub fn decodes(body: &[u8]) -> Vec<bool> {
    vec![
        serde_json::from_slice::<ZoneEnvelope>(body).is_ok(),
        serde_json::from_slice::<ActionEnvelope>(body).is_ok(),
        serde_json::from_slice::<RRSetEnvelope>(body).is_ok(),
    ]
}
