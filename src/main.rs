//! The `cutover` binary: parse arguments, set up logging, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = cutover::cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn"));
    // Whatever the filter says, the database clients' own debug lines never get through: they
    // print statements and bound values, and some statements carry passwords.
    let no_secrets =
        filter_fn(|meta| !cutover::secret::may_log_secrets(meta.target(), *meta.level()));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(no_secrets),
        )
        .init();
    cutover::cli::run(cli)
}
