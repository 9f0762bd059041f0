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
    /// Times a directory's watch events were lost (kernel or our queue overflowed) and it was rescanned.
    pub overflows: AtomicU64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    const INTERVAL: Duration = Duration::from_secs(600);

    fn capture(taken_at: SystemTime) -> Capture {
        Capture {
            site: "cam0".into(),
            taken_at,
            name: "cam0".into(),
            data: CaptureData::Bytes(vec![1]),
            source: "cam0".into(),
        }
    }

    /// Waits (in paused time) until just after the tick at `n` intervals.
    async fn after_tick(start: tokio::time::Instant, n: u32) {
        tokio::time::sleep_until(start + INTERVAL * n + Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_skips_ticks_without_triggering_the_camera() {
        let (tx, mut rx) = mpsc::channel(1);
        let stats = Arc::new(SourceStats::default());
        let shutdown = Shutdown::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(every(INTERVAL, tx, stats.clone(), shutdown.clone(), move |t| {
            counter.fetch_add(1, Ordering::Relaxed);
            std::future::ready(capture(t))
        }));

        // Tick 0 fills the queue; ticks 1 and 2 find it full.
        after_tick(start, 2).await;
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(stats.skipped_ticks.load(Ordering::Relaxed), 2);
        rx.recv().await.expect("the first capture");
        after_tick(start, 3).await;
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert_eq!(stats.captures.load(Ordering::Relaxed), 2);

        shutdown.trigger();
        task.await.expect("stops at shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_capture_skips_the_ticks_it_missed_instead_of_bunching_them() {
        let (tx, mut rx) = mpsc::channel(16);
        let stats = Arc::new(SourceStats::default());
        let shutdown = Shutdown::new();
        let start = tokio::time::Instant::now();
        let mut first = true;
        let task = tokio::spawn(every(INTERVAL, tx, stats.clone(), shutdown.clone(), move |t| {
            // The first capture takes two and a half intervals.
            let delay = if std::mem::take(&mut first) { INTERVAL * 5 / 2 } else { Duration::ZERO };
            async move {
                tokio::time::sleep(delay).await;
                capture(t)
            }
        }));
        after_tick(start, 4).await;
        // Ticks 1 and 2 fell inside the slow capture: they are made up for by one capture as it
        // ends (2.5 intervals), not two, and then the schedule goes on at ticks 3 and 4.
        let mut taken = 0;
        while rx.try_recv().is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 4);
        assert_eq!(stats.captures.load(Ordering::Relaxed), 4);
        shutdown.trigger();
        task.await.expect("stops at shutdown");
    }
}
