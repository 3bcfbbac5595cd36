//! HAProxy through its runtime API: the stats socket (`stats socket PATH level admin` in
//! haproxy.cfg, or `ipv4@ADDR:PORT`). One command per connection (the API's non-interactive
//! mode: it answers and closes). The route is a server entry of a backend; it is read with
//! `show servers state BACKEND` and pointed elsewhere with `set server B/S addr IP port P`,
//! which keeps the entry's checks, weights and statistics, and lets established connections
//! finish on the old address while new ones go to the new one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Adapter, ProxyError, Route};

/// One server entry of one backend, reached through one stats socket.
pub struct Haproxy {
    socket: String,
    backend: String,
    server: String,
    timeout: Duration,
}

impl Haproxy {
    /// The route `backend/server` behind the stats socket `socket` (a path or `ip:port`).
    pub fn new(socket: &str, backend: &str, server: &str, timeout: Duration) -> Haproxy {
        Haproxy {
            socket: socket.to_owned(),
            backend: backend.to_owned(),
            server: server.to_owned(),
            timeout,
        }
    }

    fn unreachable(&self, error: impl std::fmt::Display) -> ProxyError {
        ProxyError::Unreachable {
            proxy: self.describe(),
            error: error.to_string(),
            fix: format!(
                "check that HAProxy runs and that haproxy.cfg has `stats socket {} level admin` in its global section (cutover must be able to open it)",
                self.socket
            ),
        }
    }

    /// Sends one command and reads the whole answer.
    async fn command(&self, line: &str) -> Result<String, ProxyError> {
        let exchange = async {
            let mut answer = Vec::new();
            let request = format!("{line}\n");
            match self.socket.parse::<SocketAddr>() {
                Ok(addr) => {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(request.as_bytes()).await?;
                    s.read_to_end(&mut answer).await?;
                }
                Err(_) => {
                    let mut s = tokio::net::UnixStream::connect(&self.socket).await?;
                    s.write_all(request.as_bytes()).await?;
                    s.read_to_end(&mut answer).await?;
                }
            }
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => {
                Err(self.unreachable(format!("no answer within {} ms", self.timeout.as_millis())))
            }
        }
    }
}

/// The server entry `server` in the answer to `show servers state` (format version 1: a
/// version line, a `#` line naming the columns, one line per server).
pub fn parse_servers_state(answer: &str, server: &str) -> Result<Option<Route>, String> {
    let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some("1") => {}
        Some(other) => return Err(other.trim().to_owned()),
        None => return Err("an empty answer".to_owned()),
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|l| l.strip_prefix('#'))
        .ok_or("no column line")?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no `{name}` column"))
    };
    let (name, addr, port) = (
        column("srv_name")?,
        column("srv_addr")?,
        column("srv_port")?,
    );
    let (op, admin) = (column("srv_op_state")?, column("srv_admin_state")?);
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(name) != Some(&server) {
            continue;
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let ip: IpAddr = field(addr)
            .parse()
            .map_err(|_| format!("server address `{}` is not an IP address", field(addr)))?;
        let port: u16 = field(port)
            .parse()
            .map_err(|_| format!("server port `{}` is not a port", field(port)))?;
        let admin_bits = field(admin).parse::<u32>().unwrap_or(0);
        // srv_admin_state: maintenance bits 0x01/0x02/0x04 (forced, inherited, by DNS);
        // drain bits 0x08/0x10/0x20.
        let state = if admin_bits & 0x07 != 0 {
            "maintenance"
        } else if admin_bits & 0x38 != 0 {
            "draining"
        } else {
            match field(op) {
                "0" => "stopped (its health check fails)",
                "1" => "starting",
                "2" => "running",
                "3" => "stopping",
                _ => "unknown",
            }
        };
        return Ok(Some(Route {
            address: SocketAddr::new(ip, port),
            state: state.to_owned(),
        }));
    }
    Ok(None)
}

#[async_trait::async_trait]
impl Adapter for Haproxy {
    fn describe(&self) -> String {
        format!("haproxy {} {}/{}", self.socket, self.backend, self.server)
    }

    async fn check_access(&self) -> Result<(), ProxyError> {
        let level = self.command("show cli level").await?;
        match level.trim() {
            "admin" => Ok(()),
            other => Err(ProxyError::Refused {
                proxy: self.describe(),
                message: format!(
                    "the stats socket gives level `{other}`, and changing a server's address takes `admin`"
                ),
                fix: format!(
                    "give the socket `level admin` in haproxy.cfg (`stats socket {} mode 600 level admin`) and reload HAProxy",
                    self.socket
                ),
            }),
        }
    }

    async fn read(&self) -> Result<Route, ProxyError> {
        let answer = self
            .command(&format!("show servers state {}", self.backend))
            .await?;
        match parse_servers_state(&answer, &self.server) {
            Ok(Some(route)) => Ok(route),
            Ok(None) => Err(ProxyError::Refused {
                proxy: self.describe(),
                message: format!(
                    "backend `{}` has no server `{}`",
                    self.backend, self.server
                ),
                fix: "set `adapter.server` to the server line's name in that backend (`show servers state` lists them)".to_owned(),
            }),
            Err(e) if e.contains("Can't find backend") => Err(ProxyError::Refused {
                proxy: self.describe(),
                message: format!("HAProxy has no backend `{}`", self.backend),
                fix: "set `adapter.backend` to a backend of haproxy.cfg".to_owned(),
            }),
            Err(e) => Err(ProxyError::Refused {
                proxy: self.describe(),
                message: format!("unexpected answer to `show servers state`: {e}"),
                fix: "check the HAProxy version (2.0 or later) and that the socket is its stats socket".to_owned(),
            }),
        }
    }

    async fn point(&self, to: SocketAddr) -> Result<(), ProxyError> {
        let answer = self
            .command(&format!(
                "set server {}/{} addr {} port {}",
                self.backend,
                self.server,
                to.ip(),
                to.port()
            ))
            .await?;
        let answer = answer.trim();
        // HAProxy says what changed ("IP changed from ..."), or that nothing had to.
        if answer.contains("changed") || answer.contains("no need to change") || answer.is_empty() {
            Ok(())
        } else {
            Err(ProxyError::Refused {
                proxy: self.describe(),
                message: format!("HAProxy refused the new address: {answer}"),
                fix: "read HAProxy's answer above; the route was not changed".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 app 1 web 127.0.0.1 2 0 1 1 12 1 0 0 14 0 0 0 - 8001 - 0 0 - - 0\n3 app 2 spare ::1 0 1 1 1 12 1 0 0 14 0 0 0 - 9001 - 0 0 - - 0\n\n";

    #[test]
    fn a_server_is_read_by_column_name_with_its_state() {
        let web = parse_servers_state(STATE, "web").unwrap().unwrap();
        assert_eq!(web.address, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(web.state, "running");
        let spare = parse_servers_state(STATE, "spare").unwrap().unwrap();
        assert_eq!(spare.address, "[::1]:9001".parse().unwrap());
        assert_eq!(spare.state, "maintenance");
        assert_eq!(parse_servers_state(STATE, "nope").unwrap(), None);
        assert_eq!(
            parse_servers_state("Can't find backend.\n", "web").unwrap_err(),
            "Can't find backend."
        );
    }
}
