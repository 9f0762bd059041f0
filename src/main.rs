//! The `edge-change` binary: parse the command line, set up logging, dispatch, pick the exit code.

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::Parser;
use edge_change::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs its events (info) as plain lines on stdout, without timestamps under systemd
    // (the journal adds them); the other commands only warn, on stderr.
    let daemon = matches!(cli.command, Command::Run(_));
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("EDGE_CHANGE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(if daemon { "info" } else { "warn" })
        });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if !daemon {
        logs.with_writer(std::io::stderr).init();
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.with_writer(std::io::stdout).with_ansi(false).without_time().init();
    } else {
        logs.with_writer(std::io::stdout).with_ansi(std::io::stdout().is_terminal()).init();
    }

    match edge_change::commands::dispatch(&cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli.command.failure_code())
        }
    }
}
