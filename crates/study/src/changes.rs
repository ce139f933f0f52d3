//! The change of every metric between two evaluations of a run, with paired intervals, from
//! the run's `eval_items.jsonl` (one line per evaluation: `{"step": s, "metric": [item
//! values…], …}`).

use std::path::{Path, PathBuf};

use bapo_rundir::{LogError, Row, read_rows};

use crate::intervals::{Interval, paired_bootstrap};

/// One metric's change between two evaluations.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub metric: String,
    /// Items scored in both evaluations.
    pub items: usize,
    pub before: f64,
    pub after: f64,
    /// `after − before`, with its paired bootstrap interval.
    pub change: Interval,
}

/// Problems reading a run's items.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{}: no evaluation at step {step} (steps: {steps:?})", .path.display())]
    NoStep {
        path: PathBuf,
        step: usize,
        steps: Vec<usize>,
    },
}

/// Every metric's change from the evaluation at step `from` to the last one in `path`, with
/// 95% paired bootstrap intervals (`resamples` resamples, seed 0). Metrics whose item counts
/// differ between the two evaluations are left out (they are not paired).
pub fn run_changes(
    path: &Path,
    from: usize,
    resamples: usize,
) -> Result<Vec<Change>, ChangesError> {
    let evaluations = read_rows(path)?;
    let no_step = |step| ChangesError::NoStep {
        path: path.to_path_buf(),
        step,
        steps: evaluations.iter().map(Row::step).collect(),
    };
    let before = evaluations
        .iter()
        .find(|row| row.step() == from)
        .ok_or_else(|| no_step(from))?
        .items();
    let after = evaluations.last().ok_or_else(|| no_step(from))?.items();
    let mut changes = Vec::new();
    for (metric, a) in before {
        let Some(b) = after.get(&metric) else {
            continue;
        };
        // Unpaired (other item counts), empty or non-finite: no interval, left out.
        let Ok(change) = paired_bootstrap(&a, b, resamples, 0.95, 0) else {
            continue;
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        changes.push(Change {
            metric,
            items: a.len(),
            before: mean(&a),
            after: mean(b),
            change,
        });
    }
    Ok(changes)
}
