//! `cutover lab demo`: a real migration on a throwaway lab (sequenced by `lab::demo`); this
//! renders its narration, the run's records and its report.

use std::time::Instant;

use super::{EXIT_FAILED, EXIT_OK, runtime};

/// `lab demo`: start a lab, migrate, check, tear down. The lab lives in a temporary directory.
pub fn demo() -> u8 {
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let mut say = |line: String| outln!("{line}");
    let began = Instant::now();
    let mut observer = |r: &crate::run::Record| super::run::render(r, began);
    let mut on_report = |r: &crate::run::RunReport| super::run::print_report(r);
    match rt.block_on(crate::lab::demo::run(
        &mut say,
        &mut observer,
        &mut on_report,
    )) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            errln!("demo failed: {e}");
            EXIT_FAILED
        }
    }
}
