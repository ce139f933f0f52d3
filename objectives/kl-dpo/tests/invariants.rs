//! Spec invariant 8: KL-DPO with λ_kl = 0 is DPO; the token-level KL is ≥ 0 and 0 for equal
//! distributions; and the KL term enters the loss as λ_kl · mean over the named sequences.

use bapo_objective::kl::{per_token_kl, sequence_kl};
use bapo_objective::{KlDirection, Objective, Quantity, Response};
use bapo_objective_kl_dpo::{KlDpo, KlDpoConfig};
use bapo_testkit::inputs::{inputs_for, logp};
use bapo_testkit::{Inputs, Precision, device, tensor_2d, values};
use burn::tensor::Tensor;
use proptest::prelude::*;

fn kl_dpo(lambda_kl: f64, on: Vec<Response>, direction: KlDirection) -> KlDpo {
    KlDpo {
        config: KlDpoConfig {
            beta: 0.2,
            lambda_kl,
            on,
            direction,
        },
    }
}

/// DPO with β = 0.2, by the spec's formula.
fn dpo_loss(pc: f64, pr: f64, rc: f64, rr: f64) -> f64 {
    bapo_testkit::dpo_loss_by_hand(0.2, pc, pr, rc, rr)
}

fn logits(batch: usize, tokens: usize, vocab: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-8.0..8.0f64, batch * tokens * vocab)
}

fn tensor_3d(v: &[f64], dims: [usize; 3]) -> Tensor<3> {
    let flat = tensor_2d(v, dims[0] * dims[1], dims[2], Precision::F64, &device());
    flat.reshape(dims)
}

proptest! {
    /// λ_kl = 0 ⇒ equals DPO, whatever the KL values.
    #[test]
    fn zero_weight_is_dpo(
        inputs in inputs_for(&kl_dpo(0.0, vec![Response::Chosen, Response::Rejected], KlDirection::Reverse), 4, 200.0)
    ) {
        let objective = kl_dpo(0.0, vec![Response::Chosen, Response::Rejected], KlDirection::Reverse);
        let losses = inputs.losses(&objective, Precision::F64);
        let pc = inputs.get(Quantity::PolicyLogp(Response::Chosen));
        let pr = inputs.get(Quantity::PolicyLogp(Response::Rejected));
        let rc = inputs.get(Quantity::ReferenceLogp { reference: 0, response: Response::Chosen });
        let rr = inputs.get(Quantity::ReferenceLogp { reference: 0, response: Response::Rejected });
        for i in 0..4 {
            let expected = dpo_loss(pc[i], pr[i], rc[i], rr[i]);
            prop_assert!((losses[i] - expected).abs() <= 1e-10 * (1.0 + expected), "{} vs {expected}", losses[i]);
        }
    }

    /// The loss is DPO + λ_kl × the mean of the per-sequence KLs named in `on`.
    #[test]
    fn kl_term_is_weighted_mean_over_named_sequences(
        lambda in 0.0..5.0f64,
        (pc, pr, rc, rr) in (logp(100.0), logp(100.0), logp(100.0), logp(100.0)),
        (kc, kb) in (0.0..3.0f64, 0.0..3.0f64),
    ) {
        let objective = kl_dpo(lambda, vec![Response::Chosen, Response::Base], KlDirection::Forward);
        let inputs = Inputs::preference(vec![pc], vec![pr], vec![rc], vec![rr])
            .set(Quantity::TokenKl { response: Response::Chosen, direction: KlDirection::Forward }, vec![kc])
            .set(Quantity::TokenKl { response: Response::Base, direction: KlDirection::Forward }, vec![kb]);
        let loss = inputs.losses(&objective, Precision::F64)[0];
        let expected = dpo_loss(pc, pr, rc, rr) + lambda * (kc + kb) / 2.0;
        prop_assert!((loss - expected).abs() <= 1e-10 * (1.0 + expected), "{loss} vs {expected}");
    }

    /// KL_seq ≥ 0 in both directions, per token and per sequence.
    #[test]
    fn kl_is_non_negative(p in logits(2, 3, 5), q in logits(2, 3, 5), mask_bits in proptest::collection::vec(0..2u8, 6)) {
        let mask: Vec<f64> = mask_bits.iter().map(|&b| f64::from(b)).collect();
        for direction in [KlDirection::Reverse, KlDirection::Forward] {
            let per_token = values(&per_token_kl(tensor_3d(&p, [2, 3, 5]), tensor_3d(&q, [2, 3, 5]), direction));
            prop_assert!(per_token.iter().all(|k| *k >= -1e-12), "{per_token:?}");
            let mask_t = tensor_2d(&mask, 2, 3, Precision::F64, &device());
            let seq = values(&sequence_kl(tensor_3d(&p, [2, 3, 5]), tensor_3d(&q, [2, 3, 5]), mask_t, direction));
            prop_assert!(seq.iter().all(|k| *k >= -1e-12), "{seq:?}");
            // The per-sequence value is the mean of the masked per-token values.
            for b in 0..2 {
                let n: f64 = mask[b * 3..b * 3 + 3].iter().sum();
                let sum: f64 = (0..3).map(|t| per_token[b * 3 + t] * mask[b * 3 + t]).sum();
                let expected = if n > 0.0 { sum / n } else { 0.0 };
                prop_assert!((seq[b] - expected).abs() < 1e-12, "{} vs {expected}", seq[b]);
            }
        }
    }

    /// KL = 0 when the distributions are equal (logits equal up to a per-position shift).
    #[test]
    fn kl_is_zero_for_equal_distributions(p in logits(2, 4, 6), shift in -5.0..5.0f64) {
        let shifted: Vec<f64> = p.iter().map(|x| x + shift).collect();
        for direction in [KlDirection::Reverse, KlDirection::Forward] {
            let kl = values(&per_token_kl(tensor_3d(&p, [2, 4, 6]), tensor_3d(&shifted, [2, 4, 6]), direction));
            prop_assert!(kl.iter().all(|k| k.abs() < 1e-12), "{kl:?}");
        }
    }
}

/// The per-token KL against a hand computation, so the two directions cannot be swapped.
#[test]
fn kl_directions_match_the_definition() {
    let p = [0.0f64, 1.0, 2.0];
    let q = [2.0f64, 0.0, -1.0];
    let softmax = |x: &[f64]| {
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        x.iter().map(|v| v.exp() / z).collect::<Vec<_>>()
    };
    let (pp, qq) = (softmax(&p), softmax(&q));
    let kl = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x * (x.ln() - y.ln()))
            .sum::<f64>()
    };
    let reverse = values(&per_token_kl(
        tensor_3d(&p, [1, 1, 3]),
        tensor_3d(&q, [1, 1, 3]),
        KlDirection::Reverse,
    ))[0];
    let forward = values(&per_token_kl(
        tensor_3d(&p, [1, 1, 3]),
        tensor_3d(&q, [1, 1, 3]),
        KlDirection::Forward,
    ))[0];
    assert!(
        (reverse - kl(&pp, &qq)).abs() < 1e-12,
        "{reverse} vs {}",
        kl(&pp, &qq)
    );
    assert!(
        (forward - kl(&qq, &pp)).abs() < 1e-12,
        "{forward} vs {}",
        kl(&qq, &pp)
    );
    assert!(
        (reverse - forward).abs() > 0.1,
        "the example distinguishes the directions"
    );
}

/// The reference logits are frozen: the KL's gradient reaches the policy logits only.
#[test]
fn kl_gradient_reaches_the_policy_only() {
    let d = device();
    let p = tensor_3d(&[0.5, -1.0, 2.0, 0.0, 1.0, -2.0], [1, 2, 3]).require_grad();
    let q = tensor_3d(&[1.0, 0.0, -1.0, 2.0, -2.0, 0.5], [1, 2, 3]).require_grad();
    let mask = tensor_2d(&[1.0, 1.0], 1, 2, Precision::F64, &d);
    let grads = sequence_kl(p.clone(), q.clone(), mask, KlDirection::Reverse)
        .sum()
        .backward();
    assert!(p.grad(&grads).is_some());
    assert!(q.grad(&grads).is_none());
}

#[test]
fn needs_the_live_reference() {
    let objective = kl_dpo(
        0.1,
        vec![Response::Chosen, Response::Rejected],
        KlDirection::Reverse,
    );
    assert!(objective.needs().needs_live_reference());
    assert!(!objective.needs().needs_base_responses());
    let on_base = kl_dpo(0.1, vec![Response::Base], KlDirection::Reverse);
    assert!(on_base.needs().needs_base_responses());
}
