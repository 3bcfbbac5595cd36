//! `cutover serve --config FILE`: the daemon, until SIGINT or SIGTERM.

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, ServeArgs, runtime};
use crate::serve;

pub(super) fn run(args: &ServeArgs) -> u8 {
    let config = match serve::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    rt.block_on(async move {
        let stop = CancellationToken::new();
        super::cancel_on_signal(stop.clone(), "cutover serve: stopping");
        let plans = config.plans.len();
        match serve::serve(config, stop, |addr| {
            outln!("cutover serve: watching {plans} migration(s) on http://{addr} (/metrics, /healthz, /status, POST /ttl-job)");
        })
        .await
        {
            Ok(()) => EXIT_OK,
            Err(e) => {
                errln!("error: {e}");
                EXIT_FAILED
            }
        }
    })
}
