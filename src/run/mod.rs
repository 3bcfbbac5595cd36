//! The hot-migration sequencer: a plan's typed steps, executed in order with a journal, a lease,
//! rollback before the point of no return, and resume after a crash.

mod exec;
pub mod hooks;
mod steps;
pub mod test_stop;

pub use exec::{
    Entry, Options, Outcome, Progress, Record, RunError, RunReport, Status, StepTiming, last_run,
    open_window, pair_states, report_of, run, status,
};
pub use steps::{Db, Kind, Phase, Step, databases, reverse_steps, rollback_summary, steps};
