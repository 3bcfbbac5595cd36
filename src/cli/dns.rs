//! `cutover dns ...`: prints what the DNS module did; exit 1 when a record is not done.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use super::plan::load_or_report;
use super::{DnsArgs, DnsCommand, EXIT_FAILED, EXIT_INVALID, EXIT_OK, Output, runtime};
use crate::dns::propagation::{self, Outcome, Row};
use crate::dns::state::Records;
use crate::dns::ttl::{self, LowerOptions, LowerReport, RestoreReport, StatusReport};
use crate::dns::update::{self, UpdateReport};
use crate::dns::{self as dnsmod, Discovery, DnsError, Target};
use crate::plan::Plan;

/// Runs one `dns` subcommand.
pub fn run(cmd: DnsCommand) -> u8 {
    let args = cmd.common();
    let plan = match load_or_report(&args.plan, args.output) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let selected = dnsmod::select(&plan, args.record.as_deref());
    if selected.is_empty() {
        match &args.record {
            Some(name) => errln!("{}: no [[dns]] record named `{name}`", args.plan.display()),
            None => errln!("{}: the plan has no [[dns]] records", args.plan.display()),
        }
        return EXIT_INVALID;
    }
    let discovery = match discovery(args) {
        Ok(d) => d,
        Err(message) => {
            errln!("{message}");
            return EXIT_INVALID;
        }
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let action = match &cmd {
        DnsCommand::LowerTtl(_) => dnsmod::Action::LowerTtl,
        DnsCommand::RestoreTtl(_) => dnsmod::Action::RestoreTtl,
        DnsCommand::Update(_) => dnsmod::Action::Update,
        DnsCommand::Status(_) => dnsmod::Action::Status,
        DnsCommand::Wait(_) => dnsmod::Action::Wait,
    };
    let output = args.output;
    let plan = &plan;
    let plan_file = args.plan.clone();
    rt.block_on(async move {
        // What may change a record holds the leases the library's rule names.
        let guard = match action.changes() {
            Some(purpose) => match crate::run::single::ChangeGuard::take(plan, purpose).await {
                Ok(g) => Some(g),
                Err(e) => {
                    errln!("{}: {e}", plan_file.display());
                    return EXIT_FAILED;
                }
            },
            None => None,
        };
        let code = dns_step(plan, &cmd, selected, &discovery, output).await;
        if let Some(guard) = guard {
            guard.release().await;
        }
        code
    })
}

async fn dns_step(
    plan: &crate::plan::Plan,
    cmd: &DnsCommand,
    selected: Vec<(usize, &crate::plan::DnsRecord)>,
    discovery: &crate::dns::Discovery,
    output: Output,
) -> u8 {
    {
        let mut targets = Vec::new();
        for (index, record) in selected {
            match Target::resolve(index, record, discovery).await {
                Ok(target) => targets.push(target),
                Err(e) => return fail(output, &e),
            }
        }
        let states = Records::new(&plan.migration.state_dir);
        match &cmd {
            DnsCommand::LowerTtl(a) => lower(&targets, &states, a.clamp, a.timeout, output).await,
            DnsCommand::RestoreTtl(_) => restore(&targets, &states, output).await,
            DnsCommand::Status(_) => status(&targets, &states, output).await,
            DnsCommand::Update(a) => match update::update_all(&targets, &states, a.force).await {
                Ok(reports) => {
                    print_all(output, &reports, print_update);
                    EXIT_OK
                }
                Err(e) => fail(output, &e),
            },
            DnsCommand::Wait(a) => wait(plan, &targets, a.timeout, a.poll, output).await,
        }
    }
}

fn discovery(args: &DnsArgs) -> Result<Discovery, String> {
    match &args.resolver {
        None => Ok(Discovery::system()),
        Some(text) => cutover_providers::wire::server_address(text)
            .map(|addr| Discovery::via(addr, args.ns_port))
            .ok_or_else(|| format!("--resolver `{text}` is not an address or address:port")),
    }
}

fn fail(output: Output, e: &DnsError) -> u8 {
    // The library says what to do; the commands that do it are this CLI's to name.
    let advice = match e {
        DnsError::NotSafe { .. } => {
            "\n  `cutover dns lower-ttl PLAN` lowers the TTL and prints the safe time; `--force` switches now anyway (logged)"
        }
        _ => "",
    };
    match output {
        Output::Human => errln!("error: {e}{advice}"),
        Output::Json => outln!(
            "{}",
            json!({ "ok": false, "error": format!("{e}{advice}") })
        ),
    }
    EXIT_FAILED
}

fn print_all<T: Serialize>(output: Output, reports: &[T], print: fn(&T)) {
    match output {
        Output::Human => reports.iter().for_each(print),
        Output::Json => outln!("{}", json!({ "ok": true, "records": reports })),
    }
}

fn when(t: SystemTime) -> String {
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(t);
    match t.duration_since(now) {
        Ok(ahead) => format!(
            "{stamp} (in {})",
            humantime::format_duration(Duration::from_secs(ahead.as_secs() + 1))
        ),
        Err(_) => format!("{stamp} (passed)"),
    }
}

async fn lower(
    targets: &[Target<'_>],
    states: &Records,
    clamp: bool,
    timeout: Option<Duration>,
    output: Output,
) -> u8 {
    let mut reports = Vec::new();
    let mut code = EXIT_OK;
    for target in targets {
        let options = LowerOptions {
            clamp,
            timeout: timeout.unwrap_or(target.plan.propagation_timeout),
            poll: Duration::from_millis(500),
        };
        match ttl::lower(target, states, options).await {
            Ok(report) => {
                if !report.complete() {
                    code = EXIT_FAILED;
                }
                reports.push(report);
            }
            Err(e) => return fail(output, &e),
        }
    }
    print_all(output, &reports, print_lower);
    code
}

fn print_lower(r: &LowerReport) {
    let s = &r.state;
    let action = if r.changed { "lowered" } else { "already at" };
    outln!(
        "{}: TTL {action} {} (saved old TTL {}{})",
        r.record,
        s.lowered_ttl,
        s.old_ttl,
        if r.clamped {
            "; clamped to the provider's minimum"
        } else {
            ""
        }
    );
    for view in &r.servers {
        outln!(
            "  {:<40} {}",
            view.server.to_string(),
            view.served.describe()
        );
    }
    match (s.served_everywhere_at, r.safe_at) {
        (Some(served), Some(safe)) => {
            outln!(
                "  every authoritative server serves TTL {} since {}",
                s.lowered_ttl,
                humantime::format_rfc3339_seconds(served)
            );
            outln!("  earliest safe cutover: {}", when(safe));
        }
        _ => outln!(
            "  not every server serves TTL {} yet; run lower-ttl again later (the old TTL stays saved)",
            s.lowered_ttl
        ),
    }
}

async fn restore(targets: &[Target<'_>], states: &Records, output: Output) -> u8 {
    let mut reports = Vec::new();
    for target in targets {
        match ttl::restore(target, states).await {
            Ok(report) => reports.push(report),
            Err(e) => return fail(output, &e),
        }
    }
    print_all(output, &reports, print_restore);
    EXIT_OK
}

fn print_restore(r: &RestoreReport) {
    match r.restored_ttl {
        Some(ttl) => outln!(
            "{}: TTL restored to {ttl} ({})",
            r.record,
            r.values.join(", ")
        ),
        None => outln!(
            "{}: no saved TTL (lower-ttl never ran or restore-ttl already did)",
            r.record
        ),
    }
}

async fn status(targets: &[Target<'_>], states: &Records, output: Output) -> u8 {
    let mut reports = Vec::new();
    for target in targets {
        match ttl::status(target, states).await {
            Ok(report) => reports.push(report),
            Err(e) => return fail(output, &e),
        }
    }
    print_all(output, &reports, print_status);
    EXIT_OK
}

fn print_status(r: &StatusReport) {
    outln!("{} (zone {})", r.record, r.zone);
    match &r.provider {
        Some(set) => outln!("  provider: {} ttl {}", set.values.join(","), set.ttl),
        None => outln!("  provider: no such record"),
    }
    outln!("  plan switches to: {}", r.wanted.join(","));
    for (view, (_, serial)) in r.servers.iter().zip(&r.serials) {
        let serial = match serial {
            Ok(n) => format!("serial {n}"),
            Err(e) => format!("serial ? ({e})"),
        };
        outln!(
            "  {:<40} {:<40} {serial}",
            view.server.to_string(),
            view.served.describe()
        );
    }
    match &r.state {
        Some(s) => {
            outln!(
                "  saved old TTL {} (values {}), lowered to {}",
                s.old_ttl,
                s.old_values.join(","),
                s.lowered_ttl
            );
            match r.safe_at {
                Some(safe) => outln!("  earliest safe cutover: {}", when(safe)),
                None => outln!("  lowered TTL not yet served everywhere: run lower-ttl again"),
            }
        }
        None => outln!("  TTL not lowered (run `cutover dns lower-ttl`)"),
    }
}

fn print_update(r: &UpdateReport) {
    let before = r.previous.as_ref().map_or("nothing".to_owned(), |p| {
        format!("{} ttl {}", p.values.join(","), p.ttl)
    });
    outln!(
        "{}: {before} -> {} ttl {}{}",
        r.record,
        r.current.values.join(","),
        r.current.ttl,
        if r.forced.is_some() {
            " (forced before the safe time; logged)"
        } else {
            ""
        }
    );
}

async fn wait(
    plan: &Plan,
    targets: &[Target<'_>],
    timeout: Option<Duration>,
    poll: Duration,
    output: Output,
) -> u8 {
    let timeout = timeout.unwrap_or_else(|| {
        targets
            .iter()
            .map(|t| t.plan.propagation_timeout)
            .max()
            .unwrap_or(Duration::from_secs(600))
    });
    let before: Vec<_> = futures::future::join_all(targets.iter().map(ttl::serials)).await;
    let mut shown = usize::MAX;
    let outcome = propagation::wait(targets, timeout, poll, |rows, elapsed| {
        let done = rows.iter().filter(|r| r.done()).count();
        if output == Output::Human && done != shown {
            shown = done;
            errln!(
                "after {:.1} s: {done}/{} serve the new values",
                elapsed.as_secs_f64(),
                rows.len()
            );
            if rows.len() <= 40 {
                print_rows(rows);
            }
        }
    })
    .await;
    let after: Vec<_> = futures::future::join_all(targets.iter().map(ttl::serials)).await;
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "ok": outcome.complete,
                "migration": plan.migration.name,
                "elapsed_ms": outcome.elapsed.as_millis() as u64,
                "rows": outcome.rows,
                "serials_before": serials_json(targets, &before),
                "serials_after": serials_json(targets, &after),
            })
        ),
        Output::Human => print_outcome(&outcome, targets, &after),
    }
    if outcome.complete {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

type Serials = Vec<(crate::dns::AuthServer, Result<u32, String>)>;

fn serials_json(targets: &[Target<'_>], serials: &[Serials]) -> serde_json::Value {
    json!(
        targets
            .iter()
            .zip(serials)
            .map(|(t, s)| json!({
                "zone": t.zone,
                "servers": s.iter().map(|(server, serial)| json!({
                    "server": server.to_string(),
                    "serial": serial.as_ref().ok(),
                    "error": serial.as_ref().err(),
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()
    )
}

fn print_rows(rows: &[Row]) {
    for row in rows {
        let state = match (row.done_after, &row.last) {
            (Some(after), _) => format!("new value after {:.1} s", after.as_secs_f64()),
            (None, Some(served)) => served.describe(),
            (None, None) => "not asked yet".to_owned(),
        };
        errln!("  {:<28} {:<40} {state}", row.record, row.server);
    }
}

fn print_outcome(outcome: &Outcome, targets: &[Target<'_>], serials: &[Serials]) {
    if outcome.complete {
        outln!(
            "every server serves the new values ({} server-record pairs, {:.2} s)",
            outcome.rows.len(),
            outcome.elapsed.as_secs_f64()
        );
    } else {
        outln!(
            "timed out after {:.0} s; still serving something else:",
            outcome.elapsed.as_secs_f64()
        );
        for row in outcome.pending() {
            let served = row
                .last
                .as_ref()
                .map_or("not asked".to_owned(), |s| s.describe());
            outln!(
                "  {} at {}: {served} (want {})",
                row.record,
                row.server,
                row.wanted.join(",")
            );
        }
    }
    for (target, serials) in targets.iter().zip(serials) {
        let known: Vec<u32> = serials
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().copied())
            .collect();
        if let Some(max) = known.iter().max()
            && known.iter().any(|s| s != max)
        {
            for (server, serial) in serials {
                if let Ok(s) = serial
                    && s != max
                {
                    outln!(
                        "  zone {}: {server} has SOA serial {s}, behind {max}",
                        target.zone
                    );
                }
            }
        }
    }
}
