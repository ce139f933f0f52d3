//! A training curve's value at a declared level: "retention when personalisation first
//! reaches x = level". Comparing objectives at the same personalisation rather than at the
//! same step is the study's question; the level is declared in advance, not picked from the
//! curves.

use super::ClusterSums;
use super::hierarchical::Draw;

/// `y` where the curve `points` (`(x, y)` in training order, step 0 first) first reaches
/// `x = level`, interpolated linearly on the first segment whose x runs through `level`
/// (upwards or downwards); None when no segment does. Segments with a non-finite x never
/// match.
pub fn value_at_level(points: &[(f64, f64)], level: f64) -> Option<f64> {
    if let [(x, y)] = points {
        return (*x == level).then_some(*y);
    }
    points
        .windows(2)
        .find_map(|w| on_segment(w[0], w[1], level))
}

/// `y` at `x = level` on the segment from `(x0, y0)` to `(x1, y1)`, if it reaches there.
fn on_segment((x0, y0): (f64, f64), (x1, y1): (f64, f64), level: f64) -> Option<f64> {
    let (low, high) = if x0 <= x1 { (x0, x1) } else { (x1, x0) };
    if !(low <= level && level <= high) {
        return None;
    }
    if x0 == x1 {
        return Some(y0);
    }
    Some(y0 + (level - x0) / (x1 - x0) * (y1 - y0))
}

/// The curve under a draw: step t's point is (`x[t]`'s mean, `y[t]`'s mean). `x` and `y` hold
/// one [`ClusterSums`] per evaluated step (e.g. x: the trained user's held-out accuracy, item
/// set 0; y: the probe's change, item set 1), so that within a resample every step sees the
/// same seeds and items.
pub fn curve_under(draw: &Draw, x: &[ClusterSums], y: &[ClusterSums]) -> Vec<(f64, f64)> {
    x.iter()
        .zip(y)
        .map(|(x, y)| (x.mean(draw), y.mean(draw)))
        .collect()
}
