//! A test's way to catch a runner exactly at a step boundary: with
//! `CUTOVER_TEST_STOP_AT_RECORD=N` in its environment, the runner stops itself (SIGSTOP) right
//! after journal record N is durable, so a test can `kill -9` it there instead of guessing with
//! sleeps. Without the variable this does nothing.

/// The variable's name.
pub const VAR: &str = "CUTOVER_TEST_STOP_AT_RECORD";

/// Stops the process if record `seq` is the one the variable names.
pub fn maybe_stop(seq: u64) {
    let wanted = std::env::var(VAR).ok().and_then(|v| v.parse::<u64>().ok());
    if wanted == Some(seq) {
        // SAFETY: raise() only signals this process; SIGSTOP cannot be caught.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
