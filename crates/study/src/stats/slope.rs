//! The least-squares slope of y on x across a handful of units (users), where each unit's x
//! and y are themselves estimates.
//!
//! Two sources of noise, both carried by the bootstrap: the units are few (they are resampled
//! with replacement), and each unit's point is measured (within each drawn unit its x items,
//! and its y's seeds and clusters, are resampled too). The probe items behind y are the same
//! for every unit, so one cluster draw is shared by all units of a resample (item effects
//! common to all units then shift every y alike and leave the slope, as they should). The
//! ordinary t-interval over the unit points (n − 2 degrees of freedom) is given as a check:
//! it knows of the scatter around the line but not that the points are estimates.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Bootstrap, ClusterSums, Clusters, StatsError, check_level};
use crate::intervals::Interval;

/// Two-sided 95% quantiles of Student's t, `t(0.975, df)` for df = 1..=30 (as `intervals`).
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// One unit: the per-item values its x is the mean of (e.g. heterogeneity on each held-out
/// pair), and its y's runs (`y_runs[seed][item]`, e.g. probe item changes).
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub x_items: Vec<f64>,
    pub y_runs: Vec<Vec<f64>>,
}

/// The slope with both intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct Slope {
    /// The slope over the units' points (estimate) and its bootstrap; its
    /// `1 − defined_share()` is the share of resamples skipped (fewer than 2 distinct units,
    /// or all x equal).
    pub bootstrap: Bootstrap,
    /// Student's t 95% interval over the points (None with fewer than 3 units).
    pub t_95: Option<Interval>,
    /// Each unit's `(x, y)`, all items and seeds.
    pub points: Vec<(f64, f64)>,
}

/// The OLS slope of `y` on `x`: Sxy / Sxx; None with fewer than 2 points, unequal lengths,
/// or all x equal.
pub fn ols_slope(x: &[f64], y: &[f64]) -> Option<f64> {
    let (sxx, sxy, _) = moments(x, y)?;
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The OLS slope with Student's t 95% interval, `b ± t(0.975, n − 2) · √(SSE / (n − 2) / Sxx)`
/// (t taken as 1.96 beyond 32 points); None with fewer than 3 points or all x equal.
pub fn ols_t_interval_95(x: &[f64], y: &[f64]) -> Option<Interval> {
    let (sxx, sxy, syy) = moments(x, y)?;
    let n = x.len();
    if n < 3 || sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let sse = (syy - slope * sxy).max(0.0);
    let t = T_975.get(n - 3).copied().unwrap_or(1.96);
    let half = t * (sse / (n - 2) as f64 / sxx).sqrt();
    Some(Interval {
        estimate: slope,
        low: slope - half,
        high: slope + half,
    })
}

/// Sxx, Sxy, Syy about the means.
fn moments(x: &[f64], y: &[f64]) -> Option<(f64, f64, f64)> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (mx, my) = (mean(x), mean(y));
    let sum = |f: &dyn Fn(f64, f64) -> f64| x.iter().zip(y).map(|(a, b)| f(a - mx, b - my)).sum();
    Some((sum(&|a, _| a * a), sum(&|a, b| a * b), sum(&|_, b| b * b)))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// A unit ready to be resampled.
struct Prepared {
    x_items: Vec<f64>,
    x_mean: f64,
    y: ClusterSums,
}

/// The slope of y on x over `units` (y items described by `y_clusters`) with a bootstrap
/// interval at `level` (units, then within each drawn unit its x items, seeds and, shared by
/// all units, the probe's clusters; `resamples` draws seeded with `rng_seed`), and the
/// t-interval over the points as a check.
pub fn slope_interval(
    units: &[Unit],
    y_clusters: &Clusters,
    resamples: usize,
    level: f64,
    rng_seed: u64,
) -> Result<Slope, StatsError> {
    check_level(level)?;
    if resamples == 0 {
        return Err(StatsError::NoResamples);
    }
    let prepared = units
        .iter()
        .enumerate()
        .map(|(i, u)| prepare(i, u, y_clusters))
        .collect::<Result<Vec<_>, _>>()?;
    let all_clusters: Vec<usize> = (0..y_clusters.count()).collect();
    let points: Vec<(f64, f64)> = prepared
        .iter()
        .map(|p| {
            let seeds: Vec<usize> = (0..p.y.runs()).collect();
            (p.x_mean, p.y.mean_over(&seeds, &all_clusters))
        })
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let estimate = ols_slope(&x, &y).ok_or(StatsError::NoSlope)?;
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let resampled: Vec<Option<f64>> = (0..resamples)
        .map(|_| resampled_slope(&mut rng, &prepared, y_clusters.count()))
        .collect();
    Ok(Slope {
        bootstrap: Bootstrap::from_resamples(Some(estimate), &resampled, level)?,
        t_95: ols_t_interval_95(&x, &y),
        points,
    })
}

fn prepare(index: usize, unit: &Unit, y_clusters: &Clusters) -> Result<Prepared, StatsError> {
    if unit.x_items.is_empty() {
        return Err(StatsError::EmptyUnit(index));
    }
    if unit.x_items.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NotFinite);
    }
    Ok(Prepared {
        x_mean: mean(&unit.x_items),
        x_items: unit.x_items.clone(),
        y: ClusterSums::new(&unit.y_runs, y_clusters, 0)?,
    })
}

/// One resample's slope; None when it draws fewer than 2 distinct units or its x are equal.
fn resampled_slope(rng: &mut StdRng, units: &[Prepared], clusters: usize) -> Option<f64> {
    let n = units.len();
    let drawn: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
    let shared: Vec<usize> = (0..clusters)
        .map(|_| rng.random_range(0..clusters))
        .collect();
    if drawn.iter().all(|&u| u == drawn[0]) {
        return None;
    }
    let (x, y): (Vec<f64>, Vec<f64>) = drawn
        .iter()
        .map(|&u| {
            let unit = &units[u];
            let x = resampled_mean(rng, &unit.x_items);
            let seeds = resampled_indices(rng, unit.y.runs());
            (x, unit.y.mean_over(&seeds, &shared))
        })
        .unzip();
    ols_slope(&x, &y)
}

/// The mean of `values` resampled with replacement.
fn resampled_mean(rng: &mut StdRng, values: &[f64]) -> f64 {
    let n = values.len();
    (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64
}

/// `n` indices below `n` drawn with replacement (just `[0]` for one, drawing nothing).
fn resampled_indices(rng: &mut StdRng, n: usize) -> Vec<usize> {
    if n == 1 {
        return vec![0];
    }
    (0..n).map(|_| rng.random_range(0..n)).collect()
}
