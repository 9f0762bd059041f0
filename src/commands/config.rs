//! `edge-change config check|default`.

use std::process::ExitCode;

use crate::cli::ConfigCommand;
use crate::config::{Config, ConfigError, DEFAULT_TOML};

/// Exit code for an invalid configuration (EX_CONFIG).
pub const EXIT_INVALID: u8 = 78;

pub fn run(cmd: &ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Default => {
            print!("{DEFAULT_TOML}");
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Check { config } => match Config::load(config) {
            Ok(_) => {
                println!("{}: valid", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                print_config_error(&e);
                Ok(ExitCode::from(EXIT_INVALID))
            }
        },
    }
}

/// Every problem on its own line of stderr, `FILE: KEY: PROBLEM` (shared by `config check` and
/// `run`).
pub fn print_config_error(error: &ConfigError) {
    match error {
        ConfigError::Invalid { path, problems } => {
            for p in problems {
                eprintln!("{path}: {p}");
            }
        }
        other => eprintln!("error: {other}"),
    }
}
