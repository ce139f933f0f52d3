//! Spec invariant 8: KL-DPO with λ_kl = 0 is DPO; the token-level KL is ≥ 0 and 0 for equal
//! distributions; and the KL term enters the loss as λ_kl · mean over the named sequences.
//! Plus the loop's packed `KL_seq` (`kl::packed_sequence_kl`, the scatter-mean `step.rs`
//! uses): its value per sequence and its gradient against central finite differences.

use bapo_objective::kl::{packed_sequence_kl, per_token_kl};
use bapo_objective::{KlDirection, Objective, Quantity, Response};
use bapo_objective_kl_dpo::{KlDpo, KlDpoConfig};
use bapo_testkit::inputs::{Kink, inputs_for, logp};
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

fn tensor_2(v: &[f64], rows: usize, cols: usize) -> Tensor<2> {
    tensor_2d(v, rows, cols, Precision::F64, &device())
}

fn tensor_3d(v: &[f64], dims: [usize; 3]) -> Tensor<3> {
    let flat = tensor_2d(v, dims[0] * dims[1], dims[2], Precision::F64, &device());
    flat.reshape(dims)
}

proptest! {
    /// λ_kl = 0 ⇒ equals DPO, whatever the KL values.
    #[test]
    fn zero_weight_is_dpo(
        inputs in inputs_for(&kl_dpo(0.0, vec![Response::Chosen, Response::Rejected], KlDirection::Reverse), 4, 200.0, Kink::Include)
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

    /// KL_seq ≥ 0 in both directions, per token and per sequence; the packed per-sequence
    /// value is the mean of the per-token values of the rows that sequence owns (0 if none).
    #[test]
    fn kl_is_non_negative_and_averaged_per_sequence(
        p in logits(1, 6, 5), q in logits(1, 6, 5), owners in proptest::collection::vec(0..3usize, 6),
    ) {
        for direction in [KlDirection::Reverse, KlDirection::Forward] {
            let per_token = values(&per_token_kl(tensor_3d(&p, [1, 6, 5]), tensor_3d(&q, [1, 6, 5]), direction));
            prop_assert!(per_token.iter().all(|k| *k >= -1e-12), "{per_token:?}");
            let seq = values(&packed_sequence_kl(tensor_2(&p, 6, 5), tensor_2(&q, 6, 5), &owners, 3, direction));
            prop_assert!(seq.iter().all(|k| *k >= -1e-12), "{seq:?}");
            for (s, value) in seq.iter().enumerate() {
                let mine: Vec<f64> = (0..6).filter(|&i| owners[i] == s).map(|i| per_token[i]).collect();
                let expected = if mine.is_empty() { 0.0 } else { mine.iter().sum::<f64>() / mine.len() as f64 };
                prop_assert!((value - expected).abs() < 1e-12, "sequence {s}: {value} vs {expected}");
            }
        }
    }

    /// The loop's KL_seq: the autodiff gradient of Σ_s w_s·KL_s w.r.t. the policy logits
    /// equals central finite differences in f64. (Fails if the scatter-mean divides by the
    /// wrong counts, drops a row, or if the reference's log-softmax is not detached.)
    #[test]
    fn packed_kl_gradient_matches_finite_differences(
        p in logits(1, 5, 4), q in logits(1, 5, 4),
        owners in proptest::collection::vec(0..3usize, 5),
        weights in proptest::collection::vec(0.1..2.0f64, 3),
        reverse: bool,
    ) {
        let direction = if reverse { KlDirection::Reverse } else { KlDirection::Forward };
        let weighted = |policy: Tensor<2>, reference: Tensor<2>| {
            let w = bapo_testkit::tensor(&weights, Precision::F64, &policy.device());
            (packed_sequence_kl(policy, reference, &owners, 3, direction) * w).sum()
        };
        let leaf = tensor_2(&p, 5, 4).require_grad();
        let grads = weighted(leaf.clone(), tensor_2(&q, 5, 4).require_grad()).backward();
        let autodiff = values(&leaf.grad(&grads).expect("policy gradient"));
        let fd = bapo_testkit::central_difference(&p, 1e-6, |x| {
            bapo_testkit::scalar(&weighted(tensor_2(x, 5, 4), tensor_2(&q, 5, 4)))
        });
        for (i, (a, f)) in autodiff.iter().zip(&fd).enumerate() {
            prop_assert!((a - f).abs() <= 1e-6 + 1e-5 * f.abs(), "[{i}]: autodiff {a} vs fd {f}");
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
    let p = tensor_2d(&[0.5, -1.0, 2.0, 0.0, 1.0, -2.0], 2, 3, Precision::F64, &d).require_grad();
    let q = tensor_2d(&[1.0, 0.0, -1.0, 2.0, -2.0, 0.5], 2, 3, Precision::F64, &d).require_grad();
    let grads = packed_sequence_kl(p.clone(), q.clone(), &[0, 1], 2, KlDirection::Reverse)
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
