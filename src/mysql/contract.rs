//! The MySQL / MariaDB pair behind the engine contract ([`crate::engine::Pair`]): what a run,
//! the daemon and the single-pair commands call, mapped onto this engine's own modules.

use super::cutover::MyWindow;
use super::{Db, Pair, cleanup, heartbeat, preflight, start, status, verify, writers};
use crate::engine::{
    self, Act, Cleaned, DbError, Preflighted, Probe, Reading, Replication, Verified, Watch, Window,
};

#[async_trait::async_trait]
impl engine::Reports for Pair {
    const SECTION: &'static str = "mysql";
    const COMMAND: &'static str = "mysql";
    type Started = start::Started;
    type Status = status::Status;

    fn select(plan: &crate::plan::Plan, only: Option<&str>) -> Vec<Pair> {
        Pair::select(plan, only)
    }

    async fn started(&self) -> Result<start::Started, DbError> {
        Ok(start::start(self).await?)
    }

    async fn status(&self, _state_dir: &std::path::Path) -> Result<status::Status, DbError> {
        let (mut source, mut target) = self.connect().await?;
        Ok(status::status(self, &mut source, &mut target, status::STATUS_LAG_LIMIT).await?)
    }

    fn healthy(status: &status::Status) -> bool {
        status.running()
    }
}

#[async_trait::async_trait]
impl engine::Pair for Pair {
    fn engine(&self) -> &'static str {
        "mysql"
    }

    fn name(&self) -> &str {
        &self.plan.name
    }

    fn replicates_back(&self) -> bool {
        self.plan.reverse_replication
    }

    fn settings(&self) -> String {
        format!("{:?}", self.plan)
    }

    fn budget(&self) -> Option<engine::gate::Budget> {
        self.budget
    }

    fn reversed(&self) -> Box<dyn engine::Pair> {
        Box::new(Pair::reversed(self))
    }

    fn says(&self, act: Act) -> String {
        let m = &self.plan;
        match act {
            Act::Preflight => format!(
                "check binlog (ROW, FULL image), server ids, GTID mode, grants and primary keys on {}:{} -> {}:{} for {}",
                m.source.host,
                m.source.port,
                m.target.host,
                m.target.port,
                m.databases.join(", ")
            ),
            Act::Start => format!(
                "stream a consistent snapshot into the target, replicate from its coordinates; wait for heartbeat lag below {}",
                humantime::format_duration(m.max_lag)
            ),
            Act::Fence => format!(
                "lock accounts {}, make the source read-only, kill their sessions",
                m.app_users.join(", "),
            ),
            Act::CatchUp => format!(
                "read the fenced source's GTID/position and wait up to {} until the target has executed it",
                humantime::format_duration(m.catchup_timeout)
            ),
            Act::Promote => format!(
                "stop and reset the replica, make the target writable, unlock {}",
                m.app_users.join(", ")
            ),
            Act::Finish => format!(
                "check the old primary's position did not move, keep its accounts locked{}",
                if m.reverse_replication {
                    ", make it a replica of the new primary"
                } else {
                    ""
                }
            ),
        }
    }

    async fn preflight(&self) -> Result<Preflighted, DbError> {
        let (mut s, mut t) = self.connect().await?;
        let r = preflight::run(self, &mut s, &mut t).await?;
        let by = if r.gtid {
            "GTID"
        } else {
            "binlog file/position"
        };
        Ok(Preflighted {
            pair: r.pair.clone(),
            summary: format!("{} -> {}, replication by {by}", r.versions.0, r.versions.1),
            notes: if r.already_started {
                vec!["replication for this pair is already set up".to_string()]
            } else {
                Vec::new()
            },
            findings: r.findings.clone(),
            tables: r.tables.len(),
            detail: engine::to_json("the preflight report", &r)?,
        })
    }

    async fn start(&self) -> Result<(), DbError> {
        start::start(self).await?;
        Ok(())
    }

    async fn probe(&self) -> Result<Box<dyn Probe>, DbError> {
        let (source, target) = self.connect().await?;
        Ok(Box::new(MyProbe {
            max_lag: self.plan.max_lag,
            source,
            target,
        }))
    }

    async fn watch(&self) -> Result<Box<dyn Watch>, DbError> {
        // One session per server for every watch that names it; a pair whose two ends are the
        // same server keeps a second one of its own (a state reading holds both at once).
        let source = super::shared::SharedServer::of(&self.source);
        let mut target = super::shared::SharedServer::of(&self.target);
        if source.same_server(&target) {
            target = std::sync::Arc::new(super::shared::SharedServer::private(&self.target));
        }
        // Connected now, so a server that cannot be reached reads as down at once.
        source.lock(&self.source.label).await?.keep();
        target.lock(&self.target.label).await?.keep();
        Ok(Box::new(MyWatch {
            pair: self.clone(),
            source,
            target,
        }))
    }

    async fn window(&self, _resume: bool) -> Result<Box<dyn Window>, DbError> {
        // A MySQL window always reads the servers for what a crashed process began.
        Ok(Box::new(MyWindow::open(self).await?))
    }

    async fn prepare_reverse(&self) -> Result<String, DbError> {
        let mut old = self.source.connect().await?;
        writers::release_for_reverse(&mut old, &self.plan.name).await?;
        Ok("the old primary's account lock can be lifted by its promotion".to_owned())
    }

    async fn keep_fenced(&self) -> Result<(), DbError> {
        let mut old = self.source.connect().await?;
        Ok(writers::keep_locked(&mut old, &self.plan.name).await?)
    }

    async fn verify(&self) -> Result<Verified, DbError> {
        Ok(verify::verify(self, verify::CHUNK_ROWS).await?)
    }

    async fn cleanup(&self) -> Result<Cleaned, DbError> {
        Ok(cleanup::cleanup(self).await?)
    }

    async fn lease(
        &self,
        holder: &engine::Holder,
    ) -> Result<Box<dyn engine::ServerLease>, DbError> {
        Ok(Box::new(super::lease::take(self, holder).await?))
    }
}

/// Replication progress of one pair (a heartbeat through it), on connections held for the
/// whole wait.
struct MyProbe {
    max_lag: std::time::Duration,
    source: Db,
    target: Db,
}

#[async_trait::async_trait]
impl Probe for MyProbe {
    async fn read(&mut self) -> Result<Reading, DbError> {
        let lag = heartbeat::measure(&mut self.source, &mut self.target, self.max_lag).await?;
        Ok(match lag.replicated_after {
            Some(lag) => Reading {
                ready: true,
                words: format!(
                    "replicating, heartbeat lag {:.1} ms",
                    lag.as_secs_f64() * 1e3
                ),
            },
            None => Reading {
                ready: false,
                words: format!(
                    "a heartbeat did not reach the target within max_lag ({}); still waiting",
                    humantime::format_duration(self.max_lag)
                ),
            },
        })
    }
}

/// The daemon's kept sessions to both servers of a pair, shared with every other watch of the
/// same servers (the source's is held so that an unreachable source reads as down).
struct MyWatch {
    pair: Pair,
    source: std::sync::Arc<super::shared::SharedServer>,
    target: std::sync::Arc<super::shared::SharedServer>,
}

#[async_trait::async_trait]
impl Watch for MyWatch {
    async fn replication(&mut self) -> Result<Replication, DbError> {
        // The replica's own threads and Seconds_Behind: a reading writes no heartbeat to the
        // source; the source answers a ping, so an unreachable one reads as down.
        {
            let mut source = self.source.lock(&self.pair.source.label).await?;
            source.ping().await?;
            source.keep();
        }
        let mut session = self.target.lock(&self.pair.target.label).await?;
        let target = &mut *session;
        let status_sql = target.dialect.replica_status();
        let source_words = target.flavour != super::dialect::Flavour::Mariadb
            && status_sql.starts_with("SHOW REPLICA");
        let rows = target
            .rows_by_name("read replica status", status_sql)
            .await?;
        let row = rows.first();
        let running = row.is_some_and(|r| {
            r.text("Replica_IO_Running").as_deref() == Some("Yes")
                && r.text("Replica_SQL_Running").as_deref() == Some("Yes")
        });
        let behind = row
            .and_then(|r| r.number("Seconds_Behind_Source"))
            .filter(|_| running);
        let mut exporter = Vec::new();
        for e in [&self.pair.plan.source, &self.pair.plan.target] {
            exporter.push(engine::ExporterSample::up(
                "mysql_up",
                format!("{}:{}", e.host, e.port),
            ));
        }
        if let Some(r) = row {
            exporter.extend(super::monitor::channel_samples(r, source_words));
        }
        session.keep();
        Ok(Replication {
            exporter,
            running,
            lag_bytes: None,
            lag_seconds: behind.map(|s| s as f64),
            words: match behind {
                Some(s) => format!("{s} s behind the source"),
                None => "not replicating".to_owned(),
            },
        })
    }

    async fn state(&mut self) -> Result<engine::PairState, DbError> {
        // Both sessions at once, always taken in the same order (by server) whichever end
        // each is, so two watches of one pair in opposite directions cannot wait on each other.
        let (source_label, target_label) = (&self.pair.source.label, &self.pair.target.label);
        let (mut source, mut target) = if self.source.orders_before(&self.target) {
            let source = self.source.lock(source_label).await?;
            (source, self.target.lock(target_label).await?)
        } else {
            let target = self.target.lock(target_label).await?;
            (self.source.lock(source_label).await?, target)
        };
        let state = super::cutover::pair_state(&self.pair, &mut source, &mut target).await?;
        source.keep();
        target.keep();
        Ok(state)
    }
}
