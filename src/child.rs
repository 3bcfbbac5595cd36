//! Commands cutover starts on this machine for the operator (hooks, checks, a proxy adapter's
//! commands): an argv array, never a shell string; an explicit environment (the variables in
//! [`crate::secret::PASSED_THROUGH`] plus the caller's, so the plan's passwords and tokens never
//! reach them); their own process group, so a timeout ends everything they started.

use std::time::{Duration, Instant};

/// How a command ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Exit code (`None`: killed at its timeout, or by a signal).
    pub code: Option<i32>,
    /// Whether it was killed at its timeout.
    pub timed_out: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `argv` with the passed-through variables and `env`, killing its process group after
/// `timeout`. An error: it could not be started (the message names the program).
pub async fn run<'a>(
    argv: &[String],
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    timeout: Duration,
) -> Result<Ended, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("an empty command".to_owned());
    };
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .env_clear()
        .envs(crate::secret::passed_through())
        .envs(env);
    let child = cmd
        .spawn()
        .map_err(|e| format!("`{program}` could not be started: {e}"))?;
    let group = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Ended {
            code: out.status.code(),
            timed_out: false,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }),
        Ok(Err(e)) => Err(format!("`{program}` failed: {e}")),
        Err(_) => {
            if let Some(pgid) = group {
                // SAFETY: kill() with a negative pid signals the process group this command
                // leads (it was started with its own group).
                unsafe {
                    libc::kill(-(pgid as i32), libc::SIGKILL);
                }
            }
            Ok(Ended {
                code: None,
                timed_out: true,
                stdout: String::new(),
                stderr: format!(
                    "killed after its timeout of {}",
                    humantime::format_duration(timeout)
                ),
                elapsed: started.elapsed(),
            })
        }
    }
}

/// The last non-blank lines of `text` (a command's output), for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
