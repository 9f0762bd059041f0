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
            Err(ConfigError::Invalid { path, problems }) => {
                for p in problems {
                    eprintln!("{path}: {p}");
                }
                Ok(ExitCode::from(EXIT_INVALID))
            }
            Err(other) => {
                eprintln!("error: {other}");
                Ok(ExitCode::from(EXIT_INVALID))
            }
        },
    }
}
