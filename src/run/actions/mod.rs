//! What each step of a run does, one file per component. Every action takes the plan and what
//! it acts on, does its work, and returns the words and figures its journal record keeps; the
//! runner decides the order, the batching, the journal and what a failure means.

pub(super) mod db;
pub(super) mod dns;
pub(super) mod files;
pub(super) mod hooks;
pub(super) mod proxy;

/// A step's summary (for the journal and the progress lines) and its typed result.
pub(super) type Done = (String, Detail);

/// Why a step failed: the component's own error, kept typed (a database pair's
/// [`DbError`](crate::engine::DbError) with its server and context), or cutover's own words
/// for what it refuses (a preflight's findings, replication not ready in time, a hook or a
/// check that failed, a record served nowhere in time).
#[derive(Debug, thiserror::Error)]
pub(in crate::run) enum StepError {
    /// A database pair's phase.
    #[error(transparent)]
    Db(#[from] crate::engine::DbError),
    /// A DNS record's provider or servers.
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    /// A file tree's pass.
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
    /// A proxy route.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    /// The state directory (the journal, a record's saved state).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A step's result that could not be written down.
    #[error("the step's result could not be recorded: {0}")]
    Record(#[from] serde_json::Error),
    /// What cutover refuses, in its own words.
    #[error("{0}")]
    Refused(String),
}

impl From<String> for StepError {
    fn from(words: String) -> StepError {
        StepError::Refused(words)
    }
}

impl From<&str> for StepError {
    fn from(words: &str) -> StepError {
        StepError::Refused(words.to_owned())
    }
}

/// What a step did, typed: the runner's decisions (writes lost, a hook's allowed failure,
/// files not carried) and the report's figures read these fields, which the compiler checks.
/// The journal keeps each as its JSON record (the same shape journals on disk already have),
/// and [`Detail::read`] gives it back typed.
#[derive(Debug, Clone)]
pub(in crate::run) enum Detail {
    /// Nothing beyond the summary.
    None,
    /// A pair's gate that waited for its predicted window to fit the budget.
    Gated(crate::engine::gate::Waited),
    /// A pair's promotion.
    Promoted(crate::engine::Promoted),
    /// What followed a pair's promotion (the old primary's audit among it).
    Finished(Box<crate::engine::Finished>),
    /// A DNS record switched (or set back): what it held before, what it holds now.
    DnsSwitched(crate::dns::update::UpdateReport),
    /// Every authoritative server serves a record.
    DnsWaited(DnsWaited),
    /// A proxy route switched (or set back), read back from the proxy.
    ProxySwitched(crate::proxy::Switched),
    /// A hook ran.
    Hook(HookRan),
    /// The run's wrap-up.
    Report(WrapUp),
    /// A component's own record, kept for the report as it is (files passes, DNS switches,
    /// health checks).
    Record(serde_json::Value),
}

/// A DNS record served everywhere, and how long that took.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(in crate::run) struct DnsWaited {
    /// The record's label.
    pub record: String,
    /// Milliseconds from the switch until every authoritative server served it.
    pub ms: f64,
}

/// A hook's run, and the failure its plan allows (`None`: it exited 0).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(in crate::run) struct HookRan {
    /// Exit code (`None`: killed or timed out).
    pub code: Option<i32>,
    /// The end of its output.
    #[serde(default)]
    pub output: String,
    /// How long it ran.
    #[serde(default)]
    pub ms: f64,
    /// The failure the plan allows, in words; journals before this field say it only in the
    /// step's summary (see [`Detail::read`]).
    #[serde(default)]
    pub allowed_failure: Option<String>,
}

/// The run's wrap-up: file trees whose changes after the final pass were not carried.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(in crate::run) struct WrapUp {
    /// Per tree, the paths changed after its final pass.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub files_after_final: std::collections::BTreeMap<String, crate::files::changelog::AfterFinal>,
}

impl Detail {
    /// A component's own record, as JSON (an error, never a silent `null`, when it cannot be).
    pub fn record(value: &impl serde::Serialize) -> Result<Detail, StepError> {
        Ok(Detail::Record(serde_json::to_value(value)?))
    }

    /// The JSON record the journal keeps; a value that cannot be written is an error, never
    /// a silent `null`.
    pub fn to_journal(&self) -> Result<serde_json::Value, StepError> {
        let value = match self {
            Detail::None => Ok(serde_json::Value::Null),
            Detail::Gated(g) => serde_json::to_value(g),
            Detail::Promoted(p) => serde_json::to_value(p),
            Detail::Finished(f) => serde_json::to_value(f),
            Detail::DnsSwitched(r) => serde_json::to_value(r),
            Detail::DnsWaited(d) => serde_json::to_value(d),
            Detail::ProxySwitched(p) => serde_json::to_value(p),
            Detail::Hook(h) => serde_json::to_value(h),
            Detail::Report(w) if w.files_after_final.is_empty() => Ok(serde_json::Value::Null),
            Detail::Report(w) => serde_json::to_value(w),
            Detail::Record(v) => Ok(v.clone()),
        };
        Ok(value?)
    }

    /// A journalled record of a step of `kind`, typed again (`summary`: the step's words, for
    /// journals written before a field existed). A record that does not parse is kept as is.
    pub fn read(kind: crate::run::steps::Kind, summary: &str, value: &serde_json::Value) -> Detail {
        use crate::run::steps::Kind;
        fn typed<T: serde::de::DeserializeOwned>(
            value: &serde_json::Value,
            wrap: impl FnOnce(T) -> Detail,
        ) -> Detail {
            match serde_json::from_value::<T>(value.clone()) {
                Ok(t) => wrap(t),
                Err(_) => Detail::Record(value.clone()),
            }
        }
        if value.is_null() && !matches!(kind, Kind::Report) {
            return Detail::None;
        }
        match kind {
            Kind::Gate(_) => typed(value, Detail::Gated),
            Kind::Promote(_) => typed(value, Detail::Promoted),
            Kind::Finish(_) => typed(value, |f| Detail::Finished(Box::new(f))),
            Kind::DnsWait(_) => typed(value, Detail::DnsWaited),
            Kind::DnsSwitch(_) | Kind::DnsRestore(_) => typed(value, Detail::DnsSwitched),
            Kind::ProxySwitch(_) | Kind::ProxyRestore(_) => typed(value, Detail::ProxySwitched),
            Kind::Report if value.is_null() => Detail::Report(WrapUp::default()),
            Kind::Report => typed(value, Detail::Report),
            Kind::Hook(_) => typed(value, |mut h: HookRan| {
                if h.allowed_failure.is_none() && summary.starts_with("FAILED") {
                    h.allowed_failure = Some(summary.to_owned());
                }
                Detail::Hook(h)
            }),
            _ => Detail::Record(value.clone()),
        }
    }
}

#[cfg(test)]
mod detail_tests {
    use super::*;
    use crate::run::steps::{Db, Kind};
    use serde_json::json;

    #[test]
    fn journals_on_disk_read_back_typed_and_new_records_round_trip() {
        // A finish record as journals before `links` wrote it.
        let old = json!({ "old_primary_clean": false, "lost": "3 rows", "warnings": ["w"], "detail": {} });
        match Detail::read(
            Kind::Finish(Db::of("postgres", 0).unwrap()),
            "WRITES LOST",
            &old,
        ) {
            Detail::Finished(f) => {
                assert_eq!(f.old_primary_clean, Some(false));
                assert_eq!(f.warnings, ["w"]);
                assert!(f.links.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // A hook record before `allowed_failure`: its summary said it.
        let hook = json!({ "code": 3, "output": "boom", "ms": 12.0 });
        match Detail::read(Kind::Hook(0), "FAILED, allowed: exit 3", &hook) {
            Detail::Hook(h) => assert_eq!(
                h.allowed_failure.as_deref(),
                Some("FAILED, allowed: exit 3")
            ),
            other => panic!("{other:?}"),
        }
        match Detail::read(Kind::Hook(0), "exited 0 in 12 ms", &json!({ "code": 0 })) {
            Detail::Hook(h) => assert!(h.allowed_failure.is_none()),
            other => panic!("{other:?}"),
        }
        // What the runner writes now reads back the same.
        let waited = Detail::DnsWaited(DnsWaited {
            record: "app.example.com A".into(),
            ms: 812.5,
        });
        match Detail::read(Kind::DnsWait(0), "", &waited.to_journal().unwrap()) {
            Detail::DnsWaited(d) => {
                assert_eq!((d.record.as_str(), d.ms), ("app.example.com A", 812.5))
            }
            other => panic!("{other:?}"),
        }
        let promoted = Detail::Promoted(crate::engine::Promoted {
            write_unavailable_ms: Some(41.0),
            position: None,
        });
        match Detail::read(
            Kind::Promote(Db::of("mysql", 0).unwrap()),
            "",
            &promoted.to_journal().unwrap(),
        ) {
            Detail::Promoted(p) => assert_eq!(p.write_unavailable_ms, Some(41.0)),
            other => panic!("{other:?}"),
        }
        // A DNS switch as the journal keeps it: what the record held before comes back typed
        // (a reverse cutover sets it back from this).
        let switched = json!({
            "record": "app.example.com A",
            "previous": { "name": "app.example.com", "record_type": "A", "ttl": 60, "values": ["192.0.2.1"] },
            "current": { "name": "app.example.com", "record_type": "A", "ttl": 60, "values": ["192.0.2.2"] },
            "forced": null
        });
        match Detail::read(Kind::DnsSwitch(0), "192.0.2.1 -> 192.0.2.2", &switched) {
            Detail::DnsSwitched(r) => {
                assert_eq!(
                    r.previous.map(|p| p.values),
                    Some(vec!["192.0.2.1".to_owned()])
                );
            }
            other => panic!("{other:?}"),
        }
        // An empty wrap-up is journalled as null and read as an empty one.
        let empty = Detail::Report(WrapUp::default()).to_journal().unwrap();
        assert!(empty.is_null());
        assert!(
            matches!(Detail::read(Kind::Report, "", &empty), Detail::Report(w) if w.files_after_final.is_empty())
        );
        // A record that does not parse is kept as it is, never taken for a clean one.
        let odd = json!({ "old_primary_clean": "maybe" });
        assert!(matches!(
            Detail::read(Kind::Finish(Db::of("postgres", 0).unwrap()), "", &odd),
            Detail::Record(_)
        ));
    }
}
