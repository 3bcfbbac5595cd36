//! DNS at cutover: which servers are authoritative, what each of them serves, TTL
//! pre-lowering with a recorded earliest safe cutover time, record updates through the
//! provider, and waiting until every address of every authoritative server serves the new value.

pub mod expect;
pub mod probe;
pub mod propagation;
pub mod provider;
pub mod servers;
pub mod state;
pub mod ttl;
pub mod update;

use std::path::PathBuf;

use cutover_providers::ProviderError;

use crate::plan::{DnsRecord, Plan};
use crate::secret::SecretError;

pub use servers::{AuthServer, Discovery, Target};

/// Why a DNS step failed. Every variant names the record.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The provider refused or failed.
    #[error("{record}: {source}")]
    Provider {
        /// Record.
        record: String,
        /// Cause.
        source: ProviderError,
    },
    /// The provider's credential could not be read.
    #[error("{record}: provider credential: {source}")]
    Secret {
        /// Record.
        record: String,
        /// Cause.
        source: SecretError,
    },
    /// The plan's provider settings are incomplete.
    #[error("{record}: {detail}")]
    Config {
        /// Record.
        record: String,
        /// What is missing, with the fix.
        detail: String,
    },
    /// The zone or its servers could not be found.
    #[error("{record}: {detail}")]
    Discovery {
        /// Record.
        record: String,
        /// What failed, with the fix.
        detail: String,
    },
    /// The wanted TTL is below what the provider accepts.
    #[error(
        "{record}: cutover_ttl = {requested} is below {provider}'s minimum TTL of {minimum} s for `{zone}`; fix: set `cutover_ttl = {minimum}` (or higher) for this record, or pass --clamp to use {minimum}"
    )]
    BelowMinimum {
        /// Record.
        record: String,
        /// Provider.
        provider: cutover_providers::ProviderKind,
        /// Zone.
        zone: String,
        /// The plan's cutover_ttl.
        requested: u32,
        /// The provider's minimum.
        minimum: u32,
    },
    /// Saved state could not be read or written.
    #[error("{}: {detail}", path.display())]
    State {
        /// File.
        path: PathBuf,
        /// What failed, with the fix.
        detail: String,
    },
    /// The record does not hold what the plan expects it to hold before the switch.
    #[error("{record}: {detail}")]
    Unexpected {
        /// Record.
        record: String,
        /// What each server answers, with the fix.
        detail: String,
    },
    /// Switching now could leave caches serving the old address.
    #[error("{record}: not safe to switch yet: {reason}; fix: {fix}, or force the switch (logged)")]
    NotSafe {
        /// Record.
        record: String,
        /// Why.
        reason: String,
        /// What to do.
        fix: String,
    },
}

/// `name TYPE`, how records are named in messages.
pub fn label(record: &DnsRecord) -> String {
    format!(
        "{} {}",
        record.name.trim_end_matches('.'),
        record.record_type
    )
}

/// The plan's `[[dns]]` records, optionally only the one named `only` (any type).
pub fn select<'p>(plan: &'p Plan, only: Option<&str>) -> Vec<(usize, &'p DnsRecord)> {
    plan.dns
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            only.is_none_or(|name| {
                cutover_providers::fqdn(name) == cutover_providers::fqdn(&r.name)
            })
        })
        .collect()
}

/// The `dns` commands, for the one rule of which of them change a record (and so hold the
/// migration's lease and its servers').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Lower the TTLs (changes records).
    LowerTtl,
    /// Put the saved TTLs back (changes records).
    RestoreTtl,
    /// Read every server (changes nothing).
    Status,
    /// Switch the values (changes records).
    Update,
    /// Wait for propagation (changes nothing).
    Wait,
}

impl Action {
    /// The lease purpose when the command changes a record; `None` when it only reads.
    pub fn changes(self) -> Option<&'static str> {
        match self {
            Action::LowerTtl => Some("dns lower-ttl"),
            Action::RestoreTtl => Some("dns restore-ttl"),
            Action::Update => Some("dns update"),
            Action::Status | Action::Wait => None,
        }
    }
}
