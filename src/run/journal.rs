//! The journal's records: what a run writes before and after each step, and what is read
//! back from them (which run is the last, how far it got, how it ended). Every other view of a
//! run (progress lines, status, the report, resume) is computed from these records.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::steps::{Kind, Phase, Step};
use crate::engine::Rollback;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step done.
    Completed,
    /// Failed before the point of no return; every source serves again.
    RolledBack,
    /// Stopped with work left: the journal and the message say what `--resume` does.
    Failed,
}

impl Outcome {
    /// The outcome in words.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Entry {
    /// A run began.
    RunStarted {
        /// The plan's migration name.
        migration: String,
        /// A reverse cutover (`run --rollback`) of the run before it.
        #[serde(default)]
        reverse: bool,
        /// The step list, as `phase component: action` (a resume must see the same plan).
        steps: Vec<String>,
    },
    /// A runner took over an interrupted run.
    Resumed {
        /// What it decided and why.
        decision: String,
        /// Each pair's state as read from the servers.
        states: Vec<String>,
    },
    /// A step is about to run.
    StepBegin {
        /// Index in the step list.
        step: usize,
        /// Its phase.
        phase: Phase,
        /// Its component.
        component: String,
        /// What it does, as the step list says it (so a record renders on its own).
        #[serde(default)]
        action: String,
    },
    /// A step finished.
    StepDone {
        /// Index.
        step: usize,
        /// Duration.
        ms: f64,
        /// What it did, in words.
        summary: String,
        /// Figures for the report.
        #[serde(default)]
        detail: serde_json::Value,
    },
    /// A step failed.
    StepFailed {
        /// Index.
        step: usize,
        /// Duration.
        ms: f64,
        /// Why.
        error: String,
    },
    /// The first promotion comes next: from here on the run only goes forward.
    PointOfNoReturn,
    /// Rolling back every fenced pair.
    RollbackBegin {
        /// Why.
        reason: String,
    },
    /// One component rolled back.
    RolledBack {
        /// The component.
        component: String,
        /// What happened to its source.
        outcome: Rollback,
    },
    /// Where a long wait stands.
    Progress {
        /// The text.
        text: String,
    },
    /// Something worth telling that is not a step.
    Note {
        /// The text.
        text: String,
    },
    /// The run ended.
    RunFinished {
        /// How.
        outcome: Outcome,
        /// In words, with the true state of the servers.
        summary: String,
        /// It stopped with work that `run --resume` does (a failed step after the point of no
        /// return, or before it with `auto_rollback` off).
        #[serde(default)]
        resumable: bool,
        /// A health check failed after the promotion and the reverse cutover comes next (a
        /// crash before it began is resumed by starting it).
        #[serde(default)]
        reverse_next: bool,
    },
}

/// A journal record: an entry with its place and time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Position in the journal.
    pub seq: u64,
    /// The lease epoch of the runner that wrote it.
    pub epoch: u64,
    /// The run it belongs to.
    pub run: String,
    /// Wall clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub(super) fn step_line(s: &Step) -> String {
    format!("{} {}: {}", s.phase.as_str(), s.component, s.action)
}

/// The records of the last run in `journal`.
pub fn last_run(journal: &[serde_json::Value]) -> Vec<Record> {
    last_run_of(parse(journal))
}

pub(super) fn parse(journal: &[serde_json::Value]) -> Vec<Record> {
    journal
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// The records of the last run that `records` (oldest first) started.
pub(super) fn last_run_of(records: Vec<Record>) -> Vec<Record> {
    let Some(run) = records
        .iter()
        .rev()
        .find(|r| matches!(r.entry, Entry::RunStarted { .. }))
        .map(|r| r.run.clone())
    else {
        return Vec::new();
    };
    records.into_iter().filter(|r| r.run == run).collect()
}

/// What the journal says about a run.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Steps done.
    pub done: BTreeSet<usize>,
    /// Steps begun.
    pub begun: BTreeSet<usize>,
    /// The point of no return was passed.
    pub past_point_of_no_return: bool,
    /// How it ended, if it did.
    pub finished: Option<Outcome>,
    /// The last step begun.
    pub last_begun: Option<usize>,
    /// It ended with work left for `--resume`.
    pub resumable: bool,
    /// The reverse cutover was to follow (a failed health check).
    pub reverse_next: bool,
    /// The last progress line of the step begun last, while it has not ended (what a long
    /// wait, such as the adaptive gate's, says it waits for).
    pub waiting: Option<String>,
}

impl Progress {
    /// Reads `records` (one run's).
    pub fn of(records: &[Record]) -> Progress {
        let mut p = Progress::default();
        for r in records {
            match &r.entry {
                Entry::StepBegin { step, .. } => {
                    p.begun.insert(*step);
                    p.last_begun = Some(*step);
                    p.waiting = None;
                }
                Entry::StepDone { step, .. } => {
                    p.done.insert(*step);
                    p.waiting = None;
                }
                Entry::Progress { text } => p.waiting = Some(text.clone()),
                Entry::StepFailed { .. } => p.waiting = None,
                Entry::PointOfNoReturn => p.past_point_of_no_return = true,
                Entry::RunFinished {
                    outcome,
                    resumable,
                    reverse_next,
                    ..
                } => {
                    p.finished = Some(*outcome);
                    p.resumable = *resumable;
                    p.reverse_next = *reverse_next;
                }
                Entry::Resumed { .. } => {
                    p.finished = None;
                    p.resumable = false;
                    p.reverse_next = false;
                }
                _ => {}
            }
        }
        p
    }
}

/// The records of the run before run `run` in `journal`.
pub(super) fn run_before(journal: &[serde_json::Value], run: &str) -> Vec<Record> {
    let mut records = parse(journal);
    let Some(first) = records.iter().position(|r| r.run == run) else {
        return Vec::new();
    };
    records.truncate(first);
    last_run_of(records)
}

/// What each DNS record served before `records`' run switched it (from its switch steps).
pub(super) fn dns_before(records: &[Record], steps: &[Step]) -> HashMap<usize, Vec<String>> {
    let mut out = HashMap::new();
    for r in records {
        if let Entry::StepDone {
            step,
            summary,
            detail,
            ..
        } = &r.entry
            && let Some(kind @ Kind::DnsSwitch(i)) = steps.get(*step).map(|s| s.kind)
            && let super::actions::Detail::DnsSwitched(report) =
                super::actions::Detail::read(kind, summary, detail)
            && let Some(previous) = report.previous
        {
            out.insert(i, previous.values);
        }
    }
    out
}
