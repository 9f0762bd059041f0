//! Running the real `edge-change run` binary in a temp dir: its generated configuration, its
//! systemd notify socket (how a test knows it is ready), signals, its log, and its outbox read back
//! from SQLite. Every wait has a deadline; nothing sleeps for a fixed time.

use std::io::Cursor;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_change::state::Store;
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_edge-change");

/// Long enough for a model load and a few analyses on a busy 2-core machine.
pub const WITHIN: Duration = Duration::from_secs(90);

/// The encoder in models/, or `None` after printing why the test is skipped.
pub fn model() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/encoder-fp32.onnx");
    if path.is_file() {
        Some(path)
    } else {
        println!("skipped: models/encoder-fp32.onnx not found");
        None
    }
}

/// A configuration for a test: no broker, a threshold so small that any change of pixels is a
/// change (identical pixels have distance 0, whatever the model), and `sources` appended.
pub fn config(root: &Path, model: &Path, sources: &str) -> String {
    format!(
        "device_id = \"test-device\"\nstate_dir = {state:?}\nworkers = 2\n\
         [model]\npath = {model:?}\n[analysis]\nthreshold = 0.000001\n\
         [mqtt]\nurl = \"\"\n{sources}",
        state = root.join("state"),
    )
}

/// A directory source table with quick settle checks and no periodic rescan.
pub fn directory_source(name: &str, path: &Path) -> String {
    std::fs::create_dir_all(path).expect("create the watched folder");
    format!(
        "[sources.{name}]\ntype = \"directory\"\npath = {path:?}\nsettle = \"200ms\"\nrescan = \"0s\"\n"
    )
}

/// A 48x40 PNG of seeded noise: different seeds, different pixels.
pub fn image(seed: u32) -> RgbImage {
    RgbImage::from_fn(48, 40, |x, y| {
        let v = x.wrapping_mul(0x9E37_79B1)
            ^ y.wrapping_mul(0x85EB_CA77)
            ^ seed.wrapping_mul(0xC2B2_AE3D);
        let v = (v ^ (v >> 15)).wrapping_mul(0x2C1B_3C6D);
        Rgb([(v >> 24) as u8, (v >> 16) as u8, 90])
    })
}

pub fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format).expect("encode");
    bytes
}

/// Writes `bytes` beside `folder` and renames the file in, as rsync and cameras do.
pub fn drop_in(folder: &Path, name: &str, bytes: &[u8]) {
    let staging = folder.with_file_name(format!(".staging-{name}"));
    std::fs::write(&staging, bytes).expect("write capture");
    std::fs::rename(&staging, folder.join(name)).expect("rename capture in");
}

/// Every event in the outbox, oldest first.
pub fn events(state: &Path) -> Vec<Value> {
    if !state.join("state.sqlite").is_file() {
        return Vec::new();
    }
    let store = Store::open(state).expect("open the daemon's store");
    store
        .outbox_peek(100_000)
        .expect("read the outbox")
        .iter()
        .map(|row| serde_json::from_slice(&row.payload).expect("JSON event"))
        .collect()
}

/// Polls the outbox until it holds at least `n` events.
pub fn wait_events(daemon: &mut Daemon, n: usize) -> Vec<Value> {
    let state = daemon.root.join("state");
    let deadline = Instant::now() + WITHIN;
    loop {
        let found = events(&state);
        if found.len() >= n {
            return found;
        }
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} of {n} events within {WITHIN:?}; log:\n{}",
            found.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn field<'a>(event: &'a Value, key: &str) -> &'a str {
    event[key].as_str().unwrap_or_else(|| panic!("{key} in {event}"))
}

/// A running daemon; killed if the test ends without stopping it.
pub struct Daemon {
    pub root: PathBuf,
    child: Child,
    /// Filled by a thread reading the notify socket, as systemd would.
    notifications: Arc<Mutex<Vec<String>>>,
    listening: Arc<AtomicBool>,
}

impl Daemon {
    /// Writes `config` to `root/config.toml` and starts the daemon on it; returns once systemd
    /// would have been told READY=1.
    pub fn start(root: &Path, config: &str) -> Daemon {
        Daemon::start_with(root, config, &[])
    }

    pub fn start_with(root: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        std::fs::write(root.join("config.toml"), config).expect("write config");
        let socket = root.join("notify.sock");
        let _ = std::fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
        notify.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let listening = Arc::new(AtomicBool::new(true));
        let (received, listen) = (notifications.clone(), listening.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while listen.load(Ordering::Relaxed) {
                if let Ok(n) = notify.recv(&mut buf) {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    received.lock().expect("lock").push(message);
                }
            }
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("daemon.log"))
            .expect("open log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(root.join("config.toml"))
            .current_dir(root)
            .env("NOTIFY_SOCKET", &socket)
            .env("EDGE_CHANGE_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start edge-change run");
        let mut daemon = Daemon { root: root.to_owned(), child, notifications, listening };
        daemon.wait_notification("READY=1");
        daemon
    }

    /// Waits for a notify message containing `needle`; returns it.
    pub fn wait_notification(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            {
                let mut received = self.notifications.lock().expect("lock");
                if let Some(found) = received.iter().position(|n| n.contains(needle)) {
                    return received.remove(found);
                }
            }
            // STOPPING=1 is sent as the daemon exits.
            if needle != "STOPPING=1" {
                self.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from the daemon; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid()]).status().expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits for the daemon to exit; returns its exit code (-1 when killed by a signal).
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "still running; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the clean exit it should cause.
    pub fn stop(mut self) {
        self.signal("-TERM");
        assert_eq!(self.wait_exit(), 0, "SIGTERM exits 0; log:\n{}", self.log());
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the daemon exited ({status}); log:\n{}", self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + WITHIN;
        while !self.log().contains(needle) {
            self.assert_running();
            assert!(Instant::now() < deadline, "{needle:?} not logged; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.listening.store(false, Ordering::Relaxed);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion (for start-up failures); returns its exit code and stderr.
pub fn run_to_exit(root: &Path, config: &str) -> (i32, String) {
    std::fs::write(root.join("config.toml"), config).expect("write config");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(root.join("config.toml"))
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .expect("run edge-change");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}
