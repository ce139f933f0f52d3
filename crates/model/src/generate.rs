//! Batched text generation with a KV cache: greedy, temperature, top-k and top-p sampling,
//! seeded, stopping at an end-of-sequence token or after `max_new_tokens`, with a callback for
//! every token as it is produced.
//!
//! Rows decode with continuous batching ([`Generation`]): a row that ends leaves the batch and
//! a waiting prompt takes its place. Prompts of different lengths are **left**-padded so every
//! row's newest token sits at the same cache position; each row keeps its own RoPE positions
//! (counted from its first real token), never attends to its pads and samples from its own
//! seeded generator, so a row's output does not depend on the others in its batch. Run it on a
//! module without autodiff (`Module::valid()`): nothing here calls `backward()`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::causal::{CausalModel, KvCache};

/// How the next token is picked. The one definition of these knobs: generation, the anchor
/// settings, a run config's `[anchors]` and `bapo generate`'s flags all use it. The default
/// is greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = no limit).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p, in (0, 1] (1 = no limit).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1.0))]
    pub top_p: f64,
    /// Seed of the sampler.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Refuses a temperature that is negative or not finite, and a `top_p` outside (0, 1].
    pub fn check(&self) -> Result<(), GenerateError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(GenerateError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(GenerateError::TopP(self.top_p));
        }
        Ok(())
    }

    /// Whether it always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on generated tokens per prompt.
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end a sequence (they are included in the output).
    pub stop_tokens: Vec<u32>,
    /// Token used to pad prompts.
    pub pad_token: u32,
    /// Rows decoded together (continuous batching): more rows use the matrix units better
    /// and cost more memory for the KV cache.
    pub max_batch: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 128,
            sampling: Sampling::default(),
            stop_tokens: Vec::new(),
            pad_token: 0,
            max_batch: 64,
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
    let mut outputs = vec![Vec::new(); prompts.len()];
    let mut generation = Generation::new(model, prompts, config, device)?;
    while let Some(finished) = generation.step(&mut on_token) {
        for (row, tokens) in finished {
            outputs[row] = tokens;
        }
    }
    Ok(outputs)
}

/// A row being decoded.
struct Slot {
    /// Index of its prompt.
    prompt: usize,
    /// Tokens generated so far.
    output: Vec<u32>,
    /// Cache positions before its first real token (left padding).
    pad: usize,
    /// The sampler of this prompt: seeded from the prompt's index (or the caller's seed for
    /// it), so a row's tokens do not depend on which other rows share its batch.
    rng: StdRng,
}

/// Continuous batching: up to `max_batch` rows decode together; a row that ends leaves the
/// batch at once (its cache rows are dropped), and waiting prompts are prefilled and join
/// the batch when enough slots are free. Every row keeps its own RoPE positions and never
/// attends to its left padding, so its tokens are those it would get alone.
///
/// Drive it with [`Generation::step`] until it returns `None`.
pub struct Generation<'a, M: CausalModel + ?Sized> {
    model: &'a M,
    prompts: &'a [Vec<u32>],
    config: GenerationConfig,
    device: Device,
    /// Next prompt to admit.
    waiting: usize,
    /// Active rows, in cache-row order.
    slots: Vec<Slot>,
    cache: KvCache,
    /// Logits `[rows, 1, vocab]` of the next token of every active row.
    logits: Option<Tensor<3>>,
    /// Per-prompt sampler seeds given by the caller ([`Generation::with_row_seeds`]).
    row_seeds: Option<Vec<u64>>,
}

impl<'a, M: CausalModel + ?Sized> Generation<'a, M> {
    /// Checks the settings and prompts; nothing runs until the first [`step`](Self::step).
    pub fn new(
        model: &'a M,
        prompts: &'a [Vec<u32>],
        config: &GenerationConfig,
        device: &Device,
    ) -> Result<Self, GenerateError> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(GenerateError::EmptyPrompt(i));
        }
        config.sampling.check()?;
        Ok(Generation {
            model,
            prompts,
            config: config.clone(),
            device: device.clone(),
            waiting: 0,
            slots: Vec::new(),
            cache: KvCache::new(),
            logits: None,
            row_seeds: None,
        })
    }

    /// Seeds the sampler of prompt `i` with `seeds[i]` instead of one derived from
    /// `config.seed` and `i` (a caller whose prompts have a fixed place elsewhere keeps their
    /// samples independent of which prompts run together).
    pub fn with_row_seeds(mut self, seeds: Vec<u64>) -> Self {
        self.row_seeds = Some(seeds);
        self
    }

    /// Admits waiting prompts if there is room, then chooses one token for every active row
    /// and feeds it back. Returns the rows that ended on this step (prompt index, tokens),
    /// possibly none; `None` once every prompt is done.
    pub fn step(&mut self, mut on_token: impl FnMut(usize, u32)) -> Option<Vec<(usize, Vec<u32>)>> {
        if self.config.max_new_tokens == 0 {
            // Nothing to generate: every prompt ends at once, empty.
            let rest: Vec<_> = (self.waiting..self.prompts.len())
                .map(|i| (i, Vec::new()))
                .collect();
            self.waiting = self.prompts.len();
            return (!rest.is_empty()).then_some(rest);
        }
        self.admit();
        let logits = self.logits.take()?;
        let [rows, _, vocab] = logits.dims();
        let values: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap_or_default();
        let mut next = Vec::with_capacity(rows);
        let mut keep = Vec::with_capacity(rows);
        let mut finished = Vec::new();
        for (row, slot) in self.slots.iter_mut().enumerate() {
            let token = pick(
                &values[row * vocab..(row + 1) * vocab],
                &self.config.sampling,
                &mut slot.rng,
            );
            slot.output.push(token);
            on_token(slot.prompt, token);
            if self.config.stop_tokens.contains(&token)
                || slot.output.len() >= self.config.max_new_tokens
            {
                finished.push(row);
            } else {
                keep.push(row);
                next.push(token);
            }
        }
        let mut done = Vec::with_capacity(finished.len());
        for &row in finished.iter().rev() {
            let slot = self.slots.remove(row);
            done.push((slot.prompt, slot.output));
        }
        done.reverse();
        if !finished.is_empty() {
            self.cache.keep_rows(&keep);
            self.trim_common_padding();
        }
        if !self.slots.is_empty() {
            self.decode(&next);
        }
        Some(done)
    }

    /// Prefills waiting prompts into free slots: all of them at the start, later only once
    /// a quarter of the batch is free, because every admission copies the whole cache.
    fn admit(&mut self) {
        let capacity = self.config.max_batch.max(1);
        let free = capacity.saturating_sub(self.slots.len());
        let waiting = self.prompts.len() - self.waiting;
        if waiting == 0 || free == 0 || (!self.slots.is_empty() && free < capacity.div_ceil(4)) {
            return;
        }
        let take = free.min(waiting);
        let first = self.waiting;
        self.waiting += take;
        let prompts = &self.prompts[first..first + take];

        // Left padding: row b's real tokens start at `pads[b]`.
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
        let mut ids = Vec::with_capacity(take * width);
        for (prompt, &pad) in prompts.iter().zip(&pads) {
            ids.extend(std::iter::repeat_n(i64::from(self.config.pad_token), pad));
            ids.extend(prompt.iter().map(|&t| i64::from(t)));
        }
        let positions: Vec<Vec<usize>> = pads
            .iter()
            .map(|&pad| (0..width).map(|j| j.saturating_sub(pad)).collect())
            .collect();
        // Causal, and no attending to pads; a pad query attends to itself only, which keeps
        // its (unused) row finite.
        let mut mask = Vec::with_capacity(take * width * width);
        for &pad in &pads {
            for i in 0..width {
                mask.extend((0..width).map(|j| j > i || (j < pad && j != i)));
            }
        }
        let mut cache = KvCache::new();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [take, width]), &self.device);
        let hidden = self
            .model
            .hidden_states_cached(input, &positions, mask, &mut cache);
        let logits = self.model.logits(hidden.narrow(1, width - 1, 1));

        // Join the batch: the shorter cache is padded on the left to the longer one.
        let current = self.cache.len();
        let (mut pads, width) = (pads, width);
        if self.slots.is_empty() {
            self.cache = cache;
        } else {
            if width < current {
                cache.pad_left(current - width);
                pads.iter_mut().for_each(|p| *p += current - width);
            } else if width > current {
                self.cache.pad_left(width - current);
                self.slots.iter_mut().for_each(|s| s.pad += width - current);
            }
            self.cache.append_rows(cache);
        }
        for (offset, pad) in pads.into_iter().enumerate() {
            let prompt = first + offset;
            self.slots.push(Slot {
                prompt,
                output: Vec::new(),
                pad,
                rng: StdRng::seed_from_u64(match &self.row_seeds {
                    Some(seeds) => row_seed(seeds.get(prompt).copied().unwrap_or_default(), 0),
                    None => row_seed(self.config.sampling.seed, prompt),
                }),
            });
        }
        self.logits = Some(match self.logits.take() {
            Some(active) => Tensor::cat(vec![active, logits], 0),
            None => logits,
        });
    }

    /// Feeds every active row its newest token: one position per row; keys are every cached
    /// position plus this one.
    fn decode(&mut self, next: &[u32]) {
        let rows = self.slots.len();
        let length = self.cache.len();
        let positions: Vec<Vec<usize>> = self.slots.iter().map(|s| vec![length - s.pad]).collect();
        let mask: Vec<bool> = self
            .slots
            .iter()
            .flat_map(|s| (0..=length).map(move |j| j < s.pad))
            .collect();
        let ids: Vec<i64> = next.iter().map(|&t| i64::from(t)).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, 1]), &self.device);
        let hidden = self
            .model
            .hidden_states_cached(input, &positions, mask, &mut self.cache);
        self.logits = Some(self.model.logits(hidden));
    }

    /// Drops the cache positions that are padding in every row (left behind by rows that
    /// ended), so attention does not keep scanning them.
    fn trim_common_padding(&mut self) {
        let Some(common) = self.slots.iter().map(|s| s.pad).min() else {
            self.cache = KvCache::new();
            return;
        };
        if common > 0 {
            self.cache.drop_left(common);
            self.slots.iter_mut().for_each(|s| s.pad -= common);
        }
    }
}

/// The sampler seed of prompt `index`: SplitMix64 of (seed, index), so neighbouring
/// prompts get unrelated streams.
fn row_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Chooses a token from one row of logits.
fn pick(logits: &[f32], sampling: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if sampling.is_greedy() {
        return argmax();
    }
    // Candidates sorted by logit, cut by top-k, turned into probabilities, cut by top-p.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    let max = f64::from(logits[order[0]]);
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if sampling.top_p < 1.0 {
        let mut cumulative = 0.0;
        let keep = weights
            .iter()
            .position(|w| {
                cumulative += w / total;
                cumulative >= sampling.top_p
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
