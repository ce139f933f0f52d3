//! The run's logs: `metrics.jsonl` (one line per logged step, TRL's names), `eval.jsonl` (one
//! line per evaluation), and the process's peak memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TrainError;
use crate::eval::{Evaluation, ItemLabels};
use crate::tensorboard::EventWriter;

/// One JSON object per line, appended and flushed as it happens.
pub struct JsonLog {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonLog {
    /// Opens `path` for appending, first dropping lines whose `step` is above `keep_until`
    /// (what a killed run logged after its last checkpoint).
    pub fn open(path: &Path, keep_until: Option<usize>) -> Result<JsonLog, TrainError> {
        if let Some(limit) = keep_until
            && path.exists()
        {
            let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step")?.as_u64())
                        .is_some_and(|s| s as usize <= limit)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let partial = path.with_extension("jsonl.partial");
            std::fs::write(&partial, kept).map_err(|e| TrainError::io(&partial, e))?;
            std::fs::rename(&partial, path).map_err(|e| TrainError::io(path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends every metric's per-item values (`{"step": s, "name": [v, …], …}`).
    pub fn write_items(
        &mut self,
        step: usize,
        items: &BTreeMap<String, Vec<f64>>,
    ) -> Result<(), TrainError> {
        self.append(items_row(step, items))
    }

    /// Appends `values` with `step` first.
    pub fn write(&mut self, step: usize, values: &BTreeMap<String, f64>) -> Result<(), TrainError> {
        self.append(values_row(step, values))
    }

    fn append(&mut self, row: serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{row}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// A JSON number, or null for NaN and infinities (which JSON cannot hold).
fn number(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// `{"step": s, "name": v, …}`.
fn values_row(step: usize, values: &BTreeMap<String, f64>) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("step".into(), step.into());
    for (k, v) in values {
        object.insert(k.clone(), number(*v));
    }
    serde_json::Value::Object(object)
}

/// `{"step": s, "name": [v, …], …}`.
fn items_row(step: usize, items: &BTreeMap<String, Vec<f64>>) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("step".into(), step.into());
    for (name, values) in items {
        let values = values.iter().map(|v| number(*v)).collect();
        object.insert(name.clone(), serde_json::Value::Array(values));
    }
    serde_json::Value::Object(object)
}

/// Puts `row` into the JSONL log at `path` in step order, in place of a row of the same step;
/// the file is rewritten atomically (a temporary file renamed over it).
fn put_row(path: &Path, row: serde_json::Value) -> Result<(), TrainError> {
    let step_of = |v: &serde_json::Value| v.get("step").and_then(serde_json::Value::as_u64);
    let step = step_of(&row);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut rows = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TrainError::io(path, format!("line {}: {e}", n + 1)))?;
        if step_of(&value) != step {
            rows.push(value);
        }
    }
    rows.push(row);
    rows.sort_by_key(|v| step_of(v).unwrap_or(0));
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let partial = path.with_extension("jsonl.partial");
    std::fs::write(&partial, body).map_err(|e| TrainError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| TrainError::io(path, e))
}

/// The file of a run's item labels: what each evaluation item is (its cluster, chance level,
/// flags), the same at every evaluation of the run.
pub const ITEM_LABELS_FILE: &str = "eval_item_labels.json";

/// Writes `labels` to the run's [`ITEM_LABELS_FILE`] (whole, then renamed into place).
pub fn write_item_labels(run: &Path, labels: &ItemLabels) -> Result<(), TrainError> {
    let path = run.join(ITEM_LABELS_FILE);
    let text = serde_json::to_string(labels).map_err(|e| TrainError::json(&path, e))?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text + "\n").map_err(|e| TrainError::io(&partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| TrainError::io(&path, e))
}

/// Writes an evaluation made after the run (`bapo eval --write`) into the run's logs at
/// `step`: `eval.jsonl` and `eval_items.jsonl` in step order (replacing an evaluation of the
/// same step), and TensorBoard (a new event file) when `tensorboard`.
pub fn put_evaluation(
    run: &Path,
    step: usize,
    evaluation: &Evaluation,
    tensorboard: bool,
) -> Result<(), TrainError> {
    put_row(
        &run.join("eval.jsonl"),
        values_row(step, &evaluation.metrics),
    )?;
    put_row(
        &run.join("eval_items.jsonl"),
        items_row(step, &evaluation.items),
    )?;
    if tensorboard {
        EventWriter::create(&run.join("tensorboard"))?.scalars(
            "eval",
            step,
            &evaluation.metrics,
        )?;
    }
    Ok(())
}

/// Everything a run logs as it goes, in its directory: `metrics.jsonl` (training steps),
/// `eval.jsonl` and `eval_items.jsonl` (evaluations), and TensorBoard event files with the
/// same values under TRL's tags (`train/…`, `eval/…`) when `output.tensorboard` is on.
pub struct RunLogs {
    metrics: JsonLog,
    eval: JsonLog,
    items: JsonLog,
    tensorboard: Option<EventWriter>,
}

impl RunLogs {
    /// Opens the logs of `run` for appending, first dropping what a killed run logged after
    /// the step it resumes from: training rows past `keep_metrics`, evaluations past
    /// `keep_eval` (`None`: nothing is dropped).
    pub fn open(
        run: &Path,
        keep_metrics: Option<usize>,
        keep_eval: Option<usize>,
        tensorboard: bool,
    ) -> Result<RunLogs, TrainError> {
        // TensorBoard's folder first: a start that fails on it (a file named `tensorboard` in
        // the way) must leave no metrics.jsonl, which would make the next start count as a
        // run to resume (issue #26).
        let tensorboard = if tensorboard {
            Some(EventWriter::create(&run.join("tensorboard"))?)
        } else {
            None
        };
        Ok(RunLogs {
            metrics: JsonLog::open(&run.join("metrics.jsonl"), keep_metrics)?,
            eval: JsonLog::open(&run.join("eval.jsonl"), keep_eval)?,
            items: JsonLog::open(&run.join("eval_items.jsonl"), keep_eval)?,
            tensorboard,
        })
    }

    /// A training step's row.
    pub fn step(&mut self, step: usize, row: &BTreeMap<String, f64>) -> Result<(), TrainError> {
        self.metrics.write(step, row)?;
        match &mut self.tensorboard {
            Some(writer) => writer.scalars("train", step, row),
            None => Ok(()),
        }
    }

    /// An evaluation: its metrics, and every metric's per-item values (for paired intervals
    /// between evaluations, as the study computes them).
    pub fn evaluation(&mut self, step: usize, evaluation: &Evaluation) -> Result<(), TrainError> {
        self.eval.write(step, &evaluation.metrics)?;
        self.items.write_items(step, &evaluation.items)?;
        match &mut self.tensorboard {
            Some(writer) => writer.scalars("eval", step, &evaluation.metrics),
            None => Ok(()),
        }
    }
}

/// One line of a log: its step and its numeric values.
pub type LogRow = (usize, BTreeMap<String, f64>);

/// Reads a JSONL log back as (step, values) rows.
pub fn read_log(path: &Path) -> Result<Vec<LogRow>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| TrainError::json(path, e))?;
        let Some(object) = value.as_object() else {
            continue;
        };
        let step = object.get("step").and_then(|s| s.as_u64()).unwrap_or(0) as usize;
        let values = object
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        rows.push((step, values));
    }
    Ok(rows)
}

/// Peak resident memory of this process in MiB (`VmHWM`), where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// Resets this process's peak RSS (`VmHWM`) to its resident memory now, so that a later
/// [`peak_rss_mib`] is the peak since (Linux: `5` written to `/proc/self/clear_refs`).
pub fn reset_peak_rss() -> Result<(), TrainError> {
    let path = std::path::Path::new("/proc/self/clear_refs");
    std::fs::write(path, "5").map_err(|e| TrainError::io(path, e))
}

/// Resident memory of this process now, in MiB (`VmRSS`), where the OS reports it: what
/// `cargo xtask long-run` watches for growth over thousands of steps.
pub fn rss_mib() -> Option<f64> {
    proc_status_mib("VmRSS:")
}

fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
