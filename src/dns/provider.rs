//! Builds the provider adapter a `[[dns]]` record names, reading its credential; records with
//! the same provider settings share one adapter (one HTTP client, one zone-id lookup).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_providers::route53::AwsKeys;
use cutover_providers::{
    DnsProvider, cloudflare::Cloudflare, desec::Desec, digitalocean::DigitalOcean, gandi::Gandi,
    hetzner::Hetzner, powerdns::PowerDns, rfc2136::Rfc2136, route53::Route53,
};

use super::{DnsError, label};
use crate::plan::{DnsRecord, Provider};
use crate::secret::{Secret, SecretRef};

/// Adapters built so far, by provider settings.
#[derive(Default)]
pub struct Providers(Mutex<HashMap<String, Arc<dyn DnsProvider>>>);

impl Providers {
    /// The adapter for `record.provider`, built on first use.
    pub fn get(&self, record: &DnsRecord) -> Result<Arc<dyn DnsProvider>, DnsError> {
        // The settings name secrets by env/file only, so the key holds no secret.
        let key = format!("{:?}", record.provider);
        let mut built = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(adapter) = built.get(&key) {
            return Ok(adapter.clone());
        }
        let adapter: Arc<dyn DnsProvider> = Arc::from(build(record)?);
        built.insert(key, adapter.clone());
        Ok(adapter)
    }
}

/// The adapter for `record.provider`, with its credential read from env or file.
pub fn build(record: &DnsRecord) -> Result<Box<dyn DnsProvider>, DnsError> {
    let name = label(record);
    let provider_error = |source| DnsError::Provider {
        record: name.clone(),
        source,
    };
    let keys = record.provider.credential_keys();
    let secret = || -> Result<Secret, DnsError> {
        let reference = record
            .provider
            .credential()
            .ok_or_else(|| DnsError::Config {
                record: name.clone(),
                detail: format!(
                    "no credential; fix: set `{0}_env` or `{0}_file` in the record's provider",
                    keys.prefix
                ),
            })?;
        reference.read().map_err(|source| DnsError::Secret {
            record: name.clone(),
            source,
        })
    };
    let adapter: Box<dyn DnsProvider> = match &record.provider {
        Provider::Powerdns {
            api_url, server_id, ..
        } => Box::new(PowerDns::new(api_url, server_id, secret()?).map_err(provider_error)?),
        Provider::Rfc2136 {
            server,
            key_name,
            key_algorithm,
            ..
        } => Box::new(
            Rfc2136::new(server, key_name, key_algorithm, &secret()?).map_err(provider_error)?,
        ),
        Provider::Cloudflare {
            zone_id, api_url, ..
        } => Box::new(
            Cloudflare::new(api_url.as_deref(), secret()?, zone_id.clone())
                .map_err(provider_error)?,
        ),
        Provider::Route53 {
            hosted_zone_id,
            access_key_id_env,
            api_url,
            ..
        } => {
            let access_key_id =
                SecretRef::Env(access_key_id_env.clone())
                    .read()
                    .map_err(|source| DnsError::Secret {
                        record: name.clone(),
                        source,
                    })?;
            let session_token = SecretRef::Env("AWS_SESSION_TOKEN".into()).read().ok();
            let keys = AwsKeys {
                access_key_id,
                secret_access_key: secret()?,
                session_token,
            };
            Box::new(
                Route53::new(api_url.as_deref(), hosted_zone_id, keys).map_err(provider_error)?,
            )
        }
        Provider::Digitalocean { api_url, .. } => {
            Box::new(DigitalOcean::new(api_url.as_deref(), secret()?).map_err(provider_error)?)
        }
        Provider::Hetzner {
            zone_id, api_url, ..
        } => Box::new(
            Hetzner::new(api_url.as_deref(), secret()?, zone_id.clone()).map_err(provider_error)?,
        ),
        Provider::Gandi { api_url, .. } => {
            Box::new(Gandi::new(api_url.as_deref(), secret()?).map_err(provider_error)?)
        }
        Provider::Desec { api_url, .. } => {
            Box::new(Desec::new(api_url.as_deref(), secret()?).map_err(provider_error)?)
        }
    };
    Ok(adapter)
}
