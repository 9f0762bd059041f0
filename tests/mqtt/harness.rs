//! Shared helpers: a real Mosquitto per test on a free port (killed on drop), a rumqttc subscriber that
//! records what it receives, outbox fillers, and waiting with deadlines instead of fixed sleeps.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_change::config::MqttConfig;
use edge_change::shutdown::Shutdown;
use edge_change::sinks::mqtt::{self, Options, Running};
use edge_change::state::{NewEvent, Store};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One `mosquitto -c <generated conf>` process; killed (and reaped) on drop.
pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// A plain listener on 127.0.0.1, anonymous clients allowed, nothing persisted.
    pub fn start() -> Broker {
        Broker::with_config("allow_anonymous true\npersistence false\n")
    }

    /// A listener on 127.0.0.1 followed by `settings` (paths relative to [`Broker::dir`] are written
    /// by the caller before starting).
    pub fn with_config(settings: &str) -> Broker {
        let dir = temp();
        Broker::in_dir(dir, settings)
    }

    pub fn in_dir(dir: tempfile::TempDir, settings: &str) -> Broker {
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        // As root, mosquitto would switch to the `mosquitto` user, which cannot read the temp dir.
        let user = if unsafe { libc::geteuid() } == 0 { "user root\n" } else { "" };
        let text = format!(
            "listener {port} 127.0.0.1\n{user}log_dest file {}\n{settings}",
            dir.path().join("mosquitto.log").display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut broker = Broker { port, dir, conf, child: None };
        broker.run();
        broker
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.path("mosquitto.log")).unwrap_or_default();
                panic!("mosquitto exited ({status}):\n{log}");
            }
            assert!(std::time::Instant::now() < deadline, "mosquitto not listening in 10s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker: SIGTERM (it saves its persistence file, if any) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().expect("reap mosquitto");
        }
    }

    /// Starts it again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

/// Debian installs the broker in /usr/sbin, often not on a user's PATH.
fn mosquitto() -> &'static str {
    let sbin = "/usr/sbin/mosquitto";
    if Path::new(sbin).exists() {
        sbin
    } else {
        "mosquitto"
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A rumqttc client subscribed to some filters that records every message; reconnects (and
/// re-subscribes) on its own. `persistent` keeps its session on the broker while it is away.
pub struct Subscriber {
    pub client: AsyncClient,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn connect(port: u16, filters: &[&str]) -> Subscriber {
        Subscriber::connect_with(port, filters, None).await
    }

    /// `session`: a client id whose session the broker keeps (clean_session = false).
    pub async fn connect_with(port: u16, filters: &[&str], session: Option<&str>) -> Subscriber {
        let id =
            session.map_or_else(|| format!("test-sub-{}", ulid::Ulid::generate()), str::to_owned);
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(1 << 22, 1 << 22).set_clean_session(session.is_none());
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let received = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Notify::new());
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let task = {
            let (client, received, subscribed) =
                (client.clone(), received.clone(), subscribed.clone());
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            for f in &filters {
                                client.subscribe(f, QoS::AtLeastOnce).await.expect("subscribe");
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.notify_one(),
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            received.lock().expect("lock").push(Received {
                                topic: p.topic,
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                            })
                        }
                        Ok(_) => {}
                        // The broker is down for a while in some tests: retry at a calm pace.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("subscribed within 10s");
        Subscriber { client, received, task }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.all().into_iter().filter(|m| m.topic == topic).collect()
    }

    /// Waits until `condition` holds for what was received so far.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        mut condition: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = self.all();
            if condition(&all) {
                return all;
            }
            assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 20 ms until it holds, failing the test after `within`.
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const DEVICE: &str = "field-3";
pub const PREFIX: &str = "edge-change/field-3";

pub fn topic(rest: &str) -> String {
    format!("{PREFIX}/{rest}")
}

pub fn config(url: &str) -> MqttConfig {
    MqttConfig { url: url.into(), ..MqttConfig::default() }
}

/// Short delays so that tests of reconnects take seconds, not minutes.
pub fn fast() -> Options {
    Options {
        poll_every: Duration::from_millis(500),
        stats_every: Duration::from_secs(3600),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        ..Options::default()
    }
}

/// A started sink and what drives it.
pub struct Sink {
    pub running: Running,
    pub wake: Arc<Notify>,
    pub shutdown: Shutdown,
}

impl Sink {
    pub fn start(cfg: &MqttConfig, state: &Path, options: Options) -> Sink {
        let wake = Arc::new(Notify::new());
        let shutdown = Shutdown::new();
        let running = mqtt::start(cfg, DEVICE, state, wake.clone(), shutdown.clone(), options)
            .expect("sink starts")
            .expect("a broker is configured");
        Sink { running, wake, shutdown }
    }

    pub fn status(&self) -> mqtt::Status {
        self.running.status.borrow().clone()
    }

    /// Clean stop: shutdown, then the task ends within 10 s.
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.running.task)
            .await
            .expect("the sink stops within 10s")
            .expect("the sink task did not panic");
    }
}

/// An event as the daemon queues it (the store adds `id` and `seq`): every field of shared/DESIGN.md.
pub fn event(site: &str, n: usize, kind: &str) -> NewEvent {
    let changed = kind == "change";
    let payload = if kind == "error" {
        json!({"schema": 1, "before": format!("{n:03}a.png"), "after": format!("{n:03}.png"),
               "error": "truncated PNG", "type": "error", "device": DEVICE, "site": site,
               "captured_at": "2024-05-01T10:00:00Z", "previous_captured_at": "2024-05-01T09:50:00Z",
               "capture": format!("{n:03}.png"), "previous": format!("{n:03}a.png")})
    } else {
        json!({"schema": 1, "before": format!("{n:03}a.png"), "after": format!("{n:03}.png"),
               "changed": changed, "distance": 1.25 + n as f64, "threshold": 1.1,
               "tiles": [{"x": 0, "y": 0, "w": 128, "h": 128, "distance": 1.25, "changed": changed}],
               "vegetation": {"before": 0.41, "after": 0.22, "delta": -0.19, "direction": "loss"},
               "learned": {"before": 0.44, "after": 0.20, "delta": -0.24, "direction": "loss"},
               "direction": if changed { "loss" } else { "none" },
               "model": {"name": "encoder-int8", "sha256": "ab12"},
               "timings_ms": {"decode": 3.1, "encode": 9.8, "total": 14.2},
               "type": kind, "device": DEVICE, "site": site,
               "captured_at": "2024-05-01T10:00:00Z", "previous_captured_at": "2024-05-01T09:50:00Z",
               "capture": format!("{n:03}.png"), "previous": format!("{n:03}a.png")})
    };
    NewEvent { site: site.into(), payload }
}

/// Queues `count` events (types cycling through `kinds`) and returns their stored JSON, in seq order.
pub fn fill(state: &Path, site: &str, count: usize, kinds: &[&str]) -> Vec<Value> {
    let mut store = Store::open(state).expect("open store");
    (0..count)
        .map(|n| {
            let stored = store
                .commit_analysis(site, None, Some(event(site, n, kinds[n % kinds.len()])), None)
                .expect("commit")
                .expect("stored");
            let row = store
                .outbox_peek(usize::MAX >> 1)
                .expect("peek")
                .into_iter()
                .find(|r| r.seq == stored.seq)
                .expect("the row");
            serde_json::from_slice(&row.payload).expect("json")
        })
        .collect()
}

pub fn depth(state: &Path) -> u64 {
    Store::open(state).expect("open store").outbox_depth().expect("depth").rows
}

pub fn ids(messages: &[Received]) -> Vec<String> {
    messages.iter().map(|m| m.json()["id"].as_str().expect("id").to_owned()).collect()
}
