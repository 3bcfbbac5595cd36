//! Which servers are authoritative for a record: the plan's `nameservers`, or the zone's NS
//! names looked up through a resolver and expanded to every IPv4 and IPv6 address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use cutover_providers::{DnsProvider, RecordSet, fqdn, wire};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType as WireType};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::provider::Providers;
use super::{DnsError, label};
use crate::plan::DnsRecord;

/// One address of one authoritative server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AuthServer {
    /// The server's name (NS target), or its address when the plan lists addresses.
    pub host: String,
    /// Where queries go.
    pub addr: SocketAddr,
}

impl std::fmt::Display for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host == self.addr.to_string() || self.host == self.addr.ip().to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.host, self.addr)
        }
    }
}

/// What resolving records needs: zones and nameservers found through a recursive resolver
/// (built on first use, so plans that list their zone and nameservers never touch the system
/// resolver), and the provider adapters, built once per distinct provider.
pub struct Discovery {
    resolver_addr: Option<SocketAddr>,
    ns_port: u16,
    resolver: OnceCell<TokioResolver>,
    providers: Providers,
}

impl Discovery {
    /// Discovery through the system resolver (`/etc/resolv.conf`), nameservers on port 53.
    pub fn system() -> Discovery {
        Discovery {
            resolver_addr: None,
            ns_port: 53,
            resolver: OnceCell::new(),
            providers: Providers::default(),
        }
    }

    /// Discovery through the resolver at `resolver`, querying nameservers on `ns_port`.
    pub fn via(resolver: SocketAddr, ns_port: u16) -> Discovery {
        Discovery {
            resolver_addr: Some(resolver),
            ns_port,
            resolver: OnceCell::new(),
            providers: Providers::default(),
        }
    }

    async fn resolver(&self) -> Result<&TokioResolver, String> {
        self.resolver
            .get_or_try_init(|| async {
                let mut builder = match self.resolver_addr {
                    Some(addr) => {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                        TokioResolver::builder_with_config(
                            ResolverConfig::from_name_servers(vec![server]),
                            TokioRuntimeProvider::default(),
                        )
                    }
                    None => TokioResolver::builder_tokio().map_err(|e| {
                        format!("cannot read the system resolver configuration: {e}")
                    })?,
                };
                builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                builder.options_mut().cache_size = 0;
                builder
                    .build()
                    .map_err(|e| format!("cannot build a resolver: {e}"))
            })
            .await
    }

    /// The zone `name` belongs to: the closest enclosing name that has an SOA record.
    pub async fn zone_of(&self, name: &str) -> Result<String, String> {
        let resolver = self.resolver().await?;
        let mut candidate = fqdn(name);
        loop {
            if let Ok(lookup) = resolver
                .lookup(format!("{candidate}."), WireType::SOA)
                .await
                && lookup.answers().iter().any(|r| {
                    r.record_type() == WireType::SOA && fqdn(&r.name.to_ascii()) == candidate
                })
            {
                return Ok(candidate);
            }
            match candidate.split_once('.') {
                Some((_, parent)) if parent.contains('.') => candidate = parent.to_owned(),
                _ => return Err(format!("no SOA found for {name} or any parent zone")),
            }
        }
    }

    /// The zone's NS names.
    pub async fn nameserver_names(&self, zone: &str) -> Result<Vec<String>, String> {
        let lookup = self
            .resolver()
            .await?
            .lookup(format!("{}.", fqdn(zone)), WireType::NS)
            .await
            .map_err(|e| format!("NS lookup of {zone}: {e}"))?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(fqdn(&ns.0.to_ascii())),
                _ => None,
            })
            .collect())
    }

    /// Every IPv4 and IPv6 address of `host`, on the nameserver port.
    pub async fn addresses(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.ns_port)]);
        }
        let lookup = self
            .resolver()
            .await?
            .lookup_ip(format!("{}.", fqdn(host)))
            .await
            .map_err(|e| format!("address lookup of {host}: {e}"))?;
        let mut addrs: Vec<SocketAddr> = lookup
            .iter()
            .map(|ip| SocketAddr::new(ip, self.ns_port))
            .collect();
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }

    /// Every address of every nameserver in `names`.
    pub async fn expand(&self, names: &[String]) -> Result<Vec<AuthServer>, String> {
        let mut servers = Vec::new();
        for host in names {
            for addr in self.addresses(host).await? {
                servers.push(AuthServer {
                    host: host.clone(),
                    addr,
                });
            }
        }
        Ok(servers)
    }
}

/// A plan record with everything needed to act on it: zone, provider and servers.
pub struct Target<'p> {
    /// Position in the plan's `[[dns]]` list.
    pub index: usize,
    /// The plan's record.
    pub plan: &'p DnsRecord,
    /// Zone (lowercase, no trailing dot).
    pub zone: String,
    /// The provider adapter.
    pub provider: Arc<dyn DnsProvider>,
    /// Every address of every authoritative server.
    pub servers: Vec<AuthServer>,
    /// Recursive resolvers that must also serve the new value.
    pub resolvers: Vec<SocketAddr>,
}

impl<'p> Target<'p> {
    /// Finds the zone (plan, else SOA) and servers (plan, else NS through `discovery`, else
    /// the provider's list), and builds the provider.
    pub async fn resolve(
        index: usize,
        plan: &'p DnsRecord,
        discovery: &Discovery,
    ) -> Result<Target<'p>, DnsError> {
        let record = label(plan);
        let fail = |detail: String| DnsError::Discovery {
            record: record.clone(),
            detail,
        };
        let provider = discovery.providers.get(plan)?;
        let zone = match &plan.zone {
            Some(zone) => fqdn(zone),
            None => discovery
                .zone_of(&plan.name)
                .await
                .map_err(|e| fail(format!("{e}; fix: set `zone` for this record in the plan")))?,
        };
        let servers = if !plan.nameservers.is_empty() {
            let mut servers = Vec::new();
            for text in &plan.nameservers {
                match wire::server_address(text) {
                    Some(addr) => servers.push(AuthServer {
                        host: text.clone(),
                        addr,
                    }),
                    None => servers.extend(
                        discovery
                            .expand(std::slice::from_ref(text))
                            .await
                            .map_err(fail)?,
                    ),
                }
            }
            servers
        } else {
            let mut names = discovery.nameserver_names(&zone).await.unwrap_or_default();
            if names.is_empty() {
                names = provider
                    .nameservers(&zone)
                    .await
                    .map_err(|source| DnsError::Provider {
                        record: record.clone(),
                        source,
                    })?
                    .unwrap_or_default();
            }
            if names.is_empty() {
                return Err(fail(format!(
                    "no NS records found for `{zone}`; fix: list the authoritative servers in `nameservers`"
                )));
            }
            discovery.expand(&names).await.map_err(fail)?
        };
        if servers.is_empty() {
            return Err(fail(format!(
                "no addresses for the nameservers of `{zone}`"
            )));
        }
        let resolvers = plan
            .resolvers
            .iter()
            .map(|r| {
                wire::server_address(r).ok_or_else(|| {
                    fail(format!("resolver `{r}` is not an address or address:port"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Target {
            index,
            plan,
            zone,
            provider,
            servers,
            resolvers,
        })
    }

    /// `name TYPE`.
    pub fn label(&self) -> String {
        label(self.plan)
    }

    /// The record set the plan wants after cutover, with `ttl`.
    pub fn wanted(&self, ttl: u32) -> RecordSet {
        RecordSet::new(
            &self.plan.name,
            self.plan.record_type,
            ttl,
            &self.plan.values,
        )
    }

    /// A provider error about this record.
    pub fn provider_error(&self, source: cutover_providers::ProviderError) -> DnsError {
        DnsError::Provider {
            record: self.label(),
            source,
        }
    }
}
