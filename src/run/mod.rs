//! The hot-migration sequencer. For now: the ordered list of steps a run performs.

mod steps;

pub use steps::{Phase, Step, rollback_summary, steps};
