//! `[[dns]]`: a record to switch and the provider that serves it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::*;
use super::validate::*;
use crate::secret::SecretRef;

/// `[[dns]]`: one record set switched from the old host to the new one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Fully qualified record name, e.g. `git.example.com`.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The zone the record lives in; found from the SOA when omitted.
    #[serde(default)]
    pub zone: Option<String>,
    /// Values the record must have after cutover.
    pub values: Vec<String>,
    /// Values the record must have *before* the switch (the source's address): checked on
    /// every authoritative server by preflight and right before the switch; empty: unchecked.
    #[serde(default)]
    pub expect_current: Vec<String>,
    /// TTL (seconds) to lower the record to ahead of the cutover.
    #[serde(default = "default_cutover_ttl")]
    pub cutover_ttl: u32,
    /// Authoritative servers to poll (`address` or `address:port`); found from NS when omitted.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Recursive resolvers that should also serve the new value before the run reports success.
    #[serde(default)]
    pub resolvers: Vec<String>,
    /// How long to wait for every authoritative server to serve the new value.
    #[serde(default = "default_propagation_timeout", with = "duration")]
    pub propagation_timeout: Duration,
    /// The DNS provider that hosts the zone.
    pub provider: Provider,
}

/// Provider settings for a `[[dns]]` record; `kind` selects the provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Provider {
    /// PowerDNS Authoritative HTTP API.
    Powerdns {
        /// Base URL of the API, e.g. `http://ns1.example.com:8081`.
        api_url: String,
        /// PowerDNS server id.
        #[serde(default = "default_pdns_server_id")]
        server_id: String,
        /// Environment variable holding the API key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// File holding the API key.
        #[serde(default)]
        api_key_file: Option<PathBuf>,
    },
    /// RFC 2136 dynamic update signed with TSIG.
    Rfc2136 {
        /// Primary server to send updates to (`address` or `address:port`).
        server: String,
        /// TSIG key name.
        key_name: String,
        /// TSIG algorithm.
        #[serde(default = "default_tsig_algorithm")]
        key_algorithm: String,
        /// Environment variable holding the base64 TSIG secret.
        #[serde(default)]
        key_secret_env: Option<String>,
        /// File holding the base64 TSIG secret.
        #[serde(default)]
        key_secret_file: Option<PathBuf>,
    },
    /// Cloudflare API v4.
    Cloudflare {
        /// Zone id; looked up by zone name when omitted.
        #[serde(default)]
        zone_id: Option<String>,
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// Amazon Route 53.
    Route53 {
        /// Hosted zone id.
        hosted_zone_id: String,
        /// Environment variable holding the access key id.
        #[serde(default = "default_aws_key_id_env")]
        access_key_id_env: String,
        /// Environment variable holding the secret access key.
        #[serde(default)]
        secret_access_key_env: Option<String>,
        /// File holding the secret access key.
        #[serde(default)]
        secret_access_key_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// DigitalOcean Domains API.
    Digitalocean {
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// Hetzner DNS API.
    Hetzner {
        /// Zone id; looked up by zone name when omitted.
        #[serde(default)]
        zone_id: Option<String>,
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// Gandi LiveDNS.
    Gandi {
        /// Environment variable holding the personal access token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the personal access token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// deSEC.
    Desec {
        /// Environment variable holding the API token.
        #[serde(default)]
        api_token_env: Option<String>,
        /// File holding the API token.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
        /// API base URL override (tests).
        #[serde(default)]
        api_url: Option<String>,
    },
}

impl Provider {
    /// Which provider this is.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Provider::Powerdns { .. } => ProviderKind::Powerdns,
            Provider::Rfc2136 { .. } => ProviderKind::Rfc2136,
            Provider::Cloudflare { .. } => ProviderKind::Cloudflare,
            Provider::Route53 { .. } => ProviderKind::Route53,
            Provider::Digitalocean { .. } => ProviderKind::Digitalocean,
            Provider::Hetzner { .. } => ProviderKind::Hetzner,
            Provider::Gandi { .. } => ProviderKind::Gandi,
            Provider::Desec { .. } => ProviderKind::Desec,
        }
    }

    /// The plan keys that hold this provider's credential.
    pub fn credential_keys(&self) -> CredentialKeys<'_> {
        let (prefix, env, file) = match self {
            Provider::Powerdns {
                api_key_env,
                api_key_file,
                ..
            } => ("api_key", api_key_env, api_key_file),
            Provider::Rfc2136 {
                key_secret_env,
                key_secret_file,
                ..
            } => ("key_secret", key_secret_env, key_secret_file),
            Provider::Route53 {
                secret_access_key_env,
                secret_access_key_file,
                ..
            } => (
                "secret_access_key",
                secret_access_key_env,
                secret_access_key_file,
            ),
            Provider::Cloudflare {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Digitalocean {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Hetzner {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Gandi {
                api_token_env,
                api_token_file,
                ..
            }
            | Provider::Desec {
                api_token_env,
                api_token_file,
                ..
            } => ("api_token", api_token_env, api_token_file),
        };
        CredentialKeys { prefix, env, file }
    }

    /// Where this provider's credential comes from.
    pub fn credential(&self) -> Option<SecretRef> {
        let keys = self.credential_keys();
        SecretRef::from_pair(keys.env, keys.file)
    }

    /// The HTTP API base URL, where the provider has one set.
    pub fn api_url(&self) -> Option<&str> {
        match self {
            Provider::Powerdns { api_url, .. } => Some(api_url),
            Provider::Rfc2136 { .. } => None,
            Provider::Cloudflare { api_url, .. }
            | Provider::Route53 { api_url, .. }
            | Provider::Digitalocean { api_url, .. }
            | Provider::Hetzner { api_url, .. }
            | Provider::Gandi { api_url, .. }
            | Provider::Desec { api_url, .. } => api_url.as_deref(),
        }
    }
}

/// The `<prefix>_env` / `<prefix>_file` pair holding a provider's credential.
#[derive(Debug, Clone, Copy)]
pub struct CredentialKeys<'a> {
    /// Key prefix, e.g. `api_token`.
    pub prefix: &'static str,
    /// Value of `<prefix>_env`.
    pub env: &'a Option<String>,
    /// Value of `<prefix>_file`.
    pub file: &'a Option<PathBuf>,
}

// Validation of this section's keys (every problem reported, with its key and fix).

pub(super) fn dns_record(c: &mut Checker<'_>, at: &KeyPath, r: &DnsRecord) {
    if !is_hostname(&r.name) || !r.name.contains('.') {
        c.fail(
            &at.k("name"),
            format!("`{}` is not a fully qualified domain name", r.name),
            "write the full name, e.g. `git.example.com`",
        );
    }
    if let Some(zone) = &r.zone {
        let name = r.name.trim_end_matches('.');
        let zone_t = zone.trim_end_matches('.');
        if !(name == zone_t || name.ends_with(&format!(".{zone_t}"))) {
            c.fail(
                &at.k("zone"),
                format!("`{}` is not inside zone `{zone}`", r.name),
                "set `zone` to the zone the record belongs to, or remove it to find it from the SOA",
            );
        }
    }
    if r.values.is_empty() {
        c.fail(
            &at.k("values"),
            "no values given",
            "list what the record must point to after cutover, e.g. `values = [\"203.0.113.10\"]`",
        );
    }
    let values = r.values.iter().map(|v| ("values", v));
    let current = r.expect_current.iter().map(|v| ("expect_current", v));
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    for (key, v) in values.chain(current) {
        let j = {
            let n = index.entry(key).or_default();
            *n += 1;
            *n - 1
        };
        let ok = match r.record_type {
            RecordType::A => v.parse::<Ipv4Addr>().is_ok(),
            RecordType::Aaaa => v.parse::<Ipv6Addr>().is_ok(),
            RecordType::Cname => is_hostname(v),
        };
        if !ok {
            let expect = match r.record_type {
                RecordType::A => "an IPv4 address such as `203.0.113.10`",
                RecordType::Aaaa => "an IPv6 address such as `2001:db8::10`",
                RecordType::Cname => "a host name such as `new.example.com`",
            };
            c.fail(
                &at.k(key).i(j),
                format!("`{v}` is not a valid {} value", r.record_type.as_str()),
                format!("use {expect}"),
            );
        }
    }
    if r.record_type == RecordType::Cname && r.values.len() > 1 {
        c.fail(
            &at.k("values"),
            "a CNAME has exactly one value",
            "keep one value",
        );
    }
    let kind = r.provider.kind();
    let minimum = kind.documented_min_ttl();
    // deSEC's minimum is per domain (read at lower-ttl time), so only the others are checked here.
    if kind != ProviderKind::Desec && r.cutover_ttl < minimum {
        c.fail(
            &at.k("cutover_ttl"),
            format!("{kind} does not accept a TTL below {minimum} s"),
            format!("set `cutover_ttl = {minimum}` or higher"),
        );
    }
    if r.cutover_ttl == 0 {
        c.fail(
            &at.k("cutover_ttl"),
            "a TTL of 0 is ignored by many resolvers",
            "use 60 to 300 seconds",
        );
    }
    for (j, ns) in r.nameservers.iter().enumerate() {
        if !is_server_address(ns) {
            c.fail(
                &at.k("nameservers").i(j),
                format!("`{ns}` is not an address or address:port"),
                "write e.g. `192.0.2.53`, `ns1.example.com` or `127.0.0.1:5353`",
            );
        }
    }
    for (j, ns) in r.resolvers.iter().enumerate() {
        if !is_server_address(ns) {
            c.fail(
                &at.k("resolvers").i(j),
                format!("`{ns}` is not an address or address:port"),
                "write e.g. `9.9.9.9`",
            );
        }
    }
    let p = at.k("provider");
    let keys = r.provider.credential_keys();
    let prefix = keys.prefix;
    if keys.env.is_none() && keys.file.is_none() {
        c.fail(
            &p,
            format!(
                "the {} provider needs a credential",
                r.provider.kind().as_str()
            ),
            format!("set `{prefix}_env = \"VARIABLE\"` or `{prefix}_file = \"/path/to/file\"`"),
        );
    }
    c.one_secret_source(&p, prefix, keys.env.is_some(), keys.file.is_some());
    if let Some(u) = r.provider.api_url() {
        url(c, &p.k("api_url"), u);
    }
    if let Provider::Rfc2136 {
        server,
        key_algorithm,
        ..
    } = &r.provider
    {
        if !is_server_address(server) {
            c.fail(
                &p.k("server"),
                format!("`{server}` is not an address or address:port"),
                "write the primary server, e.g. `192.0.2.53` or `ns1.example.com:53`",
            );
        }
        const ALGORITHMS: [&str; 4] = ["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha1"];
        if !ALGORITHMS.contains(&key_algorithm.as_str()) {
            c.fail(
                &p.k("key_algorithm"),
                format!("unsupported TSIG algorithm `{key_algorithm}`"),
                format!("use one of {}", ALGORITHMS.join(", ")),
            );
        }
    }
}
