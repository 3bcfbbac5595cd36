//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), sent to the zone's primary over TCP.
//! Reads go to the same server as plain non-recursive queries.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as WireType, TSigner};

use crate::wire::{self, Transport, WireError};
use crate::{DnsProvider, ProviderError, ProviderKind, RecordSet, RecordType, Secret, fqdn};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Accepted clock difference between us and the server (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// A primary server accepting TSIG-signed updates.
#[derive(Clone)]
pub struct Rfc2136 {
    server: String,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("key", &self.signer.signer_name().to_string())
            .finish_non_exhaustive()
    }
}

fn dns_error(detail: impl Into<String>) -> ProviderError {
    ProviderError::Dns {
        provider: ProviderKind::Rfc2136,
        detail: detail.into(),
    }
}

fn wire_error(e: WireError) -> ProviderError {
    dns_error(e.to_string())
}

fn name(text: &str) -> Result<Name, ProviderError> {
    Name::from_ascii(format!("{}.", fqdn(text)))
        .map_err(|e| dns_error(format!("`{text}` is not a domain name: {e}")))
}

/// The hickory record type for ours.
pub fn wire_type(record_type: RecordType) -> WireType {
    match record_type {
        RecordType::A => WireType::A,
        RecordType::Aaaa => WireType::AAAA,
        RecordType::Cname => WireType::CNAME,
    }
}

/// The value of an A, AAAA or CNAME record as text, `None` for other data.
pub fn rdata_value(data: &RData) -> Option<String> {
    match data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        RData::CNAME(c) => Some(fqdn(&c.0.to_ascii())),
        _ => None,
    }
}

fn rdata(record_type: RecordType, value: &str) -> Result<RData, ProviderError> {
    let bad = || dns_error(format!("`{value}` is not a valid {record_type} value"));
    Ok(match record_type {
        RecordType::A => RData::A(A(value.parse().map_err(|_| bad())?)),
        RecordType::Aaaa => RData::AAAA(AAAA(value.parse().map_err(|_| bad())?)),
        RecordType::Cname => RData::CNAME(CNAME(name(value)?)),
    })
}

impl Rfc2136 {
    /// A client for `server` signing with key `key_name` (`algorithm` e.g. `hmac-sha256`,
    /// `secret` base64 as in BIND's `key` statement).
    pub fn new(
        server: &str,
        key_name: &str,
        algorithm: &str,
        secret: &Secret,
    ) -> Result<Rfc2136, ProviderError> {
        if server.trim().is_empty() {
            return Err(dns_error(
                "`server` is empty; fix: set it to the primary's address or host[:port]",
            ));
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| dns_error("the TSIG secret is not valid base64; fix: copy the `secret` value of the server's key statement"))?;
        let algorithm_name = Name::from_ascii(algorithm.trim_end_matches('.').to_ascii_lowercase())
            .map_err(|e| dns_error(format!("TSIG algorithm `{algorithm}`: {e}")))?;
        let algorithm_id = TsigAlgorithm::from_name(algorithm_name);
        let signer = TSigner::new(key, algorithm_id, name(key_name)?, FUDGE).map_err(|_| {
            dns_error(format!(
                "TSIG algorithm `{algorithm}` is not supported; fix: use hmac-sha256, hmac-sha384 or hmac-sha512"
            ))
        })?;
        Ok(Rfc2136 {
            server: server.to_owned(),
            signer,
        })
    }

    /// The primary's address: an IP (port 53 unless given) or a host name looked up now.
    async fn address(&self) -> Result<SocketAddr, ProviderError> {
        if let Some(addr) = wire::server_address(&self.server) {
            return Ok(addr);
        }
        let with_port = if self.server.contains(':') {
            self.server.clone()
        } else {
            format!("{}:53", self.server)
        };
        tokio::net::lookup_host(&with_port)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| dns_error(format!("cannot resolve the primary `{}`", self.server)))
    }

    async fn query(&self, owner: &Name, rtype: WireType) -> Result<Message, ProviderError> {
        let answer = wire::ask(
            self.address().await?,
            &wire::query_message(owner, rtype),
            Transport::Tcp,
            TIMEOUT,
        )
        .await
        .map_err(wire_error)?;
        if !answer.metadata.authoritative {
            return Err(dns_error(format!(
                "{} is not authoritative for {owner}; fix: point `server` at the zone's primary",
                self.server
            )));
        }
        Ok(answer)
    }

    /// Signs and sends an update carrying `updates` (and `prerequisites`) for `zone`.
    async fn update(
        &self,
        zone: &str,
        prerequisites: Vec<Record>,
        updates: Vec<Record>,
    ) -> Result<(), ProviderError> {
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone_query = Query::query(name(zone)?, WireType::SOA);
        zone_query.set_query_class(DNSClass::IN);
        message.add_query(zone_query);
        message.answers = prerequisites;
        message.authorities = updates;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut verifier = message
            .finalize(&self.signer, now)
            .map_err(|e| dns_error(format!("cannot sign the update: {e}")))?;
        let bytes = message
            .to_vec()
            .map_err(|e| dns_error(format!("cannot encode the update: {e}")))?;
        let server = self.address().await?;
        let answer = wire::exchange(server, &bytes, message.metadata.id, Transport::Tcp, TIMEOUT)
            .await
            .map_err(wire_error)?;
        let decoded = Message::from_vec(&answer)
            .map_err(|e| dns_error(format!("{}: malformed answer: {e}", self.server)))?;
        let tsig_error = decoded
            .signature()
            .and_then(|sig| sig.data.error)
            .map(|e| format!("{e:?}"));
        match decoded.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NotAuth
            | ResponseCode::BADSIG
            | ResponseCode::BADKEY
            | ResponseCode::BADTIME => {
                return Err(ProviderError::Auth {
                    provider: ProviderKind::Rfc2136,
                    detail: format!(
                        "{} answered {} (TSIG {}) to key `{}`",
                        self.server,
                        decoded.metadata.response_code,
                        tsig_error.as_deref().unwrap_or("error"),
                        self.signer.signer_name()
                    ),
                });
            }
            ResponseCode::Refused => {
                return Err(ProviderError::Auth {
                    provider: ProviderKind::Rfc2136,
                    detail: format!(
                        "{} refused the update; fix: allow key `{}` to update `{zone}` (update-policy / allow-update)",
                        self.server,
                        self.signer.signer_name()
                    ),
                });
            }
            ResponseCode::NotZone | ResponseCode::NXDomain | ResponseCode::NXRRSet => {
                return Err(ProviderError::ZoneNotFound {
                    provider: ProviderKind::Rfc2136,
                    zone: zone.to_owned(),
                });
            }
            other => {
                return Err(dns_error(format!(
                    "{} answered {other} to the update",
                    self.server
                )));
            }
        }
        if let Some(verifier) = verifier.as_mut() {
            verifier.verify(&answer).map_err(|e| {
                dns_error(format!(
                    "{}: the answer's TSIG signature is invalid: {e}",
                    self.server
                ))
            })?;
        }
        Ok(())
    }
}

#[async_trait]
impl DnsProvider for Rfc2136 {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Rfc2136
    }

    async fn healthcheck(&self, zone: &str) -> Result<(), ProviderError> {
        let apex = name(zone)?;
        let answer = self.query(&apex, WireType::SOA).await?;
        if !answer
            .answers
            .iter()
            .any(|r| r.record_type() == WireType::SOA)
        {
            return Err(ProviderError::ZoneNotFound {
                provider: ProviderKind::Rfc2136,
                zone: zone.to_owned(),
            });
        }
        // A signed update whose only content is the prerequisite "the apex exists" changes
        // nothing but proves the key is accepted for this zone.
        let mut apex_in_use = Record::update0(apex, 0, WireType::ANY);
        apex_in_use.dns_class = DNSClass::ANY;
        self.update(zone, vec![apex_in_use.into_record_of_rdata()], Vec::new())
            .await
    }

    async fn read(
        &self,
        _zone: &str,
        owner: &str,
        record_type: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let answer = self.query(&name(owner)?, wire_type(record_type)).await?;
        let records: Vec<&Record> = answer
            .answers
            .iter()
            .filter(|r| r.record_type() == wire_type(record_type))
            .collect();
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let values: Vec<String> = records
            .iter()
            .filter_map(|r| rdata_value(&r.data))
            .collect();
        Ok(Some(RecordSet::new(owner, record_type, first.ttl, &values)))
    }

    async fn replace(&self, zone: &str, set: &RecordSet) -> Result<(), ProviderError> {
        self.replace_many(zone, std::slice::from_ref(set)).await
    }

    async fn replace_many(&self, zone: &str, sets: &[RecordSet]) -> Result<(), ProviderError> {
        let mut updates = Vec::new();
        for set in sets {
            let owner = name(&set.name)?;
            // Delete the whole RRset, then add the new records: one atomic update.
            let mut delete = Record::update0(owner.clone(), 0, wire_type(set.record_type));
            delete.dns_class = DNSClass::ANY;
            updates.push(delete.into_record_of_rdata());
            for value in &set.values {
                let mut add =
                    Record::from_rdata(owner.clone(), set.ttl, rdata(set.record_type, value)?);
                add.dns_class = DNSClass::IN;
                updates.push(add);
            }
        }
        self.update(zone, Vec::new(), updates).await
    }

    async fn nameservers(&self, zone: &str) -> Result<Option<Vec<String>>, ProviderError> {
        let answer = self.query(&name(zone)?, WireType::NS).await?;
        let names: Vec<String> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(fqdn(&ns.0.to_ascii())),
                _ => None,
            })
            .collect();
        Ok((!names.is_empty()).then_some(names))
    }
}
