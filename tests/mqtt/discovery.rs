//! Home Assistant discovery: configs for the sites the store knows and for new sites before their
//! state, the retained snapshot, and configs published again when Home Assistant comes online.

use std::time::Duration;

use edge_change::state::{Baseline, Store};
use rumqttc::QoS;

use crate::harness::{config, fast, fill, temp, topic, Broker, Sink, Subscriber, PREFIX};

const WITHIN: Duration = Duration::from_secs(20);
const NODE: &str = "edge_change_field-3";

#[tokio::test]
async fn discovery_announces_each_site_and_again_when_home_assistant_restarts() {
    let broker = Broker::start();
    let state = temp();
    {
        let mut store = Store::open(state.path()).expect("open");
        let baseline = Baseline {
            capture: "a.png".into(),
            taken_at: std::time::SystemTime::now(),
            sha256: "00".into(),
            analysis: vec![],
        };
        store.commit_analysis("known", Some(&baseline), None, None).expect("baseline");
        store.push_snapshot("known", b"\xff\xd8jpeg\xff\xd9").expect("snapshot");
    }
    fill(state.path(), "fresh", 1, &["change"]);
    let subscriber =
        Subscriber::connect(broker.port, &["homeassistant/#", &format!("{PREFIX}/#")]).await;
    let mut cfg = config(&broker.url());
    cfg.discovery = true;
    cfg.snapshots = true;
    let sink = Sink::start(&cfg, state.path(), fast());
    crate::delivery::eventually_empty(state.path()).await;

    let config_topic = |kind: &str, site: &str, what: &str| {
        format!("homeassistant/{kind}/{NODE}/{site}_{what}/config")
    };
    let got = subscriber
        .wait_for(WITHIN, "configs of both sites", |all| {
            all.iter().any(|m| m.topic == config_topic("image", "fresh", "snapshot"))
                && all.iter().any(|m| m.topic == config_topic("image", "known", "snapshot"))
        })
        .await;
    let position = |t: &str| got.iter().position(|m| m.topic == t).unwrap_or(usize::MAX);
    assert!(
        position(&config_topic("binary_sensor", "fresh", "changed"))
            < position(&topic("sites/fresh/state")),
        "a new site is announced before its state"
    );
    let changed = got
        .iter()
        .find(|m| m.topic == config_topic("binary_sensor", "known", "changed"))
        .expect("known/changed");
    let body = changed.json();
    assert_eq!(body["state_topic"], topic("sites/known/state"));
    assert_eq!(body["availability_topic"], topic("status"));
    assert_eq!(body["device"]["identifiers"][0], NODE);
    for what in ["distance", "greenery"] {
        assert!(got.iter().any(|m| m.topic == config_topic("sensor", "known", what)), "{what}");
    }
    // A live subscriber sees retain = 0; a late one gets the retained copies.
    let late = Subscriber::connect(broker.port, &["homeassistant/#", &format!("{PREFIX}/#")]).await;
    let retained = late
        .wait_for(WITHIN, "retained configs and snapshot", |all| {
            all.iter().any(|m| m.retain && m.topic == topic("sites/known/snapshot"))
                && all.iter().any(|m| {
                    m.retain && m.topic == config_topic("binary_sensor", "known", "changed")
                })
        })
        .await;
    let snapshot = retained.iter().find(|m| m.topic == topic("sites/known/snapshot"));
    assert_eq!(snapshot.expect("snapshot").payload, b"\xff\xd8jpeg\xff\xd9");

    let before = subscriber.on(&config_topic("sensor", "known", "distance")).len();
    subscriber
        .client
        .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .expect("publish");
    subscriber
        .wait_for(WITHIN, "configs again", |all| {
            all.iter().filter(|m| m.topic == config_topic("sensor", "known", "distance")).count()
                > before
        })
        .await;
    sink.stop().await;
}
