//! `dns wait`: poll every address of every authoritative server (recursion off), and the plan's
//! resolvers, until each serves exactly the new values; report per server.

use std::net::SocketAddr;
use std::time::Duration;

use cutover_providers::RecordType;
use serde::Serialize;

use super::Target;
use super::probe::{self, Question, Served};

/// One (record, server) pair being watched.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `name TYPE`.
    pub record: String,
    /// The question asked: record name and type.
    #[serde(skip)]
    pub question: (String, RecordType),
    /// Server as shown to people.
    pub server: String,
    /// Where queries go.
    pub addr: SocketAddr,
    /// A recursive resolver rather than an authoritative server.
    pub resolver: bool,
    /// The values wanted.
    pub wanted: Vec<String>,
    /// The last answer.
    pub last: Option<Served>,
    /// When (since the start) it first served the new values.
    #[serde(with = "opt_millis")]
    pub done_after: Option<Duration>,
}

impl Row {
    /// Whether it serves the new values.
    pub fn done(&self) -> bool {
        self.done_after.is_some()
    }
}

/// The result of waiting.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Every row, done or not.
    pub rows: Vec<Row>,
    /// Whether every row serves the new values.
    pub complete: bool,
    /// How long it took (or how long we waited).
    #[serde(with = "millis")]
    pub elapsed: Duration,
}

impl Outcome {
    /// The rows still serving something else.
    pub fn pending(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.done())
    }
}

/// The rows for `targets`: every authoritative address, then every resolver.
pub fn rows(targets: &[Target<'_>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for target in targets {
        let wanted = target.wanted(target.plan.cutover_ttl).values;
        let question = (target.plan.name.clone(), target.plan.record_type);
        for server in &target.servers {
            rows.push(Row {
                record: target.label(),
                question: question.clone(),
                server: server.to_string(),
                addr: server.addr,
                resolver: false,
                wanted: wanted.clone(),
                last: None,
                done_after: None,
            });
        }
        for addr in &target.resolvers {
            rows.push(Row {
                record: target.label(),
                question: question.clone(),
                server: format!("{addr} (resolver)"),
                addr: *addr,
                resolver: true,
                wanted: wanted.clone(),
                last: None,
                done_after: None,
            });
        }
    }
    rows
}

/// Polls until every row serves the new values or `timeout` passes; `on_round` sees the rows
/// after each round (for a live table). Rows already done are not asked again.
pub async fn wait(
    targets: &[Target<'_>],
    timeout: Duration,
    poll: Duration,
    mut on_round: impl FnMut(&[Row], Duration),
) -> Outcome {
    let start = tokio::time::Instant::now();
    let mut rows = rows(targets);
    loop {
        let pending: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].done()).collect();
        let questions: Vec<Question> = pending
            .iter()
            .map(|&i| {
                Question::new(
                    &rows[i].question.0,
                    rows[i].question.1,
                    rows[i].addr,
                    rows[i].resolver,
                )
            })
            .collect();
        let answers = probe::ask_all(&questions).await;
        let elapsed = start.elapsed();
        for (i, served) in pending.into_iter().zip(answers) {
            let row = &mut rows[i];
            if served.serves(&row.wanted, !row.resolver) {
                row.done_after = Some(elapsed);
            }
            row.last = Some(served);
        }
        on_round(&rows, elapsed);
        let complete = rows.iter().all(Row::done);
        if complete || start.elapsed() >= timeout {
            return Outcome {
                rows,
                complete,
                elapsed: start.elapsed(),
            };
        }
        tokio::time::sleep(poll.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}

mod millis {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }
}
