//! The processing loop: captures from the daemon's bounded queue are handed to analysis jobs on
//! tokio's blocking pool, at most `workers` at once and never two of the same site (so a site's
//! captures are analysed in the order they arrived); each capture's outcome is committed to the
//! state store in one transaction, logged, and the sink is woken. The loop also feeds systemd's
//! watchdog and STATUS line, so a stuck analysis stops the pings.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::analysis::{decode, fit_to, AnalysisError, Analyzer, Mask};
use crate::capture::{rfc3339, sha256_hex, Capture};
use crate::daemon::stored;
use crate::daemon::systemd::{Notifier, Watchdog};
use crate::report::{self, ErrorReport, ModelRef, Report, Timings, SCHEMA};
use crate::shutdown::Shutdown;
use crate::state::{Baseline, NewEvent, ProcessedFile, Store, StoreError};

/// Captures taken off the queue whose site is being analysed, waiting for it. When this many wait,
/// the loop stops taking captures, the queue fills and each source applies its own policy.
const WAITING: usize = 64;

/// How often STATUS= is refreshed when nothing happens (the outbox drains while we are idle).
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// What analysis needs besides the capture; swapped as a whole when the configuration is reloaded.
#[derive(Debug)]
pub struct Settings {
    pub analyzer: Arc<Analyzer>,
    /// Masks by source name.
    pub masks: HashMap<String, Arc<Mask>>,
    pub max_pixels: u64,
    pub device_id: String,
}

/// The daemon's counters since start, for STATUS= and the sink's stats topic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Captures taken off the queue and dealt with.
    pub captures: AtomicU64,
    pub changes: AtomicU64,
    pub no_changes: AtomicU64,
    /// `error` events: failed, unreadable or undecodable captures.
    pub errors: AtomicU64,
    /// Captures identical to their site's previous one (no analysis, no event).
    pub duplicates: AtomicU64,
    /// First captures of a site (or first after a model change): baseline, no event.
    pub baselines: AtomicU64,
    /// Captures that could not be committed (the state store failed); not recorded, so a file is
    /// tried again after a restart.
    pub store_failures: AtomicU64,
    /// Outbox rows as last seen.
    pub outbox_rows: AtomicU64,
}

impl Counters {
    pub fn status_line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "captures {}, changes {}, errors {}, outbox {}",
            get(&self.captures),
            get(&self.changes),
            get(&self.errors),
            get(&self.outbox_rows)
        )
    }
}

/// The loop's inputs. The store is the daemon's writer connection, shared by the jobs (SQLite takes one
/// writer at a time anyway; each job holds the lock only to read the baseline and to commit).
pub struct Pipeline {
    pub rx: mpsc::Receiver<Capture>,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub store: Arc<Mutex<Store>>,
    pub workers: usize,
    pub counters: Arc<Counters>,
    pub wake: Arc<Notify>,
    pub watchdog: Option<Watchdog>,
    pub notifier: Notifier,
}

impl Pipeline {
    /// Runs until shutdown, then waits for the captures being analysed (they are committed); captures
    /// still queued are left: a directory's files are found again at the next start.
    pub async fn run(mut self, shutdown: Shutdown) {
        let workers = self.workers.max(1);
        let mut running: JoinSet<()> = JoinSet::new();
        let mut started: HashMap<tokio::task::Id, (String, Instant)> = HashMap::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut waiting: VecDeque<Capture> = VecDeque::new();
        let mut status = tokio::time::interval(STATUS_EVERY);
        status.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watchdog =
            tokio::time::interval(self.watchdog.map_or(STATUS_EVERY, |w| w.period()));
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            while running.len() < workers {
                let Some(i) = waiting.iter().position(|c| !busy.contains(&c.site)) else { break };
                let Some(capture) = waiting.remove(i) else { break };
                busy.insert(capture.site.clone());
                let job = Job {
                    settings: self.settings.borrow().clone(),
                    store: self.store.clone(),
                    counters: self.counters.clone(),
                    wake: self.wake.clone(),
                };
                let site = capture.site.clone();
                let handle = running.spawn_blocking(move || job.process(capture));
                started.insert(handle.id(), (site, Instant::now()));
            }
            let room = running.len() < workers && waiting.len() < WAITING;
            tokio::select! {
                _ = shutdown.wait() => break,
                Some(done) = running.join_next_with_id() => {
                    self.finished(done, &mut started, &mut busy);
                    self.notifier.status(&self.counters.status_line());
                }
                capture = self.rx.recv(), if room => match capture {
                    Some(capture) => waiting.push_back(capture),
                    None => break,
                },
                _ = status.tick() => {
                    self.refresh_depth().await;
                    self.notifier.status(&self.counters.status_line());
                }
                _ = watchdog.tick(), if self.watchdog.is_some() => {
                    // Healthy while idle or while every capture in hand is younger than the
                    // watchdog's timeout: one stuck analysis stops the pings and systemd restarts us.
                    let stuck = self.watchdog.is_some_and(|w| {
                        started.values().any(|(_, at)| at.elapsed() > w.timeout)
                    });
                    if stuck {
                        tracing::error!("an analysis is stuck; no watchdog ping");
                    } else {
                        self.notifier.watchdog();
                    }
                }
            }
        }
        if !running.is_empty() {
            tracing::info!(captures = running.len(), "finishing the captures in hand");
        }
        while let Some(done) = running.join_next_with_id().await {
            self.finished(done, &mut started, &mut busy);
        }
        if !waiting.is_empty() {
            tracing::info!(captures = waiting.len(), "left queued captures for the next start");
        }
    }

    fn finished(
        &self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        started: &mut HashMap<tokio::task::Id, (String, Instant)>,
        busy: &mut HashSet<String>,
    ) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                // A panic in analysis: the capture is not recorded (a file is tried again at the
                // next start); the site's next captures go on.
                tracing::error!(error = %e, "an analysis job failed");
                e.id()
            }
        };
        if let Some((site, _)) = started.remove(&id) {
            busy.remove(&site);
        }
    }

    async fn refresh_depth(&self) {
        let store = self.store.clone();
        let counters = self.counters.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(depth) =
                store.lock().map_err(|_| ()).and_then(|s| s.outbox_depth().map_err(|_| ()))
            {
                counters.outbox_rows.store(depth.rows, Ordering::Relaxed);
            }
        })
        .await;
    }
}

/// One capture's job: everything it needs, owned, for the blocking pool.
struct Job {
    settings: Arc<Settings>,
    store: Arc<Mutex<Store>>,
    counters: Arc<Counters>,
    wake: Arc<Notify>,
}

/// What became of a capture, before it is committed.
enum Outcome {
    /// The site's first capture (or first comparable one): it becomes the baseline, no event.
    Baseline(Baseline),
    /// Same bytes as the baseline: remembered, nothing else.
    Duplicate,
    /// An analysed pair: new baseline and a `change` or `no_change` event.
    Pair { baseline: Baseline, event: Value },
    /// No usable image: an `error` event, the baseline stays.
    Failed { event: Value },
}

impl Job {
    fn process(&self, capture: Capture) {
        let span = tracing::info_span!(
            "capture",
            site = %capture.site,
            capture = %capture.name,
            id = tracing::field::Empty
        );
        let _entered = span.enter();
        self.counters.captures.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.process_in_span(&capture, &span) {
            self.counters.store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot record the capture");
        }
    }

    fn process_in_span(&self, capture: &Capture, span: &tracing::Span) -> Result<(), StoreError> {
        let started = Instant::now();
        let bytes = capture.read();
        let sha256 = bytes.as_ref().map(|b| sha256_hex(b)).unwrap_or_default();
        let previous = self.lock().previous(&capture.site)?;
        let outcome = match &bytes {
            Err(failed) => self.failed(capture, previous.as_ref(), &failed.0),
            Ok(_) if previous.as_ref().is_some_and(|p| p.sha256 == sha256) => Outcome::Duplicate,
            Ok(bytes) => self.analyse(capture, bytes, &sha256, previous.as_ref(), started),
        };
        let processed = capture.stamp().map(|stamp| ProcessedFile {
            source: capture.source.clone(),
            name: capture.name.clone(),
            stamp,
            sha256: sha256.clone(),
        });
        let site = capture.site.clone();
        let (baseline, event) = match outcome {
            Outcome::Baseline(b) => (Some(b), None),
            Outcome::Duplicate => (None, None),
            Outcome::Pair { baseline, event, .. } => (Some(baseline), Some(event)),
            Outcome::Failed { event } => (None, Some(event)),
        };
        let kind = event.as_ref().and_then(|e| e["type"].as_str().map(str::to_owned));
        let summary = event
            .as_ref()
            .map(|e| (e["distance"].as_f64(), e["direction"].clone(), e["error"].clone()));
        let mut store = self.lock();
        let stored = store.commit_analysis(
            &site,
            baseline.as_ref(),
            event.map(|payload| NewEvent { site: site.clone(), payload }),
            processed.as_ref(),
        )?;
        if let Ok(depth) = store.outbox_depth() {
            self.counters.outbox_rows.store(depth.rows, Ordering::Relaxed);
        }
        drop(store);
        let counter = match kind.as_deref() {
            Some("change") => &self.counters.changes,
            Some("no_change") => &self.counters.no_changes,
            Some(_) => &self.counters.errors,
            None if baseline.is_some() => &self.counters.baselines,
            None => &self.counters.duplicates,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match (stored, kind, summary) {
            (Some(stored), Some(kind), Some((distance, direction, error))) => {
                span.record("id", stored.id.as_str());
                let direction = direction.as_str().unwrap_or("");
                if let Some(error) = error.as_str() {
                    tracing::warn!(seq = stored.seq, r#type = %kind, %error, "event");
                } else {
                    tracing::info!(seq = stored.seq, r#type = %kind, distance, direction, "event");
                }
                self.wake.notify_one();
            }
            _ if baseline.is_some() => tracing::info!("baseline: no event"),
            _ => tracing::info!("duplicate of the previous capture: no event"),
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A job that panicked while holding the lock left no half-done transaction (rusqlite rolls
        // back on drop), so the connection is still good.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decode, embed once, compare with the stored baseline analysis.
    fn analyse(
        &self,
        capture: &Capture,
        bytes: &[u8],
        sha256: &str,
        previous: Option<&Baseline>,
        started: Instant,
    ) -> Outcome {
        let s = &self.settings;
        let before = previous.and_then(|p| match stored::decode(&p.analysis) {
            Ok(a) if a.model_sha256 == s.analyzer.encoder().card().sha256 => Some(a),
            Ok(_) => {
                tracing::info!("the model changed since the baseline: this capture replaces it");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "this capture replaces the unreadable baseline");
                None
            }
        });
        let embedded = decode::decode_bytes(&capture.name, bytes, s.max_pixels)
            .map_err(AnalysisError::from)
            .and_then(|image| {
                let image = match &before {
                    Some(b) => fit_to(image, (b.width, b.height)),
                    None => image,
                };
                let decoded = started.elapsed();
                let mask = s.masks.get(&capture.source).map(|m| m.as_ref());
                let after = s.analyzer.embed_capture(&image, mask)?;
                let comparison =
                    before.as_ref().map(|b| s.analyzer.compare(b, &after)).transpose()?;
                Ok((after, comparison, decoded))
            });
        let (after, comparison, decoded) = match embedded {
            Ok(done) => done,
            Err(e) => return self.failed(capture, previous, &e.to_string()),
        };
        let baseline = Baseline {
            capture: capture.name.clone(),
            taken_at: capture.taken_at,
            sha256: sha256.to_owned(),
            analysis: stored::encode(&after),
        };
        let (Some(comparison), Some(previous)) =
            (comparison, previous.filter(|_| before.is_some()))
        else {
            return Outcome::Baseline(baseline);
        };
        let total = started.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let shown = report::rounded(&comparison);
        let report = Report {
            schema: SCHEMA,
            before: &previous.capture,
            after: &capture.name,
            comparison: &shown,
            model: ModelRef::from(s.analyzer.encoder().card()),
            timings_ms: Timings {
                decode: ms(decoded),
                encode: ms(total - decoded),
                total: ms(total),
            }
            .rounded(),
        };
        let kind = if comparison.changed { "change" } else { "no_change" };
        let event = self.event(report, kind, capture, Some(previous));
        Outcome::Pair { baseline, event }
    }

    fn failed(&self, capture: &Capture, previous: Option<&Baseline>, error: &str) -> Outcome {
        let report = ErrorReport {
            schema: SCHEMA,
            before: previous.map_or("", |p| p.capture.as_str()),
            after: &capture.name,
            error: error.to_owned(),
        };
        Outcome::Failed { event: self.event(report, "error", capture, previous) }
    }

    /// The `check --json` object plus the event's own fields (the store adds `id` and `seq`).
    fn event(
        &self,
        report: impl serde::Serialize,
        kind: &str,
        capture: &Capture,
        previous: Option<&Baseline>,
    ) -> Value {
        let mut event = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
        if let Value::Object(fields) = &mut event {
            fields.insert("type".into(), kind.into());
            fields.insert("device".into(), self.settings.device_id.clone().into());
            fields.insert("site".into(), capture.site.clone().into());
            fields.insert("captured_at".into(), rfc3339(capture.taken_at).into());
            fields.insert(
                "previous_captured_at".into(),
                previous.map(|p| rfc3339(p.taken_at)).into(),
            );
            fields.insert("capture".into(), capture.name.clone().into());
            fields.insert("previous".into(), previous.map(|p| p.capture.clone()).into());
        }
        event
    }
}
