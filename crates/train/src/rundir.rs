//! The run directory's lifecycle: one run at a time (a lock held for the whole run), the
//! config a run was made with (its fingerprint leaves the run's own location out, so a moved
//! run resumes), and the record that a run finished its end phase.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use bapo_rundir::files::{FINISHED_FILE, LOCK_FILE, RUN_ENTRIES};

use crate::TrainError;
use crate::config::RunConfig;

/// Refuses `run` when it is an existing folder that is not a bapo run (no [`LOCK_FILE`]) but
/// holds a file or folder a run writes: the user's own `config.toml`, `summary.md` or `plots/`
/// would be overwritten (issue #26). Other contents, and folders that are runs, are left to
/// the run.
fn refuse_foreign_folder(run: &Path) -> Result<(), TrainError> {
    if !run.is_dir() || run.join(LOCK_FILE).exists() {
        return Ok(());
    }
    let entries: Vec<String> = RUN_ENTRIES
        .iter()
        .filter(|name| run.join(name).exists())
        .map(|name| name.to_string())
        .collect();
    if entries.is_empty() {
        Ok(())
    } else {
        Err(TrainError::NotARun {
            dir: run.to_path_buf(),
            entries,
        })
    }
}

/// An exclusive lock on a run directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Creates `run` if needed and locks it; refuses, naming the holder's pid, when another
    /// process holds it, and refuses a folder that is someone else's
    /// ([`refuse_foreign_folder`]).
    pub fn acquire(run: &Path) -> Result<RunLock, TrainError> {
        refuse_foreign_folder(run)?;
        std::fs::create_dir_all(run).map_err(|e| TrainError::io(run, e))?;
        let path = run.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::Locked {
                    run: run.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        // Ours now: say who holds it.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(RunLock { _file: file })
    }
}

/// Keys a resume, or `bapo eval --write`, may change: where the run and its anchor cache are,
/// whether it writes TensorBoard files, how many rows generation decodes together (a speed
/// setting: the anchors do not depend on it), the data file's path, whose contents a
/// checkpoint compares by hash instead, and the memory savings of training, which change the
/// gradients by float rounding only (a run that runs out of memory resumes with them on).
/// Resumes were refused for each of the first five (issue #26).
pub const RELOCATABLE_KEYS: [&str; 8] = [
    "output.dir",
    "output.tensorboard",
    "data.path",
    "anchors.cache_dir",
    "anchors.decode_batch",
    "training.gradient_checkpointing",
    "training.lm_head_chunk_tokens",
    "training.recompute_chunk_rows",
];

/// What a checkpoint records of its run's config: the config's text with the
/// [`RELOCATABLE_KEYS`] set to fixed values, so that a run moved, reached through another
/// path or resumed on the same data at another path still resumes.
pub fn fingerprint_text(config: &RunConfig) -> String {
    let mut located = without_output(config);
    located.data.path = PathBuf::new();
    located.anchors.cache_dir = PathBuf::new();
    located.anchors.decode_batch = crate::config::AnchorSection::default().decode_batch;
    located.training.gradient_checkpointing = false;
    located.training.lm_head_chunk_tokens = 0;
    located.training.recompute_chunk_rows = 0;
    located.to_toml()
}

/// The fingerprints that checkpoints of earlier versions recorded for `config`, newest first:
/// the config with only the `[output]` keys reset (before issue #26), then the whole config
/// (before a moved run could resume). Such a checkpoint resumes only from where it was made.
pub fn earlier_fingerprint_texts(config: &RunConfig) -> [String; 2] {
    [without_output(config).to_toml(), config.to_toml()]
}

/// `config` with its `[output]` keys (where the run is, whether it writes TensorBoard files)
/// set to fixed values.
fn without_output(config: &RunConfig) -> RunConfig {
    let mut located = config.clone();
    located.output.dir = PathBuf::new();
    located.output.tensorboard = true;
    located
}

/// The keys whose values differ between two configs' texts (the [`RELOCATABLE_KEYS`] left
/// out), each as `key: old → new`; empty when they agree. `previous` is the run's copy, which
/// a user may have edited: text that is not TOML is an error, with the parser's words.
pub fn config_differences(previous: &str, current: &str) -> Result<Vec<String>, String> {
    let flat = |text: &str| -> Result<BTreeMap<String, String>, String> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| e.to_string().trim().to_string())?;
        let mut out = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut out);
        for key in RELOCATABLE_KEYS {
            out.remove(key);
        }
        Ok(out)
    };
    let (before, after) = (flat(previous)?, flat(current)?);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            format!("{k}: {} → {}", show(before.get(k)), show(after.get(k)))
        })
        .collect())
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// What the process that finished a run spent: from `resumed_at` (0: the whole run), the
/// training tokens of its steps and its wall-clock seconds (preparation and evaluations
/// included), recorded in `finished.json` for the study's cost table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub resumed_at: usize,
    pub tokens: usize,
    pub seconds: f64,
}

/// Records that the run's end phase is done, and what it cost.
pub fn mark_finished(run: &Path, steps: usize, cost: &Cost) -> Result<(), TrainError> {
    let path = run.join(FINISHED_FILE);
    let partial = run.join(format!("{FINISHED_FILE}.partial"));
    let record = serde_json::json!({
        "steps": steps,
        "resumed_at": cost.resumed_at,
        "tokens": cost.tokens,
        "seconds": (cost.seconds * 10.0).round() / 10.0,
    });
    std::fs::write(&partial, format!("{record}\n"))
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|e| TrainError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_run_is_refused_with_the_holders_pid() {
        let run = std::env::temp_dir().join(format!("bapo-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let held = RunLock::acquire(&run).unwrap();
        let refused = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(
            refused.contains(&std::process::id().to_string()) && refused.contains("in use"),
            "{refused}"
        );
        drop(held);
        RunLock::acquire(&run).expect("free again once the holder is gone");
    }

    #[test]
    fn differences_name_the_keys_and_leave_the_location_out() {
        let a = "[training]\nseed = 0\nepochs = 2\n[output]\ndir = \"runs/a\"\n";
        let b = "[training]\nseed = 1\nepochs = 2\n[output]\ndir = \"runs/b\"\n";
        assert_eq!(config_differences(a, b).unwrap(), ["training.seed: 0 → 1"]);
        assert!(
            config_differences(a, &a.replace("runs/a", "elsewhere"))
                .unwrap()
                .is_empty()
        );
        // The keys a resume may change, and a copy that is not TOML.
        let moved = format!("{a}[data]\npath = \"x.jsonl\"\n[anchors]\ndecode_batch = 3\n");
        assert!(config_differences(a, &moved).unwrap().is_empty());
        assert!(config_differences("[training\n", a).is_err());
    }
}
