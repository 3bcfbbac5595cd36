//! `cutover pg ...`: PostgreSQL pairs, one after another; prints, never decides.

use super::pairs::{Printed, run_pairs};
use super::{DbCommand, report};
use crate::postgres::{Pair, start, status};

/// Runs one `pg` subcommand for the selected pairs.
pub fn run(cmd: DbCommand) -> u8 {
    if let DbCommand::Resync(_) = cmd {
        // Refused before anything is read or leased: there is nothing to repair this way.
        errln!("{PG_RESYNC}");
        return super::EXIT_INVALID;
    }
    run_pairs(&cmd, |_: Pair, ctx| async move {
        report(ctx.output, Err::<(), _>(PG_RESYNC), |_| {})
    })
}

/// Why `pg resync` does not exist as a repair.
const PG_RESYNC: &str = "cutover pg resync: nothing to do for PostgreSQL: its apply worker stops on a column the target lacks (and goes on once it exists) instead of dropping the values, and a table whose definition changed during the sync is compared row by row inside the cutover window (`verify_in_window`); to copy a table again, clean the pair up and start it";

impl Printed for Pair {
    fn print_started(report: &start::StartReport) {
        print_start(report)
    }

    fn print_status(status: &status::Status) {
        print_status(status)
    }
}

fn print_start(r: &start::StartReport) {
    outln!("pair {}: replication running ({})", r.pair, r.name);
    if r.schema_copied {
        outln!("  schema copied into the target");
    }
    if !r.identity_full.is_empty() {
        outln!("  REPLICA IDENTITY FULL on: {}", r.identity_full.join(", "));
    }
    outln!(
        "  publication {} ({} tables), subscription {}",
        if r.publication_created {
            "created"
        } else {
            "refreshed"
        },
        r.tables,
        if r.subscription_created {
            "created"
        } else {
            "already there, refreshed"
        },
    );
    outln!(
        "  blocked on the target until promotion: {}",
        r.target_roles_blocked.join(", ")
    );
    outln!("  follow the initial copy and lag with `cutover pg status`");
}

fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn print_status(s: &status::Status) {
    let ready = s.tables.iter().filter(|t| t.state == "ready").count();
    outln!(
        "pair {}: subscription {}, slot {}",
        s.pair,
        match (s.subscribed, s.enabled, s.apply_running) {
            (false, _, _) => "absent",
            (true, false, _) => "disabled",
            (true, true, false) => "enabled, apply worker NOT running",
            (true, true, true) => "running",
        },
        match (s.slot_exists, s.slot_active) {
            (false, _) => "absent",
            (true, false) => "inactive",
            (true, true) => "streaming",
        }
    );
    if let Some(lag) = s.lag_bytes {
        outln!(
            "  lag: {} / {}; WAL retained for the slot: {} ({})",
            bytes(lag),
            match s.lag_seconds {
                Some(seconds) => format!("{seconds:.3} s"),
                None => "unknown s (nothing applies it: replication is NOT running)".to_owned(),
            },
            bytes(s.wal_retained_bytes.unwrap_or(0)),
            s.slot_wal_status.as_deref().unwrap_or("?")
        );
        if !s.all_ready && !s.tables.is_empty() {
            outln!(
                "  (the initial copy is not finished: that lag covers the streamed changes only)"
            );
        }
    }
    if !s.tables.is_empty() {
        outln!("  initial copy: {ready}/{} tables ready", s.tables.len());
        for t in &s.tables {
            let progress = t
                .copy_bytes_processed
                .map(|b| format!(", {} copied so far", bytes(b)))
                .unwrap_or_default();
            outln!(
                "    {:<40} {:<8} {}{progress}",
                t.table,
                t.state,
                t.target_bytes.map(bytes).unwrap_or_default()
            );
        }
    }
    if !s.blocked_roles.source.is_empty() {
        outln!(
            "  fenced on the source: {}",
            s.fence_scope.source.join(", ")
        );
        if !s.blocked_roles.target.is_empty() {
            // Fenced on both sides: no server takes the app's writes.
            outln!(
                "  NO server accepts the app's writes: a cutover was interrupted inside its window.\n  fix: `cutover pg cutover --resume --pair {0} PLAN` rolls it back (add --continue to finish it); if it was part of a run, `cutover status PLAN` and `cutover run --resume PLAN`",
                s.pair
            );
        }
    }
    if !s.blocked_roles.target.is_empty() {
        outln!(
            "  blocked on the target until promotion: {}",
            s.fence_scope.target.join(", ")
        );
    }
    for d in &s.drift {
        outln!("  DRIFT (a cutover refuses until `pg start` runs again): {d}");
    }
    for w in &s.warnings {
        outln!("  warning: {w}");
    }
}
