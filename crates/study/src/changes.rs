//! The change of every metric between two evaluations of a run, with paired intervals, from
//! the run's `eval_items.jsonl` (one line per evaluation: `{"step": s, "metric": [item
//! values…], …}`).

use std::path::Path;

use serde_json::Value;

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
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: no evaluation at step {step} (steps: {steps:?})")]
    NoStep {
        path: String,
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
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ChangesError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let mut evaluations: Vec<(usize, serde_json::Map<String, Value>)> = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |message: String| ChangesError::Line {
            path: shown.clone(),
            line: index + 1,
            message,
        };
        let row: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let Value::Object(object) = row else {
            return Err(bad("not a JSON object".into()));
        };
        let step = object
            .get("step")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no `step`".into()))? as usize;
        evaluations.push((step, object));
    }
    let steps: Vec<usize> = evaluations.iter().map(|(s, _)| *s).collect();
    let no_step = |step| ChangesError::NoStep {
        path: shown.clone(),
        step,
        steps: steps.clone(),
    };
    let (_, before) = evaluations
        .iter()
        .find(|(s, _)| *s == from)
        .ok_or_else(|| no_step(from))?;
    let (_, after) = evaluations.last().ok_or_else(|| no_step(from))?;
    let values =
        |v: &Value| -> Option<Vec<f64>> { v.as_array()?.iter().map(Value::as_f64).collect() };
    let mut changes = Vec::new();
    for (metric, a) in before {
        let (Some(a), Some(b)) = (values(a), after.get(metric).and_then(values)) else {
            continue;
        };
        // Unpaired (other item counts), empty or non-finite: no interval, left out.
        let Ok(change) = paired_bootstrap(&a, &b, resamples, 0.95, 0) else {
            continue;
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        changes.push(Change {
            metric: metric.clone(),
            items: a.len(),
            before: mean(&a),
            after: mean(&b),
            change,
        });
    }
    Ok(changes)
}
