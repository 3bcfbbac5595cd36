//! The report of a run, computed from its journal records alone: a resumed run reports the
//! outage the crashed process began, and a report lost in a crash is rebuilt the same way.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::actions::Detail;
use super::journal::{Entry, Outcome, Record, step_line};
use super::steps::{Kind, Phase, Step};
use crate::engine::Rollback;
use crate::files;
use crate::plan::Plan;

/// One step's timing in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTiming {
    /// Index.
    pub step: usize,
    /// Phase.
    pub phase: Phase,
    /// Component.
    pub component: String,
    /// Duration.
    pub ms: f64,
    /// `done` or `failed`.
    pub result: String,
    /// What it did or why it failed.
    pub summary: String,
}

impl StepTiming {
    fn of(index: usize, step: &Step, ms: f64, result: &str, summary: &str) -> StepTiming {
        StepTiming {
            step: index,
            phase: step.phase,
            component: step.component.clone(),
            ms,
            result: result.into(),
            summary: summary.into(),
        }
    }
}

/// The report as the state directory keeps it.
pub fn to_json(report: &RunReport) -> Result<serde_json::Value, crate::state::StateError> {
    serde_json::to_value(report).map_err(|e| crate::state::StateError::Encode(e.to_string()))
}

/// A kept report read back (`None`, logged, when it does not parse: an older or damaged file).
pub fn from_json(value: &serde_json::Value) -> Option<RunReport> {
    serde_json::from_value(value.clone())
        .map_err(|e| tracing::warn!(error = %e, "the kept report does not parse"))
        .ok()
}

/// What a run measured (fields an older report lacks read as their defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    /// The migration.
    pub migration: String,
    /// The run id.
    pub run: String,
    /// How it ended (`None` while running).
    pub outcome: Option<Outcome>,
    /// Whether a runner resumed it.
    pub resumed: bool,
    /// Every step that ran, in order.
    pub steps: Vec<StepTiming>,
    /// Per database: what the adaptive gate waited and predicted (with a `window_budget`).
    #[serde(default)]
    pub gates: BTreeMap<String, crate::engine::gate::Waited>,
    /// Per database: the catch-up step's actual duration (beside the gate's prediction).
    #[serde(default)]
    pub catch_up_ms: BTreeMap<String, f64>,
    /// Per database: fence began -> target writable, from the journal's clock.
    pub write_unavailable_ms: BTreeMap<String, f64>,
    /// Window opened (first window-open step) -> last promotion done.
    pub window_ms: Option<f64>,
    /// First fence -> last promotion: how long no database took writes for every pair.
    pub joint_write_unavailable_ms: Option<f64>,
    /// Files passes (warm and final) as reported by the files component.
    pub files: Vec<serde_json::Value>,
    /// Per `[[files]]` entry: whether its source tree changed after the final pass (read from
    /// the change log kept to the end of the run), the files' counterpart of
    /// `old_primary_clean`.
    #[serde(default)]
    pub files_after_final: BTreeMap<String, files::changelog::AfterFinal>,
    /// DNS: switch -> served by every authoritative server, per record.
    pub dns_propagation_ms: BTreeMap<String, f64>,
    /// Proxy routes switched (or set back), each read back from its proxy, per route.
    #[serde(default)]
    pub proxies: BTreeMap<String, crate::proxy::Switched>,
    /// Health checks.
    pub checks: Vec<serde_json::Value>,
    /// Per database: whether the old primary provably took no write after its fence.
    pub old_primary_clean: BTreeMap<String, Option<bool>>,
    /// What needs a hand.
    pub warnings: Vec<String>,
    /// What each rollback did.
    pub rollback: Vec<(String, Rollback)>,
    /// Why the run failed.
    pub error: Option<String>,
    /// First record -> last record.
    pub total_ms: f64,
}

/// The report of one run, computed from its journal records.
pub fn report_of(plan: &Plan, steps: &[Step], records: &[Record]) -> RunReport {
    let mut r = RunReport {
        migration: plan.migration.name.clone(),
        run: records.first().map(|r| r.run.clone()).unwrap_or_default(),
        ..RunReport::default()
    };
    let mut began: HashMap<usize, u64> = HashMap::new();
    let mut window_began = None;
    let mut first_fence = None;
    let mut last_promote = None;
    let mut fence_began: HashMap<String, u64> = HashMap::new();
    for rec in records {
        match &rec.entry {
            Entry::Resumed { .. } => r.resumed = true,
            Entry::StepBegin {
                step,
                phase,
                component,
                ..
            } => {
                began.insert(*step, rec.at_ms);
                if *phase >= Phase::WindowOpen && *phase <= Phase::Promote && window_began.is_none()
                {
                    window_began = Some(rec.at_ms);
                }
                if let Some(Kind::Fence(_)) = steps.get(*step).map(|s| s.kind) {
                    first_fence.get_or_insert(rec.at_ms);
                    fence_began.entry(component.clone()).or_insert(rec.at_ms);
                }
            }
            Entry::StepDone {
                step,
                ms,
                summary,
                detail,
            } => {
                let Some(s) = steps.get(*step) else { continue };
                r.steps.push(StepTiming::of(*step, s, *ms, "done", summary));
                // Every figure below is a typed field (journals on disk read back through the
                // same types).
                match (s.kind, Detail::read(s.kind, summary, detail)) {
                    (Kind::WarmFiles(_) | Kind::FinalFiles(_), _) => r.files.push(detail.clone()),
                    (Kind::Report, Detail::Report(w)) => {
                        r.files_after_final = w.files_after_final;
                    }
                    (Kind::Check(_), _) => r.checks.push(detail.clone()),
                    (Kind::Gate(_), Detail::Gated(g)) => {
                        r.gates.insert(s.component.clone(), g);
                    }
                    (Kind::CatchUp(_), _) => {
                        r.catch_up_ms.insert(s.component.clone(), *ms);
                    }
                    (Kind::Promote(_), promoted) => {
                        last_promote = Some(rec.at_ms);
                        // The engine's own clock when this process fenced; the journal's
                        // clock across a crash.
                        let ms = match promoted {
                            Detail::Promoted(p) => p.write_unavailable_ms,
                            _ => None,
                        }
                        .or_else(|| {
                            fence_began
                                .get(&s.component)
                                .map(|b| rec.at_ms.saturating_sub(*b) as f64)
                        });
                        if let Some(ms) = ms {
                            r.write_unavailable_ms.insert(s.component.clone(), ms);
                        }
                    }
                    (Kind::Finish(_), Detail::Finished(f)) => {
                        r.old_primary_clean
                            .insert(s.component.clone(), f.old_primary_clean);
                        r.warnings
                            .extend(f.warnings.iter().map(|w| format!("{}: {w}", s.component)));
                    }
                    (Kind::Finish(_), _) => {
                        r.old_primary_clean.insert(s.component.clone(), None);
                    }
                    (Kind::ProxySwitch(_) | Kind::ProxyRestore(_), Detail::ProxySwitched(p)) => {
                        r.proxies.insert(s.component.clone(), p);
                    }
                    (Kind::DnsWait(_), Detail::DnsWaited(d)) => {
                        r.dns_propagation_ms.insert(d.record, d.ms);
                    }
                    (Kind::Hook(_), Detail::Hook(h)) if h.allowed_failure.is_some() => {
                        r.warnings.push(summary.clone());
                    }
                    _ => {}
                }
            }
            Entry::StepFailed { step, ms, error } => {
                let Some(s) = steps.get(*step) else { continue };
                r.steps.push(StepTiming::of(*step, s, *ms, "failed", error));
                r.error = Some(format!("{}: {error}", step_line(s)));
            }
            Entry::RolledBack { component, outcome } => {
                r.rollback.push((component.clone(), outcome.clone()));
            }
            Entry::Note { text } => r.warnings.push(text.clone()),
            Entry::RunFinished { outcome, .. } => r.outcome = Some(*outcome),
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (window_began, last_promote) {
        r.window_ms = Some(b.saturating_sub(a) as f64);
    }
    if let (Some(a), Some(b)) = (first_fence, last_promote) {
        r.joint_write_unavailable_ms = Some(b.saturating_sub(a) as f64);
    }
    if let (Some(first), Some(last)) = (records.first(), records.last()) {
        r.total_ms = last.at_ms.saturating_sub(first.at_ms) as f64;
    }
    r
}
