//! # bapo-anchors: reference anchors
//!
//! BAPO's anchor: for every training prompt, the **reference** model's own responses `y_b`
//! (base responses, greedy by default), and the reference log-probs of chosen, rejected and
//! base responses, computed once and reused.
//!
//! Results are cached on disk under a **fingerprint** of everything that changes them (the
//! model file's and the data's sha256, the chat template, truncation and generation settings,
//! the chunk size): a changed input means a new fingerprint, so nothing stale is ever reused.
//! The cache is written in chunks, each to a temporary name renamed into place, so a run killed
//! at any point resumes at the first missing chunk and ends with the same files as an
//! uninterrupted one.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use bapo_data::TokenizedExample;
use bapo_model::{BaseQuantization, Precision, Sampling};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod cache;
mod compute;

pub use compute::{
    AnchorProgress, AnchorReport, AnchorSet, Decoding, Reference, compute_anchor_sets,
    compute_anchors,
};

/// How base responses are generated and the cache is chunked. Its JSON is part of the
/// fingerprint: the fields (the sampling knobs flattened in) are written in this order, as
/// every cache since the first was keyed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnchorSettings {
    pub max_new_tokens: usize,
    /// Greedy by default.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Base responses per prompt (sampling settings should make them differ); 0 computes the
    /// reference log-probs of chosen and rejected only.
    pub num_anchors: usize,
    /// Examples per chunk file.
    pub chunk_size: usize,
}

impl Default for AnchorSettings {
    fn default() -> Self {
        AnchorSettings {
            max_new_tokens: 128,
            sampling: Sampling::default(),
            num_anchors: 1,
            chunk_size: 16,
        }
    }
}

/// The anchors and reference log-probs of one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleAnchors {
    /// Source line of the example.
    pub line: usize,
    /// Base responses (token ids, ending with EOS unless cut by `max_new_tokens`).
    pub base: Vec<Vec<u32>>,
    /// Reference log-prob of the chosen response (summed over its tokens).
    pub chosen_logp: f32,
    pub rejected_logp: f32,
    /// One per base response.
    pub base_logps: Vec<f32>,
}

/// Errors of anchor generation and its cache.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: corrupt cache chunk: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("scoring: {0}")]
    Scoring(String),
    #[error("generation: {0}")]
    Generation(String),
    #[error("anchor settings: {0}")]
    Settings(String),
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> AnchorError {
    AnchorError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Several references (MRPO) must share the policy's tokenizer: their log-probs are of the
/// same token sequences. Refuses tokenizers whose vocabularies differ (names the first token
/// that does).
pub fn check_same_tokenizer(
    policy: &tokenizers::Tokenizer,
    reference: &tokenizers::Tokenizer,
    reference_name: &str,
) -> Result<(), AnchorError> {
    let (a, b) = (policy.get_vocab(true), reference.get_vocab(true));
    if a.len() != b.len() {
        return Err(AnchorError::Settings(format!(
            "reference {reference_name} has {} tokens, the policy {}: references must share the policy's tokenizer",
            b.len(),
            a.len()
        )));
    }
    let mut tokens: Vec<_> = a.iter().collect();
    tokens.sort();
    if let Some((token, id)) = tokens.into_iter().find(|(t, id)| b.get(*t) != Some(id)) {
        return Err(AnchorError::Settings(format!(
            "reference {reference_name} maps {token:?} to {:?}, the policy to {id}: references must share the policy's tokenizer",
            b.get(token)
        )));
    }
    Ok(())
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, AnchorError> {
    let mut file = fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// sha256 of a model: of its GGUF file, or of every file of a checkpoint folder that the model
/// is read from ([`bapo_model::hub::is_model_file`]: config, tokenizer and its settings, chat
/// template, weights; a Hugging Face model id is resolved to its snapshot folder first). A cache
/// and a checkpoint record it, so that a changed model is never mistaken for the old one.
pub fn model_sha256(path: &Path) -> Result<String, AnchorError> {
    let path = &bapo_model::hub::resolve(path).map_err(|e| AnchorError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if !path.is_dir() {
        return file_sha256(path);
    }
    let mut files: Vec<_> = fs::read_dir(path)
        .map_err(|e| io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            bapo_model::hub::is_model_file(name)
        })
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(file_sha256(&f)?.as_bytes());
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Everything the cached results depend on. Its hash names the cache folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerprintInputs {
    /// The reference model's fingerprint ([`model_sha256`]).
    pub model: String,
    /// sha256 of the data file.
    pub data: String,
    /// The chat template source (empty for none) and the tokenizer's vocabulary size.
    pub chat_template: String,
    pub vocab_size: usize,
    /// Truncation limits.
    pub max_length: usize,
    pub max_prompt_length: Option<usize>,
    /// The user the data was restricted to, if any.
    pub user: Option<String>,
    /// sha256 of the selected examples' token ids ([`examples_sha256`]): which rows, split
    /// and truncation the cache holds.
    pub examples: String,
    pub settings: AnchorSettings,
    /// What the reference computed in (`training.precision`) and held its matrices in
    /// (`lora.base_dtype`): base responses and log-probs change with both. Left out of the
    /// JSON when f32, so that caches made before bf16 existed keep their folders.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub base_dtype: Precision,
    /// How the reference's block projections were held (`lora.base_quantization`); left out
    /// of the JSON when not quantized, for the same reason.
    #[serde(skip_serializing_if = "BaseQuantization::is_none", default)]
    pub base_quantization: BaseQuantization,
}

/// sha256 of the token ids (prompt, chosen, rejected, supplied base) and source lines of
/// `examples`.
pub fn examples_sha256(examples: &[TokenizedExample]) -> String {
    let mut hasher = Sha256::new();
    for e in examples {
        let empty = Vec::new();
        for part in [
            &e.prompt,
            &e.chosen,
            &e.rejected,
            e.base.as_ref().unwrap_or(&empty),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            for id in part.iter() {
                hasher.update(id.to_le_bytes());
            }
        }
        hasher.update((e.line as u64).to_le_bytes());
    }
    format!("{:x}", hasher.finalize())
}

impl FingerprintInputs {
    /// The fingerprint: sha256 of the canonical JSON of the inputs.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{:x}", Sha256::digest(json.as_bytes()))
    }
}
