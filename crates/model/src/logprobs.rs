//! Sequence log-probs: `log π(token_t | tokens_<t)` for the tokens marked as scored (a
//! completion), per token and summed per sequence, in f32.
//!
//! The LM head runs only on the positions that predict a scored token, and each log-prob is
//! the target's logit minus the row's logsumexp: no `[batch, tokens, vocab]` log-softmax is
//! ever built (SmolLM2's vocabulary is 49,152 wide, so that tensor would dominate memory).
//! Works on an autodiff device (the policy) and on a plain one (the reference).

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

/// `log Σ exp(x)` over the last dimension of `[rows, cols]`, stabilised by the (detached)
/// row maximum.
fn logsumexp_rows(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
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
    /// `[batch, tokens]` of the padded batch.
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
    let tokens = batch.validate()?;
    let size = batch.ids.len();

    let mut flat = Vec::with_capacity(size * tokens);
    // For every scored token: the hidden-state row that predicts it, its id, its sequence and
    // where its log-prob goes in the `[batch · tokens]` output.
    let (mut rows, mut targets, mut sequence, mut slots) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (b, (ids, scored)) in batch.ids.iter().zip(&batch.scored).enumerate() {
        flat.extend(ids.iter().map(|&id| i64::from(id)));
        flat.extend(std::iter::repeat_n(
            i64::from(batch.pad_id),
            tokens - ids.len(),
        ));
        for (t, _) in scored.iter().enumerate().filter(|(_, s)| **s) {
            rows.push((b * tokens + t - 1) as i64);
            targets.push(ids[t]);
            sequence.push(b);
            slots.push(b * tokens + t);
        }
    }
    let n = rows.len();
    let logits = (n > 0).then(|| {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [size, tokens]), device);
        let hidden = model.hidden_states(ids);
        let [_, _, width] = hidden.dims();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), device);
        let selected = hidden.reshape([size * tokens, width]).select(0, rows);
        model.logits(selected)
    });
    Ok(ScoredLogits {
        logits,
        sequence,
        targets,
        slots,
        shape: [size, tokens],
    })
}

impl ScoredLogits {
    /// Log-probs of the target tokens, per token and per sequence.
    pub fn logprobs(&self, device: &Device) -> SequenceLogprobs {
        let [size, tokens] = self.shape;
        let per_token = Tensor::<1>::zeros([size * tokens], device);
        let per_token = match &self.logits {
            None => per_token,
            Some(logits) => {
                let n = self.targets.len();
                let targets: Vec<i64> = self.targets.iter().map(|&t| i64::from(t)).collect();
                let slots: Vec<i64> = self.slots.iter().map(|&s| s as i64).collect();
                let target_ids =
                    Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
                let target_logits = logits.clone().gather(1, target_ids);
                let logp = (target_logits - logsumexp_rows(logits.clone())).reshape([n]);
                let slots = Tensor::<1, Int>::from_data(TensorData::new(slots, [n]), device);
                per_token.select_assign(0, slots, logp, IndexingUpdateOp::Add)
            }
        };
        let per_token = per_token.reshape([size, tokens]);
        let total = per_token.clone().sum_dim(1).reshape([size]);
        SequenceLogprobs { per_token, total }
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
