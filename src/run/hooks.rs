//! Hooks and health checks: the operator's own commands at the plan's hook points, and the
//! probes that decide whether the new host is healthy.
//!
//! Commands are argv arrays end to end: run directly on this machine, or over ssh with every
//! word quoted for the remote shell (the run's variables go through `env`, also quoted).
//! Checks count consecutive outcomes the way Kubernetes probes do, so one lucky answer from a
//! host that is still starting does not pass a check that asks for three.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::files::remote;
use crate::plan::{Check, Hook, Plan, RunOn};

/// What a command printed and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct CommandOutcome {
    /// Exit code (`None`: killed or timed out).
    pub code: Option<i32>,
    /// The end of its output.
    pub output: String,
    /// How long it ran.
    pub ms: f64,
}

impl CommandOutcome {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// The argv that runs `command` with `env` where `on` says.
fn argv(
    plan: &Plan,
    on: RunOn,
    command: &[String],
    env: &[(String, String)],
) -> Result<Vec<String>, String> {
    let host = match (on, &plan.hosts) {
        (RunOn::Local, _) => return Ok(command.to_vec()),
        (RunOn::Source, Some(h)) => &h.source,
        (RunOn::Target, Some(h)) => &h.target,
        (on, None) => {
            return Err(format!(
                "runs on `{}` but the plan has no [hosts]",
                on.as_str()
            ));
        }
    };
    let mut words = vec!["env".to_owned()];
    words.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    words.extend(command.iter().cloned());
    Ok(remote::ssh_argv(host, &words))
}

/// Runs `command` (argv) where `on` says, with `env`, killed after `timeout`.
pub async fn command(
    plan: &Plan,
    on: RunOn,
    command: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<CommandOutcome, String> {
    let argv = argv(plan, on, command, env)?;
    // Over ssh the run's variables travel in the remote command (`env K=V ...`).
    let local: Vec<(&str, &str)> = if on == RunOn::Local {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    } else {
        Vec::new()
    };
    let ended = crate::child::run(&argv, local, timeout).await?;
    let mut text = ended.stdout;
    text.push_str(&ended.stderr);
    Ok(CommandOutcome {
        code: ended.code,
        output: if ended.timed_out {
            format!(
                "killed after the timeout of {}",
                humantime::format_duration(timeout)
            )
        } else {
            crate::files::tail(text.trim(), 5)
        },
        ms: ended.elapsed.as_secs_f64() * 1000.0,
    })
}

pub use crate::secret::PASSED_THROUGH;

/// The variables every hook sees.
pub fn hook_env(plan: &Plan, phase: &str, rollback: bool) -> Vec<(String, String)> {
    vec![
        ("CUTOVER_MIGRATION".to_owned(), plan.migration.name.clone()),
        ("CUTOVER_PHASE".to_owned(), phase.to_owned()),
        (
            "CUTOVER_ROLLBACK".to_owned(),
            if rollback { "1" } else { "0" }.to_owned(),
        ),
        (
            "CUTOVER_STATE_DIR".to_owned(),
            plan.migration.state_dir.display().to_string(),
        ),
    ]
}

/// Runs `hook`; a non-zero exit, a timeout or a start failure is an error unless the hook
/// allows failure (then it is returned as a warning in `Ok`).
pub async fn run_hook(
    plan: &Plan,
    hook: &Hook,
    phase: &str,
    rollback: bool,
) -> Result<(CommandOutcome, Option<String>), String> {
    let env = hook_env(plan, phase, rollback);
    let outcome = command(plan, hook.on, &hook.command, &env, hook.timeout).await;
    let describe = |why: String| {
        format!(
            "hook `{}` at {} on {}: {why}",
            hook.command.join(" "),
            hook.at.as_str(),
            hook.on.as_str()
        )
    };
    match outcome {
        Ok(o) if o.ok() => Ok((o, None)),
        Ok(o) => {
            let why = describe(match o.code {
                Some(code) => format!("exited {code}: {}", o.output),
                None => o.output.clone(),
            });
            if hook.allow_failure {
                Ok((o, Some(format!("{why} (allow_failure)"))))
            } else {
                Err(why)
            }
        }
        Err(e) if hook.allow_failure => Ok((
            CommandOutcome {
                code: None,
                output: e.clone(),
                ms: 0.0,
            },
            Some(format!("{} (allow_failure)", describe(e))),
        )),
        Err(e) => Err(describe(e)),
    }
}

/// How a check went.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The check's name.
    pub name: String,
    /// Tries made.
    pub tries: u32,
    /// Whether it passed.
    pub passed: bool,
    /// The last try's result, in words.
    pub last: String,
    /// Time until it passed or gave up.
    pub ms: f64,
}

async fn http_try(
    client: &reqwest::Client,
    url: &str,
    expect_status: u16,
    body_contains: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != expect_status {
        return Err(format!(
            "GET {url}: status {status}, expected {expect_status}"
        ));
    }
    if let Some(text) = body_contains
        && !body.contains(text)
    {
        return Err(format!(
            "GET {url}: status {status} but the body lacks {text:?}"
        ));
    }
    Ok(format!("GET {url}: {status}"))
}

/// Runs `check` until it has `success_threshold` consecutive successes, `failure_threshold`
/// consecutive failures, or `within` has passed.
pub async fn run_check(plan: &Plan, check: &Check) -> CheckOutcome {
    let started = Instant::now();
    let (within, interval, successes_needed, failures_allowed) = match check {
        Check::Http {
            within,
            interval,
            success_threshold,
            failure_threshold,
            ..
        }
        | Check::Command {
            within,
            interval,
            success_threshold,
            failure_threshold,
            ..
        } => (
            *within,
            *interval,
            (*success_threshold).max(1),
            *failure_threshold,
        ),
    };
    let client = reqwest::Client::new();
    let env = hook_env(plan, "verify", false);
    let (mut tries, mut successes, mut failures) = (0u32, 0u32, 0u32);
    loop {
        tries += 1;
        let result = match check {
            Check::Http {
                url,
                expect_status,
                body_contains,
                timeout,
                ..
            } => {
                http_try(
                    &client,
                    url,
                    *expect_status,
                    body_contains.as_deref(),
                    *timeout,
                )
                .await
            }
            Check::Command {
                on,
                command: argv,
                timeout,
                ..
            } => match command(plan, *on, argv, &env, *timeout).await {
                Ok(o) if o.ok() => Ok(format!("`{}` exited 0", argv.join(" "))),
                Ok(o) => Err(format!(
                    "`{}` exited {}: {}",
                    argv.join(" "),
                    o.code.map_or("(killed)".to_owned(), |c| c.to_string()),
                    o.output
                )),
                Err(e) => Err(e),
            },
        };
        let last = match result {
            Ok(text) => {
                successes += 1;
                failures = 0;
                text
            }
            Err(text) => {
                failures += 1;
                successes = 0;
                text
            }
        };
        let outcome = |passed| CheckOutcome {
            name: check.name().to_owned(),
            tries,
            passed,
            last: last.clone(),
            ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        if successes >= successes_needed {
            return outcome(true);
        }
        if failures_allowed.is_some_and(|n| failures >= n) || started.elapsed() + interval > within
        {
            return outcome(false);
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &std::path::Path) -> Plan {
        crate::plan::parse_str(
            &format!(
                "[migration]\nname = \"m\"\nstate_dir = \"{}\"\n\n[[postgres]]\nname = \"p\"\nsource = {{ host = \"127.0.0.1\", dbname = \"a\", user = \"u\" }}\ntarget = {{ host = \"127.0.0.2\", dbname = \"a\", user = \"u\" }}\napp_roles = [\"app\"]\n",
                dir.display()
            ),
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_hook_sees_the_run_variables_and_none_of_the_runners_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        // SAFETY: set before any thread reads the environment in this test.
        unsafe {
            std::env::set_var("CUTOVER_TEST_PG_PASSWORD", "hunter2-secret");
        }
        let out = command(
            &plan,
            RunOn::Local,
            &[
                "sh".into(),
                "-c".into(),
                "echo \"$CUTOVER_PHASE ${CUTOVER_TEST_PG_PASSWORD:-unset} ${PATH:+path}\"".into(),
            ],
            &hook_env(&plan, "window", false),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out.output, "window unset path");
    }

    #[tokio::test]
    async fn a_timeout_ends_everything_the_hook_started() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let out = command(
            &plan,
            RunOn::Local,
            &["sh".into(), "-c".into(), script],
            &[],
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        assert_eq!(out.code, None, "{}", out.output);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone too (reaped by init once killed): signal 0 finds nothing.
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: kill() with signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(
                Instant::now() < deadline,
                "the hook's child {pid} outlived it"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
