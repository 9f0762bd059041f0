//! The `edge-change` binary: parse the command line, set up logging, dispatch, pick the exit code.

use std::process::ExitCode;

use clap::Parser;
use edge_change::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGE_CHANGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();

    match edge_change::commands::dispatch(&cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli.command.failure_code())
        }
    }
}
