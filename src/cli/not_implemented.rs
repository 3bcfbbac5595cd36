//! Commands that exist in the tree but whose work arrives later: they say so and fail.

use super::EXIT_NOT_IMPLEMENTED;

/// Prints an honest "not implemented yet" and returns the matching exit status.
pub fn report(command: &str, arrives_with: &str) -> u8 {
    errln!(
        "cutover {command}: not implemented yet (arrives with {arrives_with}); nothing was done"
    );
    EXIT_NOT_IMPLEMENTED
}
