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

use bapo_data::{ExampleResponses, Packing, PreferenceBatch, Slot, TokenizedExample};
use bapo_model::{CausalModel, Generation, GenerationConfig};
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
    /// Examples per chunk file.
    pub chunk_size: usize,
    /// Rows the reference decodes together. A speed setting: not part of the fingerprint.
    #[serde(skip, default = "default_decode_batch")]
    pub decode_batch: usize,
}

fn default_decode_batch() -> usize {
    GenerationConfig::default().max_batch
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
            decode_batch: default_decode_batch(),
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

/// sha256 of a model: of its GGUF file, or of a checkpoint folder's config, tokenizer and
/// weight files (a Hugging Face model id is resolved to its snapshot folder first). A cache
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
            name.ends_with(".safetensors") || name == "config.json" || name == "tokenizer.json"
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
    tokens: (u32, u32),
    cache_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(AnchorProgress),
) -> Result<(Vec<ExampleAnchors>, AnchorReport), AnchorError> {
    let sets = [AnchorSet { examples, inputs }];
    let mut results = compute_anchor_sets(reference, &sets, tokens, cache_dir, device, progress)?;
    Ok(results.remove(0))
}

/// One set of examples whose anchors are cached under its own fingerprint.
#[derive(Debug, Clone, Copy)]
pub struct AnchorSet<'a> {
    pub examples: &'a [TokenizedExample],
    pub inputs: &'a FingerprintInputs,
}

/// Computes (or reuses) the anchors of several sets with one reference (a run's training
/// examples and each user's held-out examples), each in its own cache folder. The base
/// responses of every missing chunk of every set with the same generation settings are
/// generated together (continuous batching); each chunk is scored and written as soon as
/// its last base response ends, so a killed run loses little. Returns each set's anchors
/// in example order, with what was done for it; `progress` sees all sets together.
pub fn compute_anchor_sets<M: CausalModel>(
    reference: &M,
    sets: &[AnchorSet<'_>],
    (eos_token, pad_token): (u32, u32),
    cache_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(AnchorProgress),
) -> Result<Vec<(Vec<ExampleAnchors>, AnchorReport)>, AnchorError> {
    let total: usize = sets.iter().map(|s| s.examples.len()).sum();
    let mut done = 0;
    let mut generated_tokens = 0;
    let mut reports = vec![AnchorReport::default(); sets.len()];
    let mut finished: Vec<Vec<Option<Vec<ExampleAnchors>>>> = Vec::with_capacity(sets.len());
    let mut dirs = Vec::with_capacity(sets.len());
    let mut pending: Vec<PendingChunk> = Vec::new();
    for (set_index, set) in sets.iter().enumerate() {
        let s = &set.inputs.settings;
        if s.chunk_size == 0 {
            return Err(AnchorError::Settings(
                "chunk_size must be at least 1".into(),
            ));
        }
        let dir = cache_dir.join(set.inputs.fingerprint());
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let inputs_file = dir.join("inputs.json");
        if !inputs_file.exists() {
            let json = serde_json::to_string_pretty(set.inputs).unwrap_or_default();
            write_atomically(&inputs_file, json.as_bytes())?;
        }
        // Chunks already in the cache are read; the others wait for their base responses.
        let mut chunks_done = Vec::new();
        for (index, chunk) in set.examples.chunks(s.chunk_size).enumerate() {
            let path = chunk_path(&dir, index);
            if path.exists() {
                chunks_done.push(Some(read_chunk(&path, chunk, set.inputs)?));
                reports[set_index].reused_chunks += 1;
                done += chunk.len();
                progress(AnchorProgress {
                    done,
                    total,
                    generated_tokens,
                });
            } else {
                chunks_done.push(None);
                pending.push(PendingChunk::new(set_index, index, chunk, s.num_anchors));
            }
        }
        finished.push(chunks_done);
        dirs.push(dir);
    }

    let chunk_of = |c: &PendingChunk| {
        let s = &sets[c.set].inputs.settings;
        let first = c.index * s.chunk_size;
        &sets[c.set].examples[first..first + c.size]
    };
    let mut write = |chunk: PendingChunk,
                     reports: &mut [AnchorReport],
                     done: &mut usize,
                     generated_tokens: usize|
     -> Result<(), AnchorError> {
        let settings = &sets[chunk.set].inputs.settings;
        let examples = chunk_of(&chunk);
        let anchors = score_chunk(
            reference,
            examples,
            chunk.generated,
            settings,
            pad_token,
            device,
        )?;
        let json = serde_json::to_string(&anchors).unwrap_or_default();
        write_atomically(&chunk_path(&dirs[chunk.set], chunk.index), json.as_bytes())?;
        reports[chunk.set].computed_chunks += 1;
        *done += anchors.len();
        progress(AnchorProgress {
            done: *done,
            total,
            generated_tokens,
        });
        finished[chunk.set][chunk.index] = Some(anchors);
        Ok(())
    };
    // Chunks with nothing to generate (supplied base responses, or no anchors) are scored
    // at once.
    for chunk in pending.iter_mut().filter(|c| c.remaining == 0) {
        write(chunk.take(), &mut reports, &mut done, generated_tokens)?;
    }

    // One generation per distinct generation setting (in practice one for all sets).
    let mut groups: Vec<(GenerationConfig, Vec<usize>)> = Vec::new();
    for (p, chunk) in pending.iter().enumerate().filter(|(_, c)| c.remaining > 0) {
        let s = &sets[chunk.set].inputs.settings;
        let config = GenerationConfig {
            max_new_tokens: s.max_new_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed,
            stop_tokens: vec![eos_token],
            pad_token,
            max_batch: s.decode_batch,
        };
        match groups.iter_mut().find(|(c, _)| *c == config) {
            Some((_, members)) => members.push(p),
            None => groups.push((config, vec![p])),
        }
    }
    for (config, members) in groups {
        // Every slot the reference must generate: (pending chunk, slot), prompt and seed.
        let mut jobs = Vec::new();
        let mut prompts = Vec::new();
        let mut seeds = Vec::new();
        for &p in &members {
            let chunk = &pending[p];
            let s = &sets[chunk.set].inputs.settings;
            let examples = chunk_of(chunk);
            for k in chunk.missing_slots() {
                jobs.push((p, k));
                prompts.push(examples[k % chunk.size].prompt.clone());
                // A slot's seed depends on its place in its set only, so a resumed run
                // regenerates exactly what was lost.
                let place = chunk.index * s.chunk_size * s.num_anchors + k;
                seeds.push(s.seed.wrapping_add(place as u64));
            }
        }
        let mut generation = Generation::new(reference, &prompts, &config, device)
            .map_err(|e| AnchorError::Generation(e.to_string()))?
            .with_row_seeds(seeds);
        while let Some(ended) = generation.step(|_, _| {}) {
            for (job, tokens) in ended {
                let (p, k) = jobs[job];
                generated_tokens += tokens.len();
                let chunk = &mut pending[p];
                reports[chunk.set].generated_tokens += tokens.len();
                chunk.generated[k] = tokens;
                chunk.remaining -= 1;
                if chunk.remaining == 0 {
                    write(chunk.take(), &mut reports, &mut done, generated_tokens)?;
                }
            }
        }
    }
    Ok(finished
        .into_iter()
        .zip(reports)
        .map(|(chunks, report)| (chunks.into_iter().flatten().flatten().collect(), report))
        .collect())
}

fn chunk_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("chunk-{index:06}.json"))
}

/// A cached chunk, checked against the examples it should hold, the anchors per example and
/// the vocabulary its `inputs` name: an edited or damaged file is refused here, never handed
/// to the model or to training (which indexes every anchor it expects).
fn read_chunk(
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
        if a.base_logps.len() != a.base.len()
            || a.base_tokens != a.base.iter().map(Vec::len).collect::<Vec<_>>()
            || a.chosen_tokens != e.chosen.len()
            || a.rejected_tokens != e.rejected.len()
        {
            return Err(corrupt(format!(
                "the entry of line {line} has counts that do not match its responses"
            )));
        }
        let logps = [a.chosen_logp, a.rejected_logp];
        if logps.iter().chain(&a.base_logps).any(|v| !v.is_finite()) {
            return Err(corrupt(format!(
                "the entry of line {line} has a log-prob that is not a finite number"
            )));
        }
    }
    Ok(anchors)
}

/// A chunk whose base responses are being generated. Slot `a·n + i` holds anchor `a` of
/// example `i`; a base response supplied in the data (`base`) is example `i`'s anchor 0.
#[derive(Default)]
struct PendingChunk {
    /// Its set, and its place in the set.
    set: usize,
    index: usize,
    /// Examples in the chunk (`n`).
    size: usize,
    generated: Vec<Vec<u32>>,
    /// Slots still being generated.
    remaining: usize,
    supplied: Vec<bool>,
}

impl PendingChunk {
    fn new(set: usize, index: usize, chunk: &[TokenizedExample], num_anchors: usize) -> Self {
        let n = chunk.len();
        let slots = num_anchors * n;
        let supplied: Vec<bool> = (0..slots)
            .map(|k| k < n && chunk[k].base.is_some())
            .collect();
        let generated = (0..slots)
            .map(|k| {
                if supplied[k] {
                    chunk[k].base.clone().unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect();
        PendingChunk {
            set,
            index,
            size: n,
            generated,
            remaining: supplied.iter().filter(|s| !**s).count(),
            supplied,
        }
    }

    fn missing_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.supplied.len()).filter(|&k| !self.supplied[k])
    }

    /// Moves the chunk out (its slot in the pending list stays, empty).
    fn take(&mut self) -> PendingChunk {
        std::mem::take(self)
    }
}

/// Writes to `path.partial`, then renames: a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AnchorError> {
    let partial = path.with_extension("partial");
    fs::write(&partial, bytes).map_err(|e| io(&partial, e))?;
    fs::rename(&partial, path).map_err(|e| io(path, e))
}

/// The reference log-probs of a chunk's chosen, rejected and base responses (`generated`,
/// slot-major as in [`PendingChunk`]), as its cache entries.
fn score_chunk<M: CausalModel>(
    reference: &M,
    chunk: &[TokenizedExample],
    generated: Vec<Vec<u32>>,
    s: &AnchorSettings,
    pad_token: u32,
    device: &Device,
) -> Result<Vec<ExampleAnchors>, AnchorError> {
    let n = chunk.len();
    // Reference log-probs of every example's chosen, rejected and base responses in one
    // scoring batch, each prompt computed once.
    let bases: Vec<Vec<Vec<u32>>> = (0..n)
        .map(|i| {
            (0..s.num_anchors)
                .map(|a| generated[a * n + i].clone())
                .collect()
        })
        .collect();
    let batch = PreferenceBatch::new(
        chunk.iter().zip(&bases).map(|(e, base)| ExampleResponses {
            prompt: &e.prompt,
            chosen: &e.chosen,
            rejected: &e.rejected,
            base,
        }),
        s.num_anchors,
        Packing::SharedPrompt,
        pad_token,
    )
    .map_err(|e| AnchorError::Scoring(e.to_string()))?;
    let logps = batch
        .input
        .scored_logits(reference, device)
        .map_err(|e| AnchorError::Scoring(e.to_string()))?
        .logprobs(device);
    let totals: Vec<f32> = logps
        .total
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();
    let at = |i: usize, slot: Slot| totals[batch.sequence(i, slot)];

    Ok(chunk
        .iter()
        .enumerate()
        .zip(bases)
        .map(|((i, e), base)| ExampleAnchors {
            line: e.line,
            base_tokens: base.iter().map(Vec::len).collect(),
            base,
            chosen_logp: at(i, Slot::Chosen),
            rejected_logp: at(i, Slot::Rejected),
            base_logps: (0..s.num_anchors).map(|a| at(i, Slot::Base(a))).collect(),
            chosen_tokens: e.chosen.len(),
            rejected_tokens: e.rejected.len(),
        })
        .collect())
}
