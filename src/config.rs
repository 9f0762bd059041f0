//! The configuration file (shared/DESIGN.md): serde structs with named defaults, unknown keys
//! refused, and `validate()` listing every problem with its key path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::{DirectionSource, GreenRange, Settings};

/// The documented default configuration, printed by `edge-change config default`.
pub const DEFAULT_TOML: &str = include_str!("../config/edge-change.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub device_id: String,
    pub state_dir: PathBuf,
    /// Analysis threads; 0 = one per core.
    pub workers: usize,
    pub model: ModelConfig,
    pub analysis: AnalysisConfig,
    pub vegetation: VegetationConfig,
    pub mqtt: MqttConfig,
    pub sources: BTreeMap<String, SourceConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: host_name(),
            state_dir: PathBuf::from("/var/lib/edge-change"),
            workers: 0,
            model: ModelConfig::default(),
            analysis: AnalysisConfig::default(),
            vegetation: VegetationConfig::default(),
            mqtt: MqttConfig::default(),
            sources: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// "" = the default encoding for this architecture; the card is the .json beside it.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    pub tile: u32,
    /// 0 = the model card's calibrated threshold.
    pub threshold: f64,
    pub max_pixels: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig { tile: 128, threshold: 0.0, max_pixels: 40_000_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VegetationConfig {
    pub hue: [u8; 2],
    pub saturation_min: u8,
    pub value_min: u8,
    pub min_delta: f64,
    pub direction: DirectionSource,
}

impl Default for VegetationConfig {
    fn default() -> Self {
        let green = GreenRange::default();
        VegetationConfig {
            hue: green.hue,
            saturation_min: green.saturation_min,
            value_min: green.value_min,
            min_delta: 0.05,
            direction: DirectionSource::Learned,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub url: String,
    pub client_id: String,
    pub username: String,
    pub password_file: PathBuf,
    pub ca_file: PathBuf,
    pub topic_prefix: String,
    pub publish: Publish,
    pub discovery: bool,
    pub snapshots: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://localhost:1883".into(),
            client_id: String::new(),
            username: String::new(),
            password_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            topic_prefix: String::new(),
            publish: Publish::Changes,
            discovery: false,
            snapshots: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    Changes,
    All,
}

/// One capture source; the table name is the site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    Directory(DirectorySource),
    Command(CommandSource),
    Http(HttpSource),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySource {
    pub path: PathBuf,
    #[serde(default = "star")]
    pub pattern: String,
    #[serde(default)]
    pub site_pattern: String,
    #[serde(default)]
    pub mask: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    pub command: Vec<String>,
    pub interval: String,
    #[serde(default = "thirty_seconds")]
    pub timeout: String,
    #[serde(default)]
    pub mask: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    pub url: String,
    pub interval: String,
    #[serde(default = "ten_seconds")]
    pub timeout: String,
    #[serde(default)]
    pub mask: PathBuf,
}

fn star() -> String {
    "*".into()
}
fn thirty_seconds() -> String {
    "30s".into()
}
fn ten_seconds() -> String {
    "10s".into()
}

/// One thing wrong in a configuration, with the key it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Parse { path: String, line: usize, message: String },
    #[error("{path}: {} problem(s): {}", .problems.len(), .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid { path: String, problems: Vec<Problem> },
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: name.clone(), source })?;
        let config = Config::parse(&name, &text)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { path: name, problems })
        }
    }

    /// Parses TOML text; `name` is for messages. Does not validate.
    pub fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            line: e.span().map_or(0, |s| text[..s.start].matches('\n').count() + 1),
            message: e.message().trim().to_owned(),
        })
    }

    /// Every problem in the configuration, each with its key path; empty when valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &str, message: String| problems.push(Problem { key: key.into(), message });
        if self.device_id.trim().is_empty() {
            bad("device_id", "must not be empty".into());
        }
        let a = &self.analysis;
        if a.tile != 0 && a.tile < 16 {
            bad(
                "analysis.tile",
                format!("{} is too small (0 = whole image, else at least 16)", a.tile),
            );
        }
        if !(a.threshold.is_finite() && a.threshold >= 0.0) {
            bad(
                "analysis.threshold",
                format!("{} must be 0 (the card's) or positive", a.threshold),
            );
        }
        if a.max_pixels == 0 {
            bad("analysis.max_pixels", "must be positive".into());
        }
        let v = &self.vegetation;
        if v.hue[0] > v.hue[1] || v.hue[1] > 179 {
            bad("vegetation.hue", format!("{:?} must be [low, high] within 0-179", v.hue));
        }
        if !(v.min_delta > 0.0 && v.min_delta < 1.0) {
            bad("vegetation.min_delta", format!("{} must be between 0 and 1", v.min_delta));
        }
        let url = &self.mqtt.url;
        if !(url.is_empty() || url.starts_with("mqtt://") || url.starts_with("mqtts://")) {
            bad("mqtt.url", format!("{url:?} must start with mqtt:// or mqtts:// (or be empty)"));
        }
        for (site, source) in &self.sources {
            let key = |k: &str| format!("sources.{site}.{k}");
            match source {
                SourceConfig::Directory(d) if d.path.as_os_str().is_empty() => {
                    bad(&key("path"), "must name a directory".into())
                }
                SourceConfig::Command(c) => {
                    if c.command.is_empty() {
                        bad(&key("command"), "must name a program".into());
                    }
                    for (k, d) in [("interval", &c.interval), ("timeout", &c.timeout)] {
                        if let Err(e) = parse_duration(d) {
                            bad(&key(k), e);
                        }
                    }
                }
                SourceConfig::Http(h) => {
                    if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                        bad(
                            &key("url"),
                            format!("{:?} must start with http:// or https://", h.url),
                        );
                    }
                    for (k, d) in [("interval", &h.interval), ("timeout", &h.timeout)] {
                        if let Err(e) = parse_duration(d) {
                            bad(&key(k), e);
                        }
                    }
                }
                SourceConfig::Directory(_) => {}
            }
        }
        problems
    }

    /// The analysis settings this configuration asks for.
    pub fn analysis_settings(&self) -> Settings {
        let v = &self.vegetation;
        Settings {
            tile: self.analysis.tile,
            threshold: (self.analysis.threshold > 0.0).then_some(self.analysis.threshold),
            green: GreenRange {
                hue: v.hue,
                saturation_min: v.saturation_min,
                value_min: v.value_min,
            },
            min_delta: v.min_delta,
            direction: v.direction,
        }
    }
}

/// "30s", "10m", "2h", "500ms" → a duration.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like \"30s\""))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{text:?}: unit must be ms, s, m or h")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge-change".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_default_parses_validates_and_matches_the_code() {
        let parsed = Config::parse("default", DEFAULT_TOML).expect("parses");
        assert_eq!(parsed.validate(), []);
        let code = Config::default();
        assert!(parsed.sources.is_empty());
        assert_eq!(parsed.state_dir, code.state_dir);
        assert_eq!(parsed.analysis, code.analysis);
        assert_eq!(parsed.vegetation, code.vegetation);
        assert_eq!(parsed.mqtt, code.mqtt);
    }

    #[test]
    fn documented_example_sources_are_valid() {
        let text: String = DEFAULT_TOML
            .lines()
            .map(|l| l.strip_prefix("#@").map_or(l, |rest| rest.strip_prefix(' ').unwrap_or(rest)))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = Config::parse("examples", &text).expect("parses");
        assert_eq!(parsed.validate(), []);
        assert_eq!(parsed.sources.len(), 3);
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err =
            Config::parse("c.toml", "workers = 1\n[analysis]\ntiles = 3\n").expect_err("unknown");
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:3: ") && msg.contains("tiles"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = "[analysis]\ntile = 4\nthreshold = -1.0\n[vegetation]\nhue = [90, 80]\n\
                    [sources.gate]\ntype = \"http\"\nurl = \"ftp://x\"\ninterval = \"5 minutes\"\n";
        let keys: Vec<String> = Config::parse("c", text)
            .expect("parses")
            .validate()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "analysis.tile",
                "analysis.threshold",
                "vegetation.hue",
                "sources.gate.url",
                "sources.gate.interval"
            ]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(std::time::Duration::from_secs(600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn settings_follow_the_config() {
        let mut c = Config::default();
        assert_eq!(c.analysis_settings().threshold, None);
        c.analysis.threshold = 1.5;
        c.vegetation.direction = DirectionSource::Hsv;
        let s = c.analysis_settings();
        assert_eq!((s.threshold, s.direction), (Some(1.5), DirectionSource::Hsv));
    }
}
