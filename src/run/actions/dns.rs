//! DNS records as steps: resolved before the run, held to the safe time, switched, awaited on
//! every authoritative server, and set back by a reverse cutover.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{Detail, DnsWaited, Done, StepError};
use crate::dns;
use crate::plan::Plan;

/// Record `i`'s zone and authoritative servers resolve.
pub(in crate::run) async fn preflight(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let target = resolve(i, &plan.dns[i]).await?;
    dns::expect::check_current(&target).await?;
    Ok((
        format!(
            "zone {}, {} authoritative address(es)",
            target.zone,
            target.servers.len()
        ),
        Detail::None,
    ))
}

async fn resolve(i: usize, record: &crate::plan::DnsRecord) -> Result<dns::Target<'_>, StepError> {
    let discovery = dns::Discovery::system();
    Ok(dns::Target::resolve(i, record, &discovery).await?)
}

/// The lowered TTL has been served for at least one old TTL (`force`: said, not required).
pub(in crate::run) fn ready(plan: &Plan, i: usize, force: bool) -> Result<Done, StepError> {
    let record = &plan.dns[i];
    let states = dns::state::Records::new(&plan.migration.state_dir);
    let state = states.load(&record.name, record.record_type)?;
    match dns::update::check_safe(&dns::label(record), state.as_ref(), SystemTime::now()) {
        Ok(()) => Ok((
            "the lowered TTL has been served long enough".into(),
            Detail::None,
        )),
        Err(e) if force => {
            tracing::warn!(record = %dns::label(record), reason = %e, "DNS readiness overridden (--force)");
            Ok((
                format!("NOT READY, overridden by --force: {e}"),
                Detail::None,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Switches record `i` to the plan's values (`force`: before the safe time).
pub(in crate::run) async fn switch(plan: &Plan, i: usize, force: bool) -> Result<Done, StepError> {
    let target = resolve(i, &plan.dns[i]).await?;
    let states = dns::state::Records::new(&plan.migration.state_dir);
    let reports = dns::update::update_all(std::slice::from_ref(&target), &states, force).await?;
    let r = reports.first().ok_or("no update report")?;
    Ok((
        format!(
            "{} -> {}",
            r.previous
                .as_ref()
                .map(|p| p.values.join(","))
                .unwrap_or_else(|| "(none)".into()),
            r.current.values.join(",")
        ),
        Detail::DnsSwitched(r.clone()),
    ))
}

/// Waits until every authoritative server serves record `i`'s new values.
pub(in crate::run) async fn wait(plan: &Plan, i: usize) -> Result<Done, StepError> {
    let record = &plan.dns[i];
    let target = resolve(i, record).await?;
    let outcome = dns::propagation::wait(
        std::slice::from_ref(&target),
        record.propagation_timeout,
        Duration::from_millis(100),
        |_, _| {},
    )
    .await;
    if !outcome.complete {
        let pending: Vec<String> = outcome
            .pending()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.server,
                    r.last.as_ref().map(|s| s.describe()).unwrap_or_default()
                )
            })
            .collect();
        return Err(format!(
            "not served everywhere within {}: {}",
            humantime::format_duration(record.propagation_timeout),
            pending.join(", ")
        )
        .into());
    }
    Ok((
        format!(
            "every authoritative server serves {} ({:.0} ms)",
            record.values.join(","),
            outcome.elapsed.as_secs_f64() * 1000.0
        ),
        Detail::DnsWaited(DnsWaited {
            record: dns::label(record),
            ms: outcome.elapsed.as_secs_f64() * 1000.0,
        }),
    ))
}

/// Sets record `i` back to what it served before the forward run (`previous`, per record).
pub(in crate::run) async fn restore(
    plan: &Plan,
    i: usize,
    previous: &HashMap<usize, Vec<String>>,
) -> Result<Done, StepError> {
    let Some(values) = previous.get(&i).cloned() else {
        return Ok((
            "nothing to restore: the run did not switch this record".to_owned(),
            Detail::None,
        ));
    };
    let mut record = plan.dns[i].clone();
    record.values = values;
    // Going back, the record is expected to hold what the forward run switched it to.
    if !record.expect_current.is_empty() {
        record.expect_current = plan.dns[i].values.clone();
    }
    let target = resolve(i, &record).await?;
    let states = dns::state::Records::new(&plan.migration.state_dir);
    // Going back is never held to the safe time: the old address served until now.
    let reports = dns::update::update_all(std::slice::from_ref(&target), &states, true).await?;
    let r = reports.first().ok_or("no update report")?;
    Ok((
        format!("back to {}", r.current.values.join(",")),
        Detail::DnsSwitched(r.clone()),
    ))
}
