//! The `check --json` object (schema 1), also the body of the daemon's events.

use serde::Serialize;

use crate::analysis::{Comparison, ModelCard, Trend};

pub const SCHEMA: u32 = 1;

/// Wall-clock milliseconds spent per stage of one pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Reading and decoding both captures and the mask, and fitting the after-capture.
    pub decode: f64,
    /// Tiling, encoder passes and greenery for both captures, and the comparison.
    pub encode: f64,
    pub total: f64,
}

impl Timings {
    /// Rounded to 0.01 ms: finer digits are noise.
    pub fn rounded(self) -> Timings {
        let r = |v: f64| (v * 100.0).round() / 100.0;
        Timings { decode: r(self.decode), encode: r(self.encode), total: r(self.total) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRef {
    pub name: String,
    pub sha256: String,
}

impl From<&ModelCard> for ModelRef {
    fn from(card: &ModelCard) -> Self {
        ModelRef { name: card.name.clone(), sha256: card.sha256.clone() }
    }
}

/// The comparison as shown: distances and fractions rounded to 6 decimals, as
/// training/reference.py prints them (decisions were taken on the unrounded values).
pub fn rounded(c: &Comparison) -> Comparison {
    let r = |v: f64| (v * 1e6).round() / 1e6;
    let trend = |t: Trend| Trend { before: r(t.before), after: r(t.after), delta: r(t.delta), ..t };
    let mut shown = c.clone();
    shown.distance = r(c.distance);
    shown.threshold = r(c.threshold);
    shown.tiles.iter_mut().for_each(|t| t.distance = r(t.distance));
    shown.vegetation = trend(c.vegetation);
    shown.learned = trend(c.learned);
    shown
}

/// One analysed pair, fields in the documented order.
#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    pub schema: u32,
    pub before: &'a str,
    pub after: &'a str,
    #[serde(flatten)]
    pub comparison: &'a Comparison,
    pub model: ModelRef,
    pub timings_ms: Timings,
}

/// A pair that could not be analysed.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport<'a> {
    pub schema: u32,
    pub before: &'a str,
    pub after: &'a str,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Direction, TileBox, TileDistance, Trend};

    #[test]
    fn field_order_is_the_documented_one() {
        let trend = Trend::new(0.41, 0.22, 0.05);
        let comparison = Comparison {
            changed: true,
            distance: 1.84,
            threshold: 1.1,
            tiles: vec![TileDistance {
                tile: TileBox { x: 0, y: 0, w: 128, h: 128 },
                distance: 1.84,
                changed: true,
            }],
            vegetation: trend,
            learned: trend,
            direction: Direction::Loss,
        };
        let report = Report {
            schema: SCHEMA,
            before: "a.png",
            after: "b.png",
            comparison: &comparison,
            model: ModelRef { name: "encoder-int8".into(), sha256: "ab".into() },
            timings_ms: Timings { decode: 3.14444, encode: 9.8, total: 14.2 }.rounded(),
        };
        let json = serde_json::to_string(&report).expect("serialises");
        let value: serde_json::Value = serde_json::from_str(&json).expect("parses");
        let keys: Vec<&str> =
            value.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "schema",
                "before",
                "after",
                "changed",
                "distance",
                "threshold",
                "tiles",
                "vegetation",
                "learned",
                "direction",
                "model",
                "timings_ms"
            ]
        );
        assert!(json
            .contains(r#""tiles":[{"x":0,"y":0,"w":128,"h":128,"distance":1.84,"changed":true}]"#));
        assert!(json.contains(r#""direction":"loss","model""#));
        assert!(json.contains(r#""decode":3.14,"#));
        let shown = rounded(&comparison);
        assert_eq!(shown.vegetation.delta, -0.19, "{:?}", comparison.vegetation.delta);
        assert_eq!(shown.tiles[0].distance, 1.84);
    }
}
