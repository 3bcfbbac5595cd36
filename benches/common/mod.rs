//! What every benchmark binary shares: its command-line numbers and its runtime.
// Each bench binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A two-worker runtime: the CI machine has two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    // `CUTOVER_BENCH_LOG=cutover::mysql=trace`: the library's logs on stderr (each window
    // statement's round trip at trace), to see where a run's time went.
    if let Ok(filter) = std::env::var("CUTOVER_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The runtime the bench's app clients (the checked writer, the saturating load) run on,
/// apart from the one cutover runs on: a real app is another process, which the kernel
/// schedules beside cutover; on cutover's own two workers a client's TLS handshake or a
/// load transaction would hold the window's next statement until it yields.
pub fn apps() -> &'static tokio::runtime::Runtime {
    static APPS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    APPS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-app")
            .enable_all()
            .build()
            .expect("app runtime")
    })
}

/// Resident memory of process `pid` in MiB (0 when it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts `cutover serve --config config` and returns it with the base URL it printed.
pub fn start_daemon(config: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the daemon starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the daemon's first line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the daemon did not start (its error is above): {line:?}"))
        .to_owned();
    (child, base)
}

/// The `p` quantile (0..=1) of `values` (sorted in place), nearest rank.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i]
}

/// One cutover run of a write-unavailability benchmark.
#[derive(Clone)]
pub struct Run {
    /// Cutover's own fence -> target writable time.
    pub unavailable_ms: f64,
    /// Longest gap between the writer's commits across the cutover.
    pub gap_ms: f64,
    /// Longest gap elsewhere in the same run (the machine's own stalls).
    pub other_gap_ms: f64,
    /// Acknowledged rows missing on the new primary.
    pub lost: usize,
    /// Rows present twice or written by nobody.
    pub duplicated: usize,
    /// Commits per second the writer achieved before the cutover.
    pub rate: f64,
    /// Where the window went.
    pub stages: String,
}

/// Prints the table header.
pub fn print_header() {
    println!(
        "{:>3} {:>12} {:>14} {:>16} {:>9} {:>5} {:>5}",
        "run", "fence->rw ms", "writer gap ms", "other max gap ms", "tx/s", "lost", "dup"
    );
}

/// Prints one run's row.
pub fn print_run(i: u32, r: &Run) {
    println!(
        "{:>3} {:>12.1} {:>14.1} {:>16.1} {:>9.0} {:>5} {:>5}",
        i + 1,
        r.unavailable_ms,
        r.gap_ms,
        r.other_gap_ms,
        r.rate,
        r.lost,
        r.duplicated
    );
    println!("      stages (ms): {}", r.stages);
}

/// Prints p50/max of every figure and the cutover-gap / baseline-gap ratio.
pub fn print_summary(results: &[Run]) {
    let mut un: Vec<f64> = results.iter().map(|r| r.unavailable_ms).collect();
    let mut gap: Vec<f64> = results.iter().map(|r| r.gap_ms).collect();
    let mut other: Vec<f64> = results.iter().map(|r| r.other_gap_ms).collect();
    let lost: usize = results.iter().map(|r| r.lost + r.duplicated).sum();
    let (gap_p50, gap_max) = (percentile(&mut gap, 0.5), percentile(&mut gap, 1.0));
    let other_p50 = percentile(&mut other, 0.5);
    println!(
        "fence -> target writable: p50 {:.1} ms, max {:.1} ms",
        percentile(&mut un, 0.5),
        percentile(&mut un, 1.0)
    );
    println!(
        "writer gap across the cutover: p50 {gap_p50:.1} ms, max {gap_max:.1} ms; rows lost or duplicated: {lost}"
    );
    println!(
        "largest gap away from the cutover (same runs): p50 {other_p50:.1} ms, max {:.1} ms; cutover gap p50 / that p50 = {:.2}",
        percentile(&mut other, 1.0),
        gap_p50 / other_p50.max(0.001)
    );
}

/// A cutover measured from the gate to the promotion, on this process's clock.
pub struct Timed {
    /// The engine's account of it.
    pub report: cutover::engine::CutOver,
    /// When the gate passed (the fence follows at once).
    pub from: std::time::Instant,
    /// When the target was promoted.
    pub to: std::time::Instant,
    /// What the adaptive gate waited and predicted (a plan with `window_budget`).
    pub waited: Option<cutover::engine::gate::Waited>,
}

/// Cuts `pair` over (one single-pair driver for both engines), timing gate and promotion.
pub async fn cut_over(pair: &dyn cutover::engine::Pair) -> Timed {
    try_cut_over(pair)
        .await
        .unwrap_or_else(|e| panic!("cutover failed: {e}"))
}

/// [`cut_over`], a failed cutover returned.
pub async fn try_cut_over(
    pair: &dyn cutover::engine::Pair,
) -> Result<Timed, cutover::engine::CutoverFailed> {
    use cutover::engine::Event;
    use std::time::Instant;
    let (mut from, mut to, mut waited) = (None, None, None);
    let report = cutover::engine::cutover(pair, &mut |e: &Event| match e {
        Event::GateWaited { waited: w } => waited = Some(*w),
        Event::GatePassed { .. } => from = Some(Instant::now()),
        Event::Promoted { .. } => to = Some(Instant::now()),
        _ => {}
    })
    .await?;
    Ok(Timed {
        report,
        from: from.expect("the gate passed"),
        to: to.expect("promoted"),
        waited,
    })
}

impl Timed {
    /// The run's row: the window, the writer's gaps across it and elsewhere, and what the
    /// row-by-row `check` of `ledger` found; `stages` says where the window went.
    pub fn run(
        &self,
        ledger: &cutover::lab::ledger::Ledger,
        check: &cutover::lab::ledger::LedgerCheck,
        stages: String,
    ) -> Run {
        let (gap, other) = ledger.gaps_around(self.from, self.to);
        let before = ledger.commits.iter().filter(|c| **c < self.from).count();
        let rate = before as f64 / (self.from - ledger.commits[0]).as_secs_f64();
        Run {
            unavailable_ms: self
                .report
                .promoted
                .write_unavailable_ms
                .unwrap_or_default(),
            gap_ms: gap.as_secs_f64() * 1000.0,
            other_gap_ms: other.as_secs_f64() * 1000.0,
            lost: check.lost.len(),
            duplicated: check.duplicated.len() + check.unexpected.len(),
            rate,
            stages,
        }
    }
}

/// A gate's prediction in a run's stage line: the catch-up it predicted and, when the
/// target's measured delay was its floor, that delay beside what the backlog alone would take
/// at the apply rate.
pub fn predicted(w: &cutover::engine::gate::Waited) -> String {
    let p = &w.prediction;
    let catch_up = p
        .catch_up_ms
        .map_or("unbounded".to_owned(), |ms| format!("{ms:.1} ms"));
    match (p.delay_floor_ms, p.apply_rate) {
        (Some(delay), Some(rate)) if rate > 0.0 => format!(
            "{catch_up} (measured delay {delay:.0} ms; the backlog alone {:.0} ms)",
            p.backlog as f64 / rate * 1000.0
        ),
        _ => catch_up,
    }
}

/// What a bench's TLS servers present: a certificate from `ca` for 127.0.0.1, no client
/// certificates, `performance_schema` off (a TLS run must differ from a plaintext one in TLS
/// alone).
pub fn server_tls(ca: &cutover::lab::tls::LabCa) -> cutover::lab::tls::ServerTls<'_> {
    cutover::lab::tls::ServerTls {
        ca,
        names: vec!["127.0.0.1".into()],
        client_cert: false,
        session_status: false,
    }
}
