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
use bapo_model::{CausalModel, GenerationConfig, TokenBatch, generate, sequence_logprobs};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How base responses are generated and the cache is chunked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnchorSettings {
    pub max_new_tokens: usize,
    /// 0 is greedy (the default).
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub seed: u64,
    /// Base responses per prompt (sampling settings should make them differ); 0 computes the
    /// reference log-probs of chosen and rejected only.
    pub num_anchors: usize,
    /// Examples per chunk file, and per generation batch.
    pub chunk_size: usize,
}

impl Default for AnchorSettings {
    fn default() -> Self {
        AnchorSettings {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
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
    /// Response token counts.
    pub chosen_tokens: usize,
    pub rejected_tokens: usize,
    pub base_tokens: Vec<usize>,
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

fn io(path: &Path, e: impl std::fmt::Display) -> AnchorError {
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

/// Everything the cached results depend on. Its hash names the cache folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerprintInputs {
    /// sha256 of the reference model file (or of its safetensors files, concatenated).
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

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnchorReport {
    /// Chunks found complete in the cache and reused.
    pub reused_chunks: usize,
    /// Chunks computed by this run.
    pub computed_chunks: usize,
    /// Tokens generated by this run.
    pub generated_tokens: usize,
}

/// Where a run of [`compute_anchors_with_progress`] is, after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorProgress {
    /// Examples done (computed or reused) so far, of `total`.
    pub done: usize,
    pub total: usize,
    /// Tokens generated so far by this run (reused chunks generate none).
    pub generated_tokens: usize,
}

/// Computes (or reuses) the anchors of `examples` with `reference` into
/// `<cache_dir>/<fingerprint>/`, and returns them in example order.
pub fn compute_anchors<M: CausalModel>(
    reference: &M,
    examples: &[TokenizedExample],
    inputs: &FingerprintInputs,
    eos_token: u32,
    pad_token: u32,
    cache_dir: &Path,
    device: &Device,
) -> Result<(Vec<ExampleAnchors>, AnchorReport), AnchorError> {
    compute_anchors_with_progress(
        reference,
        examples,
        inputs,
        (eos_token, pad_token),
        cache_dir,
        device,
        &mut |_| {},
    )
}

/// [`compute_anchors`], calling `progress` after every chunk.
pub fn compute_anchors_with_progress<M: CausalModel>(
    reference: &M,
    examples: &[TokenizedExample],
    inputs: &FingerprintInputs,
    (eos_token, pad_token): (u32, u32),
    cache_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(AnchorProgress),
) -> Result<(Vec<ExampleAnchors>, AnchorReport), AnchorError> {
    let s = &inputs.settings;
    if s.chunk_size == 0 {
        return Err(AnchorError::Settings(
            "chunk_size must be at least 1".into(),
        ));
    }
    let dir = cache_dir.join(inputs.fingerprint());
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let inputs_file = dir.join("inputs.json");
    if !inputs_file.exists() {
        let json = serde_json::to_string_pretty(inputs).unwrap_or_default();
        write_atomically(&inputs_file, json.as_bytes())?;
    }

    let mut all = Vec::with_capacity(examples.len());
    let mut report = AnchorReport::default();
    for (index, chunk) in examples.chunks(s.chunk_size).enumerate() {
        let path = dir.join(format!("chunk-{index:06}.json"));
        if path.exists() {
            let text = fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let anchors: Vec<ExampleAnchors> =
                serde_json::from_str(&text).map_err(|e| AnchorError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if anchors.len() != chunk.len()
                || anchors.iter().zip(chunk).any(|(a, e)| a.line != e.line)
            {
                return Err(AnchorError::Corrupt {
                    path,
                    message: "does not match the examples it should hold".into(),
                });
            }
            report.reused_chunks += 1;
            all.extend(anchors);
            progress(AnchorProgress {
                done: all.len(),
                total: examples.len(),
                generated_tokens: report.generated_tokens,
            });
            continue;
        }
        let anchors = compute_chunk(
            reference,
            chunk,
            s,
            index as u64,
            eos_token,
            pad_token,
            device,
            &mut report,
        )?;
        let json = serde_json::to_string(&anchors).unwrap_or_default();
        write_atomically(&path, json.as_bytes())?;
        report.computed_chunks += 1;
        all.extend(anchors);
        progress(AnchorProgress {
            done: all.len(),
            total: examples.len(),
            generated_tokens: report.generated_tokens,
        });
    }
    Ok((all, report))
}

/// Writes to `path.partial`, then renames: a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AnchorError> {
    let partial = path.with_extension("partial");
    fs::write(&partial, bytes).map_err(|e| io(&partial, e))?;
    fs::rename(&partial, path).map_err(|e| io(path, e))
}

#[allow(clippy::too_many_arguments)]
fn compute_chunk<M: CausalModel>(
    reference: &M,
    chunk: &[TokenizedExample],
    s: &AnchorSettings,
    chunk_index: u64,
    eos_token: u32,
    pad_token: u32,
    device: &Device,
    report: &mut AnchorReport,
) -> Result<Vec<ExampleAnchors>, AnchorError> {
    // Base responses: slot `a·n + i` holds anchor `a` of example `i`. A base response
    // supplied in the data (`base`) is example `i`'s anchor 0; the reference generates every
    // other slot, all in one batch. The seed depends on the chunk only, so a resumed run
    // regenerates exactly what was lost.
    let n = chunk.len();
    let supplied = |a: usize, i: usize| if a == 0 { chunk[i].base.as_ref() } else { None };
    let slots: Vec<(usize, usize)> = (0..s.num_anchors)
        .flat_map(|a| (0..n).map(move |i| (a, i)))
        .collect();
    let to_generate: Vec<usize> = (0..slots.len())
        .filter(|&k| supplied(slots[k].0, slots[k].1).is_none())
        .collect();
    let prompts: Vec<Vec<u32>> = to_generate
        .iter()
        .map(|&k| chunk[slots[k].1].prompt.clone())
        .collect();
    let config = GenerationConfig {
        max_new_tokens: s.max_new_tokens,
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        seed: s.seed.wrapping_add(chunk_index),
        stop_tokens: vec![eos_token],
        pad_token,
    };
    let produced = if prompts.is_empty() {
        Vec::new()
    } else {
        generate(reference, &prompts, &config, device, |_, _| {})
            .map_err(|e| AnchorError::Generation(e.to_string()))?
    };
    report.generated_tokens += produced.iter().map(Vec::len).sum::<usize>();
    let mut generated: Vec<Vec<u32>> = slots
        .iter()
        .map(|&(a, i)| supplied(a, i).cloned().unwrap_or_default())
        .collect();
    for (k, ids) in to_generate.into_iter().zip(produced) {
        generated[k] = ids;
    }

    // Reference log-probs of [chosen; rejected; base × anchors] in one scoring batch.
    let batch = TokenBatch::from_pairs(
        chunk
            .iter()
            .map(|e| (&e.prompt[..], &e.chosen[..]))
            .chain(chunk.iter().map(|e| (&e.prompt[..], &e.rejected[..])))
            .chain(
                generated
                    .iter()
                    .enumerate()
                    .map(|(k, base)| (&chunk[k % n].prompt[..], &base[..])),
            ),
        pad_token,
    );
    let logps = sequence_logprobs(reference, &batch, device)
        .map_err(|e| AnchorError::Scoring(e.to_string()))?;
    let totals: Vec<f32> = logps
        .total
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();

    Ok(chunk
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let anchors: Vec<usize> = (0..s.num_anchors).map(|a| a * n + i).collect();
            ExampleAnchors {
                line: e.line,
                base: anchors.iter().map(|&k| generated[k].clone()).collect(),
                chosen_logp: totals[i],
                rejected_logp: totals[n + i],
                base_logps: anchors.iter().map(|&k| totals[2 * n + k]).collect(),
                chosen_tokens: e.chosen.len(),
                rejected_tokens: e.rejected.len(),
                base_tokens: anchors.iter().map(|&k| generated[k].len()).collect(),
            }
        })
        .collect())
}
