//! The demo app's health endpoint, for a run's HTTP health check: `GET /health` answers 200
//! only when the new host's PostgreSQL and MariaDB both let the app write (the app role logs
//! in and commits on the target), 503 with the reason otherwise. Before the promotion it fails,
//! after it passes: a check that can tell the two apart.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use mysql_async::prelude::Queryable;

use super::{APP, Lab, LabError};
use crate::secret::Secret;

#[derive(Clone)]
struct Targets {
    pg: tokio_postgres::Config,
    maria: mysql_async::Opts,
}

/// A running health endpoint; stopped when dropped.
pub struct HealthServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HealthServer {
    /// The URL of the health endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// Starts the endpoint on a free loopback port, checking `lab`'s targets as the app.
    pub async fn start(lab: &Lab, password: &Secret) -> Result<HealthServer, LabError> {
        let mut pg = lab.pg_target.config(APP);
        pg.user(APP)
            .password(password.expose())
            .connect_timeout(Duration::from_secs(2));
        let targets = Targets {
            pg,
            maria: lab.maria_target.user_opts(APP, password.expose(), APP),
        };
        let (listener, addr) = super::web::loopback_listener().await?;
        let app = Router::new()
            .route("/health", get(health))
            .with_state(targets);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HealthServer { addr, task })
    }
}

async fn health(State(t): State<Targets>) -> (StatusCode, String) {
    match tokio::time::timeout(Duration::from_secs(3), check(&t)).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            "ok: the new host's databases take the app's writes\n".into(),
        ),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out\n".into()),
    }
}

async fn check(t: &Targets) -> Result<(), String> {
    let (client, conn) =
        t.pg.connect(crate::postgres::tls::encrypt_only())
            .await
            .map_err(|e| format!("postgres: {}", crate::postgres::db::error_message(&e)))?;
    let task = tokio::spawn(conn);
    let wrote = client
        .batch_execute("BEGIN; CREATE TEMP TABLE health_probe (x int); INSERT INTO health_probe VALUES (1); ROLLBACK")
        .await;
    task.abort();
    wrote.map_err(|e| format!("postgres: {}", crate::postgres::db::error_message(&e)))?;
    let mut conn = mysql_async::Conn::new(t.maria.clone())
        .await
        .map_err(|e| format!("mariadb: {e}"))?;
    let ro: Option<u8> = conn
        .query_first("SELECT @@read_only")
        .await
        .map_err(|e| format!("mariadb: {e}"))?;
    let _ = conn.disconnect().await;
    if ro != Some(0) {
        return Err("mariadb: the target is read-only".into());
    }
    Ok(())
}
