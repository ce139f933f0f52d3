//! The token embedding and LM head of a frozen quantized base (`lora.base_quantization` on a
//! GGUF file) kept in the file's own blocks ([`BlockRows`]) instead of in f32: the embedding
//! is a row lookup, and the LM head is applied a slice of the vocabulary at a time, so the
//! f32 copy of neither table ever exists whole. On Qwen2.5-1.5B (untied, Q4_K embedding, Q6_K
//! head) that holds 0.3 GB where f32 held 1.9 GB.
//!
//! The values are the file's, exactly as the f32 path dequantises them; only the order of
//! some float sums changes (the log-sum-exp over the vocabulary combined slice by slice). The
//! tables are frozen: training reaches the LM head's input through [`FileTables::
//! head_gradient`], the gradient of `Σ_t w_t · log p_t(target_t)` with respect to the head's
//! input written out (`w_t · (W[target_t] − Σ_v p_t(v) · W[v])`), again a slice at a time.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::gguf::BlockRows;
use crate::precision::Precision;

/// f32 values of the LM head dequantised at once: 8 Mi values, 32 MiB (5,461 rows of
/// Qwen2.5-1.5B's 1,536, 28 slices of its 151,936-token vocabulary).
const SLICE_VALUES: usize = 8 << 20;

/// A frozen embedding and LM head in their file's blocks.
#[derive(Debug, Clone)]
pub struct FileTables {
    embedding: Arc<BlockRows>,
    /// `None`: the head is tied to the embedding.
    head: Option<Arc<BlockRows>>,
    /// Rows of the head dequantised at once.
    slice_rows: usize,
}

impl FileTables {
    /// `embedding` `[vocab, width]`, and a separate `head` of the same shape (`None`: tied).
    pub fn new(embedding: BlockRows, head: Option<BlockRows>) -> Self {
        let width = embedding.shape()[1].max(1);
        FileTables {
            embedding: Arc::new(embedding),
            head: head.map(Arc::new),
            slice_rows: (SLICE_VALUES / width).max(1),
        }
    }

    /// The same tables applying the head `rows` rows of the vocabulary at a time (at least
    /// 1; the default holds 8 Mi f32 values a slice).
    pub fn with_slice_rows(mut self, rows: usize) -> Self {
        self.slice_rows = rows.max(1);
        self
    }

    /// `[vocab, width]` of the embedding.
    pub fn embedding_shape(&self) -> [usize; 2] {
        self.embedding.shape()
    }

    /// Whether the LM head is the embedding.
    pub fn tied(&self) -> bool {
        self.head.is_none()
    }

    fn head(&self) -> &BlockRows {
        self.head.as_deref().unwrap_or(&self.embedding)
    }

    /// The embedding whole in f32 `[vocab, width]` (an export writes it).
    pub fn embedding_f32(&self, device: &Device) -> Tensor<2> {
        whole(&self.embedding, device)
    }

    /// A separate LM head whole in f32 `[vocab, width]` (an export writes it); `None` when tied.
    pub fn head_f32(&self, device: &Device) -> Option<Tensor<2>> {
        self.head.as_deref().map(|head| whole(head, device))
    }

    /// The embeddings `[batch, tokens, width]` of `ids` `[batch, tokens]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, tokens] = ids.dims();
        let device = ids.device();
        let ids: Vec<usize> = ids
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("token ids convert to i64")
            .into_iter()
            .map(|id| id as usize)
            .collect();
        let width = self.embedding.shape()[1];
        let values = self.embedding.gather_f32(&ids);
        Tensor::from_data(TensorData::new(values, [batch, tokens, width]), &device)
    }

    /// The LM head's slices of the vocabulary, each `(range of token ids, rows [len, width])`.
    fn head_slices(&self, device: &Device) -> impl Iterator<Item = (Range<usize>, Tensor<2>)> {
        let head = self.head();
        let [vocab, width] = head.shape();
        let rows = self.slice_rows;
        (0..vocab).step_by(rows).map(move |start| {
            let range = start..(start + rows).min(vocab);
            let values = head.rows_f32(range.clone());
            let slice = Tensor::from_data(TensorData::new(values, [range.len(), width]), device);
            (range, slice)
        })
    }

    /// Logits `[.., vocab]` of hidden states `[.., width]`, computed a slice of the vocabulary
    /// at a time (the slices' f32 weights exist one at a time; the logits whole).
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>, precision: Precision) -> Tensor<D> {
        let device = hidden.device();
        let parts: Vec<Tensor<D>> = self
            .head_slices(&device)
            .map(|(_, slice)| precision.head_logits(hidden.clone(), slice.transpose()))
            .collect();
        Tensor::cat(parts, D - 1)
    }

    /// `log softmax(head(rows))[target]` of each row `[n, width]`, `[n]`, without the logits
    /// of the whole vocabulary: the log-sum-exp is combined slice by slice, and each target's
    /// logit is taken from the slice that holds it. With one slice, the same arithmetic as
    /// [`crate::target_logprobs`] on the whole logits.
    pub fn target_logprobs(
        &self,
        rows: Tensor<2>,
        targets: &[u32],
        precision: Precision,
    ) -> Tensor<1> {
        let n = targets.len();
        let device = rows.device();
        let mut target_logit = Tensor::<2>::zeros([n, 1], &device);
        // Per slice: its row maximum and `Σ exp(logit − maximum)`.
        let mut partial: Vec<(Tensor<2>, Tensor<2>)> = Vec::new();
        for (range, slice) in self.head_slices(&device) {
            let logits = precision.head_logits(rows.clone(), slice.transpose());
            target_logit = target_logit + picked(logits.clone(), &range, targets);
            let max = logits.clone().max_dim(1);
            let sum = (logits - max.clone()).exp().sum_dim(1);
            partial.push((max, sum));
        }
        (target_logit - combined_logsumexp(partial)).reshape([n])
    }

    /// The gradient `[n, width]` with respect to `rows` `[n, width]` of `Σ_t weights_t ·
    /// log p_t(targets_t)` (`weights` `[n]`), through the frozen head: `w_t · (W[target_t] −
    /// Σ_v softmax_t(v) · W[v])`, the softmax-weighted sum of the head's rows accumulated
    /// slice by slice with a running maximum (as online softmax does).
    pub fn head_gradient(
        &self,
        rows: Tensor<2>,
        targets: &[u32],
        weights: Tensor<1>,
        precision: Precision,
    ) -> Tensor<2> {
        let [n, width] = rows.dims();
        let device = rows.device();
        let mut max = Tensor::<2>::full([n, 1], f32::NEG_INFINITY, &device);
        let mut sum = Tensor::<2>::zeros([n, 1], &device);
        let mut weighted_rows = Tensor::<2>::zeros([n, width], &device);
        for (_, slice) in self.head_slices(&device) {
            let logits = precision.head_logits(rows.clone(), slice.clone().transpose());
            let new_max = max.clone().max_pair(logits.clone().max_dim(1));
            let rescale = (max - new_max.clone()).exp();
            let p = (logits - new_max.clone()).exp();
            sum = sum * rescale.clone() + p.clone().sum_dim(1);
            weighted_rows = weighted_rows * rescale + p.matmul(slice);
            max = new_max;
        }
        let ids: Vec<usize> = targets.iter().map(|&t| t as usize).collect();
        let target_rows = Tensor::<2>::from_data(
            TensorData::new(self.head().gather_f32(&ids), [n, width]),
            &device,
        );
        (target_rows - weighted_rows / sum) * weights.reshape([n, 1])
    }
}

/// `table` whole in f32, `[rows, cols]` (also a projection's weight, `file_projections`).
pub(crate) fn whole(table: &BlockRows, device: &Device) -> Tensor<2> {
    let shape = table.shape();
    Tensor::from_data(TensorData::new(table.rows_f32(0..shape[0]), shape), device)
}

/// `[n, 1]`: each row's logit of its target where the target falls in `range` (the slice's
/// token ids), 0 elsewhere.
fn picked(logits: Tensor<2>, range: &Range<usize>, targets: &[u32]) -> Tensor<2> {
    let n = targets.len();
    let device = logits.device();
    let (index, inside): (Vec<i64>, Vec<f32>) = targets
        .iter()
        .map(|&t| match (t as usize).checked_sub(range.start) {
            Some(i) if i < range.len() => (i as i64, 1.0),
            _ => (0, 0.0),
        })
        .unzip();
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [n, 1]), &device);
    let inside = Tensor::<2>::from_data(TensorData::new(inside, [n, 1]), &device);
    logits.gather(1, index) * inside
}

/// `log Σ exp` over the whole vocabulary from each slice's `(maximum, Σ exp(x − maximum))`:
/// `M + log Σ_s sum_s · exp(max_s − M)`, `M` the largest maximum. One slice gives `log(sum) +
/// max`, [`crate::target_logprobs`]'s own formula.
fn combined_logsumexp(partial: Vec<(Tensor<2>, Tensor<2>)>) -> Tensor<2> {
    let mut partial = partial.into_iter();
    let (first_max, first_sum) = partial.next().expect("a vocabulary of at least one token");
    let rest: Vec<_> = partial.collect();
    if rest.is_empty() {
        return first_sum.log() + first_max;
    }
    let max = rest.iter().fold(first_max.clone(), |m, (slice_max, _)| {
        m.max_pair(slice_max.clone())
    });
    let sum = rest.into_iter().fold(
        first_sum * (first_max - max.clone()).exp(),
        |total, (slice_max, slice_sum)| total + slice_sum * (slice_max - max.clone()).exp(),
    );
    sum.log() + max
}
