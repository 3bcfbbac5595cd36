//! Typed provider errors. None of them carries a credential.

use crate::ProviderKind;

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the credentials (HTTP 401/403, TSIG BADKEY/BADSIG).
    #[error(
        "{provider}: credentials refused ({detail}); fix: check the API token / key the plan points to"
    )]
    Auth {
        /// Provider.
        provider: ProviderKind,
        /// What the provider said.
        detail: String,
    },
    /// The zone does not exist at the provider (or the credentials cannot see it).
    #[error(
        "{provider}: zone `{zone}` not found; fix: check `zone` in the plan and that the token may access it"
    )]
    ZoneNotFound {
        /// Provider.
        provider: ProviderKind,
        /// Zone.
        zone: String,
    },
    /// An HTTP answer that is neither success nor a retryable failure.
    #[error("{provider}: {method} {path} answered HTTP {status}: {detail}")]
    Http {
        /// Provider.
        provider: ProviderKind,
        /// Request method.
        method: String,
        /// Request path (never the query string, which might carry filters only).
        path: String,
        /// HTTP status.
        status: u16,
        /// The provider's error message, shortened.
        detail: String,
    },
    /// Still rate-limited or failing after every retry.
    #[error(
        "{provider}: {method} {path} still failing after {attempts} attempts (last: HTTP {status})"
    )]
    RetriesExhausted {
        /// Provider.
        provider: ProviderKind,
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// Last HTTP status.
        status: u16,
    },
    /// The request could not be sent or the answer not read.
    #[error("{provider}: cannot reach {what}: {detail}")]
    Transport {
        /// Provider.
        provider: ProviderKind,
        /// Endpoint.
        what: String,
        /// Cause.
        detail: String,
    },
    /// The answer did not have the documented shape.
    #[error("{provider}: unexpected answer to {what}: {detail}")]
    Decode {
        /// Provider.
        provider: ProviderKind,
        /// Request.
        what: String,
        /// Cause.
        detail: String,
    },
    /// A DNS (RFC 2136) exchange failed.
    #[error("{provider}: {detail}")]
    Dns {
        /// Provider.
        provider: ProviderKind,
        /// What happened.
        detail: String,
    },
    /// A change did not finish in time (Route 53 `INSYNC`, Hetzner actions).
    #[error("{provider}: change {change} not applied after {seconds} s")]
    ChangeTimeout {
        /// Provider.
        provider: ProviderKind,
        /// Change id.
        change: String,
        /// Seconds waited.
        seconds: u64,
    },
    /// The adapter cannot express what was asked.
    #[error("{provider}: {detail}")]
    Unsupported {
        /// Provider.
        provider: ProviderKind,
        /// What and why.
        detail: String,
    },
}

impl ProviderError {
    /// Whether the error says the credentials are wrong.
    pub fn is_auth(&self) -> bool {
        matches!(self, ProviderError::Auth { .. })
    }
}
