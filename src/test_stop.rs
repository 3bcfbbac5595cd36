//! A test's way to catch a runner exactly at a step boundary: with
//! `CUTOVER_TEST_STOP_AT_RECORD=N` in its environment, the runner stops itself (SIGSTOP) right
//! after journal record N is durable, so a test can `kill -9` it there instead of guessing with
//! sleeps. Without the variable this does nothing, and a build without the `test-stop`
//! feature (every build but the tests': `cargo test` turns it on through the crate's
//! dev-dependency on itself) has no hook at all: its variables are never read.

/// The variable naming a single-pair cutover's event (`fenced`, `caught-up`, `promoted`)
/// after which `pg cutover` / `mysql cutover` stop themselves the same way; a run stops at
/// `before-report` (its last record written, its report not yet) and `before-reverse` (a
/// failed health check journalled, the automatic reverse cutover not begun).
pub const EVENT_VAR: &str = "CUTOVER_TEST_STOP_AT_EVENT";

/// Stops the process if `event` is the one [`EVENT_VAR`] names.
pub fn maybe_stop_at_event(event: &str) {
    if cfg!(feature = "test-stop") && std::env::var(EVENT_VAR).ok().as_deref() == Some(event) {
        // SAFETY: raise() only signals this process; SIGSTOP cannot be caught.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// The variable's name.
pub const VAR: &str = "CUTOVER_TEST_STOP_AT_RECORD";

/// Stops the process if record `seq` is the one the variable names.
pub fn maybe_stop(seq: u64) {
    if !cfg!(feature = "test-stop") {
        return;
    }
    let wanted = std::env::var(VAR).ok().and_then(|v| v.parse::<u64>().ok());
    if wanted == Some(seq) {
        // SAFETY: raise() only signals this process; SIGSTOP cannot be caught.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// The variable naming a step and a side (`INDEX:begin` or `INDEX:done`) after whose journal
/// record a run stops itself the same way: steps are found by kind in the step list, which
/// record numbers are not.
pub const STEP_VAR: &str = "CUTOVER_TEST_STOP_AT_STEP";

/// Stops the process if step `index`'s `side` record is the one [`STEP_VAR`] names.
pub fn maybe_stop_at_step(index: usize, side: &str) {
    if cfg!(feature = "test-stop")
        && std::env::var(STEP_VAR).ok() == Some(format!("{index}:{side}"))
    {
        // SAFETY: raise() only signals this process; SIGSTOP cannot be caught.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
