//! DNS provider adapters for `cutover`.
//!
//! Every provider lives in one file and implements [`DnsProvider`]: read a record set, replace
//! it, name the zone's nameservers when the API knows them, check credentials, and tell the
//! smallest TTL it accepts. HTTP adapters share [`http::Api`], which retries 429 and 5xx answers
//! honouring `Retry-After`. Names cross this API as lowercase FQDNs without the trailing dot.

pub mod cloudflare;
pub mod desec;
pub mod digitalocean;
mod error;
pub mod gandi;
pub mod hetzner;
pub mod http;
pub mod powerdns;
mod record;
pub mod rfc2136;
pub mod route53;
mod secret;
pub mod wire;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use error::ProviderError;
pub use record::{RecordChanges, RecordSet, RecordType, StoredRecord, fqdn, relative_name};
pub use secret::Secret;

/// The DNS providers a plan may name in `[[dns]] provider.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// PowerDNS Authoritative HTTP API.
    Powerdns,
    /// RFC 2136 dynamic updates signed with TSIG.
    Rfc2136,
    /// Cloudflare API v4.
    Cloudflare,
    /// Amazon Route 53.
    Route53,
    /// DigitalOcean Domains API.
    Digitalocean,
    /// Hetzner DNS (Hetzner Cloud API zones and RRSets).
    Hetzner,
    /// Gandi LiveDNS.
    Gandi,
    /// deSEC.
    Desec,
}

impl ProviderKind {
    /// Every provider, in the order the documentation lists them.
    pub const ALL: [ProviderKind; 8] = [
        ProviderKind::Powerdns,
        ProviderKind::Rfc2136,
        ProviderKind::Cloudflare,
        ProviderKind::Route53,
        ProviderKind::Digitalocean,
        ProviderKind::Hetzner,
        ProviderKind::Gandi,
        ProviderKind::Desec,
    ];

    /// The name used in plan files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Powerdns => "powerdns",
            ProviderKind::Rfc2136 => "rfc2136",
            ProviderKind::Cloudflare => "cloudflare",
            ProviderKind::Route53 => "route53",
            ProviderKind::Digitalocean => "digitalocean",
            ProviderKind::Hetzner => "hetzner",
            ProviderKind::Gandi => "gandi",
            ProviderKind::Desec => "desec",
        }
    }

    /// The smallest TTL the provider documents as accepted (seconds). deSEC's real minimum is
    /// per domain and read from its API by [`DnsProvider::min_ttl`].
    pub fn documented_min_ttl(self) -> u32 {
        match self {
            ProviderKind::Powerdns | ProviderKind::Rfc2136 | ProviderKind::Route53 => 1,
            ProviderKind::Digitalocean => 30,
            ProviderKind::Cloudflare | ProviderKind::Hetzner => 60,
            ProviderKind::Gandi => 300,
            ProviderKind::Desec => 3600,
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every DNS provider adapter can do. `zone` and record names are lowercase FQDNs without
/// the trailing dot; values are normalised (see [`RecordSet`]).
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Checks that the credentials are accepted and the zone exists.
    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError>;

    /// The record set `name`/`record_type`, or `None` when it does not exist.
    async fn read(
        &self,
        zone: &str,
        name: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError>;

    /// Replaces the record set (values and TTL) as one change where the API allows it; returns
    /// once the provider reports the change applied (Route 53: `INSYNC`).
    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError>;

    /// Replaces several record sets of one zone; adapters whose API takes many sets in one
    /// request override this.
    async fn replace_many(&self, zone: &str, sets: &[RecordSet]) -> Result<(), ProviderError> {
        for set in sets {
            self.replace(zone, set).await?;
        }
        Ok(())
    }

    /// The zone's nameservers as the provider reports them, or `None` when the API does not say.
    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError>;

    /// The smallest TTL this provider accepts for `zone`.
    async fn min_ttl(&self, _zone: &str) -> Result<u32, ProviderError> {
        Ok(self.kind().documented_min_ttl())
    }
}

/// Decodes `body` as every answer every HTTP adapter reads, as each reads it: how many of them
/// it decoded as. What the fuzz targets feed with raw API answers.
#[doc(hidden)]
pub fn decoded_as(body: &[u8]) -> usize {
    [
        cloudflare::decodes(body),
        desec::decodes(body),
        digitalocean::decodes(body),
        gandi::decodes(body),
        hetzner::decodes(body),
        powerdns::decodes(body),
        route53::decodes(body),
    ]
    .iter()
    .flatten()
    .filter(|ok| **ok)
    .count()
}
