//! The contract every database engine offers for a pair's whole life: [`Pair`] (preflight,
//! start, readiness, the window, preparing a reverse cutover, keeping an old primary fenced)
//! and [`Window`] (gate, fence, catch-up, promote, finish, roll back, the servers' state).
//!
//! A run with several pairs must fence every source before any target is promoted, and must be
//! able to undo all of them if one fails before the point of no return. That only works if the
//! window of each engine is split into the same phases, each callable on its own, each safe to
//! call again after a crash (they read the servers' state rather than trusting memory). The
//! PostgreSQL and MySQL engines implement both traits; the run, the daemon and the single-pair
//! commands drive pairs through them and never name an engine's own functions.
//!
//! Errors here never name CLI commands: the caller words the advice for its own surface.

use serde::{Deserialize, Serialize};

/// What went wrong in a phase: the one database error, kept as the engine reported it.
pub use crate::dberror::DbError;

pub mod gate;

/// What a pair's counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Bytes of WAL or binlog.
    Bytes,
    /// Transactions (GTID sequence numbers).
    Transactions,
}

impl Unit {
    /// The unit's word.
    pub fn word(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Transactions => "transactions",
        }
    }
}

/// What the source has committed and the target applied, read at one moment, as counters
/// that only grow (the adaptive gate samples them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The source's counter.
    pub committed: u64,
    /// The target's counter, in the same unit.
    pub applied: u64,
    /// What the counters count.
    pub unit: Unit,
    /// The engine's reporting residue: a backlog this small is how its applied position is
    /// reported (in steps), not work left. Subtracted from every prediction, and with nothing
    /// moving it is settled, not behind.
    pub settled: u64,
}

/// The gate passed: replication is running, complete and close enough.
#[derive(Debug, Clone, Serialize)]
pub struct Gated {
    /// How far behind the target was, in the engine's own unit (bytes, ms).
    pub lag: String,
}

/// The source refuses the application.
#[derive(Debug, Clone, Serialize)]
pub struct Fenced {
    /// Application sessions ended.
    pub sessions_ended: usize,
    /// What the fence holds, in words, account by account or role by role, with its reach
    /// (`app (no CONNECT on database shop)`, `read_only (server-wide)`): what a neighbour
    /// sharing the server loses.
    pub scope: Vec<String>,
}

/// The target has everything the source committed before the fence.
#[derive(Debug, Clone, Serialize)]
pub struct CaughtUp {
    /// The source position that was awaited (LSN, GTID set, file:position).
    pub position: String,
}

/// The target is the writable primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoted {
    /// Fence start to target writable in this process (`None` after a resume: the outage began
    /// in a process that is gone, and the run's journal has its start).
    pub write_unavailable_ms: Option<f64>,
    /// The new primary's own position at promotion, when the engine needs it to replicate back.
    pub position: Option<String>,
}

/// After the window: what was checked and tidied, and what needs a hand. Read back from the
/// journal too (fields a journal lacks take their defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Finished {
    /// `Some(true)`: the old primary provably took no write after the fence; `Some(false)`: it
    /// did (those writes are not on the new primary); `None`: it could not be checked.
    pub old_primary_clean: Option<bool>,
    /// When it took writes after the fence: which, or where to find them, in words.
    pub lost: Option<String>,
    /// What could not be done; each says what to do instead.
    pub warnings: Vec<String>,
    /// How the replication links were protected, in words (`forward link over TLS`).
    pub links: Vec<String>,
    /// Engine-specific detail for the report.
    pub detail: serde_json::Value,
}

/// What undoing the window did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Rollback {
    /// The source was never fenced: nothing to undo.
    NotNeeded,
    /// The source takes the application's writes again.
    SourceReopened {
        /// What was restored.
        detail: String,
    },
    /// The target was already promoted: undoing is a reverse cutover, not an unfence.
    AfterPromotion,
    /// Undoing failed: the source is still fenced. Says what to do by hand.
    Failed {
        /// Why, and the statements that reopen the source.
        error: String,
    },
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rollback::NotNeeded => write!(f, "nothing to undo: the source was never fenced"),
            Rollback::SourceReopened { detail } => {
                write!(f, "the source serves writes again ({detail})")
            }
            Rollback::AfterPromotion => write!(
                f,
                "the target was already promoted and is the primary; the source stays fenced"
            ),
            Rollback::Failed { error } => write!(f, "ROLLBACK FAILED: {error}"),
        }
    }
}

/// An engine's report as JSON for the commands that print it whole; a report that cannot be
/// rendered is an error, never `null`.
pub fn to_json<T: Serialize>(what: &str, report: &T) -> Result<serde_json::Value, DbError> {
    serde_json::to_value(report).map_err(|e| DbError::failed(&format!("render {what} as JSON"), e))
}

impl Rollback {
    /// Whether the source serves the application after this rollback.
    pub fn source_serves(&self) -> bool {
        matches!(self, Rollback::NotNeeded | Rollback::SourceReopened { .. })
    }
}

/// The true state of a pair's two servers, read from them.
#[derive(Debug, Clone, Serialize)]
pub struct PairState {
    /// The source refuses the application (fenced by cutover).
    pub source_fenced: bool,
    /// The target has been promoted (takes the application's writes).
    pub target_promoted: bool,
    /// Whether the target still applies changes from the source.
    pub replicating: bool,
    /// The cutover completed (the old primary's fence is marked permanent).
    pub completed: bool,
    /// One line per server, in words.
    pub lines: Vec<String>,
}

impl PairState {
    /// Which server, if any, accepts the application's writes.
    pub fn serving(&self) -> &'static str {
        match (self.source_fenced, self.target_promoted) {
            (false, false) => "the source serves writes",
            (true, false) => "NO server accepts writes (source fenced, target not promoted)",
            (true, true) => "the target serves writes (source fenced)",
            (false, true) => "BOTH servers accept writes (source not fenced, target promoted)",
        }
    }
}

/// What a pair's preflight found; nothing was changed.
#[derive(Debug, Clone, Serialize)]
pub struct Preflighted {
    /// The pair's name.
    pub pair: String,
    /// The engine's account of the two servers (`PostgreSQL 15 -> 15`, `replication by
    /// GTID`), one line.
    pub summary: String,
    /// What else the engine found worth saying (replication already set up).
    pub notes: Vec<String>,
    /// Everything found, source first.
    pub findings: Vec<crate::finding::Finding>,
    /// How many tables replication would cover.
    pub tables: usize,
    /// The engine's own report, for the commands that print it whole.
    pub detail: serde_json::Value,
}

impl Preflighted {
    /// Nothing blocks replication.
    pub fn passed(&self) -> bool {
        crate::finding::passed(&self.findings)
    }
}

/// One reading of how far replication is from ready for a window.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    /// The initial copy is done, changes apply, and lag is within the plan's bound.
    pub ready: bool,
    /// Where it stands, in words (with figures).
    pub words: String,
}

/// Where a pair's replication stands, read without writing anything to either server (what the
/// daemon polls and exports).
#[derive(Debug, Clone, Serialize)]
pub struct Replication {
    /// Changes flow from the source and apply on the target.
    pub running: bool,
    /// How far the target is behind, in bytes of WAL (engines that measure it).
    pub lag_bytes: Option<i64>,
    /// How far the target is behind, in seconds (`None` when unknown or not running: never 0
    /// for a replica that applies nothing).
    pub lag_seconds: Option<f64>,
    /// In words, with the figures and, when not running, why.
    pub words: String,
    /// The same reading under the names the community exporters give it (postgres_exporter,
    /// mysqld_exporter), for dashboards and alerts already written against them.
    #[serde(skip)]
    pub exporter: Vec<ExporterSample>,
}

/// One sample named and labelled as a community exporter names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterSample {
    /// The series name (`pg_up`, `mysql_slave_status_seconds_behind_master`, ...).
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its labels, in a fixed order per name.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl ExporterSample {
    /// `pg_up` / `mysql_up` for `server` (`host:port`): 1, it was read.
    pub fn up(name: &'static str, server: String) -> ExporterSample {
        ExporterSample {
            name,
            help: "Whether the server could be read at the last poll (as the exporters)",
            labels: vec![("server", server)],
            value: 1.0,
        }
    }
}

/// A connected reader of a pair's replication progress (one set of connections, read again
/// and again, so a long wait opens no new sessions).
#[async_trait::async_trait]
pub trait Probe: Send {
    /// Reads where replication stands. An error is a replication that will never get ready
    /// by waiting (it keeps failing to apply): the caller stops waiting.
    async fn read(&mut self) -> Result<Reading, DbError>;
}

/// A pair's connections kept open between readings (what the daemon polls): every reading
/// reuses them, so a steady poll opens no server session. A reading that fails leaves the
/// connections in doubt: the caller drops the watch and connects again later.
#[async_trait::async_trait]
pub trait Watch: Send {
    /// Where replication stands, read-only.
    async fn replication(&mut self) -> Result<Replication, DbError>;
    /// Both servers' state, read-only (what `status` says of the pair).
    async fn state(&mut self) -> Result<PairState, DbError>;
}

/// One way the target's schema or objects differ from the source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What kind of object (`table`, `column`, `sequence`, ...).
    pub kind: &'static str,
    /// Which object.
    pub object: String,
    /// How it differs.
    pub detail: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.detail)
    }
}

/// A key range of one table whose rows differ between source and target.
#[derive(Debug, Clone, Serialize)]
pub struct Differing {
    /// The range, in the table's key words.
    pub keys: String,
    /// Rows in the range on the source.
    pub source_rows: u64,
    /// Rows in the range on the target.
    pub target_rows: u64,
}

/// One table compared, chunk by chunk of its primary key.
#[derive(Debug, Clone, Serialize)]
pub struct TableVerified {
    /// The table, qualified.
    pub table: String,
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// Chunks compared.
    pub chunks: usize,
    /// Ranges whose count or checksum differ.
    pub differing: Vec<Differing>,
    /// Compared as one chunk (no single usable key).
    pub whole_table: bool,
}

impl TableVerified {
    /// The same rows on both sides.
    pub fn matches(&self) -> bool {
        self.differing.is_empty() && self.source_rows == self.target_rows
    }
}

/// A pair's source and target compared: every table in scope, and the objects besides rows.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The pair.
    pub pair: String,
    /// Per table (a table missing on the target is among `differences` instead).
    pub tables: Vec<TableVerified>,
    /// Objects that differ besides rows (missing tables and columns, sequences behind, views).
    pub differences: Vec<Difference>,
}

impl Verified {
    /// Every table and object matches.
    pub fn matches(&self) -> bool {
        self.differences.is_empty() && self.tables.iter().all(TableVerified::matches)
    }
}

/// What a cleanup removed, and what it left on purpose.
#[derive(Debug, Clone, Serialize)]
pub struct Cleaned {
    /// The pair.
    pub pair: String,
    /// One line per change made.
    pub done: Vec<String>,
    /// Left in place on purpose, with why.
    pub kept: Vec<String>,
}

/// A step of a pair's forward run, for the sentence the step list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Both servers checked.
    Preflight,
    /// Replication set up and waited for.
    Start,
    /// The source fenced.
    Fence,
    /// The target caught up exactly.
    CatchUp,
    /// The target promoted.
    Promote,
    /// After the promotion.
    Finish,
}

/// Who takes the migration's lease on a pair's servers, as a refused runner is told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// What it does (`run`, `pg cleanup`, ...).
    pub purpose: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The state directory whose journal records what it does (absolute when it could be
    /// made so): the one place a stopped run can be resumed from.
    pub state_dir: String,
    /// When it was taken (RFC 3339).
    pub since: String,
}

impl Holder {
    /// This process, doing `purpose` for the migration whose state directory is `state_dir`.
    pub fn this_process(purpose: &str, state_dir: &std::path::Path) -> Holder {
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
        Holder {
            purpose: purpose.to_owned(),
            host: crate::state::host_name(),
            pid: std::process::id(),
            state_dir: state_dir.display().to_string(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// The same migration's journal: same host and state directory (a resume of it may go on).
    pub fn same_journal(&self, other: &Holder) -> bool {
        self.host == other.host && self.state_dir == other.state_dir
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` as pid {} on {} since {}, state directory {}",
            self.purpose, self.pid, self.host, self.since, self.state_dir
        )
    }
}

/// The migration's lease held on a pair's servers (a lock tied to sessions kept open for it,
/// so a crashed holder never blocks its own resume). Released by [`ServerLease::release`], or
/// when dropped (the sessions close; a holder record then stays and names the holder).
#[async_trait::async_trait]
pub trait ServerLease: Send + Sync {
    /// Lets go of the lease and clears the holder record: the command ended on its own.
    async fn release(self: Box<Self>);
}

/// One database pair of a plan, through its whole life. Each engine implements it for its
/// own pair type, keeping its connections and SQL inside.
#[async_trait::async_trait]
pub trait Pair: Send + Sync {
    /// The engine's word (`postgres`, `mysql`), as the plan's section names it.
    fn engine(&self) -> &'static str;
    /// The pair's name in the plan.
    fn name(&self) -> &str;
    /// `postgres NAME` or `mysql NAME`.
    fn component(&self) -> String {
        format!("{} {}", self.engine(), self.name())
    }
    /// The same pair seen backwards (a reverse cutover: the new primary is the source).
    fn reversed(&self) -> Box<dyn Pair>;
    /// The adaptive gate's budget from the plan (`None`: off).
    fn budget(&self) -> Option<gate::Budget>;
    /// The plan sets replication up from the new primary back to the old one (what makes a
    /// reverse cutover lossless).
    fn replicates_back(&self) -> bool;
    /// The pair's settings as the plan gives them, secrets by reference only: what tells two
    /// watches of the same pair apart.
    fn settings(&self) -> String;
    /// What `act` does on this pair's servers, as the step list says it (from the plan alone).
    fn says(&self, act: Act) -> String;
    /// Checks both servers for everything replication and a cutover need; changes nothing.
    async fn preflight(&self) -> Result<Preflighted, DbError>;
    /// Sets replication up (idempotent: a second start keeps what is there). What it did, in
    /// the engine's own terms, is [`Reports::started`]'s typed report.
    async fn start(&self) -> Result<(), DbError>;
    /// Connects a reader of replication progress.
    async fn probe(&self) -> Result<Box<dyn Probe>, DbError>;
    /// Where replication stands, read-only, on connections opened for this reading.
    async fn replication(&self) -> Result<Replication, DbError> {
        self.watch().await?.replication().await
    }
    /// Connects a watch: replication and state read again and again on the same sessions.
    async fn watch(&self) -> Result<Box<dyn Watch>, DbError>;
    /// Opens the pair's window; `resume`: a crashed process may have begun it.
    async fn window(&self, resume: bool) -> Result<Box<dyn Window>, DbError>;
    /// Before a reverse cutover: the old primary's permanent fence made liftable by the
    /// reverse promotion. Returns what it did, in words.
    async fn prepare_reverse(&self) -> Result<String, DbError>;
    /// The old primary's fence made permanent again (a reverse cutover rolled back).
    async fn keep_fenced(&self) -> Result<(), DbError>;
    /// Compares source and target, table by table in key chunks (meaningful once writes are
    /// fenced, or after the promotion).
    async fn verify(&self) -> Result<Verified, DbError>;
    /// Removes every object cutover created on both servers; an old primary's permanent
    /// fence stays (said in `kept`).
    async fn cleanup(&self) -> Result<Cleaned, DbError>;
    /// Takes the migration's lease on both servers of the pair for `holder`, before anything
    /// changes there. Refused ([`DbError::Refused`]) while another process holds it, or
    /// while a holder from another state directory stopped without releasing it (its run may
    /// be mid-window); both name the holder.
    async fn lease(&self, holder: &Holder) -> Result<Box<dyn ServerLease>, DbError>;
}

/// A pair's own reports, typed per engine: what `start` did and where replication stands,
/// in the engine's own terms (`cutover pg status`, `cutover mysql start`). The single-pair
/// commands are generic over it, so they print typed fields and name no engine; the run and
/// the daemon need [`Pair`] alone, listed through [`Engine::of`]. Adding an engine: its
/// folder, this trait, one line in the run's factory and one in the CLI.
#[async_trait::async_trait]
pub trait Reports: Pair + Sized + 'static {
    /// The plan's section of these pairs (`postgres`, `mysql`).
    const SECTION: &'static str;
    /// The command group that acts on them (`pg`, `mysql`).
    const COMMAND: &'static str;
    /// What `start` did.
    type Started: Serialize + Send;
    /// Where replication stands.
    type Status: Serialize + Send;
    /// The plan's pairs of this engine, or only the one named `only`.
    fn select(plan: &crate::plan::Plan, only: Option<&str>) -> Vec<Self>;
    /// Sets replication up ([`Pair::start`]) and says what it did.
    async fn started(&self) -> Result<Self::Started, DbError>;
    /// Where replication stands, read now (`state_dir`: the migration's, for what earlier
    /// readings left there).
    async fn status(&self, state_dir: &std::path::Path) -> Result<Self::Status, DbError>;
    /// Whether that status is healthy (the command's exit status).
    fn healthy(status: &Self::Status) -> bool;
}

/// One database engine as the run, the daemon and the step list see it: its plan section and
/// its pairs behind [`Pair`]. The run's factory lists one per engine
/// ([`Engine::of`] over the engine's [`Reports`] type), so adding an engine there is one line.
#[derive(Clone, Copy)]
pub struct Engine {
    /// The plan's section (`postgres`, `mysql`), the first word of its components.
    pub section: &'static str,
    /// The plan's pairs of this engine, in plan order.
    pub pairs: fn(&crate::plan::Plan) -> Vec<Box<dyn Pair>>,
}

impl Engine {
    /// The engine whose pairs are `P`.
    pub const fn of<P: Reports>() -> Engine {
        Engine {
            section: P::SECTION,
            pairs: pairs_of::<P>,
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.section)
    }
}

fn pairs_of<P: Reports>(plan: &crate::plan::Plan) -> Vec<Box<dyn Pair>> {
    P::select(plan, None)
        .into_iter()
        .map(|p| Box::new(p) as Box<dyn Pair>)
        .collect()
}

/// One pair's cutover window, phase by phase. Every phase may be called again on a fresh
/// window after a crash: each reads what the servers already have and does only what is left.
#[async_trait::async_trait]
pub trait Window: Send {
    /// `postgres NAME` or `mysql NAME`.
    fn component(&self) -> String;
    /// Refuses unless replication is running, complete, close enough, and the fence would
    /// cover every writer. Changes nothing.
    async fn gate(&mut self) -> Result<Gated, DbError>;
    /// What the source has committed and the target applied, read now (the adaptive gate's
    /// samples); `None` when this engine or configuration cannot tell.
    async fn progress(&mut self) -> Result<Option<Progress>, DbError> {
        Ok(None)
    }
    /// Makes the source refuse the application and ends its sessions.
    async fn fence(&mut self) -> Result<Fenced, DbError>;
    /// Waits, bounded, until the target has exactly what the fenced source committed.
    async fn catch_up(&mut self) -> Result<CaughtUp, DbError>;
    /// Makes the target the writable primary. The point of no return for this pair.
    async fn promote(&mut self) -> Result<Promoted, DbError>;
    /// After promotion: audits the old primary, sets up what replicates back, tidies up.
    async fn finish(&mut self) -> Finished;
    /// Undoes the window before promotion: the source serves again.
    async fn roll_back(&mut self) -> Rollback;
    /// The servers' true state.
    async fn state(&mut self) -> Result<PairState, DbError>;
}

/// Progress of one pair's cutover, as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The adaptive gate waits: what for, in words.
    GateWaiting {
        /// Backlog, both rates, the prediction, the time left.
        text: String,
    },
    /// The adaptive gate let the fence come: how long it waited and what it predicted.
    GateWaited {
        /// The wait and the prediction.
        waited: gate::Waited,
    },
    /// The gate passed; the fence comes next.
    GatePassed {
        /// How far behind the target was, in the engine's unit.
        lag: String,
    },
    /// The source refuses the application and its sessions are gone.
    Fenced {
        /// Sessions ended.
        sessions_ended: usize,
        /// What the fence holds ([`Fenced::scope`]).
        scope: Vec<String>,
    },
    /// The target has everything the fenced source committed.
    CaughtUp {
        /// The source position awaited.
        position: String,
    },
    /// The target is the writable primary.
    Promoted {
        /// Fence start to target writable.
        write_unavailable_ms: Option<f64>,
    },
    /// A phase failed before the promotion; the source is being reopened.
    RollingBack {
        /// Why.
        reason: String,
    },
}

impl Event {
    /// Its name (the `event` tag of its JSON).
    pub fn name(&self) -> &'static str {
        match self {
            Event::GateWaiting { .. } => "gate-waiting",
            Event::GateWaited { .. } => "gate-waited",
            Event::GatePassed { .. } => "gate-passed",
            Event::Fenced { .. } => "fenced",
            Event::CaughtUp { .. } => "caught-up",
            Event::Promoted { .. } => "promoted",
            Event::RollingBack { .. } => "rolling-back",
        }
    }
}

/// The window's phases, for saying where a cutover failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Connecting to both servers.
    Connect,
    /// The gate.
    Gate,
    /// The fence.
    Fence,
    /// Exact catch-up.
    CatchUp,
    /// The promotion.
    Promote,
}

/// A pair cut over: what each phase reported.
#[derive(Debug, Clone, Serialize)]
pub struct CutOver {
    /// `postgres NAME` or `mysql NAME`.
    pub component: String,
    /// The gate.
    pub gated: Gated,
    /// The fence.
    pub fenced: Fenced,
    /// The catch-up.
    pub caught_up: CaughtUp,
    /// The promotion.
    pub promoted: Promoted,
    /// What followed it.
    pub finished: Finished,
}

impl CutOver {
    /// Promoted and not proven to have lost writes (writes the new primary lacks are a failed
    /// cutover even though it serves).
    pub fn ok(&self) -> bool {
        self.finished.old_primary_clean != Some(false)
    }
}

/// A cutover that did not complete: where, why, and what undoing it did.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("cutover failed at {phase:?}: {error}")]
pub struct CutoverFailed {
    /// The phase that failed.
    pub phase: Phase,
    /// Why.
    pub error: DbError,
    /// What happened to the source.
    pub rollback: Rollback,
}

/// Cuts one pair over on its own (the single-pair commands; a run sequences the same phases
/// across all its pairs): gate, fence, catch-up, promotion, then what follows it. A failure
/// before the promotion rolls the pair back; `on` sees each phase as it completes.
pub async fn cutover(
    pair: &dyn Pair,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<CutOver, CutoverFailed> {
    // Each event is told, then (in a test that asks) the process stops right after it.
    let mut on = |event: &Event| {
        on_event(event);
        crate::test_stop::maybe_stop_at_event(event.name());
    };
    let early = |phase| {
        move |error| CutoverFailed {
            phase,
            error,
            rollback: Rollback::NotNeeded,
        }
    };
    let mut w = pair.window(false).await.map_err(early(Phase::Connect))?;
    let (gated, waited) = {
        let mut say = |text: String| on(&Event::GateWaiting { text });
        gate::gate(w.as_mut(), pair.budget(), &mut say)
            .await
            .map_err(early(Phase::Gate))?
    };
    if let Some(waited) = waited {
        on(&Event::GateWaited { waited });
    }
    on(&Event::GatePassed {
        lag: gated.lag.clone(),
    });
    let inside = async {
        let fenced = w.fence().await.map_err(|e| (Phase::Fence, e))?;
        on(&Event::Fenced {
            sessions_ended: fenced.sessions_ended,
            scope: fenced.scope.clone(),
        });
        let caught_up = w.catch_up().await.map_err(|e| (Phase::CatchUp, e))?;
        on(&Event::CaughtUp {
            position: caught_up.position.clone(),
        });
        let promoted = w.promote().await.map_err(|e| (Phase::Promote, e))?;
        on(&Event::Promoted {
            write_unavailable_ms: promoted.write_unavailable_ms,
        });
        Ok::<_, (Phase, DbError)>((fenced, caught_up, promoted))
    }
    .await;
    match inside {
        Ok((fenced, caught_up, promoted)) => {
            let finished = w.finish().await;
            Ok(CutOver {
                component: w.component(),
                gated,
                fenced,
                caught_up,
                promoted,
                finished,
            })
        }
        Err((phase, error)) => {
            on(&Event::RollingBack {
                reason: error.to_string(),
            });
            let rollback = w.roll_back().await;
            Err(CutoverFailed {
                phase,
                error,
                rollback,
            })
        }
    }
}

/// What resuming one pair's interrupted window did.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// The component.
    pub component: String,
    /// The servers' state before anything was done.
    pub before: PairState,
    /// What was decided, in words.
    pub action: String,
    /// The rollback, when it rolled back.
    pub rollback: Option<Rollback>,
    /// The post-promotion work, when it went forward.
    pub finished: Option<Finished>,
    /// Why going forward failed.
    pub error: Option<String>,
    /// The servers' state afterwards.
    pub after: Option<PairState>,
}

impl Resumed {
    /// Whether the pair ended with exactly one server serving writes.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.rollback.as_ref().is_none_or(Rollback::source_serves)
    }
}

/// Finishes or undoes the window a crashed process left on one pair, from the servers' own
/// state: a promoted target goes forward (promotion completed, post-promotion work done); a
/// fenced source with an unpromoted target is rolled back, or with `go_on` caught up and
/// promoted; an unfenced source means there is nothing to resume.
pub async fn resume(w: &mut dyn Window, go_on: bool) -> Result<Resumed, DbError> {
    let before = w.state().await?;
    let mut out = Resumed {
        component: w.component(),
        before: before.clone(),
        action: String::new(),
        rollback: None,
        finished: None,
        error: None,
        after: None,
    };
    let forward = async |w: &mut dyn Window, catch_up: bool| -> Result<Finished, DbError> {
        if catch_up {
            w.catch_up().await?;
        }
        w.promote().await?;
        Ok(w.finish().await)
    };
    if before.completed {
        out.action =
            "nothing to resume: the cutover completed; the target is the primary".to_owned();
    } else if before.target_promoted && before.source_fenced {
        out.action = "the target was promoted: finishing the cutover".to_owned();
        match forward(w, false).await {
            Ok(f) => out.finished = Some(f),
            Err(e) => out.error = Some(e.to_string()),
        }
    } else if before.source_fenced && go_on {
        out.action =
            "the source is fenced and the target not promoted: catching up and promoting (continue was asked)"
                .to_owned();
        match forward(w, true).await {
            Ok(f) => out.finished = Some(f),
            Err(e) => {
                out.error = Some(e.to_string());
                out.rollback = Some(w.roll_back().await);
            }
        }
    } else if before.source_fenced {
        out.action = "the source is fenced and the target not promoted: rolling back".to_owned();
        out.rollback = Some(w.roll_back().await);
    } else {
        out.action = format!("nothing to resume: {}", before.serving());
    }
    out.after = w.state().await.ok();
    Ok(out)
}
