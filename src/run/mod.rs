//! The hot-migration sequencer: a plan's typed steps, executed in order with a journal, a lease,
//! rollback before the point of no return, and resume after a crash.

//!
//! Read top-down: [`admit`] decides whether a run starts or how it resumes, [`runner`] executes
//! the steps in order ([`steps`] derives them from the plan), and each component's step
//! actions are in `actions` (databases through the engine contract, files, DNS, hooks and
//! checks). [`journal`] holds the records everything else is computed from: the [`report`]
//! and the [`status`]. [`pairs`] is the one factory from a plan to its database pairs; [`single`] is the policy
//! of the single-pair commands that drive one engine's pairs outside a run.

mod actions;
mod admit;
pub mod hooks;
mod journal;
pub mod kept_plan;
pub mod pairs;
mod report;
mod runner;
pub mod single;
mod status;
mod steps;
/// The test stop hooks live at the bottom layer (the engine's single-pair driver uses them too).
pub use crate::test_stop;

pub use admit::{Options, RunError, run};
pub use journal::{Entry, Outcome, Progress, Record, last_run};
pub use pairs::open_window;
pub use report::{RunReport, StepTiming, report_of};
pub use status::{Connect, States, Status, status, status_with};
pub use steps::{Db, Kind, Phase, Step, databases, reverse_steps, rollback_summary, steps};
