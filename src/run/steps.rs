//! The ordered steps of a run, derived from a plan. Each step carries what the
//! sequencer executes ([`Kind`]) and the sentence `plan check` prints, so the two cannot drift.
//! The window's database steps come phase by phase across every pair: gate all, fence all,
//! catch up all, promote all, so one pair's failure before the promotions undoes every pair.

use serde::{Deserialize, Serialize};

pub use super::pairs::Db;
use crate::engine::Act;
use crate::plan::{Check, HookPoint, Plan, RunOn};

/// The phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every component checked; nothing changed.
    Preflight,
    /// Lowered DNS TTLs have been served for at least one old TTL.
    DnsReadiness,
    /// Data copied while the service keeps running.
    WarmSync,
    /// The service stops taking writes on the old host.
    WindowOpen,
    /// Writes fenced on every source.
    Fence,
    /// Every target has exactly what its fenced source committed.
    CatchUp,
    /// Targets promoted: the point of no return.
    Promote,
    /// Traffic pointed at the new host.
    Switch,
    /// The new host proved healthy.
    Verify,
    /// Timings and the measured write-unavailability.
    Report,
}

impl Phase {
    /// Short name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::DnsReadiness => "dns-readiness",
            Phase::WarmSync => "warm-sync",
            Phase::WindowOpen => "window-open",
            Phase::Fence => "fence",
            Phase::CatchUp => "catch-up",
            Phase::Promote => "promote",
            Phase::Switch => "switch",
            Phase::Verify => "verify",
            Phase::Report => "report",
        }
    }
}

/// What a step executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "target", rename_all = "kebab-case")]
pub enum Kind {
    /// Preflight of a database pair.
    PreflightDb(Db),
    /// Preflight of a `[[files]]` entry.
    PreflightFiles(usize),
    /// Preflight of a `[[dns]]` record (provider and servers resolved).
    PreflightDns(usize),
    /// Preflight of a `[[proxy]]` route (it points at the source, cutover may change it).
    PreflightProxy(usize),
    /// The record's lowered TTL has been served long enough.
    DnsReady(usize),
    /// A warm rsync pass.
    WarmFiles(usize),
    /// Replication started and caught up.
    StartDb(Db),
    /// A `[[hooks]]` entry.
    Hook(usize),
    /// The final rsync pass.
    FinalFiles(usize),
    /// The window's gate.
    Gate(Db),
    /// The fence.
    Fence(Db),
    /// Exact catch-up.
    CatchUp(Db),
    /// Promotion.
    Promote(Db),
    /// After the promotion: audit, reverse replication, tidying.
    Finish(Db),
    /// A proxy route pointed at the target, read back.
    ProxySwitch(usize),
    /// Record switched.
    DnsSwitch(usize),
    /// A `[[checks]]` entry.
    Check(usize),
    /// Every authoritative server serves the new record.
    DnsWait(usize),
    /// Reverse cutover: the old primary's permanent fence made liftable again.
    PrepareReverse(Db),
    /// Reverse cutover: the record set back to what it served before the forward run.
    DnsRestore(usize),
    /// Reverse cutover: the proxy route pointed at the source again, read back.
    ProxyRestore(usize),
    /// The report.
    Report,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What it executes.
    pub kind: Kind,
    /// The phase it belongs to.
    pub phase: Phase,
    /// What it acts on, e.g. `postgres forgejo-db`.
    pub component: String,
    /// What it does.
    pub action: String,
    /// After this step, a rollback is no longer a plain "unfence the source".
    pub point_of_no_return: bool,
}

fn step(kind: Kind, phase: Phase, component: impl Into<String>, action: impl Into<String>) -> Step {
    Step {
        kind,
        phase,
        component: component.into(),
        action: action.into(),
        point_of_no_return: false,
    }
}

fn hooks_at(plan: &Plan, point: HookPoint, phase: Phase, out: &mut Vec<Step>) {
    for (index, hook) in plan.hooks.iter().enumerate().filter(|(_, h)| h.at == point) {
        let host = host_label(plan, hook.on);
        out.push(step(
            Kind::Hook(index),
            phase,
            format!("hook {}", point.as_str()),
            format!(
                "run `{}` on {host} (timeout {}{})",
                hook.command.join(" "),
                humantime::format_duration(hook.timeout),
                if hook.allow_failure {
                    ", failure allowed"
                } else {
                    ""
                }
            ),
        ));
    }
}

fn host_label(plan: &Plan, on: RunOn) -> String {
    match (on, &plan.hosts) {
        (RunOn::Local, _) => "this machine".to_owned(),
        (RunOn::Source, Some(h)) => format!("source `{}`", h.source.ssh),
        (RunOn::Target, Some(h)) => format!("target `{}`", h.target.ssh),
        (on, None) => on.as_str().to_owned(),
    }
}

/// The database pairs of `plan`, engine by engine, with their component names.
pub fn databases(plan: &Plan) -> Vec<(Db, String)> {
    super::pairs::all(plan)
        .into_iter()
        .map(|(db, p)| (db, p.component()))
        .collect()
}

/// The steps a run of `plan` performs, in order.
pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut out = Vec::new();
    let (src, dst) = match &plan.hosts {
        Some(h) => (h.source.ssh.clone(), h.target.ssh.clone()),
        None => ("source".to_owned(), "target".to_owned()),
    };
    let dbs = super::pairs::all(plan);

    for (db, p) in &dbs {
        out.push(step(
            Kind::PreflightDb(*db),
            Phase::Preflight,
            p.component(),
            p.says(Act::Preflight),
        ));
    }
    for (i, f) in plan.files.iter().enumerate() {
        out.push(step(
            Kind::PreflightFiles(i),
            Phase::Preflight,
            format!("files {}", f.name),
            format!(
                "check ssh and rsync on {src} and {dst}, and space for {} on the target",
                f.target_path.display()
            ),
        ));
    }
    for (i, d) in plan.dns.iter().enumerate() {
        out.push(step(
            Kind::PreflightDns(i),
            Phase::Preflight,
            format!("dns {}", d.name),
            format!(
                "build the {} provider and find every authoritative server",
                d.provider.kind().as_str()
            ),
        ));
    }
    for (i, p) in plan.proxy.iter().enumerate() {
        out.push(step(
            Kind::PreflightProxy(i),
            Phase::Preflight,
            format!("proxy {}", p.name),
            format!(
                "read {} and check that it points at the source {}; ask the target {} directly",
                crate::proxy::adapter(p).describe(),
                p.source,
                p.target
            ),
        ));
    }
    for (i, d) in plan.dns.iter().enumerate() {
        out.push(step(
            Kind::DnsReady(i),
            Phase::DnsReadiness,
            format!("dns {}", d.name),
            format!(
                "refuse to continue unless TTL {}s has been served by every authoritative server for at least the old TTL (override: --force)",
                d.cutover_ttl
            ),
        ));
    }

    for (i, f) in plan.files.iter().enumerate() {
        out.push(step(
            Kind::WarmFiles(i),
            Phase::WarmSync,
            format!("files {}", f.name),
            format!(
                "rsync {src}:{} -> {dst}:{} while the service runs{}{}",
                f.source_path.display(),
                f.target_path.display(),
                if f.delete { " (--delete)" } else { "" },
                if f.change_log {
                    "; the change log on the source starts first"
                } else {
                    ""
                }
            ),
        ));
    }
    for (db, p) in &dbs {
        out.push(step(
            Kind::StartDb(*db),
            Phase::WarmSync,
            p.component(),
            p.says(Act::Start),
        ));
    }

    hooks_at(plan, HookPoint::WindowOpen, Phase::WindowOpen, &mut out);
    for (i, f) in plan.files.iter().enumerate() {
        out.push(step(
            Kind::FinalFiles(i),
            Phase::WindowOpen,
            format!("files {}", f.name),
            if f.change_log {
                "final rsync pass over the paths the change log recorded (a full pass, reported, if the log cannot be trusted)"
            } else {
                "final rsync pass over the whole tree"
            },
        ));
    }
    for (db, p) in &dbs {
        out.push(step(
            Kind::Gate(*db),
            Phase::WindowOpen,
            p.component(),
            "gate: replication running and close, every writer covered by the fence, no schema drift",
        ));
    }
    for (db, p) in &dbs {
        out.push(step(
            Kind::Fence(*db),
            Phase::Fence,
            p.component(),
            p.says(Act::Fence),
        ));
    }
    for (db, p) in &dbs {
        out.push(step(
            Kind::CatchUp(*db),
            Phase::CatchUp,
            p.component(),
            p.says(Act::CatchUp),
        ));
    }
    let first_promote = out.len();
    for (db, p) in &dbs {
        out.push(step(
            Kind::Promote(*db),
            Phase::Promote,
            p.component(),
            p.says(Act::Promote),
        ));
    }
    if let Some(s) = out.get_mut(first_promote) {
        s.point_of_no_return = true;
    }
    for (db, p) in &dbs {
        out.push(step(
            Kind::Finish(*db),
            Phase::Promote,
            p.component(),
            p.says(Act::Finish),
        ));
    }
    hooks_at(plan, HookPoint::AfterPromote, Phase::Promote, &mut out);

    // The proxy first unless a route says otherwise: its switch takes effect for every
    // client at once, DNS only as caches expire.
    let proxy_switches = |order: crate::plan::ProxyOrder, out: &mut Vec<Step>| {
        for (i, p) in plan
            .proxy
            .iter()
            .enumerate()
            .filter(|(_, p)| p.order == order)
        {
            out.push(step(
                Kind::ProxySwitch(i),
                Phase::Switch,
                format!("proxy {}", p.name),
                format!(
                    "point {} at the target {} (from {}) and read it back",
                    crate::proxy::adapter(p).describe(),
                    p.target,
                    p.source
                ),
            ));
        }
    };
    proxy_switches(crate::plan::ProxyOrder::BeforeDns, &mut out);
    for (i, d) in plan.dns.iter().enumerate() {
        out.push(step(
            Kind::DnsSwitch(i),
            Phase::Switch,
            format!("dns {}", d.name),
            format!(
                "set {} {} -> {} through {}",
                d.name,
                d.record_type.as_str(),
                d.values.join(", "),
                d.provider.kind().as_str()
            ),
        ));
    }
    proxy_switches(crate::plan::ProxyOrder::AfterDns, &mut out);
    hooks_at(plan, HookPoint::AfterSwitch, Phase::Switch, &mut out);

    for (i, c) in plan.checks.iter().enumerate() {
        let what = match c {
            Check::Http {
                url,
                expect_status,
                within,
                ..
            } => format!(
                "GET {url} until it answers {expect_status} (within {})",
                humantime::format_duration(*within)
            ),
            Check::Command {
                on,
                command,
                within,
                ..
            } => format!(
                "run `{}` on {} until it exits 0 (within {})",
                command.join(" "),
                host_label(plan, *on),
                humantime::format_duration(*within)
            ),
        };
        out.push(step(
            Kind::Check(i),
            Phase::Verify,
            format!("check {}", c.name()),
            what,
        ));
    }
    for (i, d) in plan.dns.iter().enumerate() {
        out.push(step(
            Kind::DnsWait(i),
            Phase::Verify,
            format!("dns {}", d.name),
            format!(
                "wait up to {} until every address of every authoritative server answers {}",
                humantime::format_duration(d.propagation_timeout),
                d.values.join(", ")
            ),
        ));
    }
    hooks_at(plan, HookPoint::AfterVerify, Phase::Verify, &mut out);
    out.push(step(
        Kind::Report,
        Phase::Report,
        "run",
        "write per-step timings, the measured write-unavailability per database and for the window, files and DNS figures",
    ));
    out
}

/// The steps of a reverse cutover (`run --rollback`) after a completed run: every pair's new
/// primary fenced, the old primary caught up through reverse replication and promoted back,
/// DNS restored, the on-rollback hooks.
pub fn reverse_steps(plan: &Plan) -> Vec<Step> {
    let dbs = databases(plan);
    let mut out = Vec::new();
    for (db, component) in &dbs {
        out.push(step(
            Kind::PrepareReverse(*db),
            Phase::Preflight,
            component.clone(),
            "make the old primary's permanent fence liftable again (it stays in force)",
        ));
    }
    for (db, component) in &dbs {
        out.push(step(
            Kind::Gate(*db),
            Phase::WindowOpen,
            component.clone(),
            "gate: reverse replication running and close, every writer on the new primary covered by the fence",
        ));
    }
    for (db, component) in &dbs {
        out.push(step(
            Kind::Fence(*db),
            Phase::Fence,
            component.clone(),
            "fence the app on the new primary",
        ));
    }
    for (db, component) in &dbs {
        out.push(step(
            Kind::CatchUp(*db),
            Phase::CatchUp,
            component.clone(),
            "wait until the old primary has exactly what the new one committed (reverse replication)",
        ));
    }
    let first = out.len();
    for (db, component) in &dbs {
        out.push(step(
            Kind::Promote(*db),
            Phase::Promote,
            component.clone(),
            "promote the old primary back",
        ));
    }
    if let Some(s) = out.get_mut(first) {
        s.point_of_no_return = true;
    }
    for (db, component) in &dbs {
        out.push(step(
            Kind::Finish(*db),
            Phase::Promote,
            component.clone(),
            "prove the new primary took no write after its fence, drop reverse replication, keep it fenced",
        ));
    }
    for (i, p) in plan.proxy.iter().enumerate() {
        out.push(step(
            Kind::ProxyRestore(i),
            Phase::Switch,
            format!("proxy {}", p.name),
            format!(
                "point {} back at the source {} and read it back",
                crate::proxy::adapter(p).describe(),
                p.source
            ),
        ));
    }
    for (i, d) in plan.dns.iter().enumerate() {
        out.push(step(
            Kind::DnsRestore(i),
            Phase::Switch,
            format!("dns {}", d.name),
            format!(
                "set {} {} back to what it served before the run",
                d.name,
                d.record_type.as_str()
            ),
        ));
    }
    hooks_at(plan, HookPoint::OnRollback, Phase::Switch, &mut out);
    out.push(step(
        Kind::Report,
        Phase::Report,
        "run",
        "write per-step timings and the measured write-unavailability of the reverse cutover",
    ));
    out
}

/// What happens when a step fails before the point of no return.
pub fn rollback_summary(plan: &Plan) -> String {
    let mut parts = Vec::new();
    if !super::pairs::all(plan).is_empty() {
        parts.push("unfence every source so it takes writes again");
    }
    // DNS is switched only after the point of no return: a rollback before it has no record
    // to restore.
    if plan.hooks.iter().any(|h| h.at == HookPoint::OnRollback) {
        parts.push("run the on-rollback hooks");
    }
    if parts.is_empty() {
        "nothing to undo: the source was never changed".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The steps of a run going `reverse` (a reverse cutover) or forward: the one place that
/// chooses between them.
pub fn steps_for(plan: &Plan, reverse: bool) -> Vec<Step> {
    if reverse {
        reverse_steps(plan)
    } else {
        steps(plan)
    }
}
