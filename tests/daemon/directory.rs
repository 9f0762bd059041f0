//! The directory source on real folders with inotify and the real state store: a slow writer, a
//! rename into the folder, ignored names, the start-up scan (oldest first), restart without
//! re-processing, sites from a pattern or a sub-directory, and an event overflow.

use std::collections::HashSet;
use std::fs::{File, FileTimes};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edge_change::capture::{sha256_hex, Capture};
use edge_change::shutdown::Shutdown;
use edge_change::sources::directory::{DirectorySettings, DirectorySource, SiteRule};
use edge_change::sources::{Source, SourceStats};
use edge_change::state::{ProcessedFile, Store};
use regex::Regex;
use tokio::sync::mpsc;

use crate::harness::{assert_quiet, bytes, next, png, temp};

const SETTLE: Duration = Duration::from_millis(300);
/// Long enough for a start-up scan (two settle checks) on a busy machine.
const WITHIN: Duration = Duration::from_secs(15);

struct Watched {
    rx: mpsc::Receiver<Capture>,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stopped")
            .expect("joined");
    }
}

fn settings(drop: &Path) -> DirectorySettings {
    DirectorySettings { settle: SETTLE, rescan: None, ..DirectorySettings::new("north", drop) }
}

fn watch(settings: DirectorySettings, state: &Path, queue: usize) -> Watched {
    let store = Store::open(state).expect("open store");
    let source = DirectorySource::start(settings, store).expect("watch");
    let (tx, rx) = mpsc::channel(queue);
    let shutdown = Shutdown::new();
    let stats = Arc::new(SourceStats::default());
    let task = tokio::spawn(source.run(tx, stats.clone(), shutdown.clone()));
    Watched { rx, stats, shutdown, task }
}

/// What the daemon does after analysing a capture from a folder: remember the file.
fn mark_processed(state: &Path, capture: &Capture) {
    let mut store = Store::open(state).expect("open store");
    let file = ProcessedFile {
        source: capture.source.clone(),
        name: capture.name.clone(),
        stamp: capture.stamp().expect("a file capture"),
        sha256: sha256_hex(&bytes(capture)),
    };
    store.commit_analysis(&capture.site, None, None, Some(&file)).expect("commit");
}

fn write_aged(path: &Path, contents: &[u8], age: Duration) {
    std::fs::write(path, contents).expect("write");
    let when = SystemTime::now() - age;
    File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_times(FileTimes::new().set_modified(when))
        .expect("set mtime");
}

#[tokio::test]
async fn a_slow_writer_gives_one_complete_capture() {
    let (drop, state) = (temp(), temp());
    // A settle longer than the writer's pauses: completion must come from the close.
    let mut watched = watch(
        DirectorySettings { settle: Duration::from_secs(1), ..settings(drop.path()) },
        state.path(),
        4,
    );
    let image = png(5);
    let path = drop.path().join("slow.png");
    let writer = {
        let (path, image) = (path.clone(), image.clone());
        std::thread::spawn(move || {
            let mut file = File::create(&path).expect("create");
            for chunk in image.chunks(image.len().div_ceil(10)) {
                file.write_all(chunk).expect("write chunk");
                file.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let capture = next(&mut watched.rx, WITHIN).await;
    writer.join().expect("writer");
    assert_eq!((capture.name.as_str(), capture.site.as_str()), ("slow.png", "north"));
    assert_eq!(bytes(&capture), image, "the capture is the complete file");
    assert_eq!(
        capture.taken_at,
        std::fs::metadata(&path).expect("stat").modified().expect("mtime")
    );
    assert_quiet(&mut watched.rx, Duration::from_secs(3)).await;
    watched.stop().await;
}

#[tokio::test]
async fn a_file_renamed_into_the_folder_is_seen() {
    let (drop, state, outside) = (temp(), temp(), temp());
    let mut watched = watch(settings(drop.path()), state.path(), 4);
    let staged = outside.path().join("incoming.png");
    std::fs::write(&staged, png(6)).expect("stage");
    std::fs::rename(&staged, drop.path().join("renamed.png")).expect("rename in");
    // The rsync way: a hidden temporary name inside the folder, renamed when done.
    std::fs::write(drop.path().join(".renamed2.png.XyZ12"), png(7)).expect("temp");
    std::fs::rename(drop.path().join(".renamed2.png.XyZ12"), drop.path().join("renamed2.png"))
        .expect("rename");
    let first = next(&mut watched.rx, WITHIN).await;
    let second = next(&mut watched.rx, WITHIN).await;
    assert_eq!((first.name.as_str(), second.name.as_str()), ("renamed.png", "renamed2.png"));
    assert_eq!(bytes(&second), png(7));
    assert_quiet(&mut watched.rx, SETTLE * 4).await;
    watched.stop().await;
}

#[tokio::test]
async fn hidden_temporary_and_unmatched_files_are_ignored() {
    let (drop, state) = (temp(), temp());
    let pattern = globset::Glob::new("*.png").expect("glob").compile_matcher();
    let mut watched = watch(
        DirectorySettings { pattern: Some(pattern), ..settings(drop.path()) },
        state.path(),
        4,
    );
    for name in [".hidden.png", "upload.tmp", "upload.png.part", "backup.png~", "notes.txt"] {
        std::fs::write(drop.path().join(name), png(1)).expect("write");
    }
    std::fs::write(drop.path().join("real.png"), png(2)).expect("write");
    assert_eq!(next(&mut watched.rx, WITHIN).await.name, "real.png");
    assert_quiet(&mut watched.rx, SETTLE * 4).await;
    watched.stop().await;
}

#[tokio::test]
async fn files_that_arrived_while_down_are_taken_oldest_first_and_never_twice() {
    let (drop, state) = (temp(), temp());
    write_aged(&drop.path().join("b.png"), &png(2), Duration::from_secs(100));
    write_aged(&drop.path().join("c.png"), &png(3), Duration::from_secs(300));
    write_aged(&drop.path().join("a.png"), &png(1), Duration::from_secs(200));

    let mut watched = watch(settings(drop.path()), state.path(), 8);
    let mut names = Vec::new();
    for _ in 0..3 {
        let capture = next(&mut watched.rx, WITHIN).await;
        mark_processed(state.path(), &capture);
        names.push(capture.name);
    }
    assert_eq!(names, ["c.png", "a.png", "b.png"]);
    watched.stop().await;

    // While down: one new file, and one old file rewritten under the same name (a new capture).
    write_aged(&drop.path().join("d.png"), &png(4), Duration::from_secs(50));
    write_aged(&drop.path().join("a.png"), &png(9), Duration::from_secs(10));
    let mut watched =
        watch(DirectorySettings { rescan: Some(SETTLE), ..settings(drop.path()) }, state.path(), 8);
    let first = next(&mut watched.rx, WITHIN).await;
    let second = next(&mut watched.rx, WITHIN).await;
    assert_eq!((first.name.as_str(), second.name.as_str()), ("d.png", "a.png"));
    assert_eq!(bytes(&second), png(9));
    // Periodic rescans see every file again and hand none of them on.
    assert_quiet(&mut watched.rx, SETTLE * 6).await;
    watched.stop().await;
}

#[tokio::test]
async fn sites_come_from_a_file_name_pattern() {
    let (drop, state) = (temp(), temp());
    let re = Regex::new(r"^(?P<site>[a-z]+)_\d+\.png$").expect("regex");
    let mut watched = watch(
        DirectorySettings { site: SiteRule::Pattern(re), ..settings(drop.path()) },
        state.path(),
        8,
    );
    for name in ["tile_0001.png", "nomatch.png", "river_0002.png"] {
        std::fs::write(drop.path().join(name), png(1)).expect("write");
    }
    let sites: Vec<(String, String)> =
        [next(&mut watched.rx, WITHIN).await, next(&mut watched.rx, WITHIN).await]
            .into_iter()
            .map(|c| (c.name, c.site))
            .collect();
    assert_eq!(
        sites,
        [("tile_0001.png".into(), "tile".into()), ("river_0002.png".into(), "river".into())]
    );
    assert_quiet(&mut watched.rx, SETTLE * 4).await;
    watched.stop().await;
}

#[tokio::test]
async fn sites_come_from_sub_directories() {
    let (drop, state) = (temp(), temp());
    std::fs::create_dir(drop.path().join("north")).expect("mkdir");
    write_aged(&drop.path().join("north/early.png"), &png(1), Duration::from_secs(60));
    let mut watched = watch(
        DirectorySettings { site: SiteRule::Subdirectory, ..settings(drop.path()) },
        state.path(),
        8,
    );
    let early = next(&mut watched.rx, WITHIN).await;
    assert_eq!((early.name.as_str(), early.site.as_str()), ("north/early.png", "north"));

    std::fs::write(drop.path().join("at-the-top.png"), png(2)).expect("write");
    std::fs::write(drop.path().join("north/late.png"), png(3)).expect("write");
    let late = next(&mut watched.rx, WITHIN).await;
    assert_eq!((late.name.as_str(), late.site.as_str()), ("north/late.png", "north"));
    assert_quiet(&mut watched.rx, SETTLE * 4).await;
    watched.stop().await;
}

#[tokio::test]
async fn an_event_overflow_rescans_and_loses_nothing() {
    let (drop, state) = (temp(), temp());
    // A queue of one that nobody reads yet: the source blocks, its watcher events pile up past
    // their bound and are dropped, and the rescan that follows must find every file.
    let mut watched = watch(settings(drop.path()), state.path(), 1);
    let count = 600;
    for i in 0..count {
        std::fs::write(drop.path().join(format!("{i:04}.png")), [1u8, 2, 3]).expect("write");
    }
    let mut seen = HashSet::new();
    while seen.len() < count {
        let capture = next(&mut watched.rx, WITHIN).await;
        assert!(seen.insert(capture.name.clone()), "{} handed on twice", capture.name);
    }
    assert!(watched.stats.overflows.load(Ordering::Relaxed) >= 1, "the events did overflow");
    assert_eq!(watched.stats.captures.load(Ordering::Relaxed), count as u64);
    assert_quiet(&mut watched.rx, SETTLE * 4).await;
    watched.stop().await;
}

#[tokio::test]
async fn a_configured_source_starts_and_a_missing_folder_fails_at_start_up() {
    let (drop, state) = (temp(), temp());
    let config = |path: &Path| {
        let text = format!(
            "[sources.north]\ntype = \"directory\"\npath = {:?}\n",
            path.display().to_string()
        );
        let config = edge_change::config::Config::parse("test.toml", &text).expect("parses");
        config.sources["north"].clone()
    };
    let source = Source::from_config("north", &config(drop.path())).expect("builds");
    let (tx, mut rx) = mpsc::channel(4);
    let shutdown = Shutdown::new();
    let running = source.spawn(state.path(), tx, shutdown.clone()).expect("starts");
    std::fs::write(drop.path().join("a.png"), png(1)).expect("write");
    let capture = next(&mut rx, WITHIN).await;
    assert_eq!((capture.site.as_str(), capture.name.as_str()), ("north", "a.png"));
    assert_eq!(running.stats.captures.load(Ordering::Relaxed), 1);
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("stopped")
        .expect("joined");

    let missing = drop.path().join("not-there");
    let source = Source::from_config("north", &config(&missing)).expect("builds");
    let (tx, _rx) = mpsc::channel(4);
    let err = source.spawn(state.path(), tx, Shutdown::new()).expect_err("no such folder");
    assert!(
        err.to_string().starts_with(&format!("{}: cannot watch: ", missing.display())),
        "{err}"
    );
}
