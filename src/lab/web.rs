//! The demo's web side: an app server per host that answers every request with its host's
//! name (so a request through the proxy says where it landed), and a client looping through
//! the proxy that counts what answered and what failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::LabError;

/// An HTTP server on a free loopback port answering `name` to every request and closing the
/// connection after it (so a proxy never reuses it across a switch); it stops when dropped.
pub struct NamedServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl NamedServer {
    /// Starts it.
    pub async fn start(name: &str) -> Result<NamedServer, LabError> {
        let (listener, addr) = loopback_listener().await?;
        let name = name.to_owned();
        let app = axum::Router::new().fallback(move || {
            let name = name.clone();
            async move { ([(axum::http::header::CONNECTION, "close")], name) }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(NamedServer { addr, task })
    }
}

impl Drop for NamedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on a free loopback port, and its address.
pub(super) async fn loopback_listener() -> Result<(tokio::net::TcpListener, SocketAddr), LabError> {
    let at = std::path::Path::new("127.0.0.1:0");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| LabError::io(at, e))?;
    let addr = listener.local_addr().map_err(|e| LabError::io(at, e))?;
    Ok((listener, addr))
}

/// Requests to a URL every few milliseconds, each on a new connection, until stopped.
pub struct LoopingClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<String>, usize)>,
}

impl LoopingClient {
    /// Starts asking `url`.
    pub fn start(url: String) -> LoopingClient {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .pool_max_idle_per_host(0)
                .build();
            let Ok(http) = http else {
                return (Vec::new(), 0);
            };
            let (mut answers, mut failed) = (Vec::new(), 0);
            while !flag.load(Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        answers.push(r.text().await.unwrap_or_default())
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (answers, failed)
        });
        LoopingClient { stop, task }
    }

    /// Stops; returns every answer in order and the number of failed requests.
    pub async fn stop(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
