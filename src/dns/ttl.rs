//! TTL pre-lowering (`lower-ttl`), its undo (`restore-ttl`) and `status`.

use std::time::{Duration, SystemTime};

use cutover_providers::RecordSet;
use serde::Serialize;

use super::probe::{self, Question, Served};
use super::state::{Records, TtlState};
use super::{AuthServer, DnsError, Target};

/// What one server serves for the record.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    /// The server.
    pub server: AuthServer,
    /// Its answer.
    pub served: Served,
}

/// Asks every authoritative server of `target` for the record.
pub async fn observe(target: &Target<'_>) -> Vec<ServerView> {
    let questions: Vec<Question> = target
        .servers
        .iter()
        .map(|s| Question::new(&target.plan.name, target.plan.record_type, s.addr, false))
        .collect();
    probe::ask_all(&questions)
        .await
        .into_iter()
        .zip(&target.servers)
        .map(|(served, server)| ServerView {
            server: server.clone(),
            served,
        })
        .collect()
}

/// How `lower-ttl` behaves.
#[derive(Debug, Clone, Copy)]
pub struct LowerOptions {
    /// Use the provider's minimum instead of refusing when `cutover_ttl` is below it.
    pub clamp: bool,
    /// How long to wait for every server to serve the lowered TTL.
    pub timeout: Duration,
    /// Pause between polls.
    pub poll: Duration,
}

/// The outcome of `lower-ttl` for one record.
#[derive(Debug, Clone, Serialize)]
pub struct LowerReport {
    /// `name TYPE`.
    pub record: String,
    /// The saved state after this run.
    pub state: TtlState,
    /// Whether this run changed the TTL at the provider.
    pub changed: bool,
    /// Whether `cutover_ttl` was raised to the provider's minimum.
    pub clamped: bool,
    /// What every server served at the end.
    pub servers: Vec<ServerView>,
    /// Earliest safe cutover time, once known.
    #[serde(with = "opt_time")]
    pub safe_at: Option<SystemTime>,
}

impl LowerReport {
    /// Whether every server serves the lowered TTL.
    pub fn complete(&self) -> bool {
        self.state.served_everywhere_at.is_some()
    }
}

fn serves_lowered(view: &ServerView, lowered: u32) -> bool {
    matches!(&view.served, Served::Answer { ttl, authoritative: true, .. } if *ttl <= lowered)
}

/// Lowers the record's TTL (idempotent): saves the old TTL the first time, changes the
/// provider only when needed, and records when every authoritative server serves it.
pub async fn lower(
    target: &Target<'_>,
    states: &Records,
    options: LowerOptions,
) -> Result<LowerReport, DnsError> {
    let plan = target.plan;
    let record = target.label();
    let before = observe(target).await;
    let current = target
        .provider
        .read(&target.zone, &plan.name, plan.record_type)
        .await
        .map_err(|e| target.provider_error(e))?
        .ok_or_else(|| DnsError::Discovery {
            record: record.clone(),
            detail: format!(
                "the record does not exist at {} in `{}`; fix: create it with its current value first (there is no TTL to lower)",
                target.provider.kind(),
                target.zone
            ),
        })?;
    let minimum = target
        .provider
        .min_ttl(&target.zone)
        .await
        .map_err(|e| target.provider_error(e))?;
    let (lowered_ttl, clamped) = if plan.cutover_ttl >= minimum {
        (plan.cutover_ttl, false)
    } else if options.clamp {
        tracing::warn!(
            record,
            requested = plan.cutover_ttl,
            minimum,
            "cutover_ttl clamped to the provider's minimum"
        );
        (minimum, true)
    } else {
        return Err(DnsError::BelowMinimum {
            record,
            provider: target.provider.kind(),
            zone: target.zone.clone(),
            requested: plan.cutover_ttl,
            minimum,
        });
    };
    // The old TTL is the largest any server hands out: caches may hold that long.
    let served_max = before
        .iter()
        .filter_map(|v| v.served.ttl())
        .max()
        .unwrap_or(0);
    let now = SystemTime::now();
    let mut state = match states.load(&plan.name, plan.record_type)? {
        Some(saved) => TtlState {
            lowered_ttl,
            ..saved
        },
        None => TtlState {
            name: current.name.clone(),
            record_type: plan.record_type,
            zone: target.zone.clone(),
            old_ttl: current.ttl.max(served_max),
            old_values: current.values.clone(),
            lowered_ttl,
            lowered_at: now,
            served_everywhere_at: None,
            updated_at: None,
        },
    };
    let changed = current.ttl > lowered_ttl;
    if changed {
        target
            .provider
            .replace(&target.zone, &current.with_ttl(lowered_ttl))
            .await
            .map_err(|e| target.provider_error(e))?;
        // Caches may have fetched the higher TTL again: the clock starts over.
        state.lowered_at = now;
        state.served_everywhere_at = None;
    }
    states.save(&state)?;

    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut views = if changed {
        observe(target).await
    } else {
        before
    };
    loop {
        if views.iter().all(|v| serves_lowered(v, lowered_ttl)) {
            if state.served_everywhere_at.is_none() {
                state.served_everywhere_at = Some(SystemTime::now());
                states.save(&state)?;
            }
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(options.poll).await;
        views = observe(target).await;
    }
    Ok(LowerReport {
        record,
        safe_at: state.safe_at(),
        state,
        changed,
        clamped,
        servers: views,
    })
}

/// The outcome of `restore-ttl` for one record.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// `name TYPE`.
    pub record: String,
    /// The TTL put back, or `None` when nothing was saved.
    pub restored_ttl: Option<u32>,
    /// The values the record has now (restore changes the TTL only).
    pub values: Vec<String>,
}

/// Puts the saved TTL back (keeping whatever values the record has now) and forgets the state.
pub async fn restore(target: &Target<'_>, states: &Records) -> Result<RestoreReport, DnsError> {
    let plan = target.plan;
    let record = target.label();
    let Some(state) = states.load(&plan.name, plan.record_type)? else {
        return Ok(RestoreReport {
            record,
            restored_ttl: None,
            values: Vec::new(),
        });
    };
    let current = target
        .provider
        .read(&target.zone, &plan.name, plan.record_type)
        .await
        .map_err(|e| target.provider_error(e))?;
    let set = current.unwrap_or_else(|| {
        RecordSet::new(
            &plan.name,
            plan.record_type,
            state.old_ttl,
            &state.old_values,
        )
    });
    if set.ttl != state.old_ttl {
        target
            .provider
            .replace(&target.zone, &set.with_ttl(state.old_ttl))
            .await
            .map_err(|e| target.provider_error(e))?;
    }
    states.log_event(
        "ttl_restored",
        serde_json::json!({"record": record, "ttl": state.old_ttl}),
    )?;
    states.remove(&plan.name, plan.record_type)?;
    Ok(RestoreReport {
        record,
        restored_ttl: Some(state.old_ttl),
        values: set.values,
    })
}

/// One record's `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `name TYPE`.
    pub record: String,
    /// Zone.
    pub zone: String,
    /// The provider's view.
    pub provider: Option<RecordSet>,
    /// Every server's answer.
    pub servers: Vec<ServerView>,
    /// SOA serial per server.
    pub serials: Vec<(AuthServer, Result<u32, String>)>,
    /// Saved state.
    pub state: Option<TtlState>,
    /// Earliest safe cutover time.
    #[serde(with = "opt_time")]
    pub safe_at: Option<SystemTime>,
    /// The values the plan switches to.
    pub wanted: Vec<String>,
}

/// Reads the provider, every server and the saved state.
pub async fn status(target: &Target<'_>, states: &Records) -> Result<StatusReport, DnsError> {
    let plan = target.plan;
    let provider = target
        .provider
        .read(&target.zone, &plan.name, plan.record_type)
        .await
        .map_err(|e| target.provider_error(e))?;
    let servers = observe(target).await;
    let serials = serials(target).await;
    let state = states.load(&plan.name, plan.record_type)?;
    Ok(StatusReport {
        record: target.label(),
        zone: target.zone.clone(),
        provider,
        servers,
        serials,
        safe_at: state.as_ref().and_then(TtlState::safe_at),
        state,
        wanted: target.wanted(plan.cutover_ttl).values,
    })
}

/// SOA serial of the record's zone on every server.
pub async fn serials(target: &Target<'_>) -> Vec<(AuthServer, Result<u32, String>)> {
    let asks = target
        .servers
        .iter()
        .map(|s| probe::soa_serial(s.addr, &target.zone));
    let results = futures::future::join_all(asks).await;
    target.servers.iter().cloned().zip(results).collect()
}

/// Optional timestamps as RFC 3339 in reports.
pub(crate) mod opt_time {
    use std::time::SystemTime;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}
