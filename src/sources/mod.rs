//! Capture sources, one file each: [`directory`] (a watched drop folder), [`command`] (a camera program
//! run every interval) and [`http`] (a snapshot URL polled every interval). Each runs as a tokio task that
//! sends [`Capture`]s into a bounded channel owned by the daemon and stops when shutdown is triggered.
//! What a source does when that channel is full is its own policy, stated on its `run`.

pub mod command;
pub mod directory;
pub mod http;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;

use crate::capture::{Capture, CaptureData};
use crate::config::{parse_duration, Problem, SourceConfig};
use crate::shutdown::Shutdown;
use crate::state::{Store, StoreError};

/// The most a single capture may weigh: a command's stdout or an HTTP body beyond it is refused rather
/// than held in memory (a 40-megapixel PNG, the largest image analysis accepts, fits).
pub const MAX_CAPTURE_BYTES: u64 = 128 * 1024 * 1024;

/// Why a source could not be built or started; raised at start-up (or reload), never while running.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source's configuration, every problem with its key path.
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Config(Vec<Problem>),
    #[error("{path}: cannot watch: {source}")]
    Watch { path: std::path::PathBuf, source: notify::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters of one source, shared with the daemon for `STATUS=` and the stats topic.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Captures handed downstream, failed ones included.
    pub captures: AtomicU64,
    /// Of those, the failed ones.
    pub failures: AtomicU64,
    /// Camera ticks skipped because the capture queue was full.
    pub skipped_ticks: AtomicU64,
}

impl SourceStats {
    fn count(&self, capture: &Capture) {
        self.captures.fetch_add(1, Ordering::Relaxed);
        if capture.is_failed() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A source built from its configuration, ready to start.
#[derive(Debug)]
pub enum Source {
    Directory(directory::DirectorySettings),
    Command(command::CommandSettings),
    Http(http::HttpSettings),
}

/// A started source: its task ends after shutdown, or when the capture channel is closed.
#[derive(Debug)]
pub struct RunningSource {
    pub name: String,
    pub stats: Arc<SourceStats>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Source {
    /// Builds `[sources.<name>]`, reporting every problem with its key path.
    pub fn from_config(name: &str, config: &SourceConfig) -> Result<Source, SourceError> {
        match config {
            SourceConfig::Directory(d) => {
                directory::DirectorySettings::from_config(name, d).map(Source::Directory)
            }
            SourceConfig::Command(c) => {
                command::CommandSettings::from_config(name, c).map(Source::Command)
            }
            SourceConfig::Http(h) => http::HttpSettings::from_config(name, h).map(Source::Http),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Source::Directory(s) => &s.source,
            Source::Command(s) => &s.source,
            Source::Http(s) => &s.source,
        }
    }

    /// Starts the source's task. A directory is watched (and its store connection opened in
    /// `state_dir`) before this returns, so a missing folder is a start-up error.
    pub fn spawn(
        self,
        state_dir: &Path,
        tx: mpsc::Sender<Capture>,
        shutdown: Shutdown,
    ) -> Result<RunningSource, SourceError> {
        let name = self.name().to_owned();
        let stats = Arc::new(SourceStats::default());
        let counters = stats.clone();
        let task = match self {
            Source::Directory(settings) => {
                let store = Store::open(state_dir)?;
                let watcher = directory::DirectorySource::start(settings, store)?;
                tokio::spawn(watcher.run(tx, counters, shutdown))
            }
            Source::Command(settings) => {
                tokio::spawn(command::run(settings, tx, counters, shutdown))
            }
            Source::Http(settings) => tokio::spawn(http::run(settings, tx, counters, shutdown)),
        };
        Ok(RunningSource { name, stats, task })
    }
}

/// A source's interval and timeout, checked: tokio's interval refuses zero.
fn durations(
    name: &str,
    interval: &str,
    timeout: &str,
    problems: &mut Vec<Problem>,
) -> (Duration, Duration) {
    let mut parse = |key: &str, text: &str| match parse_duration(text) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            let key = format!("sources.{name}.{key}");
            problems.push(Problem { key, message: "must be longer than zero".into() });
            Duration::from_secs(1)
        }
        Err(message) => {
            problems.push(Problem { key: format!("sources.{name}.{key}"), message });
            Duration::from_secs(1)
        }
    };
    (parse("interval", interval), parse("timeout", timeout))
}

/// The loop shared by the camera-like sources: every `interval` (missed ticks are skipped, not
/// bunched up), take one capture and send it. Queue policy: a slot is reserved *before* the camera is
/// triggered; when the queue is full the tick is skipped and counted, since a fresh capture at the next
/// tick is worth more than a stale one waiting. Shutdown abandons a capture in progress.
async fn every<F, Fut>(
    interval: Duration,
    tx: mpsc::Sender<Capture>,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
    mut take: F,
) where
    F: FnMut(SystemTime) -> Fut,
    Fut: Future<Output = Capture>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticks.tick() => {}
        }
        let permit = match tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => {
                let skipped = stats.skipped_ticks.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(skipped, "capture queue full, skipping this tick");
                continue;
            }
            Err(TrySendError::Closed(())) => return,
        };
        let capture = tokio::select! {
            _ = shutdown.wait() => return,
            capture = take(SystemTime::now()) => capture,
        };
        if let CaptureData::Failed(reason) = &capture.data {
            tracing::warn!(site = %capture.site, %reason, "capture failed");
        }
        stats.count(&capture);
        permit.send(capture);
    }
}
