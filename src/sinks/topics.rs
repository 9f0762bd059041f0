//! The MQTT topic names of shared/DESIGN.md, and which outbox rows go to which of them.

use crate::config::{MqttConfig, Publish};

/// Every topic one daemon publishes under, from `mqtt.topic_prefix` (default `edge-change/<device_id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
}

impl Topics {
    pub fn new(cfg: &MqttConfig, device_id: &str) -> Topics {
        let prefix = match cfg.topic_prefix.trim_end_matches('/') {
            "" => format!("edge-change/{}", segment(device_id)),
            prefix => prefix.to_owned(),
        };
        Topics { prefix }
    }

    /// Retained `online` / `offline` (also the last will).
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }

    /// Retained: the site's latest event.
    pub fn state(&self, site: &str) -> String {
        format!("{}/sites/{}/state", self.prefix, segment(site))
    }

    /// Retained: the site's latest JPEG thumbnail.
    pub fn snapshot(&self, site: &str) -> String {
        format!("{}/sites/{}/snapshot", self.prefix, segment(site))
    }
}

/// A site or device name as one topic level: `/` would add levels and `+`, `#` are wildcards (a
/// subscriber could not name the topic), so each becomes `_`; an empty name becomes `_`.
pub fn segment(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if matches!(c, '/' | '+' | '#' | '\0') { '_' } else { c }).collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// Whether an event goes to `<prefix>/events`: with `publish = "changes"` only `change` and `error`
/// events do. A payload without a readable `type` is published: dropping what we cannot read would
/// hide it.
pub fn wanted_on_events(publish: Publish, event_type: Option<&str>) -> bool {
    match publish {
        Publish::All => true,
        Publish::Changes => !matches!(event_type, Some(t) if t != "change" && t != "error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_prefix() {
        let mut cfg = MqttConfig::default();
        let t = Topics::new(&cfg, "field-3");
        assert_eq!(t.status(), "edge-change/field-3/status");
        assert_eq!(t.events(), "edge-change/field-3/events");
        assert_eq!(t.stats(), "edge-change/field-3/stats");
        assert_eq!(t.state("north"), "edge-change/field-3/sites/north/state");
        assert_eq!(t.snapshot("a/b+c#"), "edge-change/field-3/sites/a_b_c_/snapshot");
        cfg.topic_prefix = "farm/cams/".into();
        assert_eq!(Topics::new(&cfg, "x").status(), "farm/cams/status");
        assert_eq!(segment(""), "_");
    }

    #[test]
    fn the_publish_filter() {
        for (publish, kind, wanted) in [
            (Publish::Changes, Some("change"), true),
            (Publish::Changes, Some("error"), true),
            (Publish::Changes, Some("no_change"), false),
            (Publish::Changes, None, true),
            (Publish::All, Some("no_change"), true),
        ] {
            assert_eq!(wanted_on_events(publish, kind), wanted, "{publish:?} {kind:?}");
        }
    }
}
