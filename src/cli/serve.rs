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
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                stop.cancel();
            });
        }
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
