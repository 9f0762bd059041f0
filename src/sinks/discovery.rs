//! Home Assistant MQTT discovery: one device per daemon and, per site, a binary sensor "changed",
//! sensors for the distance and the greenery, and (with snapshots) an image entity. Every entity reads the
//! site's retained state topic and takes its availability from the daemon's `status` topic.

use serde_json::{json, Value};

use super::topics::Topics;

/// Home Assistant's discovery prefix (its default) and the topic where it announces itself; on
/// `online` there (HA restarted) the configs are published again.
pub const PREFIX: &str = "homeassistant";
pub const HA_STATUS: &str = "homeassistant/status";

/// An identifier as Home Assistant wants it in topics and unique ids: `[a-zA-Z0-9_-]`.
fn id(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// The retained config messages (topic, JSON) announcing one site's entities.
pub fn site_configs(
    topics: &Topics,
    device_id: &str,
    site: &str,
    snapshots: bool,
) -> Vec<(String, Vec<u8>)> {
    let node = format!("edge_change_{}", id(device_id));
    let object = |what: &str| format!("{}_{what}", id(site));
    let device = json!({
        "identifiers": [node],
        "name": format!("edge-change {device_id}"),
        "manufacturer": "edge-change",
        "model": "edge-change",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let common = |what: &str, name: String| {
        json!({
            "name": name,
            "unique_id": format!("{node}_{}", object(what)),
            "object_id": format!("{node}_{}", object(what)),
            "availability_topic": topics.status(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        })
    };
    let with = |mut base: Value, extra: Value| {
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    };
    let state = topics.state(site);
    let mut configs = vec![
        (
            format!("{PREFIX}/binary_sensor/{node}/{}/config", object("changed")),
            with(
                common("changed", format!("{site} changed")),
                json!({
                    "state_topic": state,
                    // An error event carries no `changed`: it reads as "not changed".
                    "value_template": "{{ 'ON' if value_json.changed is defined and value_json.changed else 'OFF' }}",
                    "json_attributes_topic": state,
                    "json_attributes_template": "{{ {'id': value_json.id, 'type': value_json.type, 'direction': value_json.direction, 'capture': value_json.capture, 'captured_at': value_json.captured_at, 'error': value_json.error} | tojson }}",
                }),
            ),
        ),
        (
            format!("{PREFIX}/sensor/{node}/{}/config", object("distance")),
            with(
                common("distance", format!("{site} distance")),
                json!({
                    "state_topic": state,
                    "value_template": "{{ value_json.distance if value_json.distance is defined else None }}",
                    "state_class": "measurement",
                    "suggested_display_precision": 3,
                }),
            ),
        ),
        (
            format!("{PREFIX}/sensor/{node}/{}/config", object("greenery")),
            with(
                common("greenery", format!("{site} greenery")),
                json!({
                    "state_topic": state,
                    "value_template": "{{ (value_json.vegetation.after * 100) | round(1) if value_json.vegetation is defined else None }}",
                    "unit_of_measurement": "%",
                    "state_class": "measurement",
                    "icon": "mdi:leaf",
                }),
            ),
        ),
    ];
    if snapshots {
        configs.push((
            format!("{PREFIX}/image/{node}/{}/config", object("snapshot")),
            with(
                common("snapshot", format!("{site} snapshot")),
                json!({"image_topic": topics.snapshot(site), "content_type": "image/jpeg"}),
            ),
        ));
    }
    configs.into_iter().map(|(topic, config)| (topic, config.to_string().into_bytes())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttConfig;

    #[test]
    fn one_device_and_the_entities_of_a_site() {
        let topics = Topics::new(&MqttConfig::default(), "field 3");
        let configs = site_configs(&topics, "field 3", "north/field", true);
        let names: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "homeassistant/binary_sensor/edge_change_field_3/north_field_changed/config",
                "homeassistant/sensor/edge_change_field_3/north_field_distance/config",
                "homeassistant/sensor/edge_change_field_3/north_field_greenery/config",
                "homeassistant/image/edge_change_field_3/north_field_snapshot/config",
            ]
        );
        let changed: Value = serde_json::from_slice(&configs[0].1).expect("json");
        assert_eq!(changed["state_topic"], "edge-change/field 3/sites/north_field/state");
        assert_eq!(changed["availability_topic"], "edge-change/field 3/status");
        assert_eq!(changed["device"]["identifiers"][0], "edge_change_field_3");
        let image: Value = serde_json::from_slice(&configs[3].1).expect("json");
        assert_eq!(image["image_topic"], "edge-change/field 3/sites/north_field/snapshot");
        assert_eq!(site_configs(&topics, "field 3", "n", false).len(), 3);
    }
}
