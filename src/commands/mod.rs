//! One file per command: each turns parsed arguments into work and picks its exit code.

pub mod bench;
pub mod check;
pub mod config;
mod memo;
pub mod run;

use std::process::ExitCode;

use crate::cli::Command;

/// Runs a command; errors it returns are reported by `main` with `Command::failure_code`.
pub fn dispatch(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Config(cmd) => config::run(cmd),
        Command::Bench(args) => bench::run(args),
    }
}
