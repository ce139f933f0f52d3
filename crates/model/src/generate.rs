//! Batched text generation with a KV cache: greedy, temperature, top-k and top-p sampling,
//! seeded, stopping at an end-of-sequence token or after `max_new_tokens`, with a callback for
//! every token as it is produced.
//!
//! Prompts of different lengths are **left**-padded so every row's last prompt token sits at
//! the same position; each row keeps its own RoPE positions (counted from its first real
//! token) and never attends to its pads, so a row's output does not depend on the others in
//! its batch. Run it on a module without autodiff (`Module::valid()`): nothing here calls
//! `backward()`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::causal::{CausalModel, KvCache};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on generated tokens per prompt.
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = no limit).
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Tokens that end a sequence (they are included in the output).
    pub stop_tokens: Vec<u32>,
    /// Token used to pad prompts and finished rows.
    pub pad_token: u32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
            pad_token: 0,
        }
    }
}

/// Bad generation settings or input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("prompt {0} is empty")]
    EmptyPrompt(usize),
    #[error("temperature {0} must be a finite number >= 0")]
    Temperature(f64),
    #[error("top_p {0} must be in (0, 1]")]
    TopP(f64),
}

/// Generates continuations of `prompts` (token ids); returns the new tokens of each.
/// `on_token(row, token)` is called for every token as it is chosen.
pub fn generate<M: CausalModel + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    device: &Device,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerateError> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(GenerateError::EmptyPrompt(i));
    }
    if !config.temperature.is_finite() || config.temperature < 0.0 {
        return Err(GenerateError::Temperature(config.temperature));
    }
    if !(config.top_p > 0.0 && config.top_p <= 1.0) {
        return Err(GenerateError::TopP(config.top_p));
    }
    let rows = prompts.len();
    let mut outputs = vec![Vec::new(); rows];
    if rows == 0 || config.max_new_tokens == 0 {
        return Ok(outputs);
    }

    // Left padding: row b's real tokens start at `pads[b]`.
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut ids = Vec::with_capacity(rows * width);
    for (prompt, &pad) in prompts.iter().zip(&pads) {
        ids.extend(std::iter::repeat_n(i64::from(config.pad_token), pad));
        ids.extend(prompt.iter().map(|&t| i64::from(t)));
    }
    let positions: Vec<Vec<usize>> = pads
        .iter()
        .map(|&pad| (0..width).map(|j| j.saturating_sub(pad)).collect())
        .collect();
    // Causal, and no attending to pads; a pad query attends to itself only, which keeps its
    // (unused) row finite.
    let mut mask = Vec::with_capacity(rows * width * width);
    for &pad in &pads {
        for i in 0..width {
            mask.extend((0..width).map(|j| j > i || (j < pad && j != i)));
        }
    }

    let mut cache = KvCache::new();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, width]), device);
    let hidden = model.hidden_states_cached(input, &positions, mask, &mut cache);
    let mut logits = model.logits(hidden.narrow(1, width - 1, 1));

    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut finished = vec![false; rows];
    for step in 0..config.max_new_tokens {
        let [_, _, vocab] = logits.dims();
        let values: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap_or_default();
        let mut next = Vec::with_capacity(rows);
        for row in 0..rows {
            if finished[row] {
                next.push(config.pad_token);
                continue;
            }
            let token = pick(&values[row * vocab..(row + 1) * vocab], config, &mut rng);
            outputs[row].push(token);
            on_token(row, token);
            if config.stop_tokens.contains(&token) {
                finished[row] = true;
            }
            next.push(token);
        }
        if finished.iter().all(|&f| f) || step + 1 == config.max_new_tokens {
            break;
        }
        // One new position per row; keys are every cached position plus this one.
        let keys = cache.len() + 1;
        let positions: Vec<Vec<usize>> = pads.iter().map(|&pad| vec![width + step - pad]).collect();
        let mask: Vec<bool> = pads
            .iter()
            .flat_map(|&pad| (0..keys).map(move |j| j < pad))
            .collect();
        let ids: Vec<i64> = next.iter().map(|&t| i64::from(t)).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, 1]), device);
        logits = model.logits(model.hidden_states_cached(input, &positions, mask, &mut cache));
    }
    Ok(outputs)
}

/// Chooses a token from one row of logits.
fn pick(logits: &[f32], config: &GenerationConfig, rng: &mut StdRng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if config.temperature == 0.0 {
        return argmax();
    }
    // Candidates sorted by logit, cut by top-k, turned into probabilities, cut by top-p.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if config.top_k > 0 {
        order.truncate(config.top_k);
    }
    let max = f64::from(logits[order[0]]);
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - max) / config.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if config.top_p < 1.0 {
        let mut cumulative = 0.0;
        let keep = weights
            .iter()
            .position(|w| {
                cumulative += w / total;
                cumulative >= config.top_p
            })
            .map_or(weights.len(), |i| i + 1);
        weights.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = weights.iter().sum();
    let mut draw = rng.random::<f64>() * total;
    for (w, &i) in weights.iter().zip(&order) {
        draw -= w;
        if draw <= 0.0 {
            return i as u32;
        }
    }
    order.last().map_or_else(argmax, |&i| i as u32)
}
