//! A broker whose ACL denies the sink's publishes. With MQTT 3.1.1 (what the sink speaks) Mosquitto
//! still acknowledges each denied PUBLISH and drops it, so the rows leave the outbox and nobody receives
//! them: the sink cannot tell. This test pins that down; the README says so.

use std::time::Duration;

use rumqttc::QoS;

use crate::harness::{config, fast, fill, temp, topic, Broker, Sink, Subscriber, PREFIX};

#[tokio::test]
async fn denied_publishes_are_acknowledged_and_dropped_by_the_broker() {
    let dir = temp();
    let acl = dir.path().join("acl");
    // Anonymous clients (the sink and the subscriber) may read everything and write only the marker.
    std::fs::write(&acl, "topic read #\ntopic write test/marker\n").expect("write acl");
    let settings = format!("allow_anonymous true\npersistence false\nacl_file {}\n", acl.display());
    let broker = Broker::in_dir(dir, &settings);
    let state = temp();
    let subscriber =
        Subscriber::connect(broker.port, &[&format!("{PREFIX}/#"), "test/marker"]).await;
    fill(state.path(), "north", 4, &["change"]);
    let sink = Sink::start(&config(&broker.url()), state.path(), fast());
    crate::delivery::eventually_empty(state.path()).await;
    // PUBACKed, so counted as delivered.
    crate::harness::eventually(Duration::from_secs(20), "4 published", || {
        sink.status().published == 4
    })
    .await;

    // Anything the broker had forwarded would arrive before a marker sent after the PUBACKs.
    subscriber.client.publish("test/marker", QoS::AtLeastOnce, false, "m").await.expect("marker");
    let got = subscriber
        .wait_for(Duration::from_secs(20), "the marker", |all| {
            all.iter().any(|m| m.topic == "test/marker")
        })
        .await;
    assert!(
        got.iter().all(|m| m.topic == "test/marker"),
        "nothing of the sink's got through: {:?}",
        got.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    assert!(!got.iter().any(|m| m.topic == topic("events")));
    sink.stop().await;
}
