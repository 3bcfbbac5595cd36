//! The ordered steps of a run, derived from a plan (DESIGN §3). `plan check` prints them; the
//! sequencer will execute them in this order.

use serde::Serialize;

use crate::plan::{Check, HookPoint, Plan, RunOn};

/// The phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
    /// Writes fenced on every source and the targets caught up exactly.
    Fence,
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
            Phase::Promote => "promote",
            Phase::Switch => "switch",
            Phase::Verify => "verify",
            Phase::Report => "report",
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The phase it belongs to.
    pub phase: Phase,
    /// What it acts on, e.g. `postgres forgejo-db`.
    pub component: String,
    /// What it does.
    pub action: String,
    /// After this step, a rollback is no longer a plain "unfence the source".
    pub point_of_no_return: bool,
}

fn step(phase: Phase, component: impl Into<String>, action: impl Into<String>) -> Step {
    Step {
        phase,
        component: component.into(),
        action: action.into(),
        point_of_no_return: false,
    }
}

fn hooks_at(plan: &Plan, point: HookPoint, phase: Phase, out: &mut Vec<Step>) {
    for hook in plan.hooks.iter().filter(|h| h.at == point) {
        let host = host_label(plan, hook.on);
        out.push(step(
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

/// The steps a run of `plan` performs, in order.
pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut out = Vec::new();
    let (src, dst) = match &plan.hosts {
        Some(h) => (h.source.ssh.clone(), h.target.ssh.clone()),
        None => ("source".to_owned(), "target".to_owned()),
    };

    for p in &plan.postgres {
        out.push(step(
            Phase::Preflight,
            format!("postgres {}", p.name),
            format!(
                "check wal_level, slots, senders, privileges, replica identities, prepared and long transactions, versions and extensions on {}:{}/{} -> {}:{}/{}",
                p.source.host, p.source.port, p.source.dbname, p.target.host, p.target.port, p.target.dbname
            ),
        ));
    }
    for m in &plan.mysql {
        out.push(step(
            Phase::Preflight,
            format!("mysql {}", m.name),
            format!(
                "check binlog (ROW, FULL image), server ids, GTID mode, grants and primary keys on {}:{} -> {}:{} for {}",
                m.source.host, m.source.port, m.target.host, m.target.port, m.databases.join(", ")
            ),
        ));
    }
    for f in &plan.files {
        out.push(step(
            Phase::Preflight,
            format!("files {}", f.name),
            format!(
                "check ssh and rsync on {src} and {dst}, and space for {} on the target",
                f.target_path.display()
            ),
        ));
    }
    for d in &plan.dns {
        out.push(step(
            Phase::Preflight,
            format!("dns {}", d.name),
            format!(
                "check {} credentials and that the record exists",
                d.provider.kind().as_str()
            ),
        ));
    }
    for d in &plan.dns {
        out.push(step(
            Phase::DnsReadiness,
            format!("dns {}", d.name),
            format!(
                "refuse to continue unless TTL {}s has been served by every authoritative server for at least the old TTL (override: --force)",
                d.cutover_ttl
            ),
        ));
    }

    for f in &plan.files {
        out.push(step(
            Phase::WarmSync,
            format!("files {}", f.name),
            format!(
                "rsync {src}:{} -> {dst}:{} while the service runs{}",
                f.source_path.display(),
                f.target_path.display(),
                if f.delete { " (--delete)" } else { "" }
            ),
        ));
    }
    for p in &plan.postgres {
        out.push(step(
            Phase::WarmSync,
            format!("postgres {}", p.name),
            format!(
                "{}publish {} and subscribe on the target; wait for every table's initial copy and lag below {} bytes",
                if p.copy_schema { "copy the schema with pg_dump --schema-only, " } else { "" },
                if p.tables.is_empty() { "all tables".to_owned() } else { p.tables.join(", ") },
                p.max_lag_bytes
            ),
        ));
    }
    for m in &plan.mysql {
        out.push(step(
            Phase::WarmSync,
            format!("mysql {}", m.name),
            format!(
                "stream a consistent snapshot into the target, replicate from its coordinates; wait for heartbeat lag below {}",
                humantime::format_duration(m.max_lag)
            ),
        ));
    }

    hooks_at(plan, HookPoint::WindowOpen, Phase::WindowOpen, &mut out);
    for f in &plan.files {
        out.push(step(
            Phase::WindowOpen,
            format!("files {}", f.name),
            "final rsync pass (only what changed since the warm pass)",
        ));
    }

    for p in &plan.postgres {
        out.push(step(
            Phase::Fence,
            format!("postgres {}", p.name),
            format!(
                "fence roles {} on the source (no new logins, sessions terminated{}); commit a marker and wait up to {} until the target has it and confirmed_flush_lsn >= fence LSN; copy sequence values",
                p.app_roles.join(", "),
                if p.drain.is_zero() { String::new() } else { format!(" after {} drain", humantime::format_duration(p.drain)) },
                humantime::format_duration(p.catchup_timeout)
            ),
        ));
    }
    for m in &plan.mysql {
        out.push(step(
            Phase::Fence,
            format!("mysql {}", m.name),
            format!(
                "make the source read-only, kill sessions of {}; read its GTID/position and wait up to {} until the target has executed it",
                m.app_users.join(", "),
                humantime::format_duration(m.catchup_timeout)
            ),
        ));
    }

    let first_promote = out.len();
    for p in &plan.postgres {
        out.push(step(
            Phase::Promote,
            format!("postgres {}", p.name),
            format!(
                "{}drop the subscription, let app roles write on the target",
                if p.reverse_replication {
                    "set up reverse replication (target -> source), "
                } else {
                    ""
                }
            ),
        ));
    }
    for m in &plan.mysql {
        out.push(step(
            Phase::Promote,
            format!("mysql {}", m.name),
            format!(
                "stop and reset the replica, make the target writable{}",
                if m.reverse_replication {
                    ", make the old source a replica of it"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some(s) = out.get_mut(first_promote) {
        s.point_of_no_return = true;
    }
    hooks_at(plan, HookPoint::AfterPromote, Phase::Promote, &mut out);

    for d in &plan.dns {
        out.push(step(
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
    hooks_at(plan, HookPoint::AfterSwitch, Phase::Switch, &mut out);

    for c in &plan.checks {
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
        out.push(step(Phase::Verify, format!("check {}", c.name()), what));
    }
    for d in &plan.dns {
        out.push(step(
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
        Phase::Report,
        "run",
        "write per-step timings, the measured write-unavailability and rows verified",
    ));
    out
}

/// What happens when a step fails before the point of no return.
pub fn rollback_summary(plan: &Plan) -> String {
    let mut parts = Vec::new();
    if !plan.postgres.is_empty() || !plan.mysql.is_empty() {
        parts.push("unfence every source so it takes writes again");
    }
    if !plan.dns.is_empty() {
        parts.push("restore the DNS records");
    }
    if plan.hooks.iter().any(|h| h.at == HookPoint::OnRollback) {
        parts.push("run the on-rollback hooks");
    }
    if parts.is_empty() {
        "nothing to undo: the source was never changed".to_owned()
    } else {
        parts.join(", ")
    }
}
