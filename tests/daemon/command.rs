//! The command source against real processes: a camera script writing a PNG, a failing one, a hanging
//! one (killed with its whole process group), a full queue, and shutdown mid-capture.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edge_change::capture::{Capture, CaptureData};
use edge_change::shutdown::Shutdown;
use edge_change::sources::command::{self, CommandSettings};
use edge_change::sources::SourceStats;
use tokio::sync::mpsc;

use crate::harness::{bytes, eventually, failure, next, png, temp};

/// An executable shell script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn settings(argv: &[&Path], interval: Duration, timeout: Duration) -> CommandSettings {
    CommandSettings {
        source: "cam0".into(),
        argv: argv.iter().map(|p| p.display().to_string()).collect(),
        interval,
        timeout,
        max_bytes: 1 << 20,
    }
}

struct Running {
    rx: mpsc::Receiver<Capture>,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

fn start(
    settings: CommandSettings,
    tx: mpsc::Sender<Capture>,
    rx: mpsc::Receiver<Capture>,
) -> Running {
    let stats = Arc::new(SourceStats::default());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(command::run(settings, tx, stats.clone(), shutdown.clone()));
    Running { rx, stats, shutdown, task }
}

#[tokio::test]
async fn a_camera_script_writing_a_png_gives_captures_every_interval() {
    let dir = temp();
    let image = png(3);
    std::fs::write(dir.path().join("frame.png"), &image).expect("write frame");
    let cam =
        script(dir.path(), "cam.sh", &format!("cat '{}'", dir.path().join("frame.png").display()));
    let (tx, rx) = mpsc::channel(4);
    let mut source =
        start(settings(&[&cam], Duration::from_millis(100), Duration::from_secs(10)), tx, rx);

    let first = next(&mut source.rx, Duration::from_secs(10)).await;
    let second = next(&mut source.rx, Duration::from_secs(10)).await;
    for capture in [&first, &second] {
        assert_eq!(bytes(capture), image);
        assert_eq!((capture.site.as_str(), capture.source.as_str()), ("cam0", "cam0"));
        assert!(
            capture.name.starts_with("cam0@20") && capture.name.ends_with('Z'),
            "{}",
            capture.name
        );
        image::load_from_memory(&bytes(capture)).expect("a decodable PNG");
    }
    assert!(second.taken_at > first.taken_at);
    assert!(first.taken_at <= SystemTime::now());
    source.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), source.task)
        .await
        .expect("stopped")
        .expect("joined");
    assert!(source.stats.captures.load(Ordering::Relaxed) >= 2);
    assert_eq!(source.stats.failures.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_failing_camera_gives_an_error_capture_with_its_stderr() {
    let dir = temp();
    let cam = script(
        dir.path(),
        "cam.sh",
        "echo 'opening /dev/video0' >&2\necho 'camera not detected' >&2\nexit 1",
    );
    let (tx, rx) = mpsc::channel(4);
    let mut source =
        start(settings(&[&cam], Duration::from_secs(3600), Duration::from_secs(10)), tx, rx);
    let capture = next(&mut source.rx, Duration::from_secs(10)).await;
    let reason = failure(&capture);
    assert!(reason.ends_with("cam.sh` exited with status 1: camera not detected"), "{reason}");
    assert_eq!(source.stats.failures.load(Ordering::Relaxed), 1);
    source.shutdown.trigger();
}

#[tokio::test]
async fn a_hanging_camera_is_killed_at_the_timeout_with_its_children() {
    let dir = temp();
    let pid_file = dir.path().join("child.pid");
    // The shell waits on a grandchild: killing only the shell would leave `sleep` running.
    let cam = script(
        dir.path(),
        "cam.sh",
        &format!("sleep 600 &\necho $! > '{}'\nwait", pid_file.display()),
    );
    let (tx, rx) = mpsc::channel(4);
    let mut source =
        start(settings(&[&cam], Duration::from_secs(3600), Duration::from_secs(1)), tx, rx);

    let started = std::time::Instant::now();
    let capture = next(&mut source.rx, Duration::from_secs(10)).await;
    assert!(
        failure(&capture).ends_with("timed out after 1s and was killed"),
        "{}",
        failure(&capture)
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    let pid = std::fs::read_to_string(&pid_file).expect("pid file").trim().to_owned();
    eventually(Duration::from_secs(10), "the grandchild sleep is killed", || !alive(&pid)).await;
    source.shutdown.trigger();
}

#[tokio::test]
async fn a_full_queue_skips_camera_ticks_and_counts_them() {
    let dir = temp();
    let cam = script(dir.path(), "cam.sh", "printf 'image'");
    let (tx, rx) = mpsc::channel(1);
    tx.send(placeholder()).await.expect("fill the queue");
    let mut source =
        start(settings(&[&cam], Duration::from_millis(50), Duration::from_secs(10)), tx, rx);

    let stats = source.stats.clone();
    eventually(Duration::from_secs(10), "ticks skipped", || {
        stats.skipped_ticks.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(
        stats.captures.load(Ordering::Relaxed),
        0,
        "the camera is not run for a skipped tick"
    );
    assert_eq!(next(&mut source.rx, Duration::from_secs(1)).await.name, "placeholder");
    let fresh = next(&mut source.rx, Duration::from_secs(10)).await;
    assert_eq!(fresh.data, CaptureData::Bytes(b"image".to_vec()));
    source.shutdown.trigger();
}

#[tokio::test]
async fn shutdown_abandons_a_capture_in_progress() {
    let dir = temp();
    let pid_file = dir.path().join("child.pid");
    let cam = script(
        dir.path(),
        "cam.sh",
        &format!("echo $$ > '{}'\nexec sleep 600", pid_file.display()),
    );
    let (tx, rx) = mpsc::channel(4);
    let source =
        start(settings(&[&cam], Duration::from_secs(3600), Duration::from_secs(600)), tx, rx);
    eventually(Duration::from_secs(10), "the camera started", || pid_file.exists()).await;
    let pid = std::fs::read_to_string(&pid_file).expect("pid file").trim().to_owned();
    source.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), source.task)
        .await
        .expect("stopped")
        .expect("joined");
    eventually(Duration::from_secs(10), "the camera is killed", || !alive(&pid)).await;
}

fn placeholder() -> Capture {
    Capture {
        site: "cam0".into(),
        taken_at: SystemTime::now(),
        name: "placeholder".into(),
        data: CaptureData::Failed("placeholder".into()),
        source: "cam0".into(),
    }
}

/// Whether the process exists and is not a zombie (a killed orphan waits for init to reap it).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
