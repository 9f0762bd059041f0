//! Delivery from the outbox: every field, seq order, the publish filter, retained state and status,
//! stats, and a broker outage that loses nothing.

use std::time::Duration;

use edge_change::config::Publish;
use serde_json::Value;

use crate::harness::{
    config, depth, fast, fill, ids, temp, topic, Broker, Sink, Subscriber, PREFIX,
};

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn events_arrive_in_seq_order_with_every_field_and_state_follows_each_site() {
    let broker = Broker::start();
    let state = temp();
    let subscriber = Subscriber::connect(broker.port, &[&format!("{PREFIX}/#")]).await;
    let kinds = ["change", "no_change", "error", "no_change"];
    let north = fill(state.path(), "north", 12, &kinds);
    let south = fill(state.path(), "south", 3, &["no_change"]);

    let sink = Sink::start(&config(&broker.url()), state.path(), fast());
    // publish = "changes" (the default): `no_change` events stay off `events`, but not off `state`.
    let wanted: Vec<&Value> = north.iter().filter(|e| e["type"] != "no_change").collect();
    let events = subscriber
        .wait_for(WITHIN, "the change and error events", |all| {
            all.iter().filter(|m| m.topic == topic("events")).count() >= wanted.len()
        })
        .await;
    let events: Vec<Value> =
        events.iter().filter(|m| m.topic == topic("events")).map(|m| m.json()).collect();
    assert_eq!(events.iter().collect::<Vec<_>>(), wanted, "every field, in seq order");

    eventually_empty(state.path()).await;
    let states = subscriber.on(&topic("sites/north/state"));
    assert_eq!(states.iter().map(|m| m.json()).collect::<Vec<_>>(), north, "state: every event");
    let south_states = subscriber.on(&topic("sites/south/state"));
    assert_eq!(south_states.last().expect("south state").json(), south[2]);
    assert_eq!(subscriber.on(&topic("status"))[0].text(), "online");
    crate::harness::eventually(WITHIN, "15 rows published", || sink.status().published == 15).await;
    sink.stop().await;
}

#[tokio::test]
async fn publish_all_sends_no_change_events_too() {
    let broker = Broker::start();
    let state = temp();
    let subscriber = Subscriber::connect(broker.port, &[&topic("events")]).await;
    let queued = fill(state.path(), "north", 6, &["no_change", "change"]);
    let mut cfg = config(&broker.url());
    cfg.publish = Publish::All;
    let sink = Sink::start(&cfg, state.path(), fast());
    let got = subscriber.wait_for(WITHIN, "six events", |all| all.len() >= 6).await;
    assert_eq!(got.iter().map(|m| m.json()).collect::<Vec<_>>(), queued);
    sink.stop().await;
}

#[tokio::test]
async fn a_late_subscriber_finds_retained_state_and_status_and_offline_after_a_clean_stop() {
    let broker = Broker::start();
    let state = temp();
    let north = fill(state.path(), "north", 3, &["change"]);
    let south = fill(state.path(), "south", 2, &["no_change"]);
    let mut options = fast();
    options.stats_every = Duration::from_millis(200);
    let sink = Sink::start(&config(&broker.url()), state.path(), options);
    eventually_empty(state.path()).await;

    let late = Subscriber::connect(broker.port, &[&format!("{PREFIX}/#")]).await;
    let got = late
        .wait_for(WITHIN, "retained status, both states and a stats message", |all| {
            ["status", "sites/north/state", "sites/south/state"]
                .iter()
                .all(|t| all.iter().any(|m| m.topic == topic(t)))
                && all.iter().any(|m| m.topic == topic("stats") && m.json()["published"] == 5)
        })
        .await;
    let retained = |t: &str| got.iter().find(|m| m.topic == topic(t) && m.retain).cloned();
    assert_eq!(retained("status").expect("retained status").text(), "online");
    assert_eq!(retained("sites/north/state").expect("north").json(), north[2]);
    assert_eq!(retained("sites/south/state").expect("south").json(), south[1]);
    assert!(got.iter().all(|m| m.topic != topic("events")), "events are not retained");
    let stats = late.on(&topic("stats")).last().expect("stats").json();
    assert_eq!(stats["outbox"]["rows"], 0);
    assert_eq!(stats["published"], 5);
    assert_eq!(stats["events"]["change"], 3);
    assert_eq!(stats["reconnects"], 0);
    assert_eq!(stats["dropped"]["events"], 0);

    sink.stop().await;
    let after = Subscriber::connect(broker.port, &[&topic("status")]).await;
    after
        .wait_for(WITHIN, "retained offline", |all| all.iter().any(|m| m.text() == "offline"))
        .await;
}

#[tokio::test]
async fn fifty_events_queued_while_the_broker_is_down_are_all_delivered() {
    // The subscriber's session must outlive the broker's restart so that nothing published in
    // between is missed: this broker persists sessions to its folder (SIGTERM saves them).
    let dir = temp();
    let settings = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n",
        dir.path().display()
    );
    let mut broker = Broker::in_dir(dir, &settings);
    let state = temp();
    let subscriber =
        Subscriber::connect_with(broker.port, &[&topic("events")], Some("outage-sub")).await;
    let first = fill(state.path(), "north", 1, &["change"]);
    let sink = Sink::start(&config(&broker.url()), state.path(), fast());
    subscriber.wait_for(WITHIN, "the first event", |all| !all.is_empty()).await;
    eventually_empty(state.path()).await;

    broker.stop();
    crate::harness::eventually(WITHIN, "the sink noticed", || !sink.status().connected).await;
    let mut queued = first;
    for _ in 0..50 {
        queued.extend(fill(state.path(), "north", 1, &["change"]));
        sink.wake.notify_one();
    }
    assert_eq!(depth(state.path()), 50, "nothing leaves the outbox without a broker");
    broker.restart();

    let got = subscriber
        .wait_for(Duration::from_secs(30), "all 51 events", |all| {
            let mut seen: Vec<String> = ids(all);
            seen.sort();
            seen.dedup();
            seen.len() >= 51
        })
        .await;
    let want: Vec<String> = queued.iter().map(|e| e["id"].as_str().expect("id").into()).collect();
    let mut seen = ids(&got);
    seen.dedup();
    assert_eq!(seen, want, "in seq order (duplicates, if any, adjacent)");
    eventually_empty(state.path()).await;
    assert!(sink.status().connects >= 2);
    sink.stop().await;
}

pub async fn eventually_empty(state: &std::path::Path) {
    crate::harness::eventually(WITHIN, "the outbox emptied", || depth(state) == 0).await;
}
