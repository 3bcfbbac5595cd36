//! The checked writer for PostgreSQL cutover tests, benchmarks and the demo: it commits, at a
//! steady rate and alternately, an insert into `writes` and a transaction (an insert into
//! `idents`, whose identity column must continue above the source's on the target, and updates
//! of that row and of the task's counter) to whichever server accepts its role (source first,
//! the target once the source refuses). The bookkeeping and the row-by-row proof are
//! [`super::ledger`]'s; this module holds the SQL.

use std::time::Duration;

use tokio_postgres::{Client, Config};

use super::ledger::{Control, Held, RETRY_PAUSE, Readback, SplitBrain, TASK_KEYS, TaskLog, Tasks};
pub use super::ledger::{Ledger, LedgerCheck, Server, gaps_around};

/// Tables the writer uses (created on the source by [`create_tables`]).
pub const SCHEMA_SQL: &str = "
    CREATE TABLE writes (id serial PRIMARY KEY, k bigint NOT NULL, payload text NOT NULL,
                         at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE idents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, k bigint NOT NULL,
                         n int NOT NULL DEFAULT 0);
    CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
";

/// Writer connections the lab's demo uses (and seeds counters for).
pub const DEMO_TASKS: u32 = 2;

/// Writer settings.
#[derive(Clone)]
pub struct WriterConfig {
    /// How to reach the source as the app role.
    pub source: Config,
    /// How to reach the target as the app role.
    pub target: Config,
    /// Transactions per second, over all tasks.
    pub rate: u32,
    /// Concurrent connections.
    pub tasks: u32,
    /// Id of the first task (its counter row and key range): two writers running at once
    /// (say, as two roles) use disjoint ranges.
    pub first_task: i32,
}

/// A running writer.
pub struct Writer(Tasks);

/// Creates the writer's tables on the source (as a superuser client) and grants them to `role`.
pub async fn create_tables(client: &Client, role: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_SQL).await?;
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    client
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON writes, idents, counters TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .await
}

/// Creates one counter row per task (before replication starts, so they are copied).
pub async fn seed_counters(client: &Client, tasks: u32) -> Result<(), tokio_postgres::Error> {
    for task in 0..tasks as i32 {
        client
            .execute(
                "INSERT INTO counters (id, n) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                &[&task],
            )
            .await?;
    }
    Ok(())
}

impl Writer {
    /// Starts the writer's tasks.
    pub fn start(config: WriterConfig) -> Writer {
        let first = config.first_task as i64;
        let (tasks, rate) = (config.tasks, config.rate);
        Writer(Tasks::spawn(
            first,
            tasks,
            rate,
            &["writes", "idents"],
            // Both servers may accept a connection while the target's app roles are still
            // blocked: a connection proves nothing, the order of acknowledgements does.
            SplitBrain::AckOrder,
            move |task, period, control| run_task(task as i32, config.clone(), period, control),
        ))
    }
}

impl std::ops::Deref for Writer {
    type Target = Tasks;
    fn deref(&self) -> &Tasks {
        &self.0
    }
}

impl Writer {
    /// Stops the tasks and returns what they saw.
    pub async fn stop(self) -> Ledger {
        self.0.stop().await
    }
}

async fn connect(config: &Config) -> Option<Client> {
    // TLS when the server offers it (the lab's TLS-only servers), unverified.
    let (client, connection) = config
        .connect(crate::postgres::tls::encrypt_only())
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

async fn run_task(task: i32, config: WriterConfig, period: Duration, control: Control) -> TaskLog {
    let mut log = TaskLog::default();
    let mut current: Option<(Server, Client)> = None;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: i64 = 0;
    while !control.stopped() {
        let Some((on, client)) = &current else {
            // Ask both at once: exactly one should accept the app role at any time.
            let (s, t) = tokio::join!(connect(&config.source), connect(&config.target));
            current = log.choose(s, t);
            if current.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            continue;
        };
        let on = *on;
        ticker.tick().await;
        seq += 1;
        let k = (task as i64) * TASK_KEYS + seq;
        let transaction = seq % 2 == 1;
        let (table, result) = if !transaction {
            let insert = client
                .query_one(
                    "INSERT INTO writes (k, payload) VALUES ($1, md5($1::int8::text)) RETURNING id::int8",
                    &[&k],
                )
                .await;
            ("writes", insert.map(|row| row.get::<_, i64>(0)))
        } else {
            // A transaction with an insert and two updates.
            let body = async {
                client.batch_execute("BEGIN").await?;
                let row = client
                    .query_one("INSERT INTO idents (k) VALUES ($1) RETURNING id", &[&k])
                    .await?;
                client
                    .execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&task])
                    .await?;
                client
                    .execute(
                        "UPDATE idents SET n = n + 1 WHERE id = $1",
                        &[&row.get::<_, i64>(0)],
                    )
                    .await?;
                client.batch_execute("COMMIT").await?;
                Ok::<i64, tokio_postgres::Error>(row.get(0))
            };
            ("idents", body.await)
        };
        match result {
            Ok(id) => {
                log.acked(table, k, id, on, transaction);
                control.count(on);
            }
            Err(e) => {
                log.in_doubt(table, k, transaction, error_text(&e));
                current = None;
            }
        }
    }
    log
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The PostgreSQL half of the proof: what the primary holds of the writer's rows.
impl Readback for &Client {
    type Error = tokio_postgres::Error;

    async fn held(&mut self, table: &str, from: i64, to: i64) -> Result<Held, Self::Error> {
        // What every copy must hold: the payload of `writes`, the one update of `idents`.
        let content = if table == "writes" {
            "payload = md5(k::text)"
        } else {
            "n = 1"
        };
        let rows = self
            .query(
                &format!(
                    "SELECT k, count(*), min(id)::int8, bool_and({content}) FROM {table}
                     WHERE k >= $1 AND k < $2 GROUP BY k"
                ),
                &[&from, &to],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect())
    }

    async fn counter(&mut self, task: i64) -> Result<Option<i64>, Self::Error> {
        // Seeded before replication started: a missing row is a problem.
        let row = self
            .query_opt("SELECT n FROM counters WHERE id = $1", &[&(task as i32)])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
