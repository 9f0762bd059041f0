//! The `directory` source: a drop folder watched with inotify (notify's recommended watcher). A file
//! counts once it is complete: when its writer closes it, when it is renamed into the folder (rsync and
//! many cameras), or otherwise when its size and mtime are the same at two checks `settle` apart. The
//! folder is scanned at start-up, after an event overflow and every `rescan` (which also covers network
//! filesystems where inotify sees nothing); what a scan finds is handed on oldest first. A file already
//! recorded in the state store is never handed on again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::{Glob, GlobMatcher};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use regex::Regex;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::capture::{Capture, CaptureData, FileStamp};
use crate::config::{parse_duration, DirectorySource as DirectoryConfig, Problem, SiteFrom};
use crate::shutdown::Shutdown;
use crate::sources::{SourceError, SourceStats};
use crate::state::Store;

/// Raw watcher events waiting for this task. When full, the event is dropped and a rescan is
/// requested instead: the folder's listing is the truth, events only make us look sooner.
const EVENT_QUEUE: usize = 1024;

/// How deep [`SiteRule::Subdirectory`] looks below the watched folder.
const MAX_DEPTH: usize = 8;

/// Where a file's site comes from.
#[derive(Debug, Clone)]
pub enum SiteRule {
    /// Every file belongs to the site named like the source.
    Source,
    /// The `site` group of a regex matched against the file name; files that do not match are skipped.
    Pattern(Regex),
    /// The first sub-directory below the watched folder (one drop folder, a folder per site); files
    /// directly in the watched folder are skipped.
    Subdirectory,
}

#[derive(Debug, Clone)]
pub struct DirectorySettings {
    /// The configured source's name.
    pub source: String,
    pub path: PathBuf,
    /// Glob on file names; `None` = every file.
    pub pattern: Option<GlobMatcher>,
    pub site: SiteRule,
    /// How far apart the two size+mtime checks are for a file neither closed nor renamed in.
    pub settle: Duration,
    /// Full scans besides those at start-up and after an overflow; `None` = only those.
    pub rescan: Option<Duration>,
}

impl DirectorySettings {
    /// Defaults for everything but the folder: all files, the site named like the source, a 2 s settle
    /// and a rescan every minute.
    pub fn new(source: &str, path: &Path) -> DirectorySettings {
        DirectorySettings {
            source: source.to_owned(),
            path: path.to_owned(),
            pattern: None,
            site: SiteRule::Source,
            settle: Duration::from_secs(2),
            rescan: Some(Duration::from_secs(60)),
        }
    }

    pub fn from_config(
        name: &str,
        config: &DirectoryConfig,
    ) -> Result<DirectorySettings, SourceError> {
        // Absolute, so that the watcher's event paths and the scans' paths agree (a relative path
        // is taken from the working directory at start).
        let path = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
        let mut settings = DirectorySettings::new(name, &path);
        let mut problems = Vec::new();
        let key = |k: &str| format!("sources.{name}.{k}");
        if config.path.as_os_str().is_empty() {
            problems.push(Problem { key: key("path"), message: "must name a directory".into() });
        }
        match Glob::new(&config.pattern) {
            Ok(glob) => settings.pattern = Some(glob.compile_matcher()),
            Err(e) => problems.push(Problem { key: key("pattern"), message: e.to_string() }),
        }
        match (config.site_from(), config.site_pattern.is_empty()) {
            (SiteFrom::Name, true) => settings.site = SiteRule::Source,
            (SiteFrom::Subdirectory, true) => settings.site = SiteRule::Subdirectory,
            (SiteFrom::Pattern, true) => problems.push(Problem {
                key: key("site_pattern"),
                message: "site_from = \"pattern\" needs a regex with a (?P<site>...) group".into(),
            }),
            (SiteFrom::Name | SiteFrom::Subdirectory, false) => problems.push(Problem {
                key: key("site_pattern"),
                message: "is only used with site_from = \"pattern\"".into(),
            }),
            (SiteFrom::Pattern, false) => match Regex::new(&config.site_pattern) {
                Ok(re) if re.capture_names().any(|n| n == Some("site")) => {
                    settings.site = SiteRule::Pattern(re)
                }
                Ok(_) => problems.push(Problem {
                    key: key("site_pattern"),
                    message: "needs a (?P<site>...) group".into(),
                }),
                Err(e) => problems.push(Problem {
                    key: key("site_pattern"),
                    message: e.to_string().lines().last().unwrap_or("invalid").trim().to_owned(),
                }),
            },
        }
        match parse_duration(&config.settle) {
            Ok(d) if !d.is_zero() => settings.settle = d,
            Ok(_) => problems
                .push(Problem { key: key("settle"), message: "must be longer than zero".into() }),
            Err(message) => problems.push(Problem { key: key("settle"), message }),
        }
        match parse_duration(&config.rescan) {
            Ok(d) => settings.rescan = (!d.is_zero()).then_some(d),
            Err(message) => problems.push(Problem { key: key("rescan"), message }),
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SourceError::Config(problems))
        }
    }
}

/// A watched folder, started (so a missing folder fails at start-up) but not yet running.
pub struct DirectorySource {
    settings: DirectorySettings,
    store: Store,
    /// Kept alive while running: dropping it stops the events.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    overflow: Arc<AtomicBool>,
    /// Files already decided (handed on, found in the store, or skipped), by name, so that rescans and
    /// repeated events cost no store look-up. Pruned to what still exists at each scan.
    known: HashMap<String, FileStamp>,
    /// Files seen but not known complete: their last size+mtime, if checked.
    pending: HashMap<PathBuf, Option<FileStamp>>,
}

/// What to do with one file.
enum Verdict {
    /// Hand it on: the capture's name and site.
    Take { name: String, site: String },
    /// Not ours (hidden, temporary, pattern, no site): remember as decided.
    Skip(String),
    /// Not a regular file, or outside the folder: ignore.
    Ignore,
}

impl DirectorySource {
    /// Starts watching `settings.path`; `store` answers "already processed?".
    pub fn start(
        settings: DirectorySettings,
        store: Store,
    ) -> Result<DirectorySource, SourceError> {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        let watch_error = |source| SourceError::Watch { path: settings.path.clone(), source };
        let mut watcher = notify::recommended_watcher(move |event| {
            if tx.try_send(event).is_err() {
                flag.store(true, Ordering::Relaxed);
            }
        })
        .map_err(watch_error)?;
        let mode = match settings.site {
            SiteRule::Subdirectory => RecursiveMode::Recursive,
            _ => RecursiveMode::NonRecursive,
        };
        watcher.watch(&settings.path, mode).map_err(watch_error)?;
        Ok(DirectorySource {
            settings,
            store,
            _watcher: watcher,
            events,
            overflow,
            known: HashMap::new(),
            pending: HashMap::new(),
        })
    }

    /// Hands complete files on until shutdown. Queue policy: a directory source waits for room (files
    /// keep on disk; nothing is lost by waiting), still stopping at shutdown.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Capture>,
        stats: Arc<SourceStats>,
        shutdown: Shutdown,
    ) {
        let s = &self.settings;
        tracing::info!(source = %s.source, path = %s.path.display(), "directory source started");
        let mut checks = tokio::time::interval(self.settings.settle);
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_rescan = self.settings.rescan.map(|every| Instant::now() + every);
        self.scan();
        loop {
            let ready = tokio::select! {
                _ = shutdown.wait() => return,
                event = self.events.recv() => match event {
                    Some(Ok(event)) => self.on_event(event),
                    Some(Err(e)) => {
                        tracing::warn!(source = %self.settings.source, error = %e, "watch error, rescanning");
                        self.scan();
                        Vec::new()
                    }
                    None => return,
                },
                _ = checks.tick() => {
                    let due = next_rescan.is_some_and(|at| Instant::now() >= at);
                    let overflowed = self.overflow.swap(false, Ordering::Relaxed);
                    if overflowed {
                        stats.overflows.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(source = %self.settings.source, "watch events lost, rescanning");
                    }
                    if overflowed || due {
                        next_rescan = self.settings.rescan.map(|every| Instant::now() + every);
                        self.scan();
                    }
                    self.check_pending()
                }
            };
            for capture in ready {
                stats.count(&capture);
                tracing::debug!(site = %capture.site, name = %capture.name, "file complete");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    sent = tx.send(capture) => if sent.is_err() { return },
                }
            }
        }
    }

    /// Reacts to one watcher event; returns the files it completed.
    fn on_event(&mut self, event: notify::Event) -> Vec<Capture> {
        if event.need_rescan() {
            // The kernel's queue overflowed: rescan at the next check, like our own queue's overflow.
            self.overflow.store(true, Ordering::Relaxed);
            return Vec::new();
        }
        match event.kind {
            // Closed after writing, or renamed into the folder: complete now.
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                event.paths.iter().filter_map(|path| self.complete(path)).collect()
            }
            // Both paths of a rename: the second is where the file now is.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                event.paths.get(1).and_then(|path| self.complete(path)).into_iter().collect()
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                for path in &event.paths {
                    self.pending.remove(path);
                }
                Vec::new()
            }
            // Being written (or a change we cannot classify): watch it settle.
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any => {
                for path in event.paths {
                    if path.is_file() {
                        self.pending.entry(path).or_insert(None);
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// A file known to be complete: the capture to hand on, unless it was already dealt with.
    fn complete(&mut self, path: &Path) -> Option<Capture> {
        self.pending.remove(path);
        let stamp = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => FileStamp::of(&meta),
            _ => return None,
        };
        let (name, site) = match self.verdict(path) {
            Verdict::Take { name, site } => (name, site),
            Verdict::Skip(name) => {
                self.known.insert(name, stamp);
                return None;
            }
            Verdict::Ignore => return None,
        };
        if stamp.size == 0 {
            // Created empty (a `touch`, or a writer that will fill it later): wait for content.
            self.pending.insert(path.to_owned(), Some(stamp));
            return None;
        }
        if self.known.get(&name) == Some(&stamp) {
            return None;
        }
        let done = self.store.is_processed(&self.settings.source, &name, stamp).unwrap_or_else(|e| {
            // Better analysed twice than never: the store's commit stays exactly-once per file.
            tracing::warn!(error = %e, file = %name, "cannot ask the state store, taking the file");
            false
        });
        self.known.insert(name.clone(), stamp);
        if done {
            return None;
        }
        Some(Capture {
            site,
            taken_at: stamp.mtime(),
            name,
            data: CaptureData::Path { path: path.to_owned(), stamp },
            source: self.settings.source.clone(),
        })
    }

    /// Files whose size and mtime held still since the last check, oldest first.
    fn check_pending(&mut self) -> Vec<Capture> {
        let mut stable = Vec::new();
        self.pending.retain(|path, last| match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {
                let now = FileStamp::of(&meta);
                if now.size > 0 && *last == Some(now) {
                    stable.push((now.mtime_ns, path.clone()));
                }
                *last = Some(now);
                true
            }
            _ => false,
        });
        stable.sort();
        stable.into_iter().filter_map(|(_, path)| self.complete(&path)).collect()
    }

    /// Lists the folder: files not yet decided become pending (so a file still being written is
    /// not taken early); `known` forgets files that are gone. Candidates are added oldest first, and
    /// the next check hands on those that held still, oldest first.
    fn scan(&mut self) {
        let depth = match self.settings.site {
            SiteRule::Subdirectory => MAX_DEPTH,
            _ => 1,
        };
        let mut found = Vec::new();
        list_files(&self.settings.path, depth, &mut found);
        let mut present = std::collections::HashSet::new();
        for (path, stamp) in found {
            let name = match self.verdict(&path) {
                Verdict::Take { name, .. } | Verdict::Skip(name) => name,
                Verdict::Ignore => continue,
            };
            present.insert(name.clone());
            if self.known.get(&name) != Some(&stamp) {
                self.pending.entry(path).or_insert(None);
            }
        }
        self.known.retain(|name, _| present.contains(name));
    }

    /// Whether a file is one of ours, and if so its name (path relative to the folder) and site.
    fn verdict(&self, path: &Path) -> Verdict {
        let Ok(relative) = path.strip_prefix(&self.settings.path) else { return Verdict::Ignore };
        let name = relative.to_string_lossy().into_owned();
        let Some(file_name) = relative.file_name().map(|n| n.to_string_lossy()) else {
            return Verdict::Ignore;
        };
        if relative.components().any(|c| is_ignored(&c.as_os_str().to_string_lossy()))
            || self.settings.pattern.as_ref().is_some_and(|p| !p.is_match(file_name.as_ref()))
        {
            return Verdict::Skip(name);
        }
        let site = match &self.settings.site {
            SiteRule::Source => Some(self.settings.source.clone()),
            SiteRule::Pattern(re) => re
                .captures(&file_name)
                .and_then(|c| c.name("site"))
                .map(|m| m.as_str().to_owned())
                .filter(|s| !s.is_empty()),
            SiteRule::Subdirectory => {
                let mut parts = relative.components();
                let first = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned());
                first.filter(|_| parts.next().is_some())
            }
        };
        match site {
            Some(site) => Verdict::Take { name, site },
            None => {
                tracing::warn!(source = %self.settings.source, file = %name, "no site for this file, skipping it");
                Verdict::Skip(name)
            }
        }
    }
}

/// Hidden files, temporary and partial downloads, editor backups: never captures.
fn is_ignored(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || lower.ends_with(".tmp")
        || lower.ends_with(".part")
}

/// Regular files below `dir`, `depth` levels deep (1 = only `dir` itself), skipping hidden folders.
fn list_files(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, FileStamp)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot list the folder");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => out.push((path, FileStamp::of(&meta))),
            Ok(meta)
                if meta.is_dir()
                    && depth > 1
                    && !entry.file_name().to_string_lossy().starts_with('.') =>
            {
                list_files(&path, depth - 1, out)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DirectorySource as Config;

    fn config(pattern: &str, site_pattern: &str) -> Config {
        Config {
            path: "/srv/drop".into(),
            pattern: pattern.into(),
            site_pattern: site_pattern.into(),
            site_from: None,
            settle: "2s".into(),
            rescan: "1m".into(),
            mask: PathBuf::new(),
        }
    }

    #[test]
    fn hidden_temporary_and_backup_files_are_ignored() {
        for name in [".a.png", "a.png.tmp", "a.PART", "a.png~", ".rsync-xyz"] {
            assert!(is_ignored(name), "{name}");
        }
        for name in ["a.png", "tile_0001.tif", "partial.png"] {
            assert!(!is_ignored(name), "{name}");
        }
    }

    #[test]
    fn settings_from_config_report_bad_patterns_with_their_keys() {
        let err = DirectorySettings::from_config("north", &config("[", "(")).expect_err("bad");
        let SourceError::Config(problems) = err else { panic!("{err}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["sources.north.pattern", "sources.north.site_pattern"]);

        let err = DirectorySettings::from_config("north", &config("*", "tile_\\d+"))
            .expect_err("no group");
        assert!(err.to_string().contains("needs a (?P<site>...) group"), "{err}");

        let ok = DirectorySettings::from_config("north", &config("*.png", "^(?P<site>[a-z]+)_"))
            .expect("valid");
        let pattern = ok.pattern.expect("a pattern");
        assert!(pattern.is_match("a.png") && !pattern.is_match("a.jpg"));
        assert!(matches!(ok.site, SiteRule::Pattern(_)));
    }
}
