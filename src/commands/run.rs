//! `edge-change run`: load and validate the configuration (exit 78 when invalid), then run the
//! daemon on a tokio runtime until SIGTERM/SIGINT (exit 0). Start-up failures are returned and
//! reported by `main` (exit 1).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::RunArgs;
use crate::commands::config::{print_config_error, EXIT_INVALID};
use crate::config::Config;
use crate::daemon;

/// Exit code for a fatal start-up error (model, state directory, a source that cannot start).
const EXIT_START: u8 = 1;

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            print_config_error(&e);
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edge-change")
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(daemon::run(args.config.clone(), config)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // The message already names the file and the reason; its source chain would repeat it.
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_START))
        }
    }
}
