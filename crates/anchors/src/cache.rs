//! The cache's files: one JSON chunk per `chunk_size` examples, written under a temporary
//! name and renamed, and checked against what it should hold when read back.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bapo_data::TokenizedExample;

use crate::{AnchorError, ExampleAnchors, FingerprintInputs, io};

pub(crate) fn chunk_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("chunk-{index:06}.json"))
}

/// A cached chunk, checked against the examples it should hold, the anchors per example and
/// the vocabulary its `inputs` name: an edited or damaged file is refused here, never handed
/// to the model or to training (which indexes every anchor it expects).
pub(crate) fn read_chunk(
    path: &Path,
    chunk: &[TokenizedExample],
    inputs: &FingerprintInputs,
) -> Result<Vec<ExampleAnchors>, AnchorError> {
    let vocab_size = inputs.vocab_size;
    let num_anchors = inputs.settings.num_anchors;
    let corrupt = |message: String| AnchorError::Corrupt {
        path: path.to_path_buf(),
        message: format!("{message}; delete the file (or pass --force-anchors) to recompute it"),
    };
    let text = fs::read_to_string(path).map_err(|e| io(path, e))?;
    let anchors: Vec<ExampleAnchors> =
        serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if anchors.len() != chunk.len() || anchors.iter().zip(chunk).any(|(a, e)| a.line != e.line) {
        return Err(corrupt("does not match the examples it should hold".into()));
    }
    for (a, e) in anchors.iter().zip(chunk) {
        let line = e.line;
        if let Some(id) = a
            .base
            .iter()
            .flatten()
            .find(|&&id| id as usize >= vocab_size)
        {
            return Err(corrupt(format!(
                "the base response of line {line} holds token id {id}, outside the vocabulary of {vocab_size}"
            )));
        }
        if a.base.len() != num_anchors {
            return Err(corrupt(format!(
                "the entry of line {line} has {} base responses, not the {num_anchors} of its settings",
                a.base.len()
            )));
        }
        if a.base_logps.len() != a.base.len() {
            return Err(corrupt(format!(
                "the entry of line {line} has {} base log-probs for {} base responses",
                a.base_logps.len(),
                a.base.len()
            )));
        }
        check_base_lengths(a, e, inputs.settings.max_new_tokens).map_err(corrupt)?;
        let logps = [a.chosen_logp, a.rejected_logp];
        if logps.iter().chain(&a.base_logps).any(|v| !v.is_finite()) {
            return Err(corrupt(format!(
                "the entry of line {line} has a log-prob that is not a finite number"
            )));
        }
        // A log-prob is the log of a probability: never above 0 (with room for a GPU's
        // approximate exp and log, which can leave a certain sequence at +1e-7).
        if let Some(v) = logps.iter().chain(&a.base_logps).find(|v| **v > 1e-3) {
            return Err(corrupt(format!(
                "the entry of line {line} has a log-prob of {v}, above 0, which no log-prob is"
            )));
        }
    }
    Ok(anchors)
}

/// The base responses of one entry as its example and settings allow: a base response the
/// data supplied (anchor 0) is exactly that one, and a generated one has at most
/// `max_new_tokens` tokens (so that prompt and base response fit the model's positions, which
/// the run's config checks for that length; issue #26: a 500-token one was trained on).
fn check_base_lengths(
    anchors: &ExampleAnchors,
    example: &TokenizedExample,
    max_new_tokens: usize,
) -> Result<(), String> {
    let line = example.line;
    for (k, base) in anchors.base.iter().enumerate() {
        match &example.base {
            Some(supplied) if k == 0 && base != supplied => {
                return Err(format!(
                    "the base response of line {line} is not the one its data supplies"
                ));
            }
            Some(_) if k == 0 => {}
            _ if base.len() > max_new_tokens => {
                return Err(format!(
                    "a base response of line {line} has {} tokens, more than anchors.max_new_tokens = {max_new_tokens}",
                    base.len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically ([`stage`], then [`Staged::commit`]): a reader never
/// sees half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AnchorError> {
    stage(path, bytes)?.commit()
}

/// A file written beside its place, not yet renamed into it.
pub(crate) struct Staged {
    partial: PathBuf,
    path: PathBuf,
}

/// Writes `bytes` beside `path` under a name of this writer's own (the process id and a
/// count): two runs filling one cache at once write the same bytes, and neither may rename
/// the other's file away (issue #26: with one shared name, one of them failed with ENOENT).
pub(crate) fn stage(path: &Path, bytes: &[u8]) -> Result<Staged, AnchorError> {
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let partial = path.with_file_name(format!(
        "{name}.{}-{}.partial",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&partial, bytes).map_err(|e| io(&partial, e))?;
    Ok(Staged {
        partial,
        path: path.to_path_buf(),
    })
}

impl Staged {
    /// Renames the file into place (over one another writer put there).
    pub(crate) fn commit(self) -> Result<(), AnchorError> {
        fs::rename(&self.partial, &self.path).map_err(|e| io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_writers_of_one_cache_file_at_once_both_succeed() {
        let dir = std::env::temp_dir().join(format!("bapo-stage-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inputs.json");
        // Both write before either renames, as two runs computing one cache can.
        let first = stage(&path, b"same").unwrap();
        let second = stage(&path, b"same").unwrap();
        first.commit().unwrap();
        second.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"same");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no partial file left"
        );
        fs::remove_dir_all(&dir).ok();
    }
}
