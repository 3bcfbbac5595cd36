//! The PostgreSQL pair behind the engine contract ([`crate::engine::Pair`]): what a run, the
//! daemon and the single-pair commands call, mapped onto this engine's own modules.

use super::cutover::PgWindow;
use super::{Db, Pair, cleanup, fence, preflight, start, status, verify};
use crate::engine::{
    self, Act, Cleaned, DbError, Preflighted, Probe, Reading, Replication, Verified, Watch, Window,
};

#[async_trait::async_trait]
impl engine::Reports for Pair {
    const SECTION: &'static str = "postgres";
    const COMMAND: &'static str = "pg";
    type Started = start::StartReport;
    type Status = status::Status;

    fn select(plan: &crate::plan::Plan, only: Option<&str>) -> Vec<Pair> {
        Pair::select(plan, only)
    }

    async fn started(&self) -> Result<start::StartReport, DbError> {
        Ok(start::start(self).await?)
    }

    async fn status(&self, state_dir: &std::path::Path) -> Result<status::Status, DbError> {
        let (source, target) = self.connect().await?;
        let samples = crate::state::StateDir::new(state_dir).postgres();
        Ok(status::status(self, &source, &target, Some(&samples)).await?)
    }

    fn healthy(_: &status::Status) -> bool {
        // Read is enough: what it says (a copy still running, a lost slot) is for the reader.
        true
    }
}

#[async_trait::async_trait]
impl engine::Pair for Pair {
    fn engine(&self) -> &'static str {
        "postgres"
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
        let p = &self.plan;
        match act {
            Act::Preflight => format!(
                "check wal_level, slots, senders, privileges, replica identities, prepared and long transactions, versions and extensions on {}:{}/{} -> {}:{}/{}",
                p.source.host,
                p.source.port,
                p.source.dbname,
                p.target.host,
                p.target.port,
                p.target.dbname
            ),
            Act::Start => format!(
                "{}publish {} and subscribe on the target; wait for every table's initial copy and lag below {} bytes",
                if p.copy_schema {
                    "copy the schema with pg_dump --schema-only, "
                } else {
                    ""
                },
                if p.tables.is_empty() {
                    "all tables".to_owned()
                } else {
                    p.tables.join(", ")
                },
                p.max_lag_bytes
            ),
            Act::Fence => format!(
                "fence roles {} on the source (no new logins, sessions terminated{})",
                p.app_roles.join(", "),
                if p.drain.is_zero() {
                    String::new()
                } else {
                    format!(" after {} drain", humantime::format_duration(p.drain))
                },
            ),
            Act::CatchUp => format!(
                "commit a marker and wait up to {} until the target has it and confirmed_flush_lsn >= fence LSN; copy sequence values{}",
                humantime::format_duration(p.catchup_timeout),
                if p.reverse_replication {
                    "; set up reverse replication (target -> source)"
                } else {
                    ""
                }
            ),
            Act::Promote => {
                "disable the subscription and let app roles log in on the target, in one transaction".to_owned()
            }
            Act::Finish => {
                "decode the old primary's WAL after the fence (writes there are reported lost), drop the forward slot, refresh materialized views, keep the source fenced".to_owned()
            }
        }
    }

    async fn preflight(&self) -> Result<Preflighted, DbError> {
        let (s, t) = self.connect().await?;
        let r = preflight::run(self, &s, &t).await?;
        Ok(Preflighted {
            pair: r.pair.clone(),
            summary: format!(
                "{} -> {}, PostgreSQL {} -> {}",
                self.source.label, self.target.label, r.versions.0, r.versions.1
            ),
            notes: Vec::new(),
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
        Ok(Box::new(PgProbe {
            pair: self.clone(),
            source,
            target,
        }))
    }

    async fn watch(&self) -> Result<Box<dyn Watch>, DbError> {
        // One session per database for every watch that names it.
        let shared = (
            super::shared::SharedSession::of(&self.source),
            super::shared::SharedSession::of(&self.target),
        );
        let (source, target) = tokio::try_join!(shared.0.session(), shared.1.session())?;
        Ok(Box::new(PgWatch {
            pair: self.clone(),
            shared,
            source,
            target,
        }))
    }

    async fn window(&self, resume: bool) -> Result<Box<dyn Window>, DbError> {
        Ok(if resume {
            Box::new(PgWindow::open_for_resume(self).await?)
        } else {
            Box::new(PgWindow::open(self).await?)
        })
    }

    async fn prepare_reverse(&self) -> Result<String, DbError> {
        let old = self.source.connect().await?;
        let n = fence::reopen_for_reverse(&old, &self.names.pair).await?;
        Ok(format!(
            "{n} fenced role(s) on the old primary can be lifted by its promotion"
        ))
    }

    async fn keep_fenced(&self) -> Result<(), DbError> {
        let old = self.source.connect().await?;
        Ok(fence::keep_after_promotion(&old, &self.names.pair).await?)
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

/// Replication progress of one pair, on connections held for the whole wait.
struct PgProbe {
    pair: Pair,
    source: Db,
    target: Db,
}

#[async_trait::async_trait]
impl Probe for PgProbe {
    async fn read(&mut self) -> Result<Reading, DbError> {
        let pair = &self.pair;
        let st = status::status(pair, &self.source, &self.target, None).await?;
        // A copy or apply that keeps failing (rows the target already has, a missing column)
        // never gets ready: said instead of waited for.
        if let Some(row) = self
            .target
            .query_opt(
                "read the subscription's error counts",
                "SELECT sync_error_count + apply_error_count FROM pg_stat_subscription_stats WHERE subname = $1",
                &[&pair.names.subscription],
            )
            .await?
            && row.get::<_, i64>(0) > 0
        {
            return Err(DbError::Refused(format!(
                "the target fails to apply the initial copy or changes ({} error(s) so far): see the target's server log (often rows the target already had, e.g. the app writing there)",
                row.get::<_, i64>(0)
            )));
        }
        let lag = st.lag_bytes.unwrap_or(i64::MAX);
        if st.all_ready && st.apply_running && lag <= pair.plan.max_lag_bytes as i64 {
            return Ok(Reading {
                ready: true,
                words: format!("{} tables copied, lag {lag} bytes", st.tables.len()),
            });
        }
        let ready = st.tables.iter().filter(|t| t.state == "ready").count();
        Ok(Reading {
            ready: false,
            words: format!(
                "initial copy {ready}/{} tables ready, lag {} bytes (waiting for lag <= {})",
                st.tables.len(),
                st.lag_bytes.map_or("unknown".to_owned(), |l| l.to_string()),
                pair.plan.max_lag_bytes
            ),
        })
    }
}

/// The daemon's kept sessions to both databases of a pair, shared with every other watch of
/// the same databases.
struct PgWatch {
    pair: Pair,
    shared: (
        std::sync::Arc<super::shared::SharedSession>,
        std::sync::Arc<super::shared::SharedSession>,
    ),
    source: std::sync::Arc<Db>,
    target: std::sync::Arc<Db>,
}

/// Forgets a watch's sessions when dropped armed: a reading that failed, or that its caller
/// cancelled halfway (a timeout), hands neither session to the next watch.
struct ForgetUnlessDone<'a> {
    watch: &'a PgWatch,
    done: bool,
}

impl Drop for ForgetUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.watch.shared.0.forget(&self.watch.source);
            self.watch.shared.1.forget(&self.watch.target);
        }
    }
}

#[async_trait::async_trait]
impl Watch for PgWatch {
    async fn replication(&mut self) -> Result<Replication, DbError> {
        let mut reading = ForgetUnlessDone {
            watch: self,
            done: false,
        };
        // Replication only: the fence comes with the pair's state, drift is `pg status`'s.
        let st = status::read(
            &self.pair,
            &self.source,
            &self.target,
            None,
            status::Depth::Replication,
        )
        .await?;
        reading.done = true;
        drop(reading);
        let mut exporter: Vec<engine::ExporterSample> =
            [&self.pair.plan.source, &self.pair.plan.target]
                .iter()
                .map(|e| engine::ExporterSample::up("pg_up", format!("{}:{}", e.host, e.port)))
                .collect();
        if st.slot_exists {
            exporter.extend(super::monitor::slot_samples(
                &self.pair.names.subscription,
                &self.pair.plan.source.dbname,
                st.lag_bytes,
                st.slot_active,
            ));
        }
        Ok(Replication {
            exporter,
            running: st.replication_running,
            lag_bytes: st.lag_bytes,
            lag_seconds: st.lag_seconds,
            words: format!(
                "{} tables, all ready: {}, lag {} bytes{}",
                st.tables.len(),
                st.all_ready,
                st.lag_bytes.map_or("unknown".to_owned(), |b| b.to_string()),
                if st.replication_running {
                    String::new()
                } else {
                    format!("; replication NOT running: {}", st.not_running_cause())
                }
            ),
        })
    }

    async fn state(&mut self) -> Result<engine::PairState, DbError> {
        let mut reading = ForgetUnlessDone {
            watch: self,
            done: false,
        };
        let state = super::cutover::pair_state(&self.pair, &self.source, &self.target).await?;
        reading.done = true;
        drop(reading);
        Ok(state)
    }
}
