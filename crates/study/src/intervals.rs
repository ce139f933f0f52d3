//! Confidence intervals for changes measured on evaluation items and over seeds.
//!
//! - [`paired_bootstrap`]: the mean change `after − before` over items scored twice (by the
//!   reference and by the trained model), with a percentile bootstrap interval that resamples
//!   *items*, keeping each item's pair together — the pairing removes the items' own
//!   difficulty from the spread;
//! - [`t_interval_95`]: the mean of a handful of per-seed results with Student's t interval.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An estimate with the bounds of its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Whether the interval lies entirely on one side of zero.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Inputs an interval cannot be computed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntervalError {
    #[error("{before} items before and {after} after: a paired interval needs the same items")]
    Unpaired { before: usize, after: usize },
    #[error("no items")]
    Empty,
    #[error("a t-interval needs at least 2 values, got {0}")]
    TooFew(usize),
    #[error("level {0} must be in (0, 1)")]
    Level(f64),
    #[error("a value is not finite")]
    NotFinite,
}

/// The mean of `after[i] − before[i]` with its percentile bootstrap interval at `level`
/// (e.g. 0.95): `resamples` resamples of the items with replacement, each pair kept together,
/// from a generator seeded with `seed`; the bounds are the `(1 − level)/2` and `(1 + level)/2`
/// quantiles of the resampled means (linear interpolation between order statistics, numpy's
/// default).
pub fn paired_bootstrap(
    before: &[f64],
    after: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Interval, IntervalError> {
    if before.len() != after.len() {
        return Err(IntervalError::Unpaired {
            before: before.len(),
            after: after.len(),
        });
    }
    if before.is_empty() || resamples == 0 {
        return Err(IntervalError::Empty);
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(IntervalError::Level(level));
    }
    let changes: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    if changes.iter().any(|c| !c.is_finite()) {
        return Err(IntervalError::NotFinite);
    }
    let n = changes.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| changes[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Ok(Interval {
        estimate: changes.iter().sum::<f64>() / n as f64,
        low: quantile(&means, tail),
        high: quantile(&means, 1.0 - tail),
    })
}

/// The `q` quantile of sorted `values`, interpolating linearly between order statistics.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let weight = position - below as f64;
    sorted[below] * (1.0 - weight) + sorted[above] * weight
}

/// Two-sided 95% quantiles of Student's t, `t(0.975, df)` for df = 1..=30.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The mean of `values` (one per seed) with Student's t 95% interval, `mean ± t(0.975, n − 1) ·
/// s / √n` (s the sample standard deviation; beyond 31 values t is taken as 1.96).
pub fn t_interval_95(values: &[f64]) -> Result<Interval, IntervalError> {
    let n = values.len();
    if n < 2 {
        return Err(IntervalError::TooFew(n));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(IntervalError::NotFinite);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T_975.get(n - 2).copied().unwrap_or(1.96);
    let half = t * (variance / n as f64).sqrt();
    Ok(Interval {
        estimate: mean,
        low: mean - half,
        high: mean + half,
    })
}
