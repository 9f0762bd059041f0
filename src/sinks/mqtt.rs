//! The MQTT sink: publishes the outbox oldest first at QoS 1 and deletes a row only after the broker's
//! PUBACK for every message the row became. Two tasks: the *driver* polls rumqttc's event loop (never
//! blocked, reconnecting with backoff), the *sender* owns the outbox connection and decides what to
//! publish. The outbox is the source of truth: the session is clean, so after every reconnect the sender
//! starts again from the oldest row still there (at least once; subscribers de-duplicate on `id`).
//!
//! Matching PUBACKs to rows: rumqttc reports each QoS 1 publish as `Outgoing::Publish(pkid)` in the
//! order the requests were queued, then `Incoming::PubAck(pkid)`. Across a reconnect that order can be
//! broken (requests queued just before the drop may or may not go out on the new connection, and events
//! buffered from the old one come out after the new CONNACK), so each connection starts with a fence: a
//! SUBSCRIBE, queued before anything else of that connection. Every `Outgoing::Publish` seen before the
//! fence's `Outgoing::Subscribe` belongs to an older connection and is ignored; a PUBACK counts only for a
//! packet id whose `Outgoing::Publish` came after the fence.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde_json::json;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

pub use super::connect::SinkError;
use super::connect::{self, BrokerUrl, MAX_OUTGOING_PACKET};
use super::discovery;
use super::topics::{wanted_on_events, Topics};
use crate::config::{MqttConfig, Publish};
use crate::shutdown::Shutdown;
use crate::state::{OutboxKind, OutboxRow, Store};

/// Capacity of rumqttc's request channel. The sender keeps at most [`MAX_OUTSTANDING`] QoS 1 publishes
/// of its own connection un-acknowledged, plus as many left over from the previous one and a stats
/// message, so `try_publish` never finds it full.
const REQUEST_CAPACITY: usize = 4 * MAX_OUTSTANDING;
/// QoS 1 messages handed to rumqttc and not yet acknowledged, all kinds together (rumqttc's own
/// in-flight limit, 100 by default, is above twice this).
const MAX_OUTSTANDING: usize = 32;

/// Timing and window settings: the defaults are the daemon's; tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    pub keep_alive: Duration,
    /// Re-read the outbox this often even without a wake-up (another writer, a missed poke).
    pub poll_every: Duration,
    /// `<prefix>/stats` period.
    pub stats_every: Duration,
    /// Reconnect delays: doubling from `backoff_min` up to `backoff_max`, each with up to half of it
    /// taken off at random so that a fleet does not reconnect in step.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Outbox rows in flight at once (each is one or two messages). Order is kept: MQTT delivers one
    /// connection's messages in order, and acknowledges them in order.
    pub window: usize,
    /// On shutdown, how long to wait for the broker to acknowledge `offline`.
    pub goodbye_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_alive: Duration::from_secs(30),
            poll_every: Duration::from_secs(5),
            stats_every: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            window: 8,
            goodbye_timeout: Duration::from_secs(5),
        }
    }
}

/// What the sink has done so far (for `<prefix>/stats`, and for tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub connected: bool,
    /// Successful connections (CONNACK accepted).
    pub connects: u64,
    /// Outbox rows delivered (acknowledged, then deleted).
    pub published: u64,
    /// Rows deleted without publishing: larger than the packet limit, or snapshots while
    /// `mqtt.snapshots` is off.
    pub skipped: u64,
    /// The last connection error, as logged.
    pub last_error: Option<String>,
}

/// A started sink.
#[derive(Debug)]
pub struct Running {
    /// Ends after shutdown, once `offline` was acknowledged (or `goodbye_timeout` passed).
    pub task: JoinHandle<()>,
    pub status: watch::Receiver<Status>,
}

/// Starts the MQTT sink; `None` when `mqtt.url` is empty (events then stay in the outbox).
///
/// How the daemon uses it (needs a running tokio runtime):
/// ```ignore
/// let wake = Arc::new(tokio::sync::Notify::new());
/// let sink = sinks::mqtt::spawn(&config.mqtt, &config.device_id, &config.state_dir, wake.clone(),
///                               shutdown.clone())?;            // errors name the key or file: exit 1
/// // after each commit_analysis()/push_snapshot() that queued a row:
/// wake.notify_one();                                           // a permit is kept if the sink is busy
/// // at shutdown, after triggering `shutdown`:
/// if let Some(sink) = sink { let _ = sink.await; }             // publishes `offline`, disconnects
/// ```
/// Starting never waits for the broker: an unreachable broker is retried in the background.
pub fn spawn(
    cfg: &MqttConfig,
    device_id: &str,
    state_dir: &Path,
    wake: Arc<Notify>,
    shutdown: Shutdown,
) -> Result<Option<JoinHandle<()>>, SinkError> {
    Ok(start(cfg, device_id, state_dir, wake, shutdown, Options::default())?.map(|r| r.task))
}

/// [`spawn`] with explicit [`Options`], also returning the sink's [`Status`].
pub fn start(
    cfg: &MqttConfig,
    device_id: &str,
    state_dir: &Path,
    wake: Arc<Notify>,
    shutdown: Shutdown,
    options: Options,
) -> Result<Option<Running>, SinkError> {
    if cfg.url.is_empty() {
        tracing::info!("mqtt.url is empty: events stay in the outbox");
        return Ok(None);
    }
    let url = BrokerUrl::parse(&cfg.url)?;
    let topics = Topics::new(cfg, device_id);
    if topics.prefix.contains(['+', '#']) {
        return Err(SinkError::Prefix { prefix: topics.prefix });
    }
    let client_id = match cfg.client_id.as_str() {
        "" => format!("edge-change-{device_id}"),
        id => id.to_owned(),
    };
    let mqtt_options =
        connect::options(cfg, &url, &client_id, &topics.status(), options.keep_alive)?;
    let store = Store::open(state_dir)?;
    let (client, eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
    // Unbounded, yet bounded by construction: the driver sends one note per packet event, and packets
    // follow the sender's own requests (at most REQUEST_CAPACITY outstanding), plus one CONNACK or error
    // per reconnect delay and the rare message on the two status topics we subscribe to.
    let (notes_tx, notes_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(Status::default());
    let status_tx = Arc::new(status_tx);

    let stop = Shutdown::new();
    let driver = Driver {
        broker: cfg.url.clone(),
        notes: notes_tx,
        stop: stop.clone(),
        status: status_tx.clone(),
        backoff: (options.backoff_min, options.backoff_max),
    };
    let sender = Sender {
        client,
        store: Arc::new(Mutex::new(store)),
        notes: notes_rx,
        wake,
        shutdown,
        status: status_tx,
        topics,
        device_id: device_id.to_owned(),
        publish: cfg.publish,
        discovery: cfg.discovery,
        snapshots: cfg.snapshots,
        options: options.clone(),
        link: Link::Down,
        queued: VecDeque::new(),
        inflight: HashMap::new(),
        rows: BTreeMap::new(),
        last_queued: 0,
        control: VecDeque::new(),
        announced: BTreeSet::new(),
        more_rows: true,
        counts: Counts::default(),
        started: Instant::now(),
    };
    tracing::info!(broker = %cfg.url, client_id, prefix = %sender.topics.prefix, "mqtt sink starting");
    let task = tokio::spawn(async move {
        let mut driver = tokio::spawn(driver.run(eventloop));
        let disconnecting = sender.run().await;
        // After a DISCONNECT was queued the driver ends once it is sent; otherwise stop it now.
        if !disconnecting
            || tokio::time::timeout(options.goodbye_timeout, &mut driver).await.is_err()
        {
            stop.trigger();
            let _ = driver.await;
        }
    });
    Ok(Some(Running { task, status: status_rx }))
}

/// What the driver tells the sender, in the event loop's order.
#[derive(Debug)]
enum Note {
    Connected,
    Disconnected,
    /// A SUBSCRIBE went out: the fence of the current connection (see the module comment).
    Subscribed,
    /// A QoS 1 publish went out with this packet id.
    Sent(u16),
    Acked(u16),
    Message {
        topic: String,
        payload: Vec<u8>,
    },
}

/// Polls the event loop; on errors logs, tells the sender and waits (rumqttc would retry at once).
struct Driver {
    broker: String,
    notes: mpsc::UnboundedSender<Note>,
    stop: Shutdown,
    status: Arc<watch::Sender<Status>>,
    backoff: (Duration, Duration),
}

impl Driver {
    async fn run(self, mut eventloop: EventLoop) {
        let mut failures = 0u32;
        loop {
            let event = tokio::select! {
                _ = self.stop.wait() => return,
                event = eventloop.poll() => event,
            };
            let note = match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(broker = %self.broker, "connected to the broker");
                    failures = 0;
                    self.status.send_modify(|s| {
                        s.connected = true;
                        s.connects += 1;
                    });
                    Note::Connected
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => Note::Acked(ack.pkid),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    Note::Message { topic: p.topic, payload: p.payload.to_vec() }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        tracing::warn!(broker = %self.broker, "the broker refused a subscription (ACL?): Home Assistant restarts will not re-trigger discovery");
                    }
                    continue;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => Note::Sent(pkid),
                Ok(Event::Outgoing(Outgoing::Subscribe(_))) => Note::Subscribed,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(error) => {
                    let reason = describe(&error);
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures, self.backoff.0, self.backoff.1);
                    tracing::warn!(broker = %self.broker, error = %reason, retry_in = ?delay, "mqtt connection failed; events stay in the outbox");
                    self.status.send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(reason);
                    });
                    if self.notes.send(Note::Disconnected).is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = self.stop.wait() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            if self.notes.send(note).is_err() {
                return;
            }
        }
    }
}

/// A connection error in words a user can act on.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
        ) => "not authorized: the broker refused the username or password (mqtt.username, mqtt.password_file)".into(),
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            "the broker rejected the client id (mqtt.client_id)".into()
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        ConnectionError::Tls(e) => {
            let e = e.to_string();
            let hint = if e.contains("certificate") {
                " (is mqtt.ca_file the CA that signed the broker's certificate, and the URL's host in it?)"
            } else {
                ""
            };
            format!("TLS error: {e}{hint}")
        }
        ConnectionError::NetworkTimeout => "no answer from the broker within 5s".into(),
        other => other.to_string(),
    }
}

/// `min · 2^(failures−1)`, capped at `max`, minus up to half at random.
fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(max);
    base.mul_f64(1.0 - 0.5 * random_fraction())
}

/// A fraction in [0, 1) from std's per-process random hash keys: enough for jitter.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Where the sender is with the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    /// Connected; waiting for the fence SUBSCRIBE to go out.
    Fencing,
    Up,
}

/// What a QoS 1 message carries, to act on its PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Row(u64),
    Control,
    Goodbye,
}

/// A message waiting to be handed to rumqttc (status and discovery, sent before rows).
#[derive(Debug)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    tag: Tag,
}

/// A row being delivered on this connection.
#[derive(Debug)]
struct Delivery {
    /// Messages not yet acknowledged.
    remaining: usize,
    created_at: SystemTime,
    event_type: Option<String>,
}

/// Counters for `<prefix>/stats` beyond [`Status`].
#[derive(Debug, Default)]
struct Counts {
    events: BTreeMap<String, u64>,
    last_latency_ms: Option<u64>,
    max_latency_ms: u64,
}

struct Sender {
    client: AsyncClient,
    /// The sink's own connection (the store is not `Sync`); used from `spawn_blocking`.
    store: Arc<Mutex<Store>>,
    notes: mpsc::UnboundedReceiver<Note>,
    wake: Arc<Notify>,
    shutdown: Shutdown,
    status: Arc<watch::Sender<Status>>,
    topics: Topics,
    device_id: String,
    publish: Publish,
    discovery: bool,
    snapshots: bool,
    options: Options,
    link: Link,
    /// QoS 1 messages handed to rumqttc whose `Outgoing::Publish` has not been seen, in order.
    queued: VecDeque<Tag>,
    /// Packet id → message sent and not yet acknowledged.
    inflight: HashMap<u16, Tag>,
    /// Rows of this connection not yet fully acknowledged, by seq.
    rows: BTreeMap<u64, Delivery>,
    /// The highest seq handed to rumqttc on this connection.
    last_queued: u64,
    /// Status and discovery messages waiting for room; they go before rows.
    control: VecDeque<Message>,
    /// Sites whose discovery configs were queued on this connection.
    announced: BTreeSet<String>,
    /// Whether the outbox may hold rows not yet queued (cleared when a read came back short).
    more_rows: bool,
    counts: Counts,
    started: Instant,
}

impl Sender {
    /// Runs until shutdown; returns whether a DISCONNECT was queued.
    async fn run(mut self) -> bool {
        let mut poll = tokio::time::interval(self.options.poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(self.options.stats_every);
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.pump().await;
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => break,
                note = self.notes.recv() => match note {
                    Some(note) => self.on_note(note).await,
                    None => return false,
                },
                _ = self.wake.notified() => self.more_rows = true,
                _ = poll.tick() => self.more_rows = true,
                _ = stats.tick() => self.publish_stats().await,
            }
        }
        self.goodbye().await
    }

    /// On shutdown: `offline` (retained) while still connected, wait for its PUBACK (rows acknowledged
    /// meanwhile are still deleted), then DISCONNECT so the broker does not send the last will too.
    async fn goodbye(&mut self) -> bool {
        if self.link != Link::Up {
            return false;
        }
        self.hand_over(Message {
            topic: self.topics.status(),
            payload: b"offline".to_vec(),
            retain: true,
            tag: Tag::Goodbye,
        });
        let deadline = tokio::time::Instant::now() + self.options.goodbye_timeout;
        while self.link == Link::Up && self.awaiting_goodbye() {
            match tokio::time::timeout_at(deadline, self.notes.recv()).await {
                Ok(Some(note)) => self.on_note(note).await,
                Ok(None) | Err(_) => break,
            }
        }
        if self.link != Link::Up {
            return false;
        }
        if self.awaiting_goodbye() {
            tracing::warn!(
                "the broker did not acknowledge `offline` in time; disconnecting anyway"
            );
        }
        self.client.try_disconnect().is_ok()
    }

    fn awaiting_goodbye(&self) -> bool {
        self.queued.contains(&Tag::Goodbye) || self.inflight.values().any(|t| *t == Tag::Goodbye)
    }

    async fn on_note(&mut self, note: Note) {
        match note {
            Note::Connected => {
                self.reset();
                // The fence (see the module comment), and the subscriptions every connection needs.
                let mut filters =
                    vec![SubscribeFilter::new(self.topics.status(), QoS::AtLeastOnce)];
                if self.discovery {
                    filters
                        .push(SubscribeFilter::new(discovery::HA_STATUS.into(), QoS::AtLeastOnce));
                }
                match self.client.try_subscribe_many(filters) {
                    Ok(()) => self.link = Link::Fencing,
                    Err(e) => tracing::error!(error = %e, "cannot queue the subscription"),
                }
            }
            Note::Disconnected => {
                self.reset();
                self.link = Link::Down;
            }
            Note::Subscribed if self.link == Link::Fencing => {
                self.link = Link::Up;
                self.control.push_back(Message {
                    topic: self.topics.status(),
                    payload: b"online".to_vec(),
                    retain: true,
                    tag: Tag::Control,
                });
                if self.discovery {
                    self.announce_known_sites().await;
                }
                self.publish_stats().await;
            }
            Note::Subscribed => {}
            Note::Sent(pkid) if self.link == Link::Up => match self.queued.pop_front() {
                Some(tag) => {
                    self.inflight.insert(pkid, tag);
                }
                None => tracing::debug!(pkid, "publish of an earlier connection went out"),
            },
            Note::Acked(pkid) if self.link == Link::Up => match self.inflight.remove(&pkid) {
                Some(Tag::Row(seq)) => self.acked(seq).await,
                Some(Tag::Control | Tag::Goodbye) | None => {}
            },
            Note::Sent(_) | Note::Acked(_) => {}
            Note::Message { topic, payload } => {
                if topic == discovery::HA_STATUS
                    && payload == b"online"
                    && self.discovery
                    && self.link == Link::Up
                {
                    tracing::info!("Home Assistant is online: publishing discovery again");
                    self.announced.clear();
                    self.announce_known_sites().await;
                }
            }
        }
    }

    /// Forgets everything of the connection that ended: its unacknowledged rows are sent again from the
    /// oldest on the next one.
    fn reset(&mut self) {
        self.queued.clear();
        self.inflight.clear();
        self.rows.clear();
        self.last_queued = 0;
        self.control.clear();
        self.announced.clear();
        self.more_rows = true;
    }

    fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    /// Hands rumqttc what there is room for: control messages first, then outbox rows in seq order.
    async fn pump(&mut self) {
        while self.link == Link::Up {
            while self.outstanding() < MAX_OUTSTANDING {
                let Some(message) = self.control.pop_front() else { break };
                self.hand_over(message);
            }
            if !self.control.is_empty() || !self.more_rows || self.rows.len() >= self.options.window
            {
                return;
            }
            let want = 4 * self.options.window;
            let Some(batch) = self.with_store(move |s| s.outbox_peek(want)).await else { return };
            let full = batch.len() == want;
            let mut progressed = false;
            let last_queued = self.last_queued;
            let mut rest = batch.into_iter().filter(|row| row.seq > last_queued).peekable();
            while let Some(row) = rest.peek() {
                if self.rows.len() >= self.options.window
                    || self.outstanding() + 2 > MAX_OUTSTANDING
                {
                    break;
                }
                if self.discovery && !self.announced.contains(&row.site) {
                    let site = row.site.clone();
                    self.announce(&site);
                    progressed = true;
                    break;
                }
                let Some(row) = rest.next() else { break };
                self.queue_row(row).await;
                progressed = true;
            }
            self.more_rows = full || rest.peek().is_some();
            if !progressed {
                return;
            }
        }
    }

    /// Turns one outbox row into its messages and hands them over.
    async fn queue_row(&mut self, row: OutboxRow) {
        self.last_queued = row.seq;
        let mut messages = Vec::new();
        let mut event_type = None;
        match row.kind {
            OutboxKind::Event => {
                event_type = serde_json::from_slice::<serde_json::Value>(&row.payload)
                    .ok()
                    .and_then(|v| v.get("type")?.as_str().map(str::to_owned));
                if wanted_on_events(self.publish, event_type.as_deref()) {
                    messages.push((self.topics.events(), false));
                }
                messages.push((self.topics.state(&row.site), true));
            }
            OutboxKind::Snapshot if self.snapshots => {
                messages.push((self.topics.snapshot(&row.site), true));
            }
            OutboxKind::Snapshot => {}
        }
        let too_large = messages
            .iter()
            .any(|(topic, _)| topic.len() + row.payload.len() + 16 > MAX_OUTGOING_PACKET);
        if messages.is_empty() || too_large {
            if too_large {
                tracing::error!(seq = row.seq, id = %row.id, site = %row.site, bytes = row.payload.len(), "outbox row larger than the MQTT packet limit: dropped");
            }
            self.status.send_modify(|s| s.skipped += 1);
            self.delete(row.seq).await;
            return;
        }
        self.rows.insert(
            row.seq,
            Delivery { remaining: messages.len(), created_at: row.created_at, event_type },
        );
        for (topic, retain) in messages {
            self.hand_over(Message {
                topic,
                payload: row.payload.clone(),
                retain,
                tag: Tag::Row(row.seq),
            });
        }
    }

    /// Queues one QoS 1 publish in rumqttc (never waits: see [`REQUEST_CAPACITY`]).
    fn hand_over(&mut self, message: Message) {
        match self.client.try_publish(
            message.topic,
            QoS::AtLeastOnce,
            message.retain,
            message.payload,
        ) {
            Ok(()) => self.queued.push_back(message.tag),
            // Not expected (the channel has room for everything outstanding). The row stays in the
            // outbox and goes out again after the next reconnect.
            Err(e) => tracing::error!(error = %e, "cannot queue an MQTT publish"),
        }
    }

    /// A PUBACK for one of a row's messages; the row is deleted once all are acknowledged.
    async fn acked(&mut self, seq: u64) {
        let Some(delivery) = self.rows.get_mut(&seq) else { return };
        delivery.remaining -= 1;
        if delivery.remaining > 0 {
            return;
        }
        let Some(delivery) = self.rows.remove(&seq) else { return };
        self.delete(seq).await;
        let latency = SystemTime::now()
            .duration_since(delivery.created_at)
            .map_or(0, |d| d.as_millis() as u64);
        self.counts.last_latency_ms = Some(latency);
        self.counts.max_latency_ms = self.counts.max_latency_ms.max(latency);
        if let Some(kind) = delivery.event_type {
            *self.counts.events.entry(kind).or_default() += 1;
        }
        self.status.send_modify(|s| s.published += 1);
        self.more_rows = true;
    }

    async fn delete(&self, seq: u64) {
        if self.with_store(move |s| s.outbox_delete(seq)).await.is_none() {
            tracing::warn!(seq, "delivered row not deleted: it will be sent again");
        }
    }

    /// Queues discovery for every site the store knows.
    async fn announce_known_sites(&mut self) {
        let sites = self.with_store(|s| s.sites()).await.unwrap_or_default();
        for site in sites {
            self.announce(&site);
        }
    }

    fn announce(&mut self, site: &str) {
        if !self.announced.insert(site.to_owned()) {
            return;
        }
        for (topic, payload) in
            discovery::site_configs(&self.topics, &self.device_id, site, self.snapshots)
        {
            self.control.push_back(Message { topic, payload, retain: true, tag: Tag::Control });
        }
    }

    /// `<prefix>/stats`, QoS 0 and only while connected (QoS 0 would not survive a reconnect anyway).
    async fn publish_stats(&mut self) {
        if self.link != Link::Up {
            return;
        }
        let counters = self.with_store(|s| Ok((s.outbox_depth()?, s.dropped()?))).await;
        let status = self.status.borrow().clone();
        let mut stats = json!({
            "device": self.device_id,
            "uptime_s": self.started.elapsed().as_secs(),
            "connected": status.connected,
            "connects": status.connects,
            "reconnects": status.connects.saturating_sub(1),
            "published": status.published,
            "skipped": status.skipped,
            "in_flight": self.rows.len(),
            "events": self.counts.events,
            "latency_ms": {"last": self.counts.last_latency_ms, "max": self.counts.max_latency_ms},
        });
        if let Some((depth, dropped)) = counters {
            stats["outbox"] = json!({"rows": depth.rows, "bytes": depth.bytes});
            stats["dropped"] = json!({"events": dropped.events, "snapshots": dropped.snapshots});
        }
        if let Err(e) =
            self.client.try_publish(self.topics.stats(), QoS::AtMostOnce, false, stats.to_string())
        {
            tracing::debug!(error = %e, "stats not queued");
        }
    }

    /// Runs `f` on the store off the runtime (SQLite fsyncs); logs and returns `None` on failure.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, crate::state::StoreError> + Send + 'static,
    ) -> Option<T> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            f(&mut store.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await;
        match result {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "outbox");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox task failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let base = Duration::from_secs(base);
            let delay = backoff(failures, min, max);
            assert!(delay <= base && delay >= base / 2, "{failures}: {delay:?} vs {base:?}");
        }
        let fractions: BTreeSet<u64> = (0..20).map(|_| (random_fraction() * 1e6) as u64).collect();
        assert!(fractions.len() > 10, "jitter varies: {fractions:?}");
    }

    #[test]
    fn connection_errors_read_well() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(describe(&refused).starts_with("not authorized"));
        let io = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(describe(&io).contains("refused"), "{}", describe(&io));
    }
}
