//! Evaluation sets from BIG-bench (Apache-2.0), fetched by `cargo xtask fetch` into
//! `.cache/assets/bigbench`. They carry BIG-bench's canary string and are for evaluation only:
//! nothing here produces training examples.
//!
//! - `hhh_alignment` (helpful, harmless, honest, other): 221 prompts with a preferred and a
//!   dispreferred response — a preference evaluation;
//! - `general_knowledge` (70) and `misconceptions` (219): multiple choice, scored by the
//!   log-likelihood of each choice — knowledge retention;
//! - `qa_wikidata`: fact completions, of which a fixed, seeded sample is used.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;

use crate::error::DataError;

/// A prompt with a preferred and a dispreferred response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceItem {
    /// `helpful`, `harmless`, `honest` or `other`.
    pub category: String,
    pub prompt: String,
    pub preferred: String,
    pub dispreferred: String,
}

impl PreferenceItem {
    /// The item as a two-choice question whose right answer is the preferred response
    /// (choice 0): how the run's evaluation and `bapo probe` score it, by summed log-prob and
    /// per character like every multiple-choice set.
    pub fn two_choice(&self) -> MultipleChoiceItem {
        MultipleChoiceItem {
            question: self.prompt.clone(),
            choices: vec![self.preferred.clone(), self.dispreferred.clone()],
            correct: 0,
        }
    }
}

/// A question with choices, one of them correct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipleChoiceItem {
    pub question: String,
    pub choices: Vec<String>,
    pub correct: usize,
}

/// A statement to complete and its accepted completions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactItem {
    pub prompt: String,
    pub targets: Vec<String>,
}

struct Task {
    path: PathBuf,
    json: Value,
}

impl Task {
    fn open(path: PathBuf) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::Io {
            path: path.clone(),
            message: format!("{e} (run `cargo xtask fetch`)"),
        })?;
        let json = serde_json::from_str(&text).map_err(|e| DataError::Json {
            path: path.clone(),
            line: 1,
            message: e.to_string(),
        })?;
        Ok(Task { path, json })
    }

    fn examples(&self) -> Result<&Vec<Value>, DataError> {
        self.json
            .get("examples")
            .and_then(Value::as_array)
            .ok_or_else(|| DataError::WrongType {
                path: self.path.clone(),
                line: 1,
                field: "examples".into(),
                expected: "a list".into(),
            })
    }

    fn invalid(&self, index: usize, message: &str) -> DataError {
        DataError::Invalid {
            path: self.path.clone(),
            line: 1,
            message: format!("examples[{index}]: {message}"),
        }
    }

    /// `(input, [(choice, score)])` of a multiple-choice example (choices sorted by text).
    fn scored(
        &self,
        index: usize,
        example: &Value,
    ) -> Result<(String, Vec<(String, f64)>), DataError> {
        let input = example
            .get("input")
            .and_then(Value::as_str)
            .ok_or_else(|| self.invalid(index, "no `input` string"))?;
        let scores = example
            .get("target_scores")
            .and_then(Value::as_object)
            .ok_or_else(|| self.invalid(index, "no `target_scores` object"))?;
        let choices = scores
            .iter()
            .map(|(choice, score)| (choice.clone(), score.as_f64().unwrap_or(0.0)))
            .collect();
        Ok((input.to_string(), choices))
    }
}

/// Why the BIG-bench sets at `bigbench` cannot be had, when `cargo xtask fetch` found that the
/// package registry no longer serves them: the folder is missing and a note, `<folder>.unavailable`
/// (written by the fetch), says why. `None` when the folder is there, or when it is missing
/// without that note (a wrong path, or a fetch not yet run: an error for whoever reads it).
pub fn unavailable_reason(bigbench: &Path) -> Option<String> {
    if bigbench.exists() {
        return None;
    }
    let note = std::fs::read_to_string(unavailable_note(bigbench)).ok()?;
    Some(note.trim().to_string())
}

/// Where `cargo xtask fetch` notes that the BIG-bench sets at `bigbench` cannot be downloaded.
pub fn unavailable_note(bigbench: &Path) -> PathBuf {
    let mut name = bigbench.file_name().unwrap_or_default().to_os_string();
    name.push(".unavailable");
    bigbench.with_file_name(name)
}

/// The hhh_alignment preference items, from `<bigbench>/hhh_alignment/<category>/task.json`.
pub fn load_hhh_alignment(bigbench: &Path) -> Result<Vec<PreferenceItem>, DataError> {
    let mut items = Vec::new();
    for category in ["helpful", "harmless", "honest", "other"] {
        let task = Task::open(
            bigbench
                .join("hhh_alignment")
                .join(category)
                .join("task.json"),
        )?;
        for (i, example) in task.examples()?.iter().enumerate() {
            let (prompt, choices) = task.scored(i, example)?;
            let best = choices
                .iter()
                .find(|c| c.1 > 0.0)
                .ok_or_else(|| task.invalid(i, "no preferred response"))?;
            let worst = choices
                .iter()
                .find(|c| c.1 <= 0.0)
                .ok_or_else(|| task.invalid(i, "no dispreferred response"))?;
            items.push(PreferenceItem {
                category: category.to_string(),
                prompt,
                preferred: best.0.clone(),
                dispreferred: worst.0.clone(),
            });
        }
    }
    Ok(items)
}

/// A multiple-choice task (`general_knowledge`, `misconceptions`), with its `task_prefix`
/// (if any) put before each question.
pub fn load_multiple_choice(
    bigbench: &Path,
    task: &str,
) -> Result<Vec<MultipleChoiceItem>, DataError> {
    let task_file = Task::open(bigbench.join(task).join("task.json"))?;
    let prefix = task_file
        .json
        .get("task_prefix")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    task_file
        .examples()?
        .iter()
        .enumerate()
        .map(|(i, example)| {
            let (input, choices) = task_file.scored(i, example)?;
            let correct = choices
                .iter()
                .position(|c| c.1 > 0.0)
                .ok_or_else(|| task_file.invalid(i, "no correct choice"))?;
            let question = if prefix.is_empty() {
                input
            } else {
                format!("{prefix}\n{input}")
            };
            Ok(MultipleChoiceItem {
                question,
                choices: choices.into_iter().map(|c| c.0).collect(),
                correct,
            })
        })
        .collect()
}

/// A fixed sample of `size` qa_wikidata fact completions, chosen by `seed`.
pub fn load_fact_sample(
    bigbench: &Path,
    size: usize,
    seed: u64,
) -> Result<Vec<FactItem>, DataError> {
    let task = Task::open(bigbench.join("qa_wikidata").join("task.json"))?;
    let examples = task.examples()?;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order.truncate(size);
    order.sort_unstable();
    order
        .into_iter()
        .map(|i| {
            let e = &examples[i];
            let prompt = e
                .get("input")
                .and_then(Value::as_str)
                .ok_or_else(|| task.invalid(i, "no `input` string"))?;
            let targets: Vec<String> = match e.get("target") {
                Some(Value::String(t)) => vec![t.clone()],
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            };
            if targets.is_empty() {
                return Err(task.invalid(i, "no `target`"));
            }
            Ok(FactItem {
                prompt: prompt.to_string(),
                targets,
            })
        })
        .collect()
}
