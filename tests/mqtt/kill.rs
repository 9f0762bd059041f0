//! A process holding the broker connection is SIGKILLed in the middle of delivering: the broker
//! publishes the last will (`offline`), and a restarted sink delivers everything left, duplicates
//! carrying the same id. The child is this test binary, re-run on one ignored test.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{config, depth, fast, fill, temp, topic, Broker, Sink, Subscriber, PREFIX};

const STATE_VARIABLE: &str = "EDGE_CHANGE_TEST_MQTT_STATE";
const URL_VARIABLE: &str = "EDGE_CHANGE_TEST_MQTT_URL";
const EVENTS: usize = 300;

/// The child's work: run the sink on the given outbox until killed (or for a minute at most).
#[test]
#[ignore = "run as a child process by the SIGKILL test"]
fn sink_child() {
    let (Some(state), Some(url)) =
        (std::env::var_os(STATE_VARIABLE), std::env::var(URL_VARIABLE).ok())
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let mut options = fast();
        // One row at a time, so that the kill finds most of the outbox undelivered.
        options.window = 1;
        let sink = Sink::start(&config(&url), Path::new(&state), options);
        let _ = tokio::time::timeout(Duration::from_secs(60), sink.shutdown.wait()).await;
    });
}

fn spawn_child(state: &Path, url: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["kill::sink_child", "--exact", "--ignored", "--test-threads=1"])
        .env(STATE_VARIABLE, state)
        .env(URL_VARIABLE, url)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the sink child")
}

#[tokio::test]
async fn sigkill_leaves_offline_as_last_will_and_a_restart_delivers_the_rest() {
    let broker = Broker::start();
    let state = temp();
    let subscriber = Subscriber::connect(broker.port, &[&format!("{PREFIX}/#")]).await;
    let queued = fill(state.path(), "north", EVENTS, &["change"]);

    let mut child = spawn_child(state.path(), &broker.url());
    subscriber
        .wait_for(Duration::from_secs(30), "the child delivering", |all| {
            all.iter().filter(|m| m.topic == topic("events")).count() >= 10
        })
        .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    subscriber
        .wait_for(Duration::from_secs(20), "the last will", |all| {
            all.iter()
                .rev()
                .find(|m| m.topic == topic("status"))
                .is_some_and(|m| m.text() == "offline")
        })
        .await;
    let left = depth(state.path());
    println!("killed with {left} of {EVENTS} events undelivered");
    assert!(left > 0, "the kill came before the end");

    let sink = Sink::start(&config(&broker.url()), state.path(), fast());
    crate::delivery::eventually_empty(state.path()).await;
    let got = subscriber
        .wait_for(Duration::from_secs(20), "every event", |all| {
            let mut ids: Vec<&str> = all
                .iter()
                .filter(|m| m.topic == topic("events"))
                .map(|m| std::str::from_utf8(&m.payload).unwrap_or(""))
                .collect();
            ids.sort();
            ids.dedup();
            ids.len() >= EVENTS
        })
        .await;
    let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
    for m in got.iter().filter(|m| m.topic == topic("events")) {
        let event = m.json();
        by_id.entry(event["id"].as_str().expect("id").into()).or_default().push(event);
    }
    for event in &queued {
        let copies = by_id.get(event["id"].as_str().expect("id")).expect("delivered");
        assert!(copies.iter().all(|c| c == event), "duplicates are identical");
    }
    let duplicates: usize = by_id.values().map(|c| c.len() - 1).sum();
    println!("{duplicates} duplicate(s) after the kill");
    assert!(duplicates <= 2, "only what was in flight at the kill is sent twice");
    sink.stop().await;
}
