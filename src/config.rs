//! The configuration file (shared/DESIGN.md): serde structs with named defaults, unknown keys
//! refused, and `validate()` listing every problem with its key path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::{DirectionSource, GreenRange, Settings};
use crate::sources::{Source, SourceError};
use crate::state::OutboxLimits;

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
    pub outbox: OutboxConfig,
    pub sources: BTreeMap<String, SourceConfig>,
}

impl Config {
    /// `workers` as a thread count: 0 is one per core.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => cores(),
            n => n,
        }
    }
}

/// The cores this process may use (1 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
            outbox: OutboxConfig::default(),
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

/// How large the outbox may grow while the broker is unreachable (oldest rows go first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        let limits = OutboxLimits::default();
        OutboxConfig { max_rows: limits.max_rows, max_bytes: limits.max_bytes }
    }
}

impl OutboxConfig {
    pub fn limits(&self) -> OutboxLimits {
        OutboxLimits { max_rows: self.max_rows, max_bytes: self.max_bytes }
    }
}

/// Where a directory source's captures get their site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteFrom {
    /// The source's table name.
    Name,
    /// The `site` group of `site_pattern`, matched against the file name.
    Pattern,
    /// The first sub-directory below `path` (a folder per site).
    Subdirectory,
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
    /// Unset = "pattern" when `site_pattern` is given, else "name".
    #[serde(default)]
    pub site_from: Option<SiteFrom>,
    /// A file neither closed after writing nor renamed in counts once its size and mtime held
    /// still this long.
    #[serde(default = "two_seconds")]
    pub settle: String,
    /// Full scans of the folder besides start-up and event overflows; "0s" = none.
    #[serde(default = "one_minute")]
    pub rescan: String,
    #[serde(default)]
    pub mask: PathBuf,
}

impl DirectorySource {
    /// The site rule in force (`site_from`, or what `site_pattern` implies).
    pub fn site_from(&self) -> SiteFrom {
        self.site_from.unwrap_or(if self.site_pattern.is_empty() {
            SiteFrom::Name
        } else {
            SiteFrom::Pattern
        })
    }
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
fn two_seconds() -> String {
    "2s".into()
}
fn one_minute() -> String {
    "1m".into()
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
        let mut problems = config.validate();
        problems.extend(config.check_paths());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { path: name, problems })
        }
    }

    /// Parses TOML text; `name` is for messages. Does not validate.
    pub fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            let mut key = e.span().and_then(|s| key_at(text, s.start));
            // Inside a tagged table (a source) the error points at the table, not the key.
            let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next());
            if let (Some(k), Some(field)) = (&mut key, unknown) {
                if !k.ends_with(&format!(".{field}")) && *k != field {
                    *k = format!("{k}.{field}");
                }
            }
            ConfigError::Parse {
                path: name.to_owned(),
                line: e.span().map_or(0, |s| text[..s.start].matches('\n').count() + 1),
                message: match key {
                    Some(key) => format!("{message} (key {key})"),
                    None => message,
                },
            }
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
        if self.outbox.max_rows == 0 {
            bad("outbox.max_rows", "must be positive".into());
        }
        if self.outbox.max_bytes == 0 {
            bad("outbox.max_bytes", "must be positive".into());
        }
        for (name, source) in &self.sources {
            // Building the source checks what it needs (durations, globs, regexes, URLs) with key paths.
            match Source::from_config(name, source) {
                Ok(_) => {}
                Err(SourceError::Config(found)) => problems.extend(found),
                Err(other) => problems
                    .push(Problem { key: format!("sources.{name}"), message: other.to_string() }),
            }
        }
        problems
    }

    /// Problems with the files the configuration names (watched folders, masks), each with its
    /// key path; [`Config::load`] reports them with those of [`Config::validate`].
    pub fn check_paths(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (name, source) in &self.sources {
            let key = |k: &str| format!("sources.{name}.{k}");
            if let SourceConfig::Directory(d) = source {
                if !d.path.as_os_str().is_empty() && !d.path.is_dir() {
                    let message = format!("{}: no such directory", d.path.display());
                    problems.push(Problem { key: key("path"), message });
                }
            }
            let mask = self.mask(name).unwrap_or(Path::new(""));
            if !mask.as_os_str().is_empty() && !mask.is_file() {
                let message = format!("{}: no such file", mask.display());
                problems.push(Problem { key: key("mask"), message });
            }
        }
        problems
    }

    /// The mask configured for source `name`, if any.
    pub fn mask(&self, name: &str) -> Option<&Path> {
        let mask = match self.sources.get(name)? {
            SourceConfig::Directory(d) => &d.mask,
            SourceConfig::Command(c) => &c.mask,
            SourceConfig::Http(h) => &h.mask,
        };
        (!mask.as_os_str().is_empty()).then_some(mask.as_path())
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

/// The dotted key path of the TOML line holding byte `offset`: its table header's name, plus the
/// key when the line is `key = value`. Good enough for messages about hand-written files.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let table = text[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| l.trim_matches(['[', ']']).trim().to_owned())
    });
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (table, None) => {
            let header = line.trim();
            header
                .starts_with('[')
                .then(|| header.trim_matches(['[', ']']).trim().to_owned())
                .or(table)
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
        assert_eq!(parsed.outbox, code.outbox);
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
    fn parse_errors_name_the_key_path() {
        let msg = |text: &str| Config::parse("c", text).expect_err("invalid").to_string();
        let m = msg("workers = 1\n[analysis]\ntile = \"big\"\n");
        assert!(m.starts_with("c:3: ") && m.ends_with("(key analysis.tile)"), "{m}");
        let m = msg("[sources.north]\ntype = \"directory\"\npath = \"/x\"\ncolour = 1\n");
        assert!(m.contains("(key sources.north.colour)"), "{m}");
        let m = msg("wokers = 2\n");
        assert!(m.contains("(key wokers)"), "{m}");
        let m = msg("[sources.north]\ntype = \"directory\"\n");
        assert!(m.contains("missing field `path`") && m.contains("sources.north"), "{m}");
    }

    #[test]
    fn paths_that_do_not_exist_are_problems_too() {
        let text = "[sources.north]\ntype = \"directory\"\npath = \"/no/such/dir\"\n\
                    mask = \"/no/mask.png\"\n[sources.cam]\ntype = \"command\"\n\
                    command = [\"true\"]\ninterval = \"0s\"\n";
        let config = Config::parse("c", text).expect("parses");
        let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["sources.cam.interval"]);
        let keys: Vec<String> = config.check_paths().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["sources.north.path", "sources.north.mask"]);
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
