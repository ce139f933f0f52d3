//! What every causal LM here offers the scorer and the generator, and the KV cache and
//! attention helpers the architectures share. (`CausalLm`, the model a checkpoint turns out
//! to be, is in `causal_lm.rs`: the architectures import this file, and that one imports
//! them.)

use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::precision::{Precision, to_f32};

/// A decoder-only language model.
pub trait CausalModel {
    /// Final hidden states `[batch, tokens, hidden]` under plain causal attention (right
    /// padding is harmless: real tokens never see later pads).
    fn hidden_states(&self, ids: Tensor<2, Int>) -> Tensor<3>;

    /// Hidden states of new tokens `[batch, queries]` appended to `cache`, with explicit
    /// positions `[batch][queries]` and a key mask `[batch · queries · (cached + queries)]`
    /// (`true` = may not attend): the decoding path, for left-padded batches and one token at
    /// a time.
    fn hidden_states_cached(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
        cache: &mut KvCache,
    ) -> Tensor<3>;

    /// Hidden states `[batch, tokens, hidden]` with explicit positions `[batch][tokens]` and
    /// attention mask `[batch · tokens · tokens]` (`true` = may not attend), no cache: packed
    /// rows such as a prompt shared by several completions.
    fn hidden_states_masked(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
    ) -> Tensor<3>;

    /// LM-head logits `[.., vocab]` of hidden states `[.., hidden]`.
    fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D>;

    /// The log-probs `[n]` of `targets` after final hidden states `rows` `[n, hidden]`. A model
    /// whose head is held in a file's blocks computes them without the whole logits.
    fn target_logprobs_of_rows(&self, rows: Tensor<2>, targets: &[u32]) -> Tensor<1> {
        crate::logprobs::target_logprobs(self.logits(rows), targets)
    }

    /// Logits `[batch, tokens, vocab]` for every position.
    fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.logits(self.hidden_states(ids))
    }
}

/// Keys and values of every layer for the tokens seen so far, so decoding a new token costs
/// one position instead of the whole sequence.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        KvCache::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(Option::as_ref)
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given rows (batch entries), in that order: rows that ended leave.
    pub(crate) fn keep_rows(&mut self, rows: &[usize]) {
        let Some(device) = self.device() else { return };
        let indices = Tensor::<1, Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &device,
        );
        self.map(|t| t.select(0, indices.clone()));
    }

    /// Inserts `n` zero positions before every row's keys and values (they must be masked).
    pub(crate) fn pad_left(&mut self, n: usize) {
        self.map(|t| {
            let [batch, heads, _, dim] = t.dims();
            // In the cache's own dtype (bf16 values under bf16 compute): Flex concatenates
            // only tensors of one dtype.
            let zeros = Tensor::zeros([batch, heads, n, dim], (&t.device(), t.dtype()));
            Tensor::cat(vec![zeros, t], 2)
        });
    }

    /// Drops the first `n` positions of every row.
    pub(crate) fn drop_left(&mut self, n: usize) {
        let length = self.len();
        self.map(|t| t.narrow(2, n, length - n));
    }

    /// Adds the rows of `other`, which must hold as many positions.
    pub(crate) fn append_rows(&mut self, other: KvCache) {
        if self.layers.is_empty() {
            *self = other;
            return;
        }
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            if let (Some((k, v)), Some((k2, v2))) = (mine.take(), theirs) {
                *mine = Some((Tensor::cat(vec![k, k2], 0), Tensor::cat(vec![v, v2], 0)));
            }
        }
    }

    fn device(&self) -> Option<Device> {
        self.layers
            .first()
            .and_then(Option::as_ref)
            .map(|(k, _)| k.device())
    }

    fn map(&mut self, f: impl Fn(Tensor<4>) -> Tensor<4>) {
        for layer in self.layers.iter_mut() {
            if let Some((k, v)) = layer.take() {
                *layer = Some((f(k), f(v)));
            }
        }
    }

    /// Makes room for `layers` layers.
    pub(crate) fn reserve_layers(&mut self, layers: usize) {
        self.layers.resize_with(layers, || None);
    }

    /// Layer `i`'s slot.
    pub(crate) fn layer(&mut self, i: usize) -> &mut Option<(Tensor<4>, Tensor<4>)> {
        &mut self.layers[i]
    }
}

/// Appends new keys and values `[batch, heads, new, head_dim]` to a layer's cache and
/// returns all of them.
pub(crate) fn append_to_cache(
    slot: &mut Option<(Tensor<4>, Tensor<4>)>,
    k: Tensor<4>,
    v: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let (k, v) = match slot.take() {
        Some((past_k, past_v)) => (
            Tensor::cat(vec![past_k, k], 2),
            Tensor::cat(vec![past_v, v], 2),
        ),
        None => (k, v),
    };
    *slot = Some((k.clone(), v.clone()));
    (k, v)
}

/// Attention of `q`, `k`, `v` `[batch, heads, queries or keys, head_dim]` in `precision`:
/// under `mask` (`[batch, 1, queries, keys]`, `true` = may not attend, broadcast over heads)
/// or, without one, causal (then `queries = keys`).
pub(crate) fn attend(
    precision: Precision,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    match (precision, mask) {
        (Precision::F32, Some(mask)) => masked_attention(q, k, v, mask),
        (Precision::F32, None) => {
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            };
            attention(q, k, v, None, None, options)
        }
        (Precision::Bf16, mask) => {
            let mask = mask.unwrap_or_else(|| causal_mask(q.dims()[2], &q.device()));
            mixed_precision_attention(q, k, v, mask)
        }
    }
}

/// transformers' eager attention under bf16 autocast: `q·kᵀ` in bf16, scaled in bf16, then
/// the mask and the softmax in f32, and `p·v` in bf16 (the result is bf16).
fn mixed_precision_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4, Bool>,
) -> Tensor<4> {
    let bf16 = Precision::Bf16;
    let head_dim = q.dims()[3];
    let scores = bf16
        .for_matmul(q)
        .matmul(bf16.for_matmul(k).swap_dims(2, 3))
        .mul_scalar(1.0 / (head_dim as f64).sqrt());
    let bias = Tensor::<4>::zeros(mask.dims(), &mask.device()).mask_fill(mask, f32::NEG_INFINITY);
    let weights = softmax(to_f32(scores) + bias, 3);
    bf16.for_matmul(weights).matmul(bf16.for_matmul(v))
}

/// The mask bf16 attention adds under plain causal attention, built once per forward for all
/// its layers; `None` in f32, whose fused causal attention needs none.
pub(crate) fn mixed_precision_causal_mask(
    precision: Precision,
    tokens: usize,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    (precision == Precision::Bf16).then(|| causal_mask(tokens, device))
}

/// `[1, 1, tokens, tokens]`: `true` where a key comes after its query.
fn causal_mask(tokens: usize, device: &Device) -> Tensor<4, Bool> {
    let mask = (0..tokens)
        .flat_map(|query| (0..tokens).map(move |key| key > query))
        .collect();
    key_mask(mask, [1, tokens, tokens], device)
}

/// Attention of `q`, `k`, `v` `[batch, heads, queries or keys, head_dim]` under an explicit
/// mask (`true` = may not attend, broadcast over heads).
///
/// The mask goes in as an additive bias (−∞ where masked), not as Burn's boolean mask:
/// burn-tch 0.22.1 hands the boolean mask to PyTorch's `scaled_dot_product_attention`
/// unchanged, where `true` means *may* attend — the opposite of Burn's convention — so on
/// `tch-cpu`/`cuda` every masked forward without autodiff (generation, scoring, evaluation)
/// attended to exactly the wrong keys. A bias means the same on every backend.
fn masked_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    let bias = Tensor::<4>::zeros(mask.dims(), &mask.device()).mask_fill(mask, f32::NEG_INFINITY);
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    attention(q, k, v, None, Some(bias), options)
}

/// The attention mask `[batch, 1, queries, keys]` from row-major booleans.
pub(crate) fn key_mask(
    mask: Vec<bool>,
    [batch, queries, keys]: [usize; 3],
    device: &Device,
) -> Tensor<4, Bool> {
    Tensor::from_data(TensorData::new(mask, [batch, 1, queries, keys]), device)
}
