//! Sequence log-probs: `log π(token_t | tokens_<t)` for the tokens marked as scored (a
//! completion), per token and summed per sequence, in f32.
//!
//! The LM head runs only on the positions that predict a scored token, and each log-prob is
//! the target's logit minus the row's logsumexp: no `[batch, tokens, vocab]` log-softmax is
//! ever built (SmolLM2's vocabulary is 49,152 wide, so that tensor would dominate memory).
//! Works on an autodiff device (the policy) and on a plain one (the reference).

use std::ops::Range;

use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::causal::CausalModel;

/// Token sequences to score, right-padded here to the longest.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Token ids of each sequence (prompt followed by completion).
    pub ids: Vec<Vec<u32>>,
    /// Per token, whether its log-prob counts (true on completion tokens). The first token of
    /// a sequence has no context and cannot be scored.
    pub scored: Vec<Vec<bool>>,
    /// The id used for padding (never scored, never seen by real tokens under causal attention).
    pub pad_id: u32,
}

impl TokenBatch {
    /// Prompt + completion sequences with the completion tokens scored: the batch every
    /// scorer in the project builds.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a [u32], &'a [u32])>,
        pad_id: u32,
    ) -> TokenBatch {
        let (mut ids, mut scored) = (Vec::new(), Vec::new());
        for (prompt, completion) in pairs {
            ids.push([prompt, completion].concat());
            scored.push(
                (0..prompt.len() + completion.len())
                    .map(|i| i >= prompt.len())
                    .collect(),
            );
        }
        TokenBatch {
            ids,
            scored,
            pad_id,
        }
    }
}

/// Log-probs of the scored tokens.
#[derive(Debug, Clone)]
pub struct SequenceLogprobs {
    /// `[batch, tokens]`: at `[b, t]` the log-prob of token `t` of sequence `b` if scored, else 0.
    pub per_token: Tensor<2>,
    /// `[batch]`: the sum over each sequence's scored tokens.
    pub total: Tensor<1>,
}

/// A malformed [`TokenBatch`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("sequence {index}: {ids} token ids but {scored} scored flags")]
    MaskLength {
        index: usize,
        ids: usize,
        scored: usize,
    },
    #[error("sequence {index}: its first token is marked as scored, but it has no context")]
    FirstTokenScored { index: usize },
    #[error("the batch is empty")]
    Empty,
    #[error("example {index}: {wanted} base response(s) wanted, {found} found")]
    MissingBase {
        index: usize,
        wanted: usize,
        found: usize,
    },
}

impl TokenBatch {
    fn validate(&self) -> Result<usize, BatchError> {
        if self.ids.is_empty() {
            return Err(BatchError::Empty);
        }
        for (index, (ids, scored)) in self.ids.iter().zip(&self.scored).enumerate() {
            if ids.len() != scored.len() {
                return Err(BatchError::MaskLength {
                    index,
                    ids: ids.len(),
                    scored: scored.len(),
                });
            }
            if scored.first() == Some(&true) {
                return Err(BatchError::FirstTokenScored { index });
            }
        }
        if self.ids.len() != self.scored.len() {
            return Err(BatchError::MaskLength {
                index: self.ids.len().min(self.scored.len()),
                ids: self.ids.len(),
                scored: self.scored.len(),
            });
        }
        Ok(self.ids.iter().map(Vec::len).max().unwrap_or(0))
    }
}

/// Completions that share a prompt, scored with the prompt computed once: each group is one
/// row `[prompt | completion 1 | completion 2 | …]` in which every completion attends to the
/// prompt and to itself only, with positions continuing from the end of the prompt. Each
/// completion's log-probs are therefore those of `prompt + completion` scored alone
/// (prefix sharing, arXiv 2410.20305), while a preference pair costs `P + C + R` tokens
/// instead of `2P + C + R`.
///
/// Sequences are numbered group by group: group 0's completions, then group 1's, …
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SharedPromptBatch {
    pub groups: Vec<PromptGroup>,
    /// The id used for padding rows to the longest.
    pub pad_id: u32,
}

/// One prompt and its completions (every completion token is scored).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptGroup {
    pub prompt: Vec<u32>,
    pub completions: Vec<Vec<u32>>,
}

impl SharedPromptBatch {
    /// Sequences (completions) in the batch.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.completions.len()).sum()
    }

    /// Whether the batch has no sequence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens the model processes (prompts once, padding not counted).
    pub fn tokens(&self) -> usize {
        self.groups.iter().map(PromptGroup::row_len).sum()
    }

    /// The same sequences as one prompt + completion row each (the unshared layout).
    pub fn unshared(&self) -> TokenBatch {
        TokenBatch::from_pairs(
            self.groups
                .iter()
                .flat_map(|g| g.completions.iter().map(|c| (&g.prompt[..], &c[..]))),
            self.pad_id,
        )
    }
}

impl PromptGroup {
    fn row_len(&self) -> usize {
        self.prompt.len() + self.completions.iter().map(Vec::len).sum::<usize>()
    }
}

/// The model input of a [`SharedPromptBatch`]: ids, positions, the attention mask and, for
/// every scored token, the flat hidden-state row that predicts it.
struct SharedLayout {
    ids: Vec<i64>,
    positions: Vec<Vec<usize>>,
    /// `[groups, tokens, tokens]`, `true` = may not attend.
    mask: Vec<bool>,
    tokens: usize,
    predictors: Vec<i64>,
    targets: Vec<u32>,
    sequence: Vec<usize>,
    slots: Vec<usize>,
    /// Longest completion: the width of the per-token output.
    longest: usize,
}

/// Lays `batch` out as one padded row per group (see [`SharedPromptBatch`]).
fn shared_layout(batch: &SharedPromptBatch) -> Result<ScoringLayout, BatchError> {
    if batch.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut layout = SharedLayout::with_capacity_for(batch);
    let mut next_sequence = 0;
    for (g, group) in batch.groups.iter().enumerate() {
        layout.push_group(g, group, batch.pad_id, &mut next_sequence)?;
    }
    Ok(ScoringLayout {
        rows: batch.groups.len(),
        tokens: layout.tokens,
        ids: layout.ids,
        attention: AttentionPattern::Masked {
            positions: layout.positions,
            mask: layout.mask,
        },
        predictors: layout.predictors,
        targets: layout.targets,
        sequence: layout.sequence,
        slots: layout.slots,
        shape: [batch.len(), layout.longest],
    })
}

impl SharedLayout {
    /// An empty layout sized for `batch`: rows as long as its longest group, per-token output
    /// as wide as its longest completion.
    fn with_capacity_for(batch: &SharedPromptBatch) -> SharedLayout {
        let tokens = batch
            .groups
            .iter()
            .map(PromptGroup::row_len)
            .max()
            .unwrap_or(0);
        let longest = batch
            .groups
            .iter()
            .flat_map(|g| g.completions.iter().map(Vec::len))
            .max()
            .unwrap_or(0);
        let groups = batch.groups.len();
        SharedLayout {
            ids: Vec::with_capacity(groups * tokens),
            positions: Vec::with_capacity(groups),
            mask: Vec::with_capacity(groups * tokens * tokens),
            tokens,
            predictors: Vec::new(),
            targets: Vec::new(),
            sequence: Vec::new(),
            slots: Vec::new(),
            longest,
        }
    }

    /// Appends group `g` as one padded row, numbering its completions from `next_sequence`
    /// (advanced past them).
    fn push_group(
        &mut self,
        g: usize,
        group: &PromptGroup,
        pad_id: u32,
        next_sequence: &mut usize,
    ) -> Result<(), BatchError> {
        let p = group.prompt.len();
        if p == 0 && group.completions.iter().any(|c| !c.is_empty()) {
            return Err(BatchError::FirstTokenScored {
                index: *next_sequence,
            });
        }
        // Segment of every token: 0 the prompt, j + 1 completion j, None padding.
        let mut segment = vec![Some(0); p];
        let mut positions: Vec<usize> = (0..p).collect();
        self.ids.extend(group.prompt.iter().map(|&t| i64::from(t)));
        for (j, completion) in group.completions.iter().enumerate() {
            let start = segment.len();
            for (i, &token) in completion.iter().enumerate() {
                // Token i is predicted by the one before it: the prompt's last token for
                // the first, which every completion shares.
                let predictor = if i == 0 { p - 1 } else { start + i - 1 };
                self.predictors.push((g * self.tokens + predictor) as i64);
                self.targets.push(token);
                self.sequence.push(*next_sequence);
                self.slots.push(*next_sequence * self.longest + i);
            }
            self.ids.extend(completion.iter().map(|&t| i64::from(t)));
            segment.extend(std::iter::repeat_n(Some(j + 1), completion.len()));
            positions.extend(p..p + completion.len());
            *next_sequence += 1;
        }
        let real = segment.len();
        self.ids
            .extend(std::iter::repeat_n(i64::from(pad_id), self.tokens - real));
        segment.resize(self.tokens, None);
        positions.resize(self.tokens, 0);
        self.push_mask(&segment);
        self.positions.push(positions);
        Ok(())
    }

    /// Appends one row's `[tokens, tokens]` mask from its tokens' segments: causal within the
    /// prompt and each completion, every completion also seeing the prompt.
    fn push_mask(&mut self, segment: &[Option<usize>]) {
        for (q, query) in segment.iter().enumerate() {
            self.mask.extend(segment.iter().enumerate().map(|(k, key)| {
                let visible = match (query, key) {
                    // A pad attends to itself only, which keeps its (unused) row finite.
                    (None, _) => k == q,
                    (Some(_), None) => false,
                    (Some(sq), Some(sk)) => k <= q && (*sk == 0 || sk == sq),
                };
                !visible
            }));
        }
    }
}

/// How the rows of a [`ScoringLayout`] attend.
#[derive(Debug, Clone, PartialEq)]
pub enum AttentionPattern {
    /// Plain causal attention from position 0 (right padding is harmless: real tokens never
    /// see later pads).
    Causal,
    /// Explicit positions `[rows][tokens]` and mask `[rows · tokens · tokens]` (`true` = may
    /// not attend): packed rows such as a prompt shared by several completions.
    Masked {
        positions: Vec<Vec<usize>>,
        mask: Vec<bool>,
    },
}

impl AttentionPattern {
    /// The pattern of rows `range` of a batch `tokens` wide (a recomputed block runs a few
    /// rows at a time).
    pub fn of_rows(&self, range: Range<usize>, tokens: usize) -> AttentionPattern {
        match self {
            AttentionPattern::Causal => AttentionPattern::Causal,
            AttentionPattern::Masked { positions, mask } => {
                let per_row = tokens * tokens;
                AttentionPattern::Masked {
                    positions: positions[range.clone()].to_vec(),
                    mask: mask[range.start * per_row..range.end * per_row].to_vec(),
                }
            }
        }
    }
}

/// A batch laid out for the model: the ids it reads, how they attend, and which rows of its
/// final hidden states predict the scored tokens. Scoring is `hidden_states` → the predictor
/// rows → the LM head → log-probs; the stages are public so that training can run them apart
/// (recomputing blocks, or the LM head a chunk at a time).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringLayout {
    /// Token ids `[rows, tokens]`, row-major, padded.
    pub ids: Vec<i64>,
    pub rows: usize,
    pub tokens: usize,
    pub attention: AttentionPattern,
    /// For every scored token, the flat hidden-state row `r · tokens + t` that predicts it.
    pub predictors: Vec<i64>,
    /// For every scored token, its id.
    pub targets: Vec<u32>,
    /// For every scored token, the sequence it belongs to.
    pub sequence: Vec<usize>,
    /// For every scored token, its slot in the `shape` per-token output.
    pub slots: Vec<usize>,
    /// `[sequences, tokens]` of the per-token output (see [`ScoredLogits::shape`]).
    pub shape: [usize; 2],
}

impl ScoringLayout {
    /// The layout of one `prompt + completion` row per sequence.
    pub fn of_tokens(batch: &TokenBatch) -> Result<ScoringLayout, BatchError> {
        let tokens = batch.validate()?;
        let rows = batch.ids.len();
        let mut layout = ScoringLayout {
            ids: Vec::with_capacity(rows * tokens),
            rows,
            tokens,
            attention: AttentionPattern::Causal,
            predictors: Vec::new(),
            targets: Vec::new(),
            sequence: Vec::new(),
            slots: Vec::new(),
            shape: [rows, tokens],
        };
        for (b, (ids, scored)) in batch.ids.iter().zip(&batch.scored).enumerate() {
            layout.ids.extend(ids.iter().map(|&id| i64::from(id)));
            layout.ids.extend(std::iter::repeat_n(
                i64::from(batch.pad_id),
                tokens - ids.len(),
            ));
            for (t, _) in scored.iter().enumerate().filter(|(_, s)| **s) {
                layout.predictors.push((b * tokens + t - 1) as i64);
                layout.targets.push(ids[t]);
                layout.sequence.push(b);
                layout.slots.push(b * tokens + t);
            }
        }
        Ok(layout)
    }

    /// The layout of shared-prompt rows (see [`SharedPromptBatch`]).
    pub fn of_shared(batch: &SharedPromptBatch) -> Result<ScoringLayout, BatchError> {
        shared_layout(batch)
    }

    /// Scored tokens.
    pub fn scored_tokens(&self) -> usize {
        self.targets.len()
    }

    /// The ids as a tensor `[rows, tokens]` on `device`.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(self.ids.clone(), [self.rows, self.tokens]),
            device,
        )
    }

    /// `model`'s final hidden states `[rows, tokens, width]`.
    pub fn hidden_states<M: CausalModel + ?Sized>(&self, model: &M, device: &Device) -> Tensor<3> {
        let ids = self.ids_tensor(device);
        match &self.attention {
            AttentionPattern::Causal => model.hidden_states(ids),
            AttentionPattern::Masked { positions, mask } => {
                model.hidden_states_masked(ids, positions, mask.clone())
            }
        }
    }

    /// The rows of `hidden` `[rows, tokens, width]` that predict scored tokens, `[n, width]`.
    pub fn predictor_rows(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [rows, tokens, width] = hidden.dims();
        let device = hidden.device();
        hidden
            .reshape([rows * tokens, width])
            .select(0, self.predictor_index(&device))
    }

    /// The inverse of [`predictor_rows`](Self::predictor_rows) for a gradient: `[n, width]`
    /// placed at the predictor rows of a zero `[rows, tokens, width]`.
    pub fn hidden_of_rows(&self, values: Tensor<2>) -> Tensor<3> {
        let [_, width] = values.dims();
        let device = values.device();
        Tensor::<2>::zeros([self.rows * self.tokens, width], &device)
            .select_assign(
                0,
                self.predictor_index(&device),
                values,
                IndexingUpdateOp::Add,
            )
            .reshape([self.rows, self.tokens, width])
    }

    fn predictor_index(&self, device: &Device) -> Tensor<1, Int> {
        let n = self.predictors.len();
        Tensor::from_data(TensorData::new(self.predictors.clone(), [n]), device)
    }

    /// The LM head's output `logits` `[n, vocab]` on the predictor rows, with the bookkeeping
    /// that places each row.
    pub fn scored(&self, logits: Option<Tensor<2>>) -> ScoredLogits {
        ScoredLogits {
            logits,
            sequence: self.sequence.clone(),
            targets: self.targets.clone(),
            slots: self.slots.clone(),
            shape: self.shape,
        }
    }

    /// The scored tokens' log-probs under `model`, per token and per sequence, its LM head run
    /// `chunk` rows at a time (0: all at once) through [`chunked_target_logprobs`]: scoring
    /// that never holds `rows × tokens × vocabulary` logits.
    pub fn chunked_sequence_logprobs<M: CausalModel + ?Sized>(
        &self,
        model: &M,
        chunk: usize,
        device: &Device,
    ) -> SequenceLogprobs {
        if self.scored_tokens() == 0 {
            return place_token_logprobs(None, &self.slots, self.shape, device);
        }
        let rows = self.predictor_rows(self.hidden_states(model, device));
        let token_logprobs = chunked_target_logprobs(model, rows, &self.targets, chunk);
        self.sequence_logprobs(token_logprobs, device)
    }

    /// Per-token and per-sequence log-probs from the scored tokens' log-probs `[n]`.
    pub fn sequence_logprobs(
        &self,
        token_logprobs: Tensor<1>,
        device: &Device,
    ) -> SequenceLogprobs {
        place_token_logprobs(Some(token_logprobs), &self.slots, self.shape, device)
    }
}

/// Runs `model` over `layout` and the LM head over the predictor rows only.
fn scored_logits_of_layout<M: CausalModel + ?Sized>(
    model: &M,
    layout: ScoringLayout,
    device: &Device,
) -> ScoredLogits {
    let logits = (layout.scored_tokens() > 0).then(|| {
        let hidden = layout.hidden_states(model, device);
        model.logits(layout.predictor_rows(hidden))
    });
    ScoredLogits {
        logits,
        sequence: layout.sequence,
        targets: layout.targets,
        slots: layout.slots,
        shape: layout.shape,
    }
}

/// Runs `model` over `batch` with shared prompts and the LM head over the scored positions
/// only. The result's `shape` is `[sequences, longest completion]` and a token's slot is
/// its place in its completion.
pub fn scored_logits_shared<M: CausalModel + ?Sized>(
    model: &M,
    batch: &SharedPromptBatch,
    device: &Device,
) -> Result<ScoredLogits, BatchError> {
    Ok(scored_logits_of_layout(
        model,
        shared_layout(batch)?,
        device,
    ))
}

/// Scores `batch` (shared prompts) with `model` on `device`.
pub fn shared_sequence_logprobs<M: CausalModel + ?Sized>(
    model: &M,
    batch: &SharedPromptBatch,
    device: &Device,
) -> Result<SequenceLogprobs, BatchError> {
    Ok(scored_logits_shared(model, batch, device)?.logprobs(device))
}

/// `log Σ exp(x)` over the last dimension of `[rows, cols]`, stabilised by the (detached)
/// row maximum.
fn logsumexp_rows(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}

/// `log softmax(logits)[target]` of each row of `logits` `[n, vocab]`, `[n]`: the target's
/// logit minus the row's logsumexp.
pub fn target_logprobs(logits: Tensor<2>, targets: &[u32]) -> Tensor<1> {
    let n = targets.len();
    let device = logits.device();
    let targets: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
    let target_ids = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let target_logits = logits.clone().gather(1, target_ids);
    (target_logits - logsumexp_rows(logits)).reshape([n])
}

/// The log-probs `[n]` of `targets` after final hidden states `rows` `[n, width]`, through
/// `model`'s LM head `chunk` rows at a time (`0`: all at once), so that at most
/// `chunk × vocab` logits exist at once instead of `n × vocab`. Training uses it for its
/// first, gradient-free pass and chunks its backward too (bapo-train's staged step); the
/// reference's scoring in the anchor pass and the evaluation's scoring use it too
/// ([`ScoringLayout::chunked_sequence_logprobs`]).
pub fn chunked_target_logprobs<M: CausalModel + ?Sized>(
    model: &M,
    rows: Tensor<2>,
    targets: &[u32],
    chunk: usize,
) -> Tensor<1> {
    let n = targets.len();
    let chunk = if chunk == 0 { n.max(1) } else { chunk };
    let parts: Vec<Tensor<1>> = (0..n)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(n - start);
            model.target_logprobs_of_rows(
                rows.clone().narrow(0, start, len),
                &targets[start..start + len],
            )
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// The LM head's output on the positions that predict scored tokens, in batch order.
#[derive(Debug, Clone)]
pub struct ScoredLogits {
    /// `[n, vocab]`: one row per scored token (none when nothing is scored).
    pub logits: Option<Tensor<2>>,
    /// For each row, the sequence it belongs to.
    pub sequence: Vec<usize>,
    /// For each row, the id of the token it predicts.
    pub targets: Vec<u32>,
    /// For each row, its slot `b · tokens + t` in a `[batch, tokens]` layout.
    pub slots: Vec<usize>,
    /// `[sequences, tokens]` of the per-token output: for a [`TokenBatch`] its padded shape
    /// (a slot is a token's place in its row), for a [`SharedPromptBatch`] the longest
    /// completion (a slot is a token's place in its completion).
    pub shape: [usize; 2],
}

/// Runs `model` over `batch` and the LM head over the scored positions only. Token-level
/// quantities (a KL to a reference) need these full rows; log-probs are derived from them by
/// [`sequence_logprobs`].
pub fn scored_logits<M: CausalModel + ?Sized>(
    model: &M,
    batch: &TokenBatch,
    device: &Device,
) -> Result<ScoredLogits, BatchError> {
    Ok(scored_logits_of_layout(
        model,
        ScoringLayout::of_tokens(batch)?,
        device,
    ))
}

/// Per-token `[sequences, tokens]` and per-sequence log-probs from the log-probs `[n]` of the
/// scored tokens at `slots` (none when nothing is scored).
fn place_token_logprobs(
    token_logprobs: Option<Tensor<1>>,
    slots: &[usize],
    [size, tokens]: [usize; 2],
    device: &Device,
) -> SequenceLogprobs {
    let per_token = Tensor::<1>::zeros([size * tokens], device);
    let per_token = match token_logprobs {
        None => per_token,
        Some(logp) => {
            let n = slots.len();
            let slots: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
            let slots = Tensor::<1, Int>::from_data(TensorData::new(slots, [n]), device);
            per_token.select_assign(0, slots, logp, IndexingUpdateOp::Add)
        }
    };
    let per_token = per_token.reshape([size, tokens]);
    let total = per_token.clone().sum_dim(1).reshape([size]);
    SequenceLogprobs { per_token, total }
}

impl ScoredLogits {
    /// Log-probs of the target tokens, per token and per sequence.
    pub fn logprobs(&self, device: &Device) -> SequenceLogprobs {
        let token_logprobs = self
            .logits
            .as_ref()
            .map(|logits| target_logprobs(logits.clone(), &self.targets));
        place_token_logprobs(token_logprobs, &self.slots, self.shape, device)
    }
}

/// Scores `batch` with `model` on `device`.
pub fn sequence_logprobs<M: CausalModel + ?Sized>(
    model: &M,
    batch: &TokenBatch,
    device: &Device,
) -> Result<SequenceLogprobs, BatchError> {
    Ok(scored_logits(model, batch, device)?.logprobs(device))
}
