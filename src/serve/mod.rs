//! Service mode: one daemon watching a fleet of migrations.
//!
//! - [`config`]: the daemon's file (listener, plans, poll interval, token, TTL schedule).
//! - [`collect`]: a poll: every component of a plan read once, bounded, into a typed snapshot.
//! - [`metrics`]: the Prometheus families a scrape answers from, written from each snapshot.
//! - [`watches`]: the connections the poller keeps open between polls, and the `[[watch]]`
//!   entries' own loops.
//!
//! The daemon never runs a cutover: runs stay in the hands of `cutover run` (a person, or a
//! timer the operator owns), and the daemon only reads what they journal and what the servers
//! say. The one thing it changes is what is safe to repeat at any time: the TTL job (`dns
//! lower-ttl` of every record, idempotent), on its schedule or when asked through the API with
//! the token. It listens on loopback unless the configuration sets a token; the token comes
//! from a file or the environment, is compared in constant time, and is never printed.
//!
//! Endpoints: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /status` (the last poll
//! of every migration, as JSON), `POST /ttl-job` (runs the TTL job now; `Authorization: Bearer
//! <token>`).

pub mod collect;
pub mod config;
pub mod metrics;
pub mod watches;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::dns::Discovery;
use crate::plan::Plan;
use crate::secret::Secret;

pub use config::{Config, ConfigError};
use metrics::{Metrics, PlanReading};

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source} (fix: pick a free port in `listen`)")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
}

/// What the daemon's tasks share.
pub(crate) struct Shared {
    pub(crate) metrics: Metrics,
    plans: Vec<Plan>,
    readings: RwLock<BTreeMap<String, PlanReading>>,
    token: Option<Secret>,
    discovery: Discovery,
    /// One TTL job at a time (the schedule and the API share it).
    ttl_job: Mutex<()>,
    /// Every endpoint but `/healthz` takes the token: always off loopback (the scrape and
    /// `/status` name the runs' state and servers), and on loopback when the configuration
    /// says so (behind a reverse proxy).
    require_token: bool,
}

/// Connections served at once; one more is closed at once (and logged).
const MAX_CONNECTIONS: usize = 256;
/// A client has this long to send a request's headers (a slow-loris holds nothing longer).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A read (`/metrics`, `/status`) answers within this or is cut off (503).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What one TTL job run did for one record.
#[derive(Debug, Clone, Serialize)]
pub struct TtlJobResult {
    /// `[migration] name`.
    pub migration: String,
    /// `name TYPE`.
    pub record: String,
    /// `lowered`, `unchanged` or `failed`.
    pub outcome: String,
    /// What happened, in words.
    pub text: String,
}

/// Runs the daemon until `shutdown` is cancelled. Calls `ready` with the bound address once
/// the listener is up (port 0 in the configuration picks a free one).
pub async fn serve(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        plans: config.plans,
        readings: RwLock::new(BTreeMap::new()),
        token: config.token,
        discovery: Discovery::system(),
        ttl_job: Mutex::new(()),
        require_token: config.require_token,
    });
    let tasks = tokio_util::task::TaskTracker::new();
    for i in 0..shared.plans.len() {
        let (shared, stop, every) = (shared.clone(), shutdown.clone(), config.poll);
        let offset = every.mul_f64(i as f64 / shared.plans.len() as f64);
        tasks.spawn(async move {
            // The plans' polls spread over the interval, not all at its start: a fleet's
            // servers and this daemon see a steady load instead of a burst every interval.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(offset) => {}
            }
            // This plan's kept connections, read again at every poll.
            let mut watches = watches::Watches::new();
            loop {
                let snapshot =
                    collect::poll(&shared.plans[i], &shared.discovery, &mut watches).await;
                let reading = metrics::record(&shared.metrics, &snapshot);
                shared
                    .readings
                    .write()
                    .await
                    .insert(reading.migration.clone(), reading);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    for watched in config.watches {
        tasks.spawn(watches::watch_loop(
            watched,
            shared.clone(),
            shutdown.clone(),
            config.poll,
        ));
    }
    {
        // The exposition rendered for the scrapes, off their path.
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                let metrics = shared.clone();
                let _ = tokio::task::spawn_blocking(move || metrics.metrics.render()).await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(metrics::RENDER_EVERY) => {}
                }
            }
        });
    }
    if let Some(every) = config.ttl_every {
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let results = ttl_job(&shared).await;
                tracing::info!(records = results.len(), "scheduled TTL job ran");
            }
        });
    }
    tasks.close();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/ttl-job", post(run_ttl_job))
        .layer(axum::middleware::from_fn(bounded))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    tracing::info!(%addr, "serving /metrics, /healthz, /status and POST /ttl-job");
    ready(addr);
    accept(listener, app, shutdown.clone()).await;
    shutdown.cancel();
    tasks.wait().await;
    Ok(())
}

/// Serves connections until `shutdown`: at most [`MAX_CONNECTIONS`] at once, each with
/// [`HEADER_READ_TIMEOUT`] to send its headers; on shutdown, open connections finish their
/// request (5 s at most).
async fn accept(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection closed: {MAX_CONNECTIONS} are open already");
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Every endpoint but `/healthz` needs the token where the configuration says so.
async fn guard(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if shared.require_token
        && request.uri().path() != "/healthz"
        && let Some(refused) = refusal(&shared, request.headers())
    {
        return refused;
    }
    next.run(request).await
}

/// Reads answer within [`READ_TIMEOUT`] (the TTL job has its own bound per record).
async fn bounded(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.method() == axum::http::Method::POST {
        return next.run(request).await;
    }
    match tokio::time::timeout(READ_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long\n",
        )
            .into_response(),
    }
}

async fn scrape(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.text(),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let readings = shared.readings.read().await;
    let migrations: Vec<serde_json::Value> = shared
        .plans
        .iter()
        .map(|p| match readings.get(&p.migration.name) {
            Some(r) => serde_json::to_value(r).unwrap_or_else(|e| {
                serde_json::json!({ "migration": p.migration.name, "error": format!("cannot render the reading: {e}") })
            }),
            None => serde_json::json!({ "migration": p.migration.name, "polled": false }),
        })
        .collect();
    axum::Json(serde_json::json!({ "migrations": migrations })).into_response()
}

/// Equal in constant time (for the token; `subtle` keeps the compiler from shortening it).
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// The refusal to send back when the request does not carry the token, if it does not.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &shared.token else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "no token is configured: changes through the API are off (set `token_file` or `token_env`)\n",
            )
                .into_response(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), token.expose().as_bytes()) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid `Authorization: Bearer <token>` header is required\n",
            )
                .into_response(),
        ),
    }
}

async fn run_ttl_job(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers) {
        return refused;
    }
    let results = ttl_job(&shared).await;
    // The job's counters in the very next scrape.
    shared.metrics.render();
    let code = if results.iter().any(|r| r.outcome == "failed") {
        StatusCode::BAD_GATEWAY
    } else if results.iter().any(|r| r.outcome == "refused") {
        // Another holder of the migration's lease (a run): try again after it.
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    (code, axum::Json(serde_json::json!({ "results": results }))).into_response()
}

/// Bound on one record's TTL job (lowering and waiting for every server to serve it).
const TTL_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// `dns lower-ttl` for every record of every plan (idempotent: a lowered TTL stays as is).
async fn ttl_job(shared: &Shared) -> Vec<TtlJobResult> {
    let _one = shared.ttl_job.lock().await;
    let mut results = Vec::new();
    for plan in &shared.plans {
        let migration = plan.migration.name.clone();
        let states = crate::dns::state::Records::new(&plan.migration.state_dir);
        // The job changes records: it holds the migration's lease for all of them, or skips
        // the plan while a run (or another command) holds it.
        let _lease = match crate::state::take_lease(&plan.migration.state_dir, "serve ttl-job") {
            Ok(lease) => lease,
            Err(e) => {
                for record in &plan.dns {
                    shared
                        .metrics
                        .ttl_runs
                        .with_label_values(&[&migration, "refused"])
                        .inc();
                    results.push(TtlJobResult {
                        migration: migration.clone(),
                        record: crate::dns::label(record),
                        outcome: "refused".to_owned(),
                        text: e.to_string(),
                    });
                }
                continue;
            }
        };
        for (i, record) in plan.dns.iter().enumerate() {
            let label = crate::dns::label(record);
            let lowered = async {
                let target = crate::dns::Target::resolve(i, record, &shared.discovery).await?;
                crate::dns::ttl::lower(
                    &target,
                    &states,
                    crate::dns::ttl::LowerOptions {
                        clamp: false,
                        timeout: TTL_JOB_TIMEOUT,
                        poll: Duration::from_secs(1),
                    },
                )
                .await
            };
            let (outcome, text) = match lowered.await {
                Ok(r) if r.changed => {
                    ("lowered", format!("TTL lowered to {}", r.state.lowered_ttl))
                }
                Ok(r) => ("unchanged", format!("TTL already {}", r.state.lowered_ttl)),
                Err(e) => ("failed", e.to_string()),
            };
            shared
                .metrics
                .ttl_runs
                .with_label_values(&[&migration, outcome])
                .inc();
            results.push(TtlJobResult {
                migration: migration.clone(),
                record: label,
                outcome: outcome.to_owned(),
                text,
            });
        }
    }
    results
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret2"));
        assert!(!super::same(b"", b"x"));
    }
}
