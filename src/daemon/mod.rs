//! `edge-change run`: the one place that wires the parts together — configuration → sources →
//! the bounded capture queue → the analysis [`pipeline`] → the state store → the MQTT sink (woken
//! after each committed event) — and runs their lifecycle: systemd readiness, SIGHUP reloads,
//! SIGTERM/SIGINT drains.

pub mod pipeline;
pub mod stored;
pub mod systemd;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::analysis::{DecodeError, Encoder, Mask, ModelError};
use crate::capture::Capture;
use crate::config::{Config, ConfigError};
use crate::model;
use crate::shutdown::{Shutdown, Signals};
use crate::sources::{RunningSource, Source, SourceError};
use crate::state::{Store, StoreError};

use pipeline::{Counters, Pipeline, Settings};
use systemd::{Notifier, Watchdog};

/// Captures between the sources and the analysis. Small: a capture waiting here is only worth its
/// place until a fresher one is taken. When full, a directory source waits (its files stay on disk)
/// and a camera source (command, http) skips its tick and counts it.
const CAPTURE_QUEUE: usize = 16;

/// How long a stopping source or the sink may take before the daemon exits without it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start (exit code 1); each message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    ModelNotFound(#[from] model::NotFound),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{key}: {source}")]
    Mask { key: String, source: Box<DecodeError> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sources.{name}: {source}")]
    Source { name: String, source: Box<SourceError> },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the daemon with a validated `config` read from `config_path` (re-read on SIGHUP) until
/// SIGTERM or SIGINT; returns after the captures in hand were committed.
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), StartError> {
    // First, so that a SIGTERM during start-up (loading the model takes a while) is a clean stop.
    let signals = Signals::new().map_err(StartError::Signals)?;
    let shutdown = Shutdown::new();
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    tokio::spawn(signals.forward(shutdown.clone(), reload_tx));

    let settings = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || build_settings(&config, None))
            .await
            .expect("start-up does not panic")?
    };
    let model_name = settings.analyzer.encoder().card().name.clone();
    let store = Store::open(&config.state_dir)?.with_limits(config.outbox.limits());
    let store = Arc::new(Mutex::new(store));

    let (tx, rx) = mpsc::channel::<Capture>(CAPTURE_QUEUE);
    let mut sources = Sources::start(&config, tx.clone(), &shutdown)?;
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let counters = Arc::new(Counters::default());
    let notifier = Notifier::start();
    let wake = Arc::new(Notify::new());
    let workers = config.worker_threads();
    let pipeline = Pipeline {
        rx,
        settings: settings_rx,
        store,
        workers,
        counters: counters.clone(),
        wake: wake.clone(),
        watchdog: Watchdog::from_env(),
        notifier: notifier.clone(),
    };
    let pipeline = tokio::spawn(pipeline.run(shutdown.clone()));
    let sink = start_sink(&config, wake, shutdown.clone());

    tracing::info!(
        model = %model_name,
        workers,
        sources = sources.running.len(),
        state = %config.state_dir.display(),
        "edge-change running"
    );
    notifier.ready(&counters.status_line());

    let mut config = config;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            Some(()) = reload_rx.recv() => {
                let current = settings_tx.borrow().clone();
                if let Some((new, next)) = reload(&config_path, &config, current).await {
                    let applied;
                    (sources, applied) = sources.replace(&config, &new, tx.clone(), &shutdown).await;
                    if applied {
                        settings_tx.send_replace(Arc::new(next));
                        config = new;
                        tracing::info!("configuration reloaded");
                    }
                }
            }
        }
    }

    notifier.stopping();
    tracing::info!("stopping: sources first, then the captures in hand");
    sources.stop().await;
    if pipeline.await.is_err() {
        tracing::error!("the processing loop failed");
    }
    if let Some(sink) = sink {
        if tokio::time::timeout(STOP_GRACE, sink).await.is_err() {
            tracing::warn!("the MQTT sink did not stop in time; events stay in the outbox");
        }
    }
    tracing::info!(status = %counters.status_line(), "stopped");
    Ok(())
}

/// The MQTT sink (shared/DESIGN.md, issue 5) publishes the outbox; `wake` is poked after each
/// committed event. `None` when `mqtt.url` is "" or the sink cannot start (a missing password or CA
/// file: logged, and events wait in the outbox, as when the broker is unreachable).
fn start_sink(config: &Config, wake: Arc<Notify>, shutdown: Shutdown) -> Option<JoinHandle<()>> {
    crate::sinks::mqtt::spawn(&config.mqtt, &config.device_id, &config.state_dir, wake, shutdown)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the MQTT sink cannot start: events wait in the outbox");
            None
        })
}

/// Loads the model (or reuses `reuse`'s when the configuration asks for the same one and the same
/// analysis) and the masks. Blocking.
fn build_settings(
    config: &Config,
    reuse: Option<(&Config, &Settings)>,
) -> Result<Settings, StartError> {
    let same_analysis = |old: &Config| {
        old.model == config.model
            && old.analysis == config.analysis
            && old.vegetation == config.vegetation
    };
    let analyzer = match reuse {
        Some((old, settings)) if same_analysis(old) => settings.analyzer.clone(),
        _ => {
            let path = model::locate(Some(&config.model.path))?;
            let encoder = Encoder::load(&path)?;
            Arc::new(crate::analysis::Analyzer::new(encoder, config.analysis_settings()))
        }
    };
    let mut masks = HashMap::new();
    for name in config.sources.keys() {
        let Some(mask) = config.mask(name) else { continue };
        let loaded = Mask::load(mask, config.analysis.max_pixels).map_err(|e| {
            StartError::Mask { key: format!("sources.{name}.mask"), source: Box::new(e) }
        })?;
        masks.insert(name.clone(), Arc::new(loaded));
    }
    Ok(Settings {
        analyzer,
        masks,
        max_pixels: config.analysis.max_pixels,
        device_id: config.device_id.clone(),
    })
}

/// SIGHUP: re-reads and validates the file and builds its analysis settings (the model is reused
/// when unchanged); the caller restarts the sources and swaps both in. On any problem, logs it
/// and returns `None`: everything stays as it was.
async fn reload(path: &Path, old: &Config, current: Arc<Settings>) -> Option<(Config, Settings)> {
    tracing::info!(config = %path.display(), "reloading the configuration");
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(ConfigError::Invalid { path, problems }) => {
            for p in problems {
                tracing::error!(config = %path, problem = %p, "invalid configuration, keeping the old one");
            }
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot reload the configuration, keeping the old one");
            return None;
        }
    };
    for (key, changed) in [
        ("state_dir", new.state_dir != old.state_dir),
        ("workers", new.workers != old.workers),
        ("mqtt", new.mqtt != old.mqtt),
        ("outbox", new.outbox != old.outbox),
    ] {
        if changed {
            tracing::warn!(key, "this setting takes effect at the next restart");
        }
    }
    let built = {
        let (new, old) = (new.clone(), old.clone());
        tokio::task::spawn_blocking(move || build_settings(&new, Some((&old, &current)))).await
    };
    match built {
        Ok(Ok(next)) => Some((new, next)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot apply the new configuration, keeping the old one");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot apply the new configuration, keeping the old one");
            None
        }
    }
}

/// The running sources of one configuration, stopped together (their own shutdown, a child of
/// the daemon's).
struct Sources {
    shutdown: Shutdown,
    running: Vec<RunningSource>,
}

impl Sources {
    fn start(
        config: &Config,
        tx: mpsc::Sender<Capture>,
        parent: &Shutdown,
    ) -> Result<Sources, StartError> {
        let mut sources = Sources { shutdown: parent.child(), running: Vec::new() };
        for (name, source_config) in &config.sources {
            let started = Source::from_config(name, source_config).and_then(|source| {
                source.spawn(&config.state_dir, tx.clone(), sources.shutdown.clone())
            });
            match started {
                Ok(running) => sources.running.push(running),
                Err(source) => {
                    // Leave nothing half-started behind.
                    sources.shutdown.trigger();
                    return Err(StartError::Source {
                        name: name.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(sources)
    }

    /// Stops these sources and starts `new`'s; if those cannot start, starts `old`'s again. The
    /// flag says whether `new`'s run.
    async fn replace(
        self,
        old: &Config,
        new: &Config,
        tx: mpsc::Sender<Capture>,
        parent: &Shutdown,
    ) -> (Sources, bool) {
        // Stopped first: two watchers on one folder would hand its files on twice.
        self.stop().await;
        match Sources::start(new, tx.clone(), parent) {
            Ok(sources) => (sources, true),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the new sources, restarting the old ones");
                let sources = Sources::start(old, tx, parent).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot restart the old sources either");
                    Sources { shutdown: parent.child(), running: Vec::new() }
                });
                (sources, false)
            }
        }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        for source in self.running {
            if tokio::time::timeout(STOP_GRACE, source.task).await.is_err() {
                tracing::warn!(source = %source.name, "source did not stop in time");
            }
        }
    }
}
