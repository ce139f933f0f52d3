//! The targets: one per kind of file a user hands bapo (or bapo wrote and a user may edit).

mod anchors;
mod checkpoint;
mod config;
mod gguf;
mod hf_model;
mod jsonl;
mod tokenizer;

use std::path::Path;

use bapo_model::{ChatMessage, LoadedModel, TokenBatch, sequence_logprobs};
use burn::tensor::Device;

use crate::{Harness, Input};

/// Every target's name, in the order `cargo xtask fuzz` runs them.
pub const NAMES: [&str; 7] = [
    "gguf",
    "hf-model",
    "tokenizer",
    "jsonl",
    "config",
    "anchors",
    "checkpoint",
];

/// The target called `name`, set up (seeds made, fixture loaded).
pub fn by_name(name: &str) -> Result<Box<dyn Harness>, String> {
    Ok(match name {
        "gguf" => Box::new(gguf::GgufTarget::new()?),
        "hf-model" => Box::new(hf_model::HfModelTarget::new()?),
        "tokenizer" => Box::new(tokenizer::TokenizerTarget::new()?),
        "jsonl" => Box::new(jsonl::JsonlTarget::new()?),
        "config" => Box::new(config::ConfigTarget::new()?),
        "anchors" => Box::new(anchors::AnchorsTarget::new()?),
        "checkpoint" => Box::new(checkpoint::CheckpointTarget::new()?),
        other => {
            return Err(format!(
                "no fuzz target `{other}`; the targets are {}",
                NAMES.join(", ")
            ));
        }
    })
}

/// The files of a target's folder, each with its seed contents: an input replaces one of
/// them.
struct FileSet(Vec<(&'static str, Vec<u8>)>);

impl FileSet {
    /// `names` read from `dir`.
    fn read(dir: &Path, names: &[&'static str]) -> Result<Self, String> {
        let files = names
            .iter()
            .map(|name| Ok((*name, read(dir, name)?)))
            .collect::<Result<_, String>>()?;
        Ok(FileSet(files))
    }

    /// The seed contents of `names`, as inputs.
    fn seeds(&self, names: &[&str]) -> Vec<Input> {
        self.0
            .iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(name, bytes)| Input::new(name, bytes.clone()))
            .collect()
    }

    /// Writes every file into `dir`, `input` in place of its file.
    fn write(&self, dir: &Path, input: &Input) -> Result<(), String> {
        for (name, bytes) in &self.0 {
            let bytes = if *name == input.file {
                &input.bytes
            } else {
                bytes
            };
            write(dir, name, bytes)?;
        }
        Ok(())
    }

    /// Bytes of every file, `input` in place of its file.
    fn size(&self, input: &Input) -> usize {
        self.0
            .iter()
            .map(|(name, bytes)| {
                if *name == input.file {
                    input.bytes.len()
                } else {
                    bytes.len()
                }
            })
            .sum()
    }
}

/// Reads a file of the fixture.
fn read(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(dir.join(name), bytes).map_err(|e| format!("{}: {e}", dir.join(name).display()))
}

/// What a run does first with a model it loaded: render a conversation with its chat
/// template, tokenise it, and score a completion (one forward pass). A loader that accepts
/// a model this then panics on has let a fault through.
fn use_model(model: &LoadedModel, device: &Device) -> Result<(), String> {
    let messages = [ChatMessage::new("user", "what colour is the sky ?")];
    let prompt_text = match &model.chat_template {
        Some(template) => template
            .render(&messages, true)
            .map_err(|e| e.to_string())?,
        None => "what colour is the sky ?".to_string(),
    };
    let prompt = model.encode(&prompt_text).map_err(|e| e.to_string())?;
    let completion = model.encode("it is blue .").map_err(|e| e.to_string())?;
    if prompt.is_empty() || completion.is_empty() {
        return Err("the tokenizer gives no tokens for the test text".into());
    }
    model
        .check_length(prompt.len() + completion.len(), "the test text")
        .map_err(|e| e.to_string())?;
    let batch = TokenBatch::from_pairs([(&prompt[..], &completion[..])], model.pad_token);
    let scored = sequence_logprobs(&model.model, &batch, device).map_err(|e| e.to_string())?;
    let total = scored
        .total
        .into_data()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    assert_eq!(
        total.len(),
        1,
        "one sequence scored, {} results",
        total.len()
    );
    model.decode(&completion).map_err(|e| e.to_string())?;
    Ok(())
}
