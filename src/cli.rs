//! The command line as the user types it (clap derive); commands/ turns it into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "edge-change", version, about = "Change detection for field cameras and imagery")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run(RunArgs),
    /// Compare two captures (or every pair of a CSV) and report change and vegetation direction.
    Check(CheckArgs),
    /// Validate or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Time the encoder(s) on this machine and compare their decisions.
    Bench(BenchArgs),
}

impl Command {
    /// The exit code for a failure that the command did not map itself (shared/DESIGN.md).
    pub fn failure_code(&self) -> u8 {
        match self {
            Command::Run(_) => 1,
            Command::Config(_) => 78,
            Command::Check(_) | Command::Bench(_) => 2,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = "/etc/edge-change/config.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The earlier capture.
    #[arg(required_unless_present = "pairs", conflicts_with = "pairs")]
    pub before: Option<PathBuf>,
    /// The later capture (resized to the earlier one's size if they differ).
    #[arg(required_unless_present = "pairs", conflicts_with = "pairs")]
    pub after: Option<PathBuf>,
    /// A CSV with a header row and columns before,after[,mask]; paths relative to the CSV's folder.
    #[arg(long, value_name = "FILE.csv")]
    pub pairs: Option<PathBuf>,
    /// One JSON object per pair on standard output (schema 1).
    #[arg(long)]
    pub json: bool,
    /// Configuration file (analysis, vegetation and model settings are used).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Encoder .onnx (its card is the .json beside it).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Distance threshold instead of the configured or calibrated one.
    #[arg(long, value_name = "X")]
    pub threshold: Option<f64>,
    /// Mask image: white = analyse, black = ignore.
    #[arg(long, value_name = "FILE", conflicts_with = "pairs")]
    pub mask: Option<PathBuf>,
    /// Write before | after side by side with changed tiles outlined.
    #[arg(long, value_name = "OUT.png", conflicts_with = "pairs")]
    pub visualize: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration and print every problem with its key path.
    Check {
        #[arg(long, value_name = "FILE", default_value = "/etc/edge-change/config.toml")]
        config: PathBuf,
    },
    /// Print the documented default configuration.
    Default,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Encoder .onnx to time; repeat for several. Default: both shipped encodings.
    #[arg(long, value_name = "FILE")]
    pub model: Vec<PathBuf>,
    /// Timed runs per tile.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn check_needs_two_captures_or_pairs() {
        assert!(Cli::try_parse_from(["edge-change", "check", "a.png"]).is_err());
        assert!(Cli::try_parse_from(["edge-change", "check", "a.png", "b.png"]).is_ok());
        assert!(Cli::try_parse_from(["edge-change", "check", "--pairs", "p.csv"]).is_ok());
        assert!(
            Cli::try_parse_from(["edge-change", "check", "a", "b", "--pairs", "p.csv"]).is_err()
        );
    }
}
