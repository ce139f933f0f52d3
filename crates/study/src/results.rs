//! The study's numbers, from its cells' run directories: each metric's per-item change from
//! the model before training (step 0) to the end, pooled over seeds, with two intervals — a
//! paired bootstrap over items and Student's t over seeds — and differences between settings,
//! paired by item.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::intervals::{Interval, paired_bootstrap, t_interval_95};

/// Bootstrap resamples for every interval of the report.
pub const RESAMPLES: usize = 4_000;

/// One run's evaluations: step → metric → item values.
#[derive(Debug, Clone, Default)]
pub struct RunItems {
    pub evaluations: Vec<(usize, BTreeMap<String, Vec<f64>>)>,
}

impl RunItems {
    /// Reads `<run>/eval_items.jsonl`.
    pub fn read(run: &Path) -> Result<RunItems, String> {
        let path = run.join("eval_items.jsonl");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut evaluations = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad = |m: &str| format!("{}:{}: {m}", path.display(), i + 1);
            let Value::Object(row) = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?
            else {
                return Err(bad("not a JSON object"));
            };
            let step = row
                .get("step")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("no `step`"))? as usize;
            let metrics = row
                .iter()
                .filter_map(|(k, v)| {
                    let values: Option<Vec<f64>> =
                        v.as_array()?.iter().map(Value::as_f64).collect();
                    Some((k.clone(), values?))
                })
                .collect();
            evaluations.push((step, metrics));
        }
        Ok(RunItems { evaluations })
    }

    /// The items of `metric` at `step`.
    pub fn at(&self, step: usize, metric: &str) -> Option<&[f64]> {
        self.evaluations
            .iter()
            .find(|(s, _)| *s == step)
            .and_then(|(_, m)| m.get(metric))
            .map(Vec::as_slice)
    }

    /// The items of `metric` at the last evaluation.
    pub fn last(&self, metric: &str) -> Option<&[f64]> {
        self.evaluations
            .last()
            .and_then(|(_, m)| m.get(metric))
            .map(Vec::as_slice)
    }

    /// `metric`'s mean at every evaluation that has it: (step, mean).
    pub fn curve(&self, metric: &str) -> Vec<(usize, f64)> {
        self.evaluations
            .iter()
            .filter_map(|(s, m)| {
                m.get(metric)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*s, mean(v)))
            })
            .collect()
    }

    /// Each item's change of `metric` from step 0 to the end; None when either is missing or
    /// they hold other item counts.
    pub fn item_changes(&self, metric: &str) -> Option<Vec<f64>> {
        let before = self.at(0, metric)?;
        let after = self.last(metric)?;
        (before.len() == after.len() && !before.is_empty())
            .then(|| after.iter().zip(before).map(|(a, b)| a - b).collect())
    }
}

/// A change pooled over seeds: the mean over seeds of each item's change, with its paired
/// bootstrap interval over items, and the t-interval over the seeds' means (two or more seeds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pooled {
    pub items: Interval,
    pub seeds: Option<Interval>,
    pub item_count: usize,
    pub seed_count: usize,
}

/// Each item's change averaged over the runs (one per seed), and each run's mean change; None
/// when a run lacks the metric or the runs' item counts differ.
pub fn per_item_mean(per_run: &[Vec<f64>]) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = per_run.first()?.len();
    if n == 0 || per_run.iter().any(|c| c.len() != n) {
        return None;
    }
    let items = (0..n)
        .map(|i| per_run.iter().map(|c| c[i]).sum::<f64>() / per_run.len() as f64)
        .collect();
    let runs = per_run.iter().map(|c| mean(c)).collect();
    Some((items, runs))
}

/// The pooled change of per-run item changes `per_run` (one vector per seed).
pub fn pool(per_run: &[Vec<f64>], seed: u64) -> Option<Pooled> {
    let (items, runs) = per_item_mean(per_run)?;
    let zeros = vec![0.0; items.len()];
    Some(Pooled {
        items: paired_bootstrap(&zeros, &items, RESAMPLES, 0.95, seed).ok()?,
        seeds: t_interval_95(&runs).ok(),
        item_count: items.len(),
        seed_count: runs.len(),
    })
}

/// `b − a` for two settings measured on the same items with the same seeds: a paired
/// bootstrap over items of the per-item difference, and a t-interval over seeds of the
/// per-seed difference (runs paired by position, i.e. by seed).
pub fn difference(a: &[Vec<f64>], b: &[Vec<f64>], seed: u64) -> Option<Pooled> {
    let (a_items, a_runs) = per_item_mean(a)?;
    let (b_items, b_runs) = per_item_mean(b)?;
    if a_items.len() != b_items.len() {
        return None;
    }
    let seeds = (a_runs.len() == b_runs.len())
        .then(|| {
            let d: Vec<f64> = b_runs.iter().zip(&a_runs).map(|(x, y)| x - y).collect();
            t_interval_95(&d).ok()
        })
        .flatten();
    Some(Pooled {
        items: paired_bootstrap(&a_items, &b_items, RESAMPLES, 0.95, seed).ok()?,
        seeds,
        item_count: a_items.len(),
        seed_count: a_runs.len().min(b_runs.len()),
    })
}

/// The least-squares slope of `y` on `x`.
pub fn slope(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (mx, my) = (mean(x), mean(y));
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The slope of the mean item change on `x` across groups (one group of item changes per
/// x), with a bootstrap interval that resamples the items within each group: the interval
/// says how much of the slope item sampling can explain.
pub fn slope_interval(x: &[f64], groups: &[Vec<f64>], seed: u64) -> Option<Interval> {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    if groups.iter().any(Vec::is_empty) {
        return None;
    }
    let means: Vec<f64> = groups.iter().map(|g| mean(g)).collect();
    let estimate = slope(x, &means)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut slopes: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            let resampled: Vec<f64> = groups
                .iter()
                .map(|g| {
                    (0..g.len())
                        .map(|_| g[rng.random_range(0..g.len())])
                        .sum::<f64>()
                        / g.len() as f64
                })
                .collect();
            slope(x, &resampled)
        })
        .collect();
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    // The same percentile rule as every other interval of the study.
    Some(Interval {
        estimate,
        low: crate::intervals::quantile(&slopes, 0.025),
        high: crate::intervals::quantile(&slopes, 0.975),
    })
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
