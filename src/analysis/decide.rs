//! Decisions from numbers: L2 distance vs threshold, and the 5 % direction rule for vegetation.

use serde::{Deserialize, Serialize};

/// Which way vegetation went between two captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Gain,
    Loss,
    None,
}

impl Direction {
    /// The name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Gain => "gain",
            Direction::Loss => "loss",
            Direction::None => "none",
        }
    }
}

/// Slack for comparing fractions against `min_delta`: shares are ratios of pixel counts, so a
/// delta that is exactly 5 % in pixels (e.g. 0.15 − 0.10) can land a hair under 0.05 in floating
/// point. Treating values within 1e-9 of the bound as on it makes "≥ 0.05" mean what it says.
/// training/reference.py must use the same tolerance.
pub const BOUND_EPSILON: f64 = 1e-9;

/// `gain` if Δ ≥ +min_delta; `loss` if Δ ≤ −min_delta and before ≥ min_delta; else `none`.
pub fn direction(before: f64, after: f64, min_delta: f64) -> Direction {
    let delta = after - before;
    if delta >= min_delta - BOUND_EPSILON {
        Direction::Gain
    } else if delta <= -min_delta + BOUND_EPSILON && before >= min_delta - BOUND_EPSILON {
        Direction::Loss
    } else {
        Direction::None
    }
}

/// A vegetation measure before and after, as reported in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub before: f64,
    pub after: f64,
    pub delta: f64,
    pub direction: Direction,
}

impl Trend {
    pub fn new(before: f64, after: f64, min_delta: f64) -> Trend {
        Trend {
            before,
            after,
            delta: after - before,
            direction: direction(before, after, min_delta),
        }
    }
}

/// Euclidean distance between two embeddings, accumulated in f64.
pub fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>().sqrt()
}

/// A tile changed when its distance is strictly above the threshold.
pub fn changed(distance: f64, threshold: f64) -> bool {
    distance > threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_boundaries() {
        let d = |b, a| direction(b, a, 0.05);
        assert_eq!(d(0.10, 0.15), Direction::Gain, "exactly +5 % in pixels is a gain");
        assert_eq!(d(0.0, 0.05), Direction::Gain);
        assert_eq!(d(0.10, 0.1499), Direction::None);
        assert_eq!(d(0.15, 0.10), Direction::Loss, "exactly −5 % is a loss");
        assert_eq!(d(0.15, 0.1001), Direction::None);
        assert_eq!(d(0.05, 0.0), Direction::Loss, "before exactly at 5 % may lose");
        assert_eq!(d(0.0499, 0.0), Direction::None, "below 5 % before cannot lose");
        assert_eq!(d(0.5, 0.5), Direction::None);
        // 5 of 100 pixels, computed as counts divided by totals.
        assert_eq!(d(10.0 / 100.0, 15.0 / 100.0), Direction::Gain);
        assert_eq!(d(7.0 / 20.0, 6.0 / 20.0), Direction::Loss);
    }

    #[test]
    fn names_match_the_json() {
        for d in [Direction::Gain, Direction::Loss, Direction::None] {
            assert_eq!(serde_json::to_value(d).expect("serialises"), d.as_str());
        }
    }

    #[test]
    fn trend_reports_delta() {
        let t = Trend::new(0.41, 0.22, 0.05);
        assert!((t.delta + 0.19).abs() < 1e-12);
        assert_eq!(t.direction, Direction::Loss);
    }

    #[test]
    fn threshold_decision_is_strict() {
        assert!(!changed(1.1, 1.1));
        assert!(changed(1.1000001, 1.1));
        assert!(!changed(0.0, 1.1));
    }

    #[test]
    fn l2_distance() {
        assert_eq!(l2(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        assert_eq!(l2(&[1.0; 128], &[1.0; 128]), 0.0);
    }
}
