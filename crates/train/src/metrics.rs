//! The run's logs: `metrics.jsonl` (one line per logged step, TRL's names), `eval.jsonl` (one
//! line per evaluation), and the process's peak memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bapo_rundir::files::{
    EVAL_FILE, EVAL_ITEMS_FILE, ITEM_LABELS_FILE, METRICS_FILE, TENSORBOARD_DIR,
};
use bapo_rundir::{LogError, Row, read_rows};

use crate::TrainError;
use crate::eval::Evaluation;
use crate::items::ItemLabels;
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
            // A kill while the last line was being written leaves it torn, without its
            // newline: it goes. Any other line that is not a log row (a user's edit) stops
            // the resume, named.
            let torn = !text.ends_with('\n');
            let lines: Vec<&str> = text.lines().collect();
            let mut kept = String::new();
            for (n, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let row = match Row::parse(line) {
                    Ok(row) => row,
                    Err(_) if torn && n + 1 == lines.len() => continue,
                    Err(detail) => {
                        return Err(LogError::Line {
                            path: path.to_path_buf(),
                            line: n + 1,
                            detail,
                        }
                        .into());
                    }
                };
                // The line as it was written: a number read and written again can change in
                // its last digit, and a resumed run's logs must be the uninterrupted run's.
                if row.step() <= limit {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
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
        self.append(&Row::of_items(step, items))
    }

    /// Appends `values` with `step` first.
    pub fn write(&mut self, step: usize, values: &BTreeMap<String, f64>) -> Result<(), TrainError> {
        self.append(&Row::of_values(step, values))
    }

    fn append(&mut self, row: &Row) -> Result<(), TrainError> {
        writeln!(self.file, "{row}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Puts `row` into the JSONL log at `path` in step order, in place of a row of the same step;
/// the file is rewritten atomically (a temporary file renamed over it).
fn put_row(path: &Path, row: Row) -> Result<(), TrainError> {
    let mut rows = if path.exists() {
        read_rows(path)?
    } else {
        Vec::new()
    };
    rows.retain(|r| r.step() != row.step());
    rows.push(row);
    rows.sort_by_key(Row::step);
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let partial = path.with_extension("jsonl.partial");
    std::fs::write(&partial, body).map_err(|e| TrainError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| TrainError::io(path, e))
}

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
        &run.join(EVAL_FILE),
        Row::of_values(step, &evaluation.metrics),
    )?;
    put_row(
        &run.join(EVAL_ITEMS_FILE),
        Row::of_items(step, &evaluation.items),
    )?;
    if tensorboard {
        EventWriter::create(&run.join(TENSORBOARD_DIR))?.scalars(
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
            Some(EventWriter::create(&run.join(TENSORBOARD_DIR))?)
        } else {
            None
        };
        Ok(RunLogs {
            metrics: JsonLog::open(&run.join(METRICS_FILE), keep_metrics)?,
            eval: JsonLog::open(&run.join(EVAL_FILE), keep_eval)?,
            items: JsonLog::open(&run.join(EVAL_ITEMS_FILE), keep_eval)?,
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

/// Reads a JSONL log of the run back, line by line.
pub fn read_log(path: &Path) -> Result<Vec<Row>, TrainError> {
    Ok(read_rows(path)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as a log resumed at step 1: what is left of it, or the error.
    fn resumed(text: &str) -> Result<String, String> {
        let dir = std::env::temp_dir().join(format!(
            "bapo-jsonlog-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        let result = JsonLog::open(&path, Some(1))
            .map(|_| std::fs::read_to_string(&path).unwrap())
            .map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    #[test]
    fn a_resume_keeps_lines_as_written_and_drops_only_a_torn_last_line() {
        let first = "{\"loss\":0.23798561096191406,\"step\":1}\n";
        // Later steps go; lines are kept byte for byte.
        assert_eq!(
            resumed(&format!("{first}{{\"loss\":1,\"step\":2}}\n")).unwrap(),
            first
        );
        // Killed while writing the last line: it goes.
        assert_eq!(
            resumed(&format!("{first}{{\"loss\":1,\"st")).unwrap(),
            first
        );
        // Killed between a whole line and its newline: it stays.
        assert_eq!(
            resumed("{\"loss\":0.5,\"step\":1}").unwrap(),
            "{\"loss\":0.5,\"step\":1}\n"
        );
        // Any other line that is not a log row stops the resume, named by its line.
        let error = resumed(&format!("{first}not json\n")).unwrap_err();
        assert!(error.contains("metrics.jsonl, line 2: "), "{error}");
    }
}
