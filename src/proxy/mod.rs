//! Reverse proxies: a route the plan names (`[[proxy]]`) is read before the run, pointed at
//! the target right after the promotion, read back, and pointed at the source again by a
//! reverse cutover. One adapter per file behind [`Adapter`]: what the proxy calls a route, how
//! it is read and how it is pointed elsewhere are the adapter's; the rules (it must point at
//! the source or already at the target, the switch is proven by reading it back, a route that
//! points anywhere else is never overwritten) are this module's, the same for every adapter.
//!
//! - [`haproxy`]: HAProxy's runtime API (the stats socket).
//! - [`nginx`]: an upstream in its own include file, tested with `nginx -t`, then reloaded.
//! - [`command`]: the operator's own read / switch / rollback commands (declarative setups).
//!
//! Reading back says what the proxy was told; [`proof`] says where clients land (a request
//! through the proxy whose answer names its backend), for every adapter alike.

pub mod command;
pub mod haproxy;
pub mod nginx;
pub mod proof;

use std::net::SocketAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::plan::{ProxyAdapter, ProxyRoute};

/// What went wrong with a proxy; each says the proxy, the route and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy could not be reached or did not answer in time.
    #[error("{proxy}: cannot reach the proxy: {error}; fix: {fix}")]
    Unreachable {
        /// The proxy and route, in words.
        proxy: String,
        /// What happened.
        error: String,
        /// What to do.
        fix: String,
    },
    /// The proxy answered, but not with what was asked.
    #[error("{proxy}: {message}; fix: {fix}")]
    Refused {
        /// The proxy and route, in words.
        proxy: String,
        /// The proxy's answer, or what is wrong with it.
        message: String,
        /// What to do.
        fix: String,
    },
    /// The route points at an address that is neither the plan's source nor its target.
    #[error(
        "{proxy}: the route points at {current}, not at the source {source_addr} (nor already at the target {target}); nothing was changed; fix: point it back at the source, or correct `source` in the plan if the service moved"
    )]
    Elsewhere {
        /// The proxy and route, in words.
        proxy: String,
        /// What it points at, as read.
        current: String,
        /// The plan's source.
        source_addr: String,
        /// The plan's target.
        target: String,
    },
}

/// A route as read from its proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The address the route sends requests to.
    pub address: SocketAddr,
    /// The proxy's own word for the route's state (`running`, `maintenance`, ...).
    pub state: String,
}

/// A route pointed somewhere (or found already there): what the journal keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switched {
    /// The route, in words.
    pub route: String,
    /// The address it pointed at before.
    pub previous: String,
    /// The address it points at now, read back from the proxy.
    pub current: String,
    /// Milliseconds from the first request to the proxy to the read-back.
    pub ms: f64,
    /// It already pointed there (a resumed run): nothing was changed.
    #[serde(default)]
    pub already: bool,
    /// With a `proof`: milliseconds from the read-back to the first request through the proxy
    /// that the new side answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_answer_ms: Option<f64>,
}

/// One kind of proxy. New adapters (an admin API such as Caddy's, a watched file such as
/// Traefik's, nginx's include file and reload) implement the same three calls.
#[async_trait::async_trait]
pub trait Adapter: Send + Sync {
    /// The proxy and route, in words (`haproxy /run/haproxy/admin.sock app/web`).
    fn describe(&self) -> String;
    /// Checks that cutover may change the route (reachable, allowed); changes nothing.
    async fn check_access(&self) -> Result<(), ProxyError>;
    /// Where the route sends requests now.
    async fn read(&self) -> Result<Route, ProxyError>;
    /// Points the route at `to` (the caller reads it back).
    async fn point(&self, to: SocketAddr) -> Result<(), ProxyError>;
}

/// The adapter for `route`.
pub fn adapter(route: &ProxyRoute) -> Box<dyn Adapter> {
    match &route.adapter {
        ProxyAdapter::Haproxy {
            socket,
            backend,
            server,
        } => Box::new(haproxy::Haproxy::new(
            socket,
            backend,
            server,
            route.timeout,
        )),
        ProxyAdapter::Nginx {
            include,
            upstream,
            nginx,
            config,
            prefix,
        } => Box::new(nginx::Nginx::new(
            include,
            upstream,
            nginx,
            config.as_deref(),
            prefix.as_deref(),
            route.timeout,
        )),
        ProxyAdapter::Command {
            read,
            switch,
            rollback,
            env,
            command_timeout,
        } => Box::new(command::Command::new(
            read,
            switch,
            rollback,
            env,
            route.timeout,
            *command_timeout,
            &route.source,
            &route.target,
        )),
    }
}

/// The route's source and target (checked by `plan check`; an unchecked plan is refused).
fn addresses(route: &ProxyRoute) -> Result<(SocketAddr, SocketAddr), ProxyError> {
    let parse = |key: &str, value: &str| {
        value
            .parse::<SocketAddr>()
            .map_err(|_| ProxyError::Refused {
                proxy: format!("proxy {}", route.name),
                message: format!("`{key} = \"{value}\"` is not an `ip:port` address"),
                fix: "correct the plan (`cutover plan check` names every problem)".to_owned(),
            })
    };
    Ok((
        parse("source", &route.source)?,
        parse("target", &route.target)?,
    ))
}

/// Before the run: the proxy answers, cutover may change the route, and the route points at
/// the source (or already at the target: said, not refused). Changes nothing. Returns what
/// it found, in words.
pub async fn preflight(route: &ProxyRoute) -> Result<String, ProxyError> {
    let (source, target) = addresses(route)?;
    let a = adapter(route);
    a.check_access().await?;
    let now = a.read().await?;
    let points = if now.address == source {
        format!(
            "{} points at the source {source} ({})",
            a.describe(),
            now.state
        )
    } else if now.address == target {
        format!(
            "{} already points at the target {target} ({}): the switch will leave it",
            a.describe(),
            now.state
        )
    } else {
        return Err(ProxyError::Elsewhere {
            proxy: a.describe(),
            current: now.address.to_string(),
            source_addr: source.to_string(),
            target: target.to_string(),
        });
    };
    // The target is asked directly: a proxy switched to an address nothing listens on would
    // fail every request. Said, not refused: the plan may start the app after the promotion.
    let answers = match tokio::time::timeout(route.timeout, tokio::net::TcpStream::connect(target))
        .await
    {
        Ok(Ok(_)) => format!("the target {target} accepts connections"),
        Ok(Err(e)) => format!(
            "WARNING: the target {target} does not accept connections now ({e}); it must by the switch"
        ),
        Err(_) => format!(
            "WARNING: the target {target} did not answer within {} ms; it must by the switch",
            route.timeout.as_millis()
        ),
    };
    let proven = match &route.proof {
        Some(p) => {
            let side = if now.address == source {
                proof::Side::Source
            } else {
                proof::Side::Target
            };
            format!(
                "; {}",
                proof::check(&a.describe(), p, side, route.timeout).await?
            )
        }
        None => String::new(),
    };
    Ok(format!("{points}; {answers}{proven}"))
}

/// With a `proof`: waits until a request through the proxy is answered by the side the
/// route now points at (`reverse`: the source). `None` without one.
async fn prove(route: &ProxyRoute, proxy: &str, reverse: bool) -> Result<Option<f64>, ProxyError> {
    let Some(p) = &route.proof else {
        return Ok(None);
    };
    let to = if reverse {
        proof::Side::Source
    } else {
        proof::Side::Target
    };
    let within = p.within.unwrap_or(route.timeout);
    proof::wait_for(proxy, p, to, route.timeout, within)
        .await
        .map(Some)
}

/// Points `route` at its target when it points at its source (`reverse`, a reverse cutover:
/// back at the source from the target), and proves it by reading the route back. A route
/// that already points where it should is left as it is (a resumed run); one that points
/// anywhere else is refused, nothing changed.
pub async fn switch(route: &ProxyRoute, reverse: bool) -> Result<Switched, ProxyError> {
    let (source, target) = addresses(route)?;
    let (from_addr, to_addr) = if reverse {
        (target, source)
    } else {
        (source, target)
    };
    let a = adapter(route);
    let started = Instant::now();
    let before = a.read().await?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    if before.address == to_addr {
        // A resumed run: the route was switched before the crash; the proof still holds it
        // to what clients see.
        let first_answer_ms = prove(route, &a.describe(), reverse).await?;
        return Ok(Switched {
            route: a.describe(),
            previous: before.address.to_string(),
            current: before.address.to_string(),
            ms: ms(started),
            already: true,
            first_answer_ms,
        });
    }
    if before.address != from_addr {
        return Err(ProxyError::Elsewhere {
            proxy: a.describe(),
            current: before.address.to_string(),
            source_addr: from_addr.to_string(),
            target: to_addr.to_string(),
        });
    }
    a.point(to_addr).await?;
    // From here the route was changed: a switch that is not proven is undone before the
    // step fails, so a failed step leaves the route as it found it.
    let proven = async {
        let after = a.read().await?;
        if after.address != to_addr {
            return Err(ProxyError::Refused {
                proxy: a.describe(),
                message: format!(
                    "after the switch the route points at {}, not at {to_addr}",
                    after.address
                ),
                fix: "read the proxy's log".to_owned(),
            });
        }
        let switch_ms = ms(started);
        let first = prove(route, &a.describe(), reverse).await?;
        Ok((after, switch_ms, first))
    }
    .await;
    let (after, switch_ms, first_answer_ms) = match proven {
        Ok(proven) => proven,
        Err(e) => return Err(put_back(a.as_ref(), from_addr, e).await),
    };
    Ok(Switched {
        route: a.describe(),
        previous: before.address.to_string(),
        current: after.address.to_string(),
        ms: switch_ms,
        already: false,
        first_answer_ms,
    })
}

/// Points the route back at `from` after a switch that failed with `failed`, read back; the
/// error says where the route points now.
async fn put_back(a: &dyn Adapter, from: SocketAddr, failed: ProxyError) -> ProxyError {
    let (message, fix) = match &failed {
        ProxyError::Refused { message, fix, .. } => (message.clone(), fix.clone()),
        ProxyError::Unreachable { error, fix, .. } => (error.clone(), fix.clone()),
        other => (other.to_string(), String::new()),
    };
    let back = match a.point(from).await {
        Ok(()) => a.read().await.map(|r| r.address),
        Err(e) => Err(e),
    };
    let (now, fix) = match back {
        Ok(address) if address == from => (
            format!("the route was put back on {from} (read back)"),
            format!("{fix}; then run it again"),
        ),
        Ok(address) => (
            format!("putting the route back on {from} left it on {address}"),
            format!("{fix}; point the route at {from} by hand"),
        ),
        Err(e) => (
            format!("putting the route back on {from} failed too: {e}"),
            format!("{fix}; point the route at {from} by hand"),
        ),
    };
    ProxyError::Refused {
        proxy: a.describe(),
        message: format!("{message}; {now}"),
        fix,
    }
}

/// Where a route points now, read-only, for `status` and the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pointing {
    /// The address, as read.
    pub address: String,
    /// The plan's side it is (`source`, `target`), or `None`: neither.
    pub side: Option<&'static str>,
    /// The proxy's word for the route's state.
    pub state: String,
}

impl Pointing {
    /// In words.
    pub fn words(&self) -> String {
        match self.side {
            Some(side) => format!("points at the {side} {} ({})", self.address, self.state),
            None => format!(
                "points at {}, NEITHER the source nor the target ({})",
                self.address, self.state
            ),
        }
    }
}

/// Reads where `route` points now; changes nothing.
pub async fn pointing(route: &ProxyRoute) -> Result<Pointing, ProxyError> {
    let (source, target) = addresses(route)?;
    let now = adapter(route).read().await?;
    let side = if now.address == source {
        Some("source")
    } else if now.address == target {
        Some("target")
    } else {
        None
    };
    Ok(Pointing {
        address: now.address.to_string(),
        side,
        state: now.state,
    })
}
