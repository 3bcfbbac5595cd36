//! A poll: every component of one plan read once, each read bounded, into a typed
//! [`Snapshot`]. Reading never writes (no heartbeat on a MySQL source, no state file touched);
//! turning a snapshot into Prometheus families is [`super::metrics`]'s job, and `/status`
//! shows the same snapshot in words.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::Replication;
use crate::plan::Plan;

/// Bound on reading one component in a poll.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One database pair's reading.
pub struct PairReading {
    /// `postgres NAME` / `mysql NAME`.
    pub component: String,
    /// The pair's name.
    pub name: String,
    /// Its replication, or why it could not be read.
    pub replication: Result<Replication, String>,
}

/// One DNS record's reading.
pub struct DnsReading {
    /// `dns NAME`.
    pub component: String,
    /// `NAME TYPE`, the series' label.
    pub label: String,
    /// (authoritative server addresses, those serving the new values, the TTL job's safe
    /// time in seconds since the epoch), or why it could not be read.
    pub servers: Result<(usize, usize, Option<f64>), String>,
}

/// Everything one poll of one plan read.
pub struct Snapshot {
    /// `[migration] name`.
    pub migration: String,
    /// The run as `cutover status` tells it, or why it could not be read.
    pub run: Result<crate::run::Status, String>,
    /// The plan's database pairs (`postgres NAME`, `mysql NAME`): cleared with the run's
    /// figures when the run cannot be read.
    pub pair_components: Vec<String>,
    /// Each pair's replication.
    pub pairs: Vec<PairReading>,
    /// Each DNS record's servers.
    pub dns: Vec<DnsReading>,
    /// New server sessions the poll opened.
    pub connects: u64,
    /// When the poll ended (seconds since the epoch).
    pub at: f64,
    /// How long it took.
    pub seconds: f64,
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

async fn bounded<T, E: std::fmt::Display>(
    what: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(READ_TIMEOUT, what).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", READ_TIMEOUT.as_secs())),
    }
}

/// Reads every component of `plan` once, on `watches`' kept connections.
pub async fn poll(
    plan: &Plan,
    discovery: &crate::dns::Discovery,
    watches: &mut super::watches::Watches,
) -> Snapshot {
    let started = std::time::Instant::now();
    // Every pair at once (its servers' state and replication, each bounded), so one hung
    // server never holds up another pair; then the run (journal, lease, report) with those
    // states. A reading cut off by its bound never leaves a session to be reused mid-statement
    // (the engines' shared sessions close or forget it).
    let (reads, mut states) = watches.read_all(plan).await;
    let run = bounded(crate::run::status_with(plan, &mut states)).await;
    drop(states);
    // Replication, pair by pair, through the engine contract's read-only reading.
    let mut pairs = Vec::new();
    let mut pair_components = Vec::new();
    let all: std::collections::HashMap<_, _> = crate::run::pairs::all(plan).into_iter().collect();
    for (db, read) in reads {
        // The readings are of this plan's pairs, one each.
        let Some(pair) = all.get(&db) else {
            continue;
        };
        let component = pair.component();
        pair_components.push(component.clone());
        pairs.push(PairReading {
            component,
            name: pair.name().to_owned(),
            replication: read.replication.map_err(|e| e.to_string()),
        });
    }
    // DNS: every authoritative server's answer, and the TTL job's safe time.
    let states = crate::dns::state::Records::new(&plan.migration.state_dir);
    let mut dns = Vec::new();
    for (i, record) in plan.dns.iter().enumerate() {
        let read = async {
            let target = crate::dns::Target::resolve(i, record, discovery).await?;
            let servers = crate::dns::ttl::observe(&target).await;
            let wanted = target.wanted(record.cutover_ttl).values;
            let serving = servers
                .iter()
                .filter(|v| v.served.serves(&wanted, true))
                .count();
            let safe = states
                .load(&record.name, record.record_type)?
                .as_ref()
                .and_then(crate::dns::state::TtlState::safe_at)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64());
            Ok::<_, crate::dns::DnsError>((servers.len(), serving, safe))
        };
        dns.push(DnsReading {
            component: format!("dns {}", record.name),
            label: crate::dns::label(record),
            servers: bounded(read).await,
        });
    }
    let connects = watches.end_poll();
    Snapshot {
        migration: plan.migration.name.clone(),
        run: run.map_err(|e| e.to_string()),
        pair_components,
        pairs,
        dns,
        connects,
        at: now(),
        seconds: started.elapsed().as_secs_f64(),
    }
}
