//! Token-level KL between policy and reference distributions: the quantity behind
//! [`Quantity::TokenKl`](crate::Quantity::TokenKl). The loop calls this on the logits of the
//! response positions; it lives here so that its definition sits next to the objectives that
//! use it and is tested with them.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

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

/// `KL_seq`: the per-token KL averaged over the response tokens of each sequence, `[batch]`.
/// `mask` is `[batch, tokens]` with 1 on response tokens and 0 elsewhere; a sequence without
/// response tokens gets 0.
pub fn sequence_kl(
    policy_logits: Tensor<3>,
    reference_logits: Tensor<3>,
    mask: Tensor<2>,
    direction: KlDirection,
) -> Tensor<1> {
    let per_token = per_token_kl(policy_logits, reference_logits, direction);
    let [batch, _] = mask.dims();
    let counts = mask.clone().sum_dim(1).clamp_min(1.0).reshape([batch]);
    (per_token * mask).sum_dim(1).reshape([batch]) / counts
}
