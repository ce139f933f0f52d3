//! The evaluation before training, kept on disk and reused by the next run that would compute
//! the same numbers.
//!
//! At step 0 the policy computes what the reference computes: LoRA's B factors start at zero
//! (Burn's adapter adds `scale · x·A·B`, exact zeros, whatever the seed drew for A), and full
//! fine-tuning starts from the reference's own weights. So every fresh run of one model on the
//! same evaluation sets gets the same step-0 numbers, whatever its objective, learning rate,
//! seed or adapters — and a grid of runs (the study: dozens of runs per user) would otherwise
//! spend one whole evaluation per run recomputing them.
//!
//! The file is named by a digest of everything those numbers depend on: the model file, the
//! backend and device, the evaluation's batching, the token ids of every set it scores and the
//! prompts it answers, the machine's CPU, and the `bapo` executable itself (the metrics' code:
//! a rebuilt binary starts afresh). Values are stored as their IEEE-754 bits, so a reused
//! number is the computed one exactly. A file is written under a name of its own process and
//! renamed, so a killed or concurrent run never leaves or reads half of one; a cache that
//! cannot be written costs the reuse, not the run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TrainError;
use crate::config::RunConfig;
use crate::eval::{EvalSets, Evaluation};
use crate::items::{ItemLabels, ItemScores};

/// Everything the evaluation before training depends on; its hash names the cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartKey {
    /// sha256 of the model file (the policy's and reference 0's).
    pub model: String,
    /// `training.backend`, `training.device_index` and `training.precision` (and
    /// `lora.base_dtype` when bf16, `lora.base_quantization` when quantized).
    pub device: String,
    /// The CPU's model name (`/proc/cpuinfo`; empty elsewhere): kernels differ between CPUs.
    pub cpu: String,
    /// `eval.batch_size`, `eval.batch_tokens` and the padding token.
    pub batching: (usize, usize, u32),
    /// sha256 of the token ids of every evaluation set ([`EvalSets::digest`]).
    pub sets: String,
    /// sha256 of the running executable (the code that computes the metrics).
    pub program: String,
}

/// The key's `device`: the backend, its index and the precision, with `lora.base_dtype` only
/// when bf16 (so that keys made before it existed still match).
fn device_key(config: &RunConfig) -> String {
    let t = &config.training;
    let mut key = format!("{} {} {:?}", t.backend, t.device_index, t.precision);
    if !config.lora.base_dtype.is_f32() {
        key.push_str(&format!(" base {:?}", config.lora.base_dtype));
    }
    if !config.lora.base_quantization.is_none() {
        key.push_str(&format!(" base {:?}", config.lora.base_quantization));
    }
    key
}

impl StartKey {
    /// The key of `config`'s evaluation before training of the model of hash `model_sha256`
    /// on `sets`; `None` when the executable cannot be read (then nothing is reused).
    pub fn new(
        config: &RunConfig,
        model_sha256: &str,
        sets: &EvalSets,
        pad: u32,
    ) -> Option<StartKey> {
        Some(StartKey {
            model: model_sha256.to_string(),
            device: device_key(config),
            cpu: cpu_model(),
            batching: (config.eval.batch_size, config.eval.batch_tokens, pad),
            sets: sets.digest(),
            program: program_sha256()?,
        })
    }

    /// sha256 of the key's canonical JSON.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{:x}", Sha256::digest(json.as_bytes()))
    }

    /// The cache file of this key under `cache_dir` (`anchors.cache_dir`).
    pub fn path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir
            .join("evaluations")
            .join(format!("{}.json", self.fingerprint()))
    }
}

/// sha256 of the running executable, read through `/proc/self/exe` where there is one (it
/// still reads the running file after a rebuild replaced it on disk).
fn program_sha256() -> Option<String> {
    let proc_exe = Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().ok()?
    };
    let bytes = std::fs::read(&exe).ok()?;
    Some(format!("{:x}", Sha256::digest(&bytes)))
}

/// The first "model name" of `/proc/cpuinfo`, or empty.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_default()
}

/// A cache file: its key, written out (so a reader can tell what it holds), and each metric's
/// item values as IEEE-754 bits.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedEvaluation {
    key: StartKey,
    items: std::collections::BTreeMap<String, Vec<u64>>,
}

/// What became of the stored evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Read from the file.
    Reused,
    /// Computed and written to the file.
    Written,
    /// Computed, not written: the reason.
    NotWritten(String),
}

/// The evaluation before training: read from `path` when an earlier run stored it, else
/// `compute`d and stored there. `labels` are the sets' item labels: a stored metric must have
/// as many items as its labels say.
///
/// A file that cannot be read as one, whose key is not `key`, or whose item counts do not
/// match `labels` is refused with a message naming it (it was edited or damaged: delete it to
/// recompute). An evaluation with a value that is not finite, or a folder that cannot be
/// written, leaves no file (the run goes on).
pub fn start_evaluation(
    key: &StartKey,
    path: &Path,
    labels: &ItemLabels,
    compute: impl FnOnce() -> Result<Evaluation, TrainError>,
) -> Result<(Evaluation, Stored), TrainError> {
    if path.try_exists().map_err(|e| TrainError::io(path, e))? {
        return read(path, key, labels).map(|e| (e, Stored::Reused));
    }
    let evaluation = compute()?;
    let stored = if evaluation.items.values().flatten().all(|v| v.is_finite()) {
        match write(path, key, &evaluation.items) {
            Ok(()) => Stored::Written,
            Err(e) => Stored::NotWritten(e.to_string()),
        }
    } else {
        Stored::NotWritten("a value is not finite".into())
    };
    Ok((evaluation, stored))
}

fn read(path: &Path, key: &StartKey, labels: &ItemLabels) -> Result<Evaluation, TrainError> {
    let corrupt = |message: String| TrainError::EvalCacheCorrupt {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let cached: CachedEvaluation =
        serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if cached.key != *key {
        return Err(corrupt(
            "its key is not the one its name was made from".into(),
        ));
    }
    for (name, label) in labels {
        let expected = label.cluster.len();
        let found = cached.items.get(name).map_or(0, Vec::len);
        if expected > 0 && found != expected {
            return Err(corrupt(format!(
                "`{name}` has {found} items where the evaluation sets have {expected}"
            )));
        }
    }
    let items: ItemScores = cached
        .items
        .into_iter()
        .map(|(name, bits)| (name, bits.into_iter().map(f64::from_bits).collect()))
        .collect();
    Ok(Evaluation::from_items(items))
}

fn write(path: &Path, key: &StartKey, items: &ItemScores) -> Result<(), TrainError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let cached = CachedEvaluation {
        key: key.clone(),
        items: items
            .iter()
            .map(|(name, values)| (name.clone(), values.iter().map(|v| v.to_bits()).collect()))
            .collect(),
    };
    let json = serde_json::to_string(&cached).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // This process's own temporary name: two runs storing the same file at once each write
    // their own and rename it into place (the same bytes).
    let partial = path.with_extension(format!("json.{}.partial", std::process::id()));
    std::fs::write(&partial, json).map_err(|e| TrainError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        TrainError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StartKey {
        StartKey {
            model: "m".into(),
            device: "cpu 0 F32".into(),
            cpu: "c".into(),
            batching: (16, 2048, 0),
            sets: "s".into(),
            program: "p".into(),
        }
    }

    /// Every field of the key names another file.
    #[test]
    fn every_field_of_the_key_changes_the_file() {
        let base = key().fingerprint();
        type Change = fn(&mut StartKey);
        let changes: [(&str, Change); 8] = [
            ("model", |k| k.model.push('x')),
            ("device", |k| k.device = "tch-cpu 0 F32".into()),
            ("cpu", |k| k.cpu.push('x')),
            ("batch size", |k| k.batching.0 = 8),
            ("batch tokens", |k| k.batching.1 = 1024),
            ("padding token", |k| k.batching.2 = 2),
            ("sets", |k| k.sets.push('x')),
            ("program", |k| k.program.push('x')),
        ];
        for (what, change) in changes {
            let mut k = key();
            change(&mut k);
            assert_ne!(k.fingerprint(), base, "{what}");
        }
    }
}
