//! Token-level KL between policy and reference distributions: the quantity behind
//! [`Quantity::TokenKl`](crate::Quantity::TokenKl). The loop calls this on the logits of the
//! response positions; it lives here so that its definition sits next to the objectives that
//! use it and is tested with them.

use burn::tensor::activation::log_softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::quantity::KlDirection;

/// Per-token KL, `[batch, tokens]`, from logits `[batch, tokens, vocab]`.
///
/// Reverse: `Σ_v π_θ(v) (log π_θ(v) − log π_ref(v))`; forward swaps the roles. The reference
/// logits are detached: the reference is frozen.
pub fn per_token_kl(
    policy_logits: Tensor<3>,
    reference_logits: Tensor<3>,
    direction: KlDirection,
) -> Tensor<2> {
    let policy = log_softmax(policy_logits, 2);
    let reference = log_softmax(reference_logits.detach(), 2);
    let (p, q) = match direction {
        KlDirection::Reverse => (policy, reference),
        KlDirection::Forward => (reference, policy),
    };
    let [batch, tokens, _] = p.dims();
    (p.clone().exp() * (p - q))
        .sum_dim(2)
        .reshape([batch, tokens])
}

/// `KL_seq` for packed rows, as the loop computes it: `policy_logits` and `reference_logits`
/// are `[n, vocab]`, one row per scored response token, and `owners[i]` is the sequence
/// (`0..sequences`) row `i` belongs to. Returns the per-token KL averaged over each sequence's
/// rows, `[sequences]`; a sequence without rows gets 0.
pub fn packed_sequence_kl(
    policy_logits: Tensor<2>,
    reference_logits: Tensor<2>,
    owners: &[usize],
    sequences: usize,
    direction: KlDirection,
) -> Tensor<1> {
    let [n, vocab] = policy_logits.dims();
    let per_token = per_token_kl(
        policy_logits.reshape([1, n, vocab]),
        reference_logits.reshape([1, n, vocab]),
        direction,
    )
    .reshape([n]);
    sequence_means(per_token, owners, sequences)
}

/// The mean of `per_token` `[n]` over each sequence's rows (`owners[i]` is row `i`'s
/// sequence, `0..sequences`), `[sequences]`; a sequence without rows gets 0.
pub fn sequence_means(per_token: Tensor<1>, owners: &[usize], sequences: usize) -> Tensor<1> {
    let device = per_token.device();
    let [n] = per_token.dims();
    let dtype = per_token.dtype();
    let mut counts = vec![0f64; sequences];
    for &o in owners {
        counts[o] += 1.0;
    }
    let index: Vec<i64> = owners.iter().map(|&o| o as i64).collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device);
    let sums = Tensor::<1>::zeros([sequences], (&device, dtype)).select_assign(
        0,
        index,
        per_token,
        IndexingUpdateOp::Add,
    );
    let counts: Vec<f64> = counts.into_iter().map(|c| c.max(1.0)).collect();
    sums / Tensor::<1>::from_data(TensorData::new(counts, [sequences]), (&device, dtype))
}
