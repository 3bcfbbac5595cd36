//! What a scrape answers: the figures of the last poll, never a live query.
//!
//! A scrape that waited on a hung server would hang Prometheus's scrape too and lose every
//! other figure with it; so a poller ([`super::collect`]) reads the servers on its own clock
//! (each read bounded) into a typed snapshot, this module writes the snapshot into the gauges
//! ([`record`]), and `/metrics` only encodes them. A server that cannot be read is
//! `cutover_up 0` with its last figures cleared, not a stale number.
//!
//! The figures come from the same places the CLI reads: the run's journal and report
//! (`run::status`, the spine every run output is made of), each pair's replication status, and
//! every authoritative server's answer for the plan's DNS records.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use serde::Serialize;

use super::collect::Snapshot;
use crate::run::Phase;

/// Every phase a run goes through, for `cutover_run_phase`.
const PHASES: [Phase; 10] = [
    Phase::Preflight,
    Phase::DnsReadiness,
    Phase::WarmSync,
    Phase::WindowOpen,
    Phase::Fence,
    Phase::CatchUp,
    Phase::Promote,
    Phase::Switch,
    Phase::Verify,
    Phase::Report,
];

/// The registry and its families.
pub struct Metrics {
    /// Everything `/metrics` encodes.
    pub registry: Registry,
    /// The exposition as last rendered, and when: a scrape hands these bytes out instead of
    /// encoding every family of the fleet itself ([`Metrics::text`]).
    rendered: std::sync::Mutex<(std::time::Instant, axum::body::Bytes)>,
    up: GaugeVec,
    last_poll: GaugeVec,
    last_success: GaugeVec,
    poll_seconds: GaugeVec,
    phase: GaugeVec,
    steps_done: GaugeVec,
    steps_total: GaugeVec,
    running: GaugeVec,
    past_ponr: GaugeVec,
    outcome: GaugeVec,
    write_unavailable: GaugeVec,
    gate_wait: GaugeVec,
    gate_predicted: GaugeVec,
    catch_up: GaugeVec,
    lag_bytes: GaugeVec,
    lag_seconds: GaugeVec,
    replication_running: GaugeVec,
    source_fenced: GaugeVec,
    target_promoted: GaugeVec,
    dns_servers: GaugeVec,
    dns_serving: GaugeVec,
    dns_safe_at: GaugeVec,
    proxy_at_target: GaugeVec,
    /// TTL job runs, by outcome.
    pub ttl_runs: IntCounterVec,
    /// Pair connections opened by the poller (kept between polls).
    watch_connects: IntCounterVec,
    /// The exporter-named families, registered at their first sample.
    exporter: std::sync::Mutex<Exported>,
}

/// One exporter sample set: its family's name and its label values.
type SampleKey = (&'static str, Vec<String>);

/// The community exporters' families and, per component, the samples it last set.
#[derive(Default)]
struct Exported {
    families: std::collections::HashMap<&'static str, GaugeVec>,
    last: std::collections::HashMap<(String, String), Vec<SampleKey>>,
}

impl Exported {
    /// Sets `component`'s samples (labels `migration` first), removing the ones it no longer has.
    fn set(
        &mut self,
        registry: &Registry,
        migration: &str,
        component: &str,
        samples: &[crate::engine::ExporterSample],
    ) {
        let mut now = Vec::new();
        for s in samples {
            let family = self.families.entry(s.name).or_insert_with(|| {
                let mut names = vec!["migration"];
                names.extend(s.labels.iter().map(|(k, _)| *k));
                gauge(registry, s.name, s.help, &names)
            });
            let mut values = vec![migration.to_owned()];
            values.extend(s.labels.iter().map(|(_, v)| v.clone()));
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            // A sample whose labels do not match its family's is dropped, never a panic.
            match family.get_metric_with_label_values(&refs) {
                Ok(g) => g.set(s.value),
                Err(e) => {
                    tracing::warn!(series = s.name, error = %e, "exporter sample dropped");
                    continue;
                }
            }
            now.push((s.name, values));
        }
        let key = (migration.to_owned(), component.to_owned());
        for (name, values) in self.last.remove(&key).unwrap_or_default() {
            if !now.iter().any(|(n, v)| *n == name && *v == values)
                && let Some(f) = self.families.get(name)
            {
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let _ = f.remove_label_values(&refs);
            }
        }
        self.last.insert(key, now);
    }

    /// `component` could not be read: its `*_up` samples read 0, the others are removed.
    fn down(&mut self, migration: &str, component: &str) {
        let key = (migration.to_owned(), component.to_owned());
        let mut kept = Vec::new();
        for (name, values) in self.last.remove(&key).unwrap_or_default() {
            let Some(f) = self.families.get(name) else {
                continue;
            };
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            if name.ends_with("_up") {
                f.with_label_values(&refs).set(0.0);
                kept.push((name, values));
            } else {
                let _ = f.remove_label_values(&refs);
            }
        }
        self.last.insert(key, kept);
    }
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    /// Every family, registered (plus the process's own figures).
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let ttl_runs = IntCounterVec::new(
            Opts::new(
                "cutover_ttl_job_runs_total",
                "TTL job runs (dns lower-ttl of every record), by outcome",
            ),
            &["migration", "outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(ttl_runs.clone()))
            .expect("unique metric");
        let watch_connects = IntCounterVec::new(
            Opts::new(
                "cutover_poll_connects_total",
                "Connections the poller opened to a pair's servers (kept between polls: steady at zero growth unless a server fails)",
            ),
            &["migration"],
        )
        .expect("valid metric");
        r.register(Box::new(watch_connects.clone()))
            .expect("unique metric");
        let m = ["migration"];
        let mc = ["migration", "component"];
        let ms = ["migration", "stream"];
        let mr = ["migration", "record"];
        Metrics {
            up: gauge(
                &r,
                "cutover_up",
                "1 when the last poll could read the component",
                &mc,
            ),
            last_poll: gauge(
                &r,
                "cutover_last_poll_timestamp_seconds",
                "When the last poll of the migration ended",
                &m,
            ),
            last_success: gauge(
                &r,
                "cutover_last_success_timestamp_seconds",
                "When the component was last read (kept while it is down: how long it has been)",
                &mc,
            ),
            poll_seconds: gauge(
                &r,
                "cutover_poll_duration_seconds",
                "How long the last poll of the migration took",
                &m,
            ),
            phase: gauge(
                &r,
                "cutover_run_phase",
                "1 for the phase of the step the last run began last, 0 for the others",
                &["migration", "phase"],
            ),
            steps_done: gauge(
                &r,
                "cutover_run_steps_done",
                "Steps of the last run done",
                &m,
            ),
            steps_total: gauge(&r, "cutover_run_steps", "Steps of the last run in all", &m),
            running: gauge(
                &r,
                "cutover_run_running",
                "1 while a runner holds the migration's lease",
                &m,
            ),
            past_ponr: gauge(
                &r,
                "cutover_run_past_point_of_no_return",
                "1 once the last run journalled its point of no return",
                &m,
            ),
            outcome: gauge(
                &r,
                "cutover_run_outcome",
                "1 for how the last run ended (completed, rolled back, failed)",
                &["migration", "outcome"],
            ),
            write_unavailable: gauge(
                &r,
                "cutover_write_unavailable_seconds",
                "Fence to writable on the new primary in the last run's report",
                &mc,
            ),
            gate_wait: gauge(
                &r,
                "cutover_gate_wait_seconds",
                "How long the adaptive gate waited for the predicted window to fit window_budget, in the last run's report",
                &mc,
            ),
            gate_predicted: gauge(
                &r,
                "cutover_gate_predicted_catch_up_seconds",
                "The catch-up the adaptive gate predicted when it let the fence come, in the last run's report",
                &mc,
            ),
            catch_up: gauge(
                &r,
                "cutover_catch_up_seconds",
                "The catch-up the last run measured (its catch-up step), beside the prediction",
                &mc,
            ),
            lag_bytes: gauge(
                &r,
                "cutover_replication_lag_bytes",
                "WAL the target has not confirmed (PostgreSQL: current LSN - slot confirmed_flush_lsn)",
                &ms,
            ),
            lag_seconds: gauge(
                &r,
                "cutover_replication_lag_seconds",
                "Replication delay (PostgreSQL: walsender replay_lag; MySQL/MariaDB: Seconds_Behind_Source); absent while nothing applies the changes, never 0",
                &ms,
            ),
            replication_running: gauge(
                &r,
                "cutover_replication_running",
                "1 while changes flow to the target (PostgreSQL: subscription enabled, apply worker and walsender running; MySQL/MariaDB: IO and SQL threads running)",
                &ms,
            ),
            source_fenced: gauge(
                &r,
                "cutover_pair_source_fenced",
                "1 when the pair's source refuses the application's writes",
                &mc,
            ),
            target_promoted: gauge(
                &r,
                "cutover_pair_target_promoted",
                "1 when the pair's target takes the application's writes",
                &mc,
            ),
            dns_servers: gauge(
                &r,
                "cutover_dns_servers",
                "Authoritative server addresses asked for the record",
                &mr,
            ),
            dns_serving: gauge(
                &r,
                "cutover_dns_servers_serving_target",
                "Authoritative server addresses that serve the record's new values",
                &mr,
            ),
            dns_safe_at: gauge(
                &r,
                "cutover_dns_safe_timestamp_seconds",
                "Earliest safe cutover time from the TTL job's state (absent: TTL not lowered yet)",
                &mr,
            ),
            proxy_at_target: gauge(
                &r,
                "cutover_proxy_points_at_target",
                "1 when the proxy route points at the plan's target, 0 at the source or elsewhere (absent: unreadable)",
                &["migration", "route"],
            ),
            ttl_runs,
            watch_connects,
            exporter: std::sync::Mutex::new(Exported::default()),
            rendered: std::sync::Mutex::new((std::time::Instant::now(), axum::body::Bytes::new())),
            registry: r,
        }
    }

    /// A `[[watch]]` entry's reading: its exporter samples, or why its server could not be
    /// read (`up_series` 0 for its server, the rest removed).
    pub fn watched(
        &self,
        name: &str,
        up_series: &'static str,
        server: &str,
        reading: Result<Vec<crate::engine::ExporterSample>, String>,
    ) {
        let component = format!("watch {name}");
        let ok = reading.is_ok();
        self.up
            .with_label_values(&[name, &component])
            .set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.last_success
                .with_label_values(&[name, &component])
                .set(super::collect::now());
        }
        let Ok(mut e) = self.exporter.lock() else {
            return;
        };
        match reading {
            Ok(mut samples) => {
                samples.insert(
                    0,
                    crate::engine::ExporterSample::up(up_series, server.to_owned()),
                );
                e.set(&self.registry, name, &component, &samples);
            }
            Err(_) => e.down(name, &component),
        }
    }

    /// Renders the exposition now and keeps it for the scrapes ([`RENDER_EVERY`] by the
    /// daemon's render task).
    pub fn render(&self) {
        let text = axum::body::Bytes::from(self.encode());
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        *rendered = (std::time::Instant::now(), text);
    }

    /// What a scrape answers: the last rendering, when it is younger than [`RENDER_STALE`]
    /// (the render task keeps it so); else rendered now. A scrape's cost no longer grows with
    /// the fleet's series: encoding 300 pairs' families took most of a scrape's 54 ms p99.
    pub fn text(&self) -> axum::body::Bytes {
        {
            let rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
            if !rendered.1.is_empty() && rendered.0.elapsed() < RENDER_STALE {
                return rendered.1.clone();
            }
        }
        self.render();
        self.rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// How often the daemon renders the exposition for the scrapes: a scrape's figures are at most
/// this much younger than the last poll's.
pub const RENDER_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A rendering older than this is not handed out (the render task is behind): the scrape
/// renders.
pub const RENDER_STALE: std::time::Duration = std::time::Duration::from_secs(2);

/// One component's reading in a poll, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    /// `postgres NAME`, `mysql NAME`, `dns NAME`, `run`.
    pub component: String,
    /// Whether it could be read.
    pub up: bool,
    /// What was read, in words, or why it could not be.
    pub text: String,
}

/// One migration's last poll, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReading {
    /// `[migration] name`.
    pub migration: String,
    /// When the poll ended (seconds since the epoch).
    pub at: f64,
    /// How long it took.
    pub seconds: f64,
    /// The run, as `cutover status` would tell it.
    pub run: Option<serde_json::Value>,
    /// Each component.
    pub components: Vec<Reading>,
}

/// Writes `snap`'s figures into the families (clearing what could not be read, never leaving
/// a stale number) and returns it in words for `/status`.
pub fn record(m: &Metrics, snap: &Snapshot) -> PlanReading {
    let name = snap.migration.as_str();
    let mut components = Vec::new();
    let mut up = |component: &str, ok: bool, text: String| {
        m.up.with_label_values(&[name, component])
            .set(if ok { 1.0 } else { 0.0 });
        if ok {
            m.last_success
                .with_label_values(&[name, component])
                .set(snap.at);
        }
        components.push(Reading {
            component: component.to_owned(),
            up: ok,
            text,
        });
    };

    let run = match &snap.run {
        Ok(s) => {
            for p in PHASES {
                m.phase
                    .with_label_values(&[name, p.as_str()])
                    .set(if s.phase == Some(p) { 1.0 } else { 0.0 });
            }
            m.steps_done
                .with_label_values(&[name])
                .set(s.steps_done as f64);
            m.steps_total
                .with_label_values(&[name])
                .set(s.steps_total as f64);
            m.running
                .with_label_values(&[name])
                .set(if s.holder.is_some() { 1.0 } else { 0.0 });
            m.past_ponr
                .with_label_values(&[name])
                .set(if s.past_point_of_no_return { 1.0 } else { 0.0 });
            for word in ["completed", "rolled back", "failed"] {
                let is = s.outcome.map(|o| o.word()) == Some(word);
                m.outcome
                    .with_label_values(&[name, word])
                    .set(if is { 1.0 } else { 0.0 });
            }
            if let Some(report) = &s.report {
                for (component, ms) in &report.write_unavailable_ms {
                    m.write_unavailable
                        .with_label_values(&[name, component])
                        .set(ms / 1000.0);
                }
                for (component, g) in &report.gates {
                    m.gate_wait
                        .with_label_values(&[name, component])
                        .set(g.waited_ms / 1000.0);
                    set_or_clear(
                        &m.gate_predicted,
                        &[name, component],
                        g.prediction.catch_up_ms.map(|ms| ms / 1000.0),
                    );
                }
                for (component, ms) in &report.catch_up_ms {
                    m.catch_up
                        .with_label_values(&[name, component])
                        .set(ms / 1000.0);
                }
            }
            for (component, state) in &s.pair_states {
                match state {
                    Some(p) => {
                        let flag = |b: bool| if b { 1.0 } else { 0.0 };
                        m.source_fenced
                            .with_label_values(&[name, component])
                            .set(flag(p.source_fenced));
                        m.target_promoted
                            .with_label_values(&[name, component])
                            .set(flag(p.target_promoted));
                    }
                    None => {
                        let _ = m.source_fenced.remove_label_values(&[name, component]);
                        let _ = m.target_promoted.remove_label_values(&[name, component]);
                    }
                }
            }
            let text = format!(
                "{} of {} steps done{}",
                s.steps_done,
                s.steps_total,
                s.outcome
                    .map(|o| format!(", last run {}", o.word()))
                    .unwrap_or_default()
            );
            up("run", true, text);
            for (route, pointing) in &s.proxies {
                let label = route.strip_prefix("proxy ").unwrap_or(route);
                match pointing {
                    Ok(p) => {
                        m.proxy_at_target
                            .with_label_values(&[name, label])
                            .set(if p.side == Some("target") { 1.0 } else { 0.0 });
                        up(route, true, p.words());
                    }
                    Err(e) => {
                        let _ = m.proxy_at_target.remove_label_values(&[name, label]);
                        up(route, false, e.clone());
                    }
                }
            }
            Some(serde_json::json!({
                "run": s.run,
                "outcome": s.outcome.map(|o| o.word()),
                "phase": s.phase.map(|p| p.as_str()),
                "last_step": s.last_step,
                "steps_done": s.steps_done,
                "steps_total": s.steps_total,
                "running": s.holder,
                "past_point_of_no_return": s.past_point_of_no_return,
                "pairs": s.pairs,
                "resume_would": s.resume_would,
            }))
        }
        Err(e) => {
            // Figures of an unreadable run are cleared, not left at their last values.
            for p in PHASES {
                let _ = m.phase.remove_label_values(&[name, p.as_str()]);
            }
            for word in ["completed", "rolled back", "failed"] {
                let _ = m.outcome.remove_label_values(&[name, word]);
            }
            for g in [&m.steps_done, &m.steps_total, &m.running, &m.past_ponr] {
                let _ = g.remove_label_values(&[name]);
            }
            for component in &snap.pair_components {
                for g in [
                    &m.source_fenced,
                    &m.target_promoted,
                    &m.write_unavailable,
                    &m.gate_wait,
                    &m.gate_predicted,
                    &m.catch_up,
                ] {
                    let _ = g.remove_label_values(&[name, component]);
                }
            }
            up("run", false, e.clone());
            None
        }
    };

    for pair in &snap.pairs {
        let labels = [name, pair.name.as_str()];
        match &pair.replication {
            Ok(r) => {
                set_or_clear(&m.lag_bytes, &labels, r.lag_bytes.map(|b| b as f64));
                set_or_clear(&m.lag_seconds, &labels, r.lag_seconds);
                m.replication_running
                    .with_label_values(&labels)
                    .set(if r.running { 1.0 } else { 0.0 });
                if let Ok(mut e) = m.exporter.lock() {
                    e.set(&m.registry, name, &pair.component, &r.exporter);
                }
                up(&pair.component, true, r.words.clone());
            }
            Err(e) => {
                let _ = m.lag_bytes.remove_label_values(&labels);
                let _ = m.lag_seconds.remove_label_values(&labels);
                let _ = m.replication_running.remove_label_values(&labels);
                if let Ok(mut e) = m.exporter.lock() {
                    e.down(name, &pair.component);
                }
                up(&pair.component, false, e.clone());
            }
        }
    }

    for record in &snap.dns {
        let labels = [name, record.label.as_str()];
        match &record.servers {
            Ok((all, serving, safe)) => {
                m.dns_servers.with_label_values(&labels).set(*all as f64);
                m.dns_serving
                    .with_label_values(&labels)
                    .set(*serving as f64);
                set_or_clear(&m.dns_safe_at, &labels, *safe);
                up(
                    &record.component,
                    true,
                    format!("{serving} of {all} server addresses serve the new values"),
                );
            }
            Err(e) => {
                let _ = m.dns_servers.remove_label_values(&labels);
                let _ = m.dns_serving.remove_label_values(&labels);
                up(&record.component, false, e.clone());
            }
        }
    }

    m.watch_connects
        .with_label_values(&[name])
        .inc_by(snap.connects);
    m.last_poll.with_label_values(&[name]).set(snap.at);
    m.poll_seconds.with_label_values(&[name]).set(snap.seconds);
    PlanReading {
        migration: name.to_owned(),
        at: snap.at,
        seconds: snap.seconds,
        run,
        components,
    }
}

fn set_or_clear(g: &GaugeVec, labels: &[&str], value: Option<f64>) {
    match value {
        Some(v) => g.with_label_values(labels).set(v),
        None => {
            let _ = g.remove_label_values(labels);
        }
    }
}
