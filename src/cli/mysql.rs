//! `cutover mysql ...`: MySQL/MariaDB pairs, one after another; prints, never decides.

use super::pairs::{Printed, run_pairs};
use super::{DbCommand, report};
use crate::mysql::status::STATUS_LAG_LIMIT;
use crate::mysql::{Pair, resync, start, status};

/// Runs one `mysql` subcommand for the selected pairs.
pub fn run(cmd: DbCommand) -> u8 {
    run_pairs(&cmd, |pair: Pair, ctx| async move {
        report(
            ctx.output,
            resync::resync(&pair, &ctx.tables, &ctx.state_dir).await,
            print_resync,
        )
    })
}

impl Printed for Pair {
    fn print_started(report: &start::Started) {
        print_start(report)
    }

    fn print_status(status: &status::Status) {
        print_status(status)
    }
}

fn print_resync(r: &resync::Resynced) {
    for c in &r.copied {
        outln!(
            "pair {}: copied again: {} ({:.1} MB, consistent with the source at {}); the replica runs on from there ({:.1} s stopped)",
            r.pair,
            c.tables.join(", "),
            c.bytes as f64 / 1e6,
            c.position,
            c.seconds
        );
    }
    outln!("  `cutover mysql status` shows whether the schema still differs");
}

fn print_start(r: &start::Started) {
    if r.already_running {
        outln!(
            "pair {}: replication already running; nothing changed",
            r.pair
        );
        return;
    }
    outln!(
        "pair {}: replication running (by {})",
        r.pair,
        if r.gtid { "GTID" } else { "file/position" }
    );
    if let Some(s) = &r.snapshot {
        let c = &s.coordinates;
        outln!(
            "  snapshot streamed into the target: {:.1} MB in {:.1} s, from {}:{}{}",
            s.bytes as f64 / 1e6,
            s.seconds,
            c.file.as_deref().unwrap_or("?"),
            c.position.unwrap_or(0),
            c.gtid
                .as_deref()
                .map(|g| format!(" (GTID {g})"))
                .unwrap_or_default()
        );
    }
    outln!(
        "  replication user {} on the source; the target stays read-only until cutover",
        r.replication_user
    );
    outln!("  follow the lag with `cutover mysql status`");
}

fn print_status(s: &status::Status) {
    if !s.configured {
        outln!(
            "pair {}: the target has no replica configuration (run `cutover mysql start`)",
            s.pair
        );
        return;
    }
    outln!(
        "pair {}: IO thread {}, SQL thread {}",
        s.pair,
        s.io_running,
        s.sql_running
    );
    let heartbeat = match s.lag.replicated_after {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        None => format!("not applied within {} s", STATUS_LAG_LIMIT.as_secs()),
    };
    outln!(
        "  lag: heartbeat {heartbeat}; Seconds_Behind {}; {}",
        s.seconds_behind
            .map_or("NULL".to_owned(), |n| n.to_string()),
        if s.caught_up {
            "target has applied everything the source wrote"
        } else {
            "positions differ"
        }
    );
    outln!(
        "  source position {}\n  target applied  {}",
        s.source_position,
        s.target_position
    );
    if let Some(e) = &s.last_io_error {
        outln!("  IO thread error: {e}");
        if let Some(refusal) = crate::mysql::status::purged_binlog_refusal(e, &s.pair) {
            outln!("  {refusal}");
        } else if let Some(fix) = crate::mysql::tls::link_error_fix(e) {
            outln!("  fix: {fix}");
        }
    }
    if let Some(e) = &s.last_sql_error {
        outln!("  SQL thread error: {e}");
    }
    for d in &s.drift {
        outln!("  DRIFT (a cutover refuses until the target matches): {d}");
    }
    if !s.ignored.is_empty() {
        outln!(
            "  NOT REPLICATED (the replica's ignore filter skips them; an interrupted resync?): {}; a cutover refuses; fix: `{}`",
            s.ignored.join(", "),
            crate::mysql::inventory::resync_command(&s.pair, &s.ignored)
        );
    }
    for xid in &s.xa_prepared {
        outln!(
            "  PREPARED XA transaction on the source (a cutover refuses while it is pending): {xid}"
        );
    }
}
