//! "Published" means PUBACKed: against a scripted broker that acknowledges only when told to, rows
//! leave the outbox exactly when every message they became was acknowledged, and not before. (Mosquitto
//! always acknowledges at once, so this one test speaks the few MQTT packets it needs itself.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_change::state::Store;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;

use crate::harness::{config, eventually, fast, fill, temp, topic, Sink};

#[derive(Debug, Clone)]
struct Publish {
    topic: String,
    pkid: u16,
    payload: Vec<u8>,
}

/// Accepts one client; answers CONNECT, SUBSCRIBE and PINGREQ; records PUBLISHes; PUBACKs on demand.
struct ScriptedBroker {
    port: u16,
    publishes: Arc<Mutex<Vec<Publish>>>,
    writer: Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedBroker {
    async fn start() -> ScriptedBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let publishes = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::new(tokio::sync::Mutex::new(None));
        let task = {
            let (publishes, writer) = (publishes.clone(), writer.clone());
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.expect("accept");
                let (mut reader, write) = stream.into_split();
                *writer.lock().await = Some(write);
                while let Some((header, body)) = read_packet(&mut reader).await {
                    let reply = match header >> 4 {
                        1 => vec![0x20, 2, 0, 0],
                        3 => {
                            let len = u16::from_be_bytes([body[0], body[1]]) as usize;
                            let topic = String::from_utf8_lossy(&body[2..2 + len]).into_owned();
                            let qos = (header >> 1) & 3;
                            let (pkid, rest) = if qos > 0 {
                                (u16::from_be_bytes([body[2 + len], body[3 + len]]), 4 + len)
                            } else {
                                (0, 2 + len)
                            };
                            let payload = body[rest..].to_vec();
                            publishes.lock().expect("lock").push(Publish { topic, pkid, payload });
                            continue;
                        }
                        8 => {
                            let mut filters = 0;
                            let mut at = 2;
                            while at < body.len() {
                                at += 2 + u16::from_be_bytes([body[at], body[at + 1]]) as usize + 1;
                                filters += 1;
                            }
                            let mut suback = vec![0x90, 2 + filters as u8, body[0], body[1]];
                            suback.extend(std::iter::repeat_n(1, filters));
                            suback
                        }
                        12 => vec![0xd0, 0],
                        _ => continue,
                    };
                    let mut guard = writer.lock().await;
                    guard.as_mut().expect("writer").write_all(&reply).await.expect("reply");
                }
            })
        };
        ScriptedBroker { port, publishes, writer, task }
    }

    fn publishes(&self) -> Vec<Publish> {
        self.publishes.lock().expect("lock").clone()
    }

    async fn puback(&self, pkid: u16) {
        let [hi, lo] = pkid.to_be_bytes();
        let mut guard = self.writer.lock().await;
        guard.as_mut().expect("connected").write_all(&[0x40, 2, hi, lo]).await.expect("puback");
    }
}

impl Drop for ScriptedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One packet: the first header byte and the body. `None` at end of stream.
async fn read_packet(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<(u8, Vec<u8>)> {
    let header = reader.read_u8().await.ok()?;
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let byte = reader.read_u8().await.ok()?;
        length |= ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((header, body))
}

fn seqs(store: &Store) -> Vec<u64> {
    store.outbox_peek(100).expect("peek").iter().map(|r| r.seq).collect()
}

#[tokio::test]
async fn a_row_leaves_the_outbox_only_when_all_its_messages_are_acknowledged() {
    let broker = ScriptedBroker::start().await;
    let state = temp();
    let queued = fill(state.path(), "north", 20, &["change"]);
    let sink =
        Sink::start(&config(&format!("mqtt://127.0.0.1:{}", broker.port)), state.path(), fast());

    // `online`, then rows 1..=8 (the window), each as an event and a state: 17 QoS 1 publishes.
    eventually(Duration::from_secs(20), "the first window went out", || {
        broker.publishes().iter().filter(|p| p.pkid != 0).count() >= 17
    })
    .await;
    let store = Store::open(state.path()).expect("open");
    assert_eq!(seqs(&store), (1..=20).collect::<Vec<_>>(), "nothing deleted without a PUBACK");
    let sent = broker.publishes();
    let rows: Vec<&Publish> =
        sent.iter().filter(|p| p.topic != topic("status") && p.pkid != 0).collect();
    assert_eq!(rows.len(), 16, "the window holds 8 rows");
    let first: Value = serde_json::from_slice(&rows[0].payload).expect("json");
    assert_eq!(first, queued[0]);
    assert_eq!(
        (rows[0].topic.as_str(), rows[1].topic.as_str()),
        (topic("events").as_str(), topic("sites/north/state").as_str())
    );

    // Row 1 fully acknowledged, row 2 only half.
    broker.puback(rows[0].pkid).await;
    broker.puback(rows[1].pkid).await;
    broker.puback(rows[2].pkid).await;
    eventually(Duration::from_secs(20), "row 1 deleted", || seqs(&store).first() == Some(&2)).await;
    assert_eq!(seqs(&store).len(), 19, "row 2 waits for its second PUBACK");
    broker.puback(rows[3].pkid).await;
    eventually(Duration::from_secs(20), "row 2 deleted", || seqs(&store).first() == Some(&3)).await;
    // With room in the window, rows 9 and 10 went out.
    eventually(Duration::from_secs(20), "the window moved on", || {
        broker.publishes().iter().filter(|p| p.pkid != 0).count() >= 21
    })
    .await;
    assert_eq!(sink.status().published, 2);
    sink.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(20), sink.running.task).await;
}
