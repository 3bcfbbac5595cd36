//! The demo's web side: an app server per host that answers every request with its host's
//! name (so a request through the proxy says where it landed), and a client looping through
//! the proxy that counts what answered and what failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::LabError;

/// An HTTP server on a free loopback port answering `name` to every request (one request per
/// connection); it stops when dropped.
pub struct NamedServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl NamedServer {
    /// Starts it.
    pub async fn start(name: &str) -> Result<NamedServer, LabError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| LabError::io(std::path::Path::new("127.0.0.1:0"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LabError::io(std::path::Path::new("127.0.0.1:0"), e))?;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
            name.len()
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut read = 0;
                    while read < buf.len() {
                        match s.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        Ok(NamedServer { addr, task })
    }
}

impl Drop for NamedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
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
