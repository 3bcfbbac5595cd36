//! `dns update`: refuse before the earliest safe cutover time (unless forced, which is logged),
//! then set every record to the plan's values through its provider.

use std::sync::Arc;
use std::time::SystemTime;

use cutover_providers::RecordSet;
use serde::Serialize;

use super::state::{Records, TtlState};
use super::{DnsError, Target};

/// Whether switching `record` (`name TYPE`) at `now` is safe according to its saved TTL state.
pub fn check_safe(record: &str, state: Option<&TtlState>, now: SystemTime) -> Result<(), DnsError> {
    let not_safe = |reason: String, fix: &str| DnsError::NotSafe {
        record: record.to_owned(),
        reason,
        fix: fix.to_owned(),
    };
    let Some(state) = state else {
        return Err(not_safe(
            "its TTL was never lowered, so caches may keep the old address for the full TTL".into(),
            "lower the record's TTL first and wait for the safe time that reports",
        ));
    };
    let Some(safe_at) = state.safe_at() else {
        return Err(not_safe(
            format!(
                "not every authoritative server serves the lowered TTL {} yet",
                state.lowered_ttl
            ),
            "lower the TTL again until every authoritative server serves it and a safe time is known",
        ));
    };
    if now < safe_at {
        let wait = safe_at.duration_since(now).unwrap_or_default();
        return Err(not_safe(
            format!(
                "earliest safe cutover is {} (in {})",
                humantime::format_rfc3339_seconds(safe_at),
                humantime::format_duration(std::time::Duration::from_secs(wait.as_secs() + 1))
            ),
            "wait until then",
        ));
    }
    Ok(())
}

/// The outcome of `update` for one record (kept in a run's journal, read back typed).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UpdateReport {
    /// `name TYPE`.
    pub record: String,
    /// What the provider had before.
    pub previous: Option<RecordSet>,
    /// What it has now.
    pub current: RecordSet,
    /// Why the safety check was overridden, if it was.
    pub forced: Option<String>,
}

/// Checks every target first (nothing is switched unless all may be, or `force`), then
/// switches them, in one change per provider and zone where the API allows it. Forced switches
/// are logged in `events.jsonl`.
pub async fn update_all(
    targets: &[Target<'_>],
    states: &Records,
    force: bool,
) -> Result<Vec<UpdateReport>, DnsError> {
    let now = SystemTime::now();
    // Right before the switch: each record still holds what the plan expects it to hold.
    for target in targets {
        super::expect::check_current(target).await?;
    }
    let mut plans = Vec::new();
    for target in targets {
        let state = states.load(&target.plan.name, target.plan.record_type)?;
        let forced = match check_safe(&target.label(), state.as_ref(), now) {
            Ok(()) => None,
            Err(e) if force => {
                let reason = e.to_string();
                tracing::warn!(record = target.label(), %reason, "switching before the safe time (--force)");
                states.log_event(
                    "forced_update",
                    serde_json::json!({"record": target.label(), "reason": reason}),
                )?;
                Some(reason)
            }
            Err(e) => return Err(e),
        };
        plans.push((target, state, forced));
    }
    // What each record has now, and what it must have.
    let mut switches = Vec::new();
    for (target, state, forced) in plans {
        let plan = target.plan;
        let ttl = state.as_ref().map_or(plan.cutover_ttl, |s| s.lowered_ttl);
        let previous = target
            .provider
            .read(&target.zone, &plan.name, plan.record_type)
            .await
            .map_err(|e| target.provider_error(e))?;
        switches.push((target, state, forced, previous, target.wanted(ttl)));
    }
    // One change per provider and zone where the API takes many record sets at once.
    let mut changes: Vec<(&Target<'_>, Vec<RecordSet>)> = Vec::new();
    for (target, _, _, previous, wanted) in &switches {
        if previous.as_ref() == Some(wanted) {
            continue;
        }
        match changes
            .iter_mut()
            .find(|(t, _)| Arc::ptr_eq(&t.provider, &target.provider) && t.zone == target.zone)
        {
            Some((_, sets)) => sets.push(wanted.clone()),
            None => changes.push((*target, vec![wanted.clone()])),
        }
    }
    for (target, sets) in &changes {
        target
            .provider
            .replace_many(&target.zone, sets)
            .await
            .map_err(|source| DnsError::Provider {
                record: sets
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.record_type))
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })?;
    }
    let mut reports = Vec::new();
    for (target, state, forced, previous, wanted) in switches {
        if let Some(mut state) = state {
            state.updated_at = Some(SystemTime::now());
            states.save(&state)?;
        }
        states.log_event(
            "updated",
            serde_json::json!({"record": target.label(), "values": wanted.values, "ttl": wanted.ttl,
                "previous": previous.as_ref().map(|p| &p.values)}),
        )?;
        reports.push(UpdateReport {
            record: target.label(),
            previous,
            current: wanted,
            forced,
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cutover_providers::RecordType;

    use super::*;

    fn state(served: Option<SystemTime>) -> TtlState {
        TtlState {
            name: "app.example.com".into(),
            record_type: RecordType::A,
            zone: "example.com".into(),
            old_ttl: 3600,
            old_values: vec!["192.0.2.1".into()],
            lowered_ttl: 60,
            lowered_at: SystemTime::UNIX_EPOCH,
            served_everywhere_at: served,
            updated_at: None,
        }
    }

    fn refusal(result: Result<(), DnsError>) -> String {
        match result {
            Err(e @ DnsError::NotSafe { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn safe_only_one_old_ttl_after_every_server_served_the_lowered_ttl() {
        let served = humantime::parse_rfc3339("2026-11-21T10:00:00Z").unwrap();
        let record = "app.example.com A";
        assert!(refusal(check_safe(record, None, served)).contains("never lowered"));
        assert!(
            refusal(check_safe(record, Some(&state(None)), served)).contains("lowered TTL 60 yet")
        );
        let lowered = state(Some(served));
        let early = served + Duration::from_secs(3599);
        assert!(
            refusal(check_safe(record, Some(&lowered), early)).contains("2026-11-21T11:00:00Z")
        );
        assert!(check_safe(record, Some(&lowered), served + Duration::from_secs(3600)).is_ok());
    }
}
