//! The operator's own commands as a proxy adapter, for declarative setups where the route
//! lives in a configuration that is rebuilt rather than edited (seed 000: nginx's `proxyPass`
//! in a NixOS configuration, `nixos-rebuild switch`, `nixos-rebuild switch --rollback`). Three
//! argv arrays: `read` prints the address the route serves now (its first line, `ip:port`),
//! `switch` points it at the target, `rollback` back at the source. They run on this machine
//! in their own process group (a timeout ends everything they started), with an explicit
//! environment: PATH, HOME, the locale and the ssh agent, plus the plan's `env`; cutover's own
//! secrets never reach them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Adapter, ProxyError, Route};

/// A route behind three commands.
pub struct Command {
    read: Vec<String>,
    switch: Vec<String>,
    rollback: Vec<String>,
    env: BTreeMap<String, String>,
    read_timeout: Duration,
    command_timeout: Duration,
    source: Option<SocketAddr>,
    target: Option<SocketAddr>,
}

/// How a command ended: its exit code (`None`: killed at its timeout), stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Command {
    /// The adapter for a route from `source` to `target`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        read: &[String],
        switch: &[String],
        rollback: &[String],
        env: &BTreeMap<String, String>,
        read_timeout: Duration,
        command_timeout: Duration,
        source: &str,
        target: &str,
    ) -> Command {
        Command {
            read: read.to_vec(),
            switch: switch.to_vec(),
            rollback: rollback.to_vec(),
            env: env.clone(),
            read_timeout,
            command_timeout,
            source: source.parse().ok(),
            target: target.parse().ok(),
        }
    }

    async fn run(&self, argv: &[String], timeout: Duration) -> Result<Ran, ProxyError> {
        let env = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let ended = crate::child::run(argv, env, timeout)
            .await
            .map_err(|error| ProxyError::Unreachable {
                proxy: self.describe(),
                error,
                fix: "check the path of the program in the plan's `adapter` (it runs on this machine)"
                    .to_owned(),
            })?;
        Ok(Ran {
            code: ended.code,
            stdout: ended.stdout,
            stderr: ended.stderr,
        })
    }

    fn refused(&self, message: &str, fix: &str) -> ProxyError {
        ProxyError::Refused {
            proxy: self.describe(),
            message: message.to_owned(),
            fix: fix.to_owned(),
        }
    }

    fn failed(&self, what: &str, argv: &[String], ran: &Ran) -> ProxyError {
        self.refused(
            &format!(
                "`{}` ({what}) {}: {}",
                argv.join(" "),
                match ran.code {
                    Some(code) => format!("exited {code}"),
                    None => "was killed".to_owned(),
                },
                crate::child::tail(ran.stderr.trim(), 5)
            ),
            "run the command by hand to see why; the route is as the command left it",
        )
    }
}

#[async_trait::async_trait]
impl Adapter for Command {
    fn describe(&self) -> String {
        format!("command `{}`", self.switch.join(" "))
    }

    async fn check_access(&self) -> Result<(), ProxyError> {
        // The commands are the operator's: that `read` answers is all that can be checked
        // without changing anything.
        Ok(())
    }

    async fn read(&self) -> Result<Route, ProxyError> {
        let ran = self.run(&self.read, self.read_timeout).await?;
        if ran.code != Some(0) {
            return Err(self.failed("read", &self.read, &ran));
        }
        let first = ran.stdout.lines().next().unwrap_or("").trim().to_owned();
        let address = first.parse::<SocketAddr>().map_err(|_| {
            self.refused(
                &format!(
                    "`{}` printed `{first}`, not an `ip:port` address",
                    self.read.join(" ")
                ),
                "make `read` print the address the route serves now on its first line",
            )
        })?;
        Ok(Route {
            address,
            state: "as the read command says".to_owned(),
        })
    }

    async fn point(&self, to: SocketAddr) -> Result<(), ProxyError> {
        let (what, argv) = if Some(to) == self.target {
            ("switch", &self.switch)
        } else if Some(to) == self.source {
            ("rollback", &self.rollback)
        } else {
            return Err(self.refused(
                &format!("{to} is neither the route's source nor its target"),
                "a command adapter only switches between the plan's two addresses",
            ));
        };
        let ran = self.run(argv, self.command_timeout).await?;
        if ran.code == Some(0) {
            Ok(())
        } else {
            Err(self.failed(what, argv, &ran))
        }
    }
}
