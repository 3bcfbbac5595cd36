//! DNS provider adapters for `cutover`.
//!
//! Each provider lives in one file and implements [`DnsProvider`]. The trait and the adapters
//! arrive with the DNS work; for now this crate only fixes the vocabulary shared with the plan.

use serde::{Deserialize, Serialize};

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
    /// Hetzner DNS API.
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
}
