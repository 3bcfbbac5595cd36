//! Asks servers directly what they serve: non-recursive queries to authoritative servers,
//! recursive ones to resolvers, many at once.

use std::net::SocketAddr;
use std::time::Duration;

use cutover_providers::rfc2136::{rdata_value, wire_type};
use cutover_providers::wire::{self, Transport, WireError};
use cutover_providers::{RecordType, fqdn};
use futures::StreamExt;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use serde::Serialize;

/// Queries in flight at once.
pub const CONCURRENCY: usize = 256;
const TIMEOUT: Duration = Duration::from_millis(800);
const ATTEMPTS: u32 = 3;

/// What one server said about one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Served {
    /// Records of the asked type.
    Answer {
        /// TTL of the answer.
        ttl: u32,
        /// Canonical values, sorted.
        values: Vec<String>,
        /// The AA bit.
        authoritative: bool,
    },
    /// NXDOMAIN or no records of this type.
    NoRecord {
        /// The AA bit.
        authoritative: bool,
    },
    /// An error code (REFUSED, SERVFAIL…).
    Failed {
        /// The code.
        rcode: String,
    },
    /// No answer at all.
    Unreachable {
        /// Why.
        error: String,
    },
}

impl Served {
    /// Whether this answer serves exactly `wanted`, authoritatively when `authoritative`.
    pub fn serves(&self, wanted: &[String], authoritative: bool) -> bool {
        matches!(self, Served::Answer { values, authoritative: aa, .. }
            if values == wanted && (*aa || !authoritative))
    }

    /// The served TTL, if any.
    pub fn ttl(&self) -> Option<u32> {
        match self {
            Served::Answer { ttl, .. } => Some(*ttl),
            _ => None,
        }
    }

    /// One short line for tables.
    pub fn describe(&self) -> String {
        match self {
            Served::Answer {
                ttl,
                values,
                authoritative,
            } => format!(
                "{} ttl {ttl}{}",
                values.join(","),
                if *authoritative {
                    ""
                } else {
                    " (not authoritative)"
                }
            ),
            Served::NoRecord { authoritative } => format!(
                "no such record{}",
                if *authoritative {
                    ""
                } else {
                    " (not authoritative)"
                }
            ),
            Served::Failed { rcode } => format!("answered {rcode}"),
            Served::Unreachable { error } => format!("unreachable: {error}"),
        }
    }
}

/// One question to one server.
#[derive(Debug, Clone)]
pub struct Question {
    /// Owner name.
    pub name: Name,
    /// Type.
    pub record_type: RecordType,
    /// Server.
    pub server: SocketAddr,
    /// Ask for recursion (resolvers) or not (authoritative servers).
    pub recursive: bool,
}

impl Question {
    /// A question about `name`/`record_type` for `server`.
    pub fn new(
        name: &str,
        record_type: RecordType,
        server: SocketAddr,
        recursive: bool,
    ) -> Question {
        Question {
            name: absolute(name),
            record_type,
            server,
            recursive,
        }
    }
}

/// `name` as an absolute DNS name.
pub fn absolute(name: &str) -> Name {
    Name::from_ascii(format!("{}.", fqdn(name))).unwrap_or_else(|_| Name::root())
}

async fn exchange(server: SocketAddr, message: &Message) -> Result<Message, WireError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match wire::ask(server, message, Transport::Udp, TIMEOUT).await {
            Ok(answer) => return Ok(answer),
            Err(e @ WireError::Timeout { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Asks one question (retrying lost datagrams) and classifies the answer.
pub async fn ask(question: &Question) -> Served {
    let rtype = wire_type(question.record_type);
    let mut message = wire::query_message(&question.name, rtype);
    message.metadata.recursion_desired = question.recursive;
    match exchange(question.server, &message).await {
        Ok(answer) => classify(question, &answer),
        Err(e) => Served::Unreachable {
            error: e.to_string(),
        },
    }
}

/// A server's answer in wire format, classified for `question`; `None` when the bytes are not
/// a DNS message (the fuzz targets' entry: every byte of it comes from the network).
pub fn classify_bytes(question: &Question, bytes: &[u8]) -> Option<Served> {
    Message::from_vec(bytes)
        .ok()
        .map(|answer| classify(question, &answer))
}

/// What `answer` says about `question`: its records of the asked type and name (values
/// normalised, sorted, without duplicates), none, or an error code.
pub fn classify(question: &Question, answer: &Message) -> Served {
    let rtype = wire_type(question.record_type);
    let authoritative = answer.metadata.authoritative;
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => {
            return Served::Failed {
                rcode: other.to_string(),
            };
        }
    }
    let records: Vec<_> = answer
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype && r.name == question.name)
        .collect();
    if records.is_empty() {
        return Served::NoRecord { authoritative };
    }
    let mut values: Vec<String> = records
        .iter()
        .filter_map(|r| rdata_value(&r.data))
        .filter_map(|v| question.record_type.normalize(&v))
        .collect();
    values.sort();
    values.dedup();
    Served::Answer {
        ttl: records.iter().map(|r| r.ttl).max().unwrap_or(0),
        values,
        authoritative,
    }
}

/// Asks every question, [`CONCURRENCY`] at a time; answers in the questions' order.
pub async fn ask_all(questions: &[Question]) -> Vec<Served> {
    futures::stream::iter(questions.iter().map(ask))
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// The SOA serial `server` serves for `zone`.
pub async fn soa_serial(server: SocketAddr, zone: &str) -> Result<u32, String> {
    let name = absolute(zone);
    let answer = exchange(server, &wire::query_message(&name, WireType::SOA))
        .await
        .map_err(|e| e.to_string())?;
    answer
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
        .ok_or_else(|| format!("no SOA for {zone} ({})", answer.metadata.response_code))
}
