//! Numbers out of a run's logs, for xtask's checks (the logs' reader is bapo-rundir's).

use std::path::Path;

use anyhow::{Context, Result};
use bapo_rundir::read_rows;

/// The values of `keys`, in that order, of every line of a run log (metrics.jsonl); a line
/// without one of them is an error naming it. `step` is a key too.
pub fn log_numbers(path: &Path, keys: &[&str]) -> Result<Vec<Vec<f64>>> {
    read_rows(path)?
        .iter()
        .map(|row| {
            keys.iter()
                .map(|&key| match key {
                    "step" => Ok(row.step() as f64),
                    _ => row.number(key).with_context(|| {
                        format!("{}: step {} has no `{key}`", path.display(), row.step())
                    }),
                })
                .collect()
        })
        .collect()
}
