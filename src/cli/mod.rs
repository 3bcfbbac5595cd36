//! Command-line interface: clap definitions here, one module per command group.

// Printing never panics: with `cutover ... | head -1` the pipe closes early, and a panic there
// would abort a command halfway, inside a cutover window the worst place of all. What cannot be
// written is dropped; the command finishes and its exit status tells the outcome.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod demo;
mod dns;
mod files;
mod lab;
mod mysql;
mod pairs;
mod pg;
mod plan;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

/// Exit status: the command did its work.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command ran and failed (a server refused, a check failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the input is wrong (plan file, arguments).
pub const EXIT_INVALID: u8 = 2;

/// Move a live service from one host to another with (near) zero downtime.
///
/// A TOML plan describes the databases, files and DNS records to move; cutover checks it,
/// replicates, fences writes, catches up exactly, promotes, switches DNS and verifies.
/// Exit status: 0 done, 1 failed, 2 invalid input, 3 not implemented yet.
#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log filter (e.g. `info`, `cutover=debug`); also read from CUTOVER_LOG.
    #[arg(long, global = true, env = "CUTOVER_LOG", default_value = "warn")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of commands that report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Text for people.
    #[default]
    Human,
    /// One JSON document on stdout.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a plan file and show what a run would do.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Run a whole migration: preflight, sync, fence, catch up, promote, switch, verify, report.
    Run(RunArgs),
    /// Show where a migration stands, from its journal.
    Status(PlanArgs),
    /// PostgreSQL logical replication, pair by pair.
    #[command(subcommand)]
    Pg(DbCommand),
    /// MySQL / MariaDB binlog replication, pair by pair.
    #[command(subcommand)]
    Mysql(DbCommand),
    /// File trees: rsync between the hosts, server to server.
    #[command(subcommand)]
    Files(FilesCommand),
    /// DNS: lower TTLs ahead of time, switch records, wait for every authoritative server.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Run as a daemon serving Prometheus metrics and a status API.
    Serve(ServeArgs),
    /// Throwaway real servers on 127.0.0.1 for trying cutover out.
    #[command(subcommand)]
    Lab(LabCommand),
}

/// `cutover plan ...`
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Parse and validate a plan (every problem at once), then print the steps a run would take.
    /// Never connects to anything.
    Check {
        /// The plan file.
        plan: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `cutover files ...`
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Check both hosts: ssh, rsync, the running host reaching the other, space, clocks.
    Preflight(FilesArgs),
    /// A warm pass while the service runs (vanished files are a warning).
    Sync(FilesArgs),
    /// The final pass, service stopped on the source: the tree must not change under it.
    Final(FilesArgs),
    /// Compare both trees by checksum; exit 1 when any path differs.
    Verify(FilesArgs),
}

/// Arguments of the `files` commands.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Only this `[[files]]` entry.
    #[arg(long)]
    pub entry: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// A plan argument.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `cutover run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Continue (or roll back) the interrupted run recorded in the journal.
    #[arg(long)]
    pub resume: bool,
    /// Print the steps and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Cut over even if the lowered DNS TTLs have not been served for one old TTL yet (logged).
    #[arg(long)]
    pub force: bool,
    /// With --resume before the point of no return: go on instead of rolling back.
    #[arg(long = "continue", requires = "resume")]
    pub go_on: bool,
    /// Reverse cutover of the last completed run: fence the new primaries, catch the old ones
    /// up through reverse replication, promote them back, restore DNS, run on-rollback hooks.
    #[arg(long, conflicts_with_all = ["resume", "dry_run"])]
    pub rollback: bool,
    /// With --rollback, for a plan with `[[files]]`: move the databases back although the
    /// trees are not carried back (the old host lacks every file written since the promotion).
    #[arg(long, requires = "rollback")]
    pub leave_files: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Arguments of the per-database commands.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Only this pair (default: every pair of this kind in the plan).
    #[arg(long, value_name = "NAME")]
    pub pair: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Arguments of `pg cutover` and `mysql cutover`.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// The plan and pair.
    #[command(flatten)]
    pub pair: PairArgs,
    /// Finish or roll back a cutover a crash interrupted, from the servers' own state: a
    /// promoted target is finished, a fenced source with an unpromoted target is rolled back.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: catch up and promote instead of rolling back.
    #[arg(long = "continue", requires = "resume")]
    pub go_on: bool,
}

/// `cutover pg ...` and `cutover mysql ...`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check both servers and say what to change on which one.
    Preflight(PairArgs),
    /// Copy the schema or snapshot and start replication (idempotent).
    Start(PairArgs),
    /// Initial-copy progress and replication lag.
    Status(PairArgs),
    /// Fence writes, catch up exactly, promote the target; unfence on any failure before promotion.
    Cutover(CutoverArgs),
    /// Compare row counts and checksums, chunked by primary key.
    Verify(PairArgs),
    /// Remove everything cutover created for replication (idempotent).
    Cleanup(PairArgs),
    /// Copy some tables of a running pair again (MySQL/MariaDB): a consistent copy of each,
    /// the replica positioned right after it. The repair for rows applied under another
    /// definition; run it again if it is interrupted.
    Resync(ResyncArgs),
}

/// Arguments of `mysql resync`.
#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// The plan and pair.
    #[command(flatten)]
    pub pair: PairArgs,
    /// A table to copy again, as `database.table` (repeat for several).
    #[arg(long = "table", value_name = "DB.TABLE", required = true)]
    pub tables: Vec<String>,
}

impl DbCommand {
    pub(crate) fn args(&self) -> &PairArgs {
        match self {
            DbCommand::Preflight(a)
            | DbCommand::Start(a)
            | DbCommand::Status(a)
            | DbCommand::Verify(a)
            | DbCommand::Cleanup(a) => a,
            DbCommand::Cutover(a) => &a.pair,
            DbCommand::Resync(a) => &a.pair,
        }
    }
}

/// `cutover dns ...`
#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Lower the records' TTL, save the old one, and print the earliest safe cutover time once
    /// every authoritative server serves the lowered TTL. Idempotent: safe to run from cron.
    LowerTtl(LowerTtlArgs),
    /// Put the TTL saved by lower-ttl back (values are left as they are).
    RestoreTtl(DnsArgs),
    /// Per record: TTL, value and SOA serial on every authoritative server, saved TTL, safe time.
    Status(DnsArgs),
    /// Set the records to the plan's values; refused before the earliest safe cutover time.
    Update(UpdateArgs),
    /// Wait until every address of every authoritative server (and the plan's resolvers)
    /// serves the new values.
    Wait(WaitArgs),
}

impl DnsCommand {
    /// The arguments every dns command has.
    pub(crate) fn common(&self) -> &DnsArgs {
        match self {
            DnsCommand::LowerTtl(a) => &a.common,
            DnsCommand::RestoreTtl(a) | DnsCommand::Status(a) => a,
            DnsCommand::Update(a) => &a.common,
            DnsCommand::Wait(a) => &a.common,
        }
    }
}

/// Arguments of every `dns` command.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Only this record name (default: every `[[dns]]` record).
    #[arg(long, value_name = "NAME")]
    pub record: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Resolver for finding zones and nameservers the plan does not list (default: the
    /// system resolver).
    #[arg(long, value_name = "ADDR[:PORT]", env = "CUTOVER_RESOLVER")]
    pub resolver: Option<String>,
    /// Port that discovered nameservers are queried on.
    #[arg(long, value_name = "PORT", default_value_t = 53)]
    pub ns_port: u16,
}

/// `dns lower-ttl`
#[derive(Debug, Args)]
pub struct LowerTtlArgs {
    #[command(flatten)]
    pub common: DnsArgs,
    /// Use the provider's minimum TTL when `cutover_ttl` is below it, instead of refusing.
    #[arg(long)]
    pub clamp: bool,
    /// How long to wait for every server to serve the lowered TTL (default: the record's
    /// `propagation_timeout`); a later run picks up where this one stopped.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// `dns update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub common: DnsArgs,
    /// Switch even before the earliest safe cutover time (logged in the state directory).
    #[arg(long)]
    pub force: bool,
}

/// `dns wait`
#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub common: DnsArgs,
    /// Give up after this long (default: the records' largest `propagation_timeout`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Pause between polling rounds.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub poll: Duration,
}

/// `cutover serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The daemon's configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `cutover lab ...`
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start two PostgreSQL 15, two MariaDB, PowerDNS, BIND9 and sshd on 127.0.0.1 and write a
    /// ready plan; they keep running until `cutover lab down`.
    Up(LabArgs),
    /// Stop the servers `lab up` started and remove the lab directory.
    Down(LabArgs),
    /// Run a real demo migration on a throwaway lab (its own temporary directory), narrated.
    Demo(DemoArgs),
}

/// `lab demo` takes no options yet; its lab is always temporary.
#[derive(Debug, Args)]
pub struct DemoArgs {}

/// Where the lab lives.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Lab directory (default: `$TMPDIR/cutover-lab-<uid>`; servers running as their own
    /// system user must be able to reach it, so not under a private home directory).
    #[arg(long, env = "CUTOVER_LAB_DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs the parsed command and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Plan(PlanCommand::Check { plan, output }) => plan::check(&plan, output),
        Command::Run(args) => run::run(args),
        Command::Status(args) => run::status(&args.plan, args.output),
        Command::Pg(cmd) => pg::run(cmd),
        Command::Mysql(cmd) => mysql::run(cmd),
        Command::Dns(cmd) => dns::run(cmd),
        Command::Files(cmd) => files::run(cmd),
        Command::Serve(args) => serve::run(&args),
        Command::Lab(LabCommand::Up(args)) => lab::up(args.dir),
        Command::Lab(LabCommand::Down(args)) => lab::down(args.dir),
        Command::Lab(LabCommand::Demo(_)) => demo::demo(),
    };
    ExitCode::from(code)
}

/// A multi-threaded tokio runtime, or an error printed and `None`.
/// Cancels `cancel` on every SIGINT or SIGTERM, saying `note` the first time.
pub(crate) fn cancel_on_signal(cancel: tokio_util::sync::CancellationToken, note: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if !cancel.is_cancelled() {
                errln!("{note}");
            }
            cancel.cancel();
        }
    });
}

pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            errln!("cutover: cannot start the async runtime: {e}");
            None
        }
    }
}

/// A command's result as its JSON document with `ok` set; one that cannot be rendered is a
/// failure that says so, never `null`.
pub(crate) fn with_ok<T: serde::Serialize>(value: &T, ok: bool) -> (bool, serde_json::Value) {
    match serde_json::to_value(value) {
        Ok(mut v) => {
            v["ok"] = json!(ok);
            (ok, v)
        }
        Err(e) => {
            let error = format!("cannot render the result as JSON: {e}");
            errln!("error: {error}");
            (false, json!({ "ok": false, "error": error }))
        }
    }
}

/// Prints a result (or its error) and returns (success, JSON).
pub(crate) fn report<T: serde::Serialize, E: std::fmt::Display>(
    output: Output,
    result: Result<T, E>,
    print: fn(&T),
) -> (bool, serde_json::Value) {
    match result {
        Ok(value) => {
            if output == Output::Human {
                print(&value);
            }
            with_ok(&value, true)
        }
        Err(e) => {
            if output == Output::Human {
                errln!("error: {e}");
            }
            (false, json!({ "ok": false, "error": e.to_string() }))
        }
    }
}
