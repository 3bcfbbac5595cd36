//! The daemon's kept connections: one [`Watch`] per pair and direction, connected once and
//! read at every poll, so a steady poll opens no server session (a fresh connection per
//! reading cost each server two sessions a second per pair). Every connect and read is bounded
//! by [`READ_TIMEOUT`]. A reading that fails or times out drops its watch (the session may be
//! hung or gone); the next connection attempt waits a backoff that doubles from 1 s to 60 s,
//! and meanwhile the pair reads as down with the last error. A poll reads every pair of its
//! plan at once ([`Watches::read_all`]), so a hung server costs its own pair a timeout and
//! never delays another pair. Watches of pairs a plan no longer
//! names (or names with other settings) are closed at the end of the poll. A `[[watch]]` entry
//! (replication no plan names) gets the same: one kept connection, its own task
//! ([`watch_loop`]), the same bounds and backoff.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::collect::READ_TIMEOUT;
use crate::engine::{DbError, PairState, Replication, Watch};
use crate::plan::Plan;
use crate::run::Db;

/// The first wait after a failed reading; it doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    component: String,
    reverse: bool,
    /// The pair's plan entry as written: other settings are another watch.
    settings: String,
}

enum Slot {
    Open(Box<dyn Watch>),
    Down {
        retry_at: Instant,
        failures: u32,
        error: String,
    },
}

impl Slot {
    /// Down and not due to connect again yet: the error a reading gives meanwhile.
    fn waiting(&self) -> Option<DbError> {
        let Slot::Down {
            retry_at, error, ..
        } = self
        else {
            return None;
        };
        let now = Instant::now();
        (now < *retry_at).then(|| {
            DbError::Failed(format!(
                "{error} (connecting again in {} s)",
                retry_at.duration_since(now).as_secs() + 1
            ))
        })
    }
}

/// One plan's kept watches (the poll task owns it).
#[derive(Default)]
pub struct Watches {
    kept: HashMap<Key, Slot>,
    used: HashSet<Key>,
    /// Connections opened, counted when they are opened (a reading a poll stopped waiting for
    /// still counts in the poll it connected in).
    connects: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Readings a poll stopped waiting for ([`POLL_WAIT`]); the watch is theirs until they
    /// end, and the first poll after that takes their result.
    in_flight: HashMap<Key, (Instant, Reading)>,
}

/// A pair's reading running on its own: the slot to keep, and the reading.
type Reading = tokio::task::JoinHandle<(Slot, PairRead)>;

/// How long a poll waits for its pairs' readings: one still reading after that reads down for
/// this poll (its reading goes on, bounded by [`READ_TIMEOUT`], and a later poll takes its
/// answer), so a hung server never holds up the other pairs of its plan.
pub const POLL_WAIT: Duration = Duration::from_secs(2);

/// The backoff after `failures` failed readings in a row.
fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(6))
        .min(BACKOFF_MAX)
}

async fn bounded<T>(
    what: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(READ_TIMEOUT, what).await {
        Ok(r) => r,
        Err(_) => Err(DbError::Timeout {
            what: "the server's answer".to_owned(),
            after: READ_TIMEOUT,
        }),
    }
}

impl Watches {
    /// No watch yet.
    pub fn new() -> Watches {
        Watches::default()
    }

    fn key(plan: &Plan, db: Db, reverse: bool) -> Key {
        // The settings' `Debug` text: secrets appear by reference only.
        let pair = crate::run::pairs::pair(plan, db);
        let (component, settings) = (pair.component(), pair.settings());
        Key {
            component,
            reverse,
            settings,
        }
    }

    /// The open watch of `key`, connected now if it is due.
    async fn open(
        &mut self,
        plan: &Plan,
        db: Db,
        key: &Key,
    ) -> Result<&mut Box<dyn Watch>, DbError> {
        self.used.insert(key.clone());
        let failures = match self.kept.get(key) {
            Some(slot @ Slot::Down { failures, .. }) => {
                if let Some(e) = slot.waiting() {
                    return Err(e);
                }
                *failures
            }
            _ => 0,
        };
        if !matches!(self.kept.get(key), Some(Slot::Open(_))) {
            let mut pair = crate::run::pairs::pair(plan, db);
            if key.reverse {
                pair = pair.reversed();
            }
            self.connects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match bounded(pair.watch()).await {
                Ok(w) => {
                    self.kept.insert(key.clone(), Slot::Open(w));
                }
                Err(e) => {
                    self.down(key, failures, &e);
                    return Err(e);
                }
            }
        }
        match self.kept.get_mut(key) {
            Some(Slot::Open(w)) => Ok(w),
            _ => Err(DbError::Failed("not connected".to_owned())),
        }
    }

    fn down(&mut self, key: &Key, failures_before: u32, e: &DbError) {
        self.kept.insert(key.clone(), down(failures_before, e));
    }

    /// Closes the watches this poll did not use (pairs gone from the plan, settings changed).
    /// Returns the connections opened during the poll (each a pair's sessions to both servers).
    pub fn end_poll(&mut self) -> u64 {
        let used = std::mem::take(&mut self.used);
        self.kept.retain(|k, _| used.contains(k));
        self.in_flight.retain(|k, _| used.contains(k));
        self.connects.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl crate::run::States for Watches {
    async fn state(&mut self, plan: &Plan, db: Db, reverse: bool) -> Result<PairState, DbError> {
        let key = Watches::key(plan, db, reverse);
        let w = self.open(plan, db, &key).await?;
        let read = bounded(w.state()).await;
        if let Err(e) = &read {
            self.down(&key, 0, e);
        }
        read
    }
}

/// One pair's reading in a poll: its servers' state and its replication.
pub struct PairRead {
    /// The pair's servers' state (forward).
    pub state: Result<PairState, DbError>,
    /// Its replication.
    pub replication: Result<Replication, DbError>,
}

impl PairRead {
    /// A reading that failed as a whole.
    fn failed(e: DbError) -> PairRead {
        PairRead {
            state: Err(e.clone()),
            replication: Err(e),
        }
    }
}

/// Reads one pair on its kept watch (connecting first when it is due, counted in `connects`),
/// each step bounded: the slot to keep and the reading.
async fn read_one(
    plan: std::sync::Arc<Plan>,
    db: Db,
    slot: Option<Slot>,
    connects: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> (Slot, PairRead) {
    let (failures, kept) = match slot {
        Some(Slot::Open(w)) => (0, Some(w)),
        Some(slot @ Slot::Down { failures, .. }) => match slot.waiting() {
            Some(e) => return (slot, PairRead::failed(e)),
            None => (failures, None),
        },
        None => (0, None),
    };
    let mut watch = match kept {
        Some(w) => w,
        None => {
            connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match bounded(crate::run::pairs::pair(&plan, db).watch()).await {
                Ok(w) => w,
                Err(e) => return (down(failures, &e), PairRead::failed(e)),
            }
        }
    };
    let state = bounded(watch.state()).await;
    if let Err(e) = &state {
        return (down(0, e), PairRead::failed(e.clone()));
    }
    let replication = bounded(watch.replication()).await;
    let slot = match &replication {
        Ok(_) => Slot::Open(watch),
        Err(e) => down(0, e),
    };
    (slot, PairRead { state, replication })
}

/// The slot of a watch whose reading failed for the `failures_before + 1`th time in a row.
fn down(failures_before: u32, e: &DbError) -> Slot {
    let failures = failures_before + 1;
    Slot::Down {
        retry_at: Instant::now() + backoff(failures),
        failures,
        error: e.to_string(),
    }
}

/// A poll's pair states as [`Watches::read_all`] read them, for the run's status; a reading
/// it does not hold (a reverse run's, or a pair only the kept plan names) comes from the
/// watches one at a time.
pub struct Prefetched<'a> {
    states: HashMap<Key, Result<PairState, DbError>>,
    watches: &'a mut Watches,
}

#[async_trait::async_trait]
impl crate::run::States for Prefetched<'_> {
    async fn state(&mut self, plan: &Plan, db: Db, reverse: bool) -> Result<PairState, DbError> {
        match self.states.get(&Watches::key(plan, db, reverse)) {
            Some(read) => read.clone(),
            None => self.watches.state(plan, db, reverse).await,
        }
    }
}

impl Watches {
    /// Reads every pair of `plan` at once, each on its own kept watch and bounded by
    /// [`READ_TIMEOUT`], waiting at most [`POLL_WAIT`]: a hung or dead server costs its own
    /// pair a down reading and never delays another pair's, nor closes another pair's
    /// sessions. Returns each pair's reading in the plan's order, and the states for the run's
    /// status.
    pub async fn read_all(&mut self, plan: &Plan) -> (Vec<(Db, PairRead)>, Prefetched<'_>) {
        let shared = std::sync::Arc::new(plan.clone());
        let deadline = tokio::time::Instant::now() + POLL_WAIT;
        // Per pair: the reading to wait for (and when it began), or why there is none.
        let mut pending = Vec::new();
        for (db, _) in crate::run::databases(plan) {
            let key = Watches::key(plan, db, false);
            self.used.insert(key.clone());
            let reading = match self.in_flight.remove(&key) {
                // A reading an earlier poll left: this poll takes it, or waits for it no more.
                Some((began, handle)) if !handle.is_finished() => {
                    let e = DbError::Failed(format!(
                        "no answer yet ({} s): the server is hung or slow",
                        began.elapsed().as_secs()
                    ));
                    self.in_flight.insert(key.clone(), (began, handle));
                    Err(e)
                }
                Some(left) => Ok(left),
                None => {
                    let slot = self.kept.remove(&key);
                    let connects = self.connects.clone();
                    Ok((
                        Instant::now(),
                        tokio::spawn(read_one(shared.clone(), db, slot, connects)),
                    ))
                }
            };
            pending.push((key, db, reading));
        }
        let mut reads = Vec::new();
        let mut states = HashMap::new();
        for (key, db, reading) in pending {
            let read = match reading {
                Err(e) => PairRead::failed(e),
                Ok((began, mut handle)) => {
                    match tokio::time::timeout_at(deadline, &mut handle).await {
                        Ok(Ok((slot, read))) => {
                            self.kept.insert(key.clone(), slot);
                            read
                        }
                        Ok(Err(joined)) => PairRead::failed(DbError::Failed(format!(
                            "the reading ended abnormally: {joined}"
                        ))),
                        Err(_) => {
                            self.in_flight.insert(key.clone(), (began, handle));
                            PairRead::failed(DbError::Failed(format!(
                                "no answer within {} s: the server is hung or slow",
                                POLL_WAIT.as_secs()
                            )))
                        }
                    }
                }
            };
            states.insert(key, read.state.clone());
            reads.push((db, read));
        }
        (
            reads,
            Prefetched {
                states,
                watches: self,
            },
        )
    }
}

/// A `[[watch]]` entry's kept connection.
enum Conn {
    Pg(
        std::sync::Arc<crate::postgres::shared::SharedSession>,
        std::sync::Arc<crate::postgres::Db>,
    ),
    My(std::sync::Arc<crate::mysql::shared::SharedServer>),
}

/// Polls one `[[watch]]` entry every `every` until `stop`: one connection kept between polls,
/// every connect and read bounded by [`READ_TIMEOUT`], dropped after a failure and opened
/// again after the same backoff as the pairs' (1 s doubling to 60 s).
pub(crate) async fn watch_loop(
    watched: super::config::Watched,
    metrics: std::sync::Arc<super::Shared>,
    stop: tokio_util::sync::CancellationToken,
    every: Duration,
) {
    use super::config::Watched;
    let (up_series, server) = match &watched {
        Watched::Postgres { endpoint, .. } => {
            ("pg_up", format!("{}:{}", endpoint.host, endpoint.port))
        }
        Watched::Mysql { endpoint, .. } => {
            ("mysql_up", format!("{}:{}", endpoint.host, endpoint.port))
        }
    };
    let mut conn: Option<Conn> = None;
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    loop {
        let reading = if conn.is_none() && Instant::now() < retry_at {
            Err("waiting to connect again".to_owned())
        } else {
            if conn.is_none() {
                let opened = match &watched {
                    Watched::Postgres { endpoint, .. } => {
                        // The session every watch of this database shares (a plan's pairs too).
                        let shared = crate::postgres::shared::SharedSession::of(
                            &crate::postgres::db::Server::new(
                                crate::postgres::Side::Source,
                                endpoint.clone(),
                            ),
                        );
                        tokio::time::timeout(READ_TIMEOUT, shared.session())
                            .await
                            .map(|r| r.map(|db| Conn::Pg(shared, db)).map_err(|e| e.to_string()))
                    }
                    Watched::Mysql { endpoint, .. } => {
                        // The session every watch of this server shares (a plan's pairs too).
                        let server = crate::mysql::db::Server::new("watched", endpoint);
                        let shared = crate::mysql::shared::SharedServer::of(&server);
                        tokio::time::timeout(READ_TIMEOUT, async {
                            shared.lock(&server.label).await?.keep();
                            Ok::<_, crate::mysql::MyError>(())
                        })
                        .await
                        .map(|r| r.map(|()| Conn::My(shared)).map_err(|e| e.to_string()))
                    }
                };
                match opened {
                    Ok(Ok(c)) => conn = Some(c),
                    Ok(Err(e)) => {
                        tracing::warn!(watch = watched.name(), error = %e, "cannot connect")
                    }
                    Err(_) => tracing::warn!(watch = watched.name(), "connect timed out"),
                }
            }
            match conn.as_mut() {
                None => Err("not connected".to_owned()),
                Some(c) => {
                    let read = match c {
                        Conn::Pg(_, db) => tokio::time::timeout(
                            READ_TIMEOUT,
                            crate::postgres::monitor::samples(db),
                        )
                        .await
                        .map(|r| r.map_err(|e| e.to_string())),
                        Conn::My(shared) => {
                            let (heartbeat, label) = match &watched {
                                Watched::Mysql {
                                    heartbeat,
                                    endpoint,
                                    ..
                                } => (
                                    heartbeat.as_ref(),
                                    format!("watched {}:{}", endpoint.host, endpoint.port),
                                ),
                                Watched::Postgres { .. } => (None, String::new()),
                            };
                            tokio::time::timeout(READ_TIMEOUT, async {
                                let mut session = shared.lock(&label).await?;
                                let samples =
                                    crate::mysql::monitor::samples(&mut session, heartbeat).await?;
                                session.keep();
                                Ok::<_, crate::mysql::MyError>(samples)
                            })
                            .await
                            .map(|r| r.map_err(|e| e.to_string()))
                        }
                    };
                    read.unwrap_or_else(|_| Err("no answer in time".to_owned()))
                }
            }
        };
        match &reading {
            Ok(_) => failures = 0,
            Err(e) => {
                let dropped = conn.take();
                if let Some(Conn::Pg(shared, db)) = &dropped {
                    shared.forget(db);
                }
                if dropped.is_some() || failures == 0 {
                    tracing::warn!(watch = watched.name(), error = %e, "reading failed");
                }
                if Instant::now() >= retry_at {
                    failures += 1;
                    retry_at = Instant::now() + backoff(failures);
                }
            }
        }
        metrics
            .metrics
            .watched(watched.name(), up_series, &server, reading);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_one_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
