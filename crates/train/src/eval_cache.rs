//! The evaluation before training, kept on disk and reused by the next run that would compute
//! the same numbers.
//!
//! At step 0 the policy computes what the reference computes: LoRA's B factors start at zero
//! (the adapter adds exact zeros, whatever the seed drew for A), and full fine-tuning starts
//! from the reference's own weights. So every fresh run of one model on the same evaluation
//! sets gets the same step-0 numbers, whatever its objective, learning rate or seed — and a
//! grid of runs (the study: dozens of runs per user) would otherwise spend one whole
//! evaluation per run recomputing them.
//!
//! The file is named by a digest of everything those numbers depend on: the model file, the
//! backend (floats differ between backends), the LoRA settings (the computation's path), the
//! evaluation's batching, the token ids of every set it scores and the prompts it answers,
//! and the `bapo` executable itself (the metrics' code: a rebuilt binary starts afresh). A
//! change to any of them is a new file; nothing stale is reused. Files are written under a
//! temporary name and renamed, so a killed run never leaves half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TrainError;
use crate::config::RunConfig;
use crate::eval::{EvalSets, Evaluation, ItemScores};

/// Everything the evaluation before training depends on; its hash names the cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartKey {
    /// sha256 of the model file (the policy's and reference 0's).
    pub model: String,
    /// `training.backend`.
    pub backend: String,
    /// Whether LoRA is on, and its settings.
    pub lora: String,
    /// `eval.batch_size`, `eval.batch_tokens` and the padding token.
    pub batching: (usize, usize, u32),
    /// sha256 of the token ids of every evaluation set ([`EvalSets::digest`]).
    pub sets: String,
    /// sha256 of the running executable (the code that computes the metrics).
    pub program: String,
}

impl StartKey {
    /// The key of `config`'s evaluation before training of the model of hash `model_sha256`
    /// on `sets`.
    pub fn new(
        config: &RunConfig,
        model_sha256: &str,
        sets: &EvalSets,
        pad: u32,
    ) -> Result<StartKey, TrainError> {
        Ok(StartKey {
            model: model_sha256.to_string(),
            backend: config.training.backend.to_string(),
            lora: serde_json::to_string(&config.lora).unwrap_or_default(),
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

/// sha256 of the running executable.
fn program_sha256() -> Result<String, TrainError> {
    let exe =
        std::env::current_exe().map_err(|e| TrainError::io(Path::new("the bapo executable"), e))?;
    let bytes = std::fs::read(&exe).map_err(|e| TrainError::io(&exe, e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// A cache file: its key, written out (so a reader can tell what it holds), and the items.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedEvaluation {
    key: StartKey,
    items: ItemScores,
}

/// The evaluation before training: read from `path` when an earlier run stored it, else
/// `compute`d and stored there. Returns it and whether it was reused.
///
/// A file that cannot be read as one, or whose key is not `key`, is refused with a message
/// naming it (it was edited or damaged: delete it to recompute). An evaluation with a value
/// JSON cannot hold (not finite) is returned but not stored.
pub fn start_evaluation(
    key: &StartKey,
    path: &Path,
    compute: impl FnOnce() -> Result<Evaluation, TrainError>,
) -> Result<(Evaluation, bool), TrainError> {
    if path.exists() {
        return read(path, key).map(|e| (e, true));
    }
    let evaluation = compute()?;
    let finite = evaluation.items.values().flatten().all(|v| v.is_finite());
    if finite {
        write(path, key, &evaluation.items)?;
    }
    Ok((evaluation, false))
}

fn read(path: &Path, key: &StartKey) -> Result<Evaluation, TrainError> {
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
    Ok(Evaluation::from_items(cached.items))
}

fn write(path: &Path, key: &StartKey, items: &ItemScores) -> Result<(), TrainError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let cached = CachedEvaluation {
        key: key.clone(),
        items: items.clone(),
    };
    let json = serde_json::to_string(&cached).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, json).map_err(|e| TrainError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| TrainError::io(path, e))
}
