//! Spec invariants 12–15 of MRPO, and the whole K = 2 loss (main path and naive Multi-DPO)
//! against a scalar re-computation from the spec's formulas; ARWC's α in [0, 1); CTRO's rates
//! summing to ε. (The authors' code itself is matched in `tests/mrpo_parity.rs`.)

use bapo_objective_mrpo::{
    Alpha, AlphaRule, Mrpo, MrpoConfig, adaptive_alpha, clip_to_primary, clipping_rates,
    virtual_reference,
};
use bapo_testkit::inputs::logp;
use bapo_testkit::{Inputs, Precision, device, tensor, values};
use proptest::prelude::*;

fn mrpo(references: usize, epsilon: f64, alpha: Alpha, naive: bool) -> Mrpo {
    Mrpo {
        config: MrpoConfig {
            beta: 0.1,
            references,
            epsilon,
            alpha,
            weights: Vec::new(),
            naive,
        },
    }
}

const ADAPTIVE: Alpha = Alpha::Rule(AlphaRule::Adaptive);

fn dpo_loss(pc: f64, pr: f64, rc: f64, rr: f64) -> f64 {
    bapo_testkit::dpo_loss_by_hand(0.1, pc, pr, rc, rr)
}

type Example = (f64, f64, Vec<(f64, f64)>);

/// One example: policy (pc, pr) and K reference pairs (rc, rr).
fn example(k: usize) -> impl Strategy<Value = Example> {
    (
        logp(200.0),
        logp(200.0),
        proptest::collection::vec((logp(200.0), logp(200.0)), k),
    )
}

fn inputs_of(examples: &[Example]) -> Inputs {
    let k = examples[0].2.len();
    let mut inputs = Inputs::preference(
        examples.iter().map(|e| e.0).collect(),
        examples.iter().map(|e| e.1).collect(),
        examples.iter().map(|e| e.2[0].0).collect(),
        examples.iter().map(|e| e.2[0].1).collect(),
    );
    for r in 1..k {
        inputs = inputs.with_reference(
            r,
            examples.iter().map(|e| e.2[r].0).collect(),
            examples.iter().map(|e| e.2[r].1).collect(),
        );
    }
    inputs
}

fn alpha() -> impl Strategy<Value = Alpha> {
    prop_oneof![Just(ADAPTIVE), (0.0..=1.0f64).prop_map(Alpha::Fixed)]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

/// ARWC's α for K = 2 with scalars: the weight on the primary.
fn arwc(e: &Example) -> f64 {
    let (d0, d1) = ((e.2[0].0 - e.2[0].1).abs(), (e.2[1].0 - e.2[1].1).abs());
    d1 / (d1 + d0 + 1e-6)
}

/// CTRO for K = 2 with scalars: the auxiliary's (chosen, rejected) clipped around the primary.
fn clipped_auxiliary(e: &Example, epsilon: f64) -> (f64, f64) {
    let (r0c, r0l) = e.2[0];
    let (r1c, r1l) = e.2[1];
    let (bc, br) = (((r0c + r1c) / 2.0).abs(), ((r0l + r1l) / 2.0).abs());
    let (ec, er) = if epsilon < 0.0 {
        (-epsilon, -epsilon)
    } else {
        let s = bc / (bc + br);
        (epsilon * s, epsilon * (1.0 - s))
    };
    let clip = |r: f64, r0: f64, e: f64| r.max((1.0 + e) * r0).min((1.0 - e) * r0);
    (clip(r1c, r0c, ec), clip(r1l, r0l, er))
}

/// The spec's MRPO for K = 2, with scalars: CTRO clip, ARWC α, virtual reference, DPO.
fn mrpo_by_hand(e: &Example, epsilon: f64, alpha: Option<f64>) -> f64 {
    let (pc, pr) = (e.0, e.1);
    let (r0c, r0l) = e.2[0];
    let alpha = alpha.unwrap_or_else(|| arwc(e));
    let (r1c, r1l) = clipped_auxiliary(e, epsilon);
    let virtual_ref = |r0: f64, r1: f64| -(alpha * (-r0).exp() + (1.0 - alpha) * (-r1).exp()).ln();
    dpo_loss(pc, pr, virtual_ref(r0c, r1c), virtual_ref(r0l, r1l))
}

/// Multi-DPO for K = 2 with scalars, as the authors' code: α on the clipped auxiliary.
fn naive_by_hand(e: &Example, epsilon: f64, alpha: Option<f64>) -> f64 {
    let alpha = alpha.unwrap_or_else(|| arwc(e));
    let (r1c, r1l) = clipped_auxiliary(e, epsilon);
    alpha * dpo_loss(e.0, e.1, r1c, r1l) + (1.0 - alpha) * dpo_loss(e.0, e.1, e.2[0].0, e.2[0].1)
}

proptest! {
    /// The whole K = 2 loss equals the spec's formulas computed with scalars.
    #[test]
    fn k2_matches_the_spec_by_hand(
        examples in proptest::collection::vec(example(2), 1..5),
        epsilon in -0.5..0.5f64,
        fixed in prop_oneof![Just(None), (0.0..=1.0f64).prop_map(Some)],
    ) {
        let alpha = fixed.map(Alpha::Fixed).unwrap_or(ADAPTIVE);
        // Log-probs around −200 make exp(−r) ~ e^200: fine in f64, as the by-hand version.
        let losses = inputs_of(&examples).losses(&mrpo(2, epsilon, alpha, false), Precision::F64);
        for (loss, e) in losses.iter().zip(&examples) {
            let expected = mrpo_by_hand(e, epsilon, fixed);
            prop_assert!(close(*loss, expected), "{loss} vs {expected}");
        }
    }

    /// 12. All references equal ⇒ DPO, for any α and ε, K = 2 or 3, naive or not.
    #[test]
    fn equal_references_give_dpo(
        (pc, pr, refs) in example(1), k in 2usize..4, alpha in alpha(), epsilon in -1.0..=1.0f64, naive: bool,
    ) {
        let alpha = if k == 2 { alpha } else { ADAPTIVE };
        let e = (pc, pr, vec![refs[0]; k]);
        let loss = inputs_of(&[e]).losses(&mrpo(k, epsilon, alpha, naive), Precision::F64)[0];
        let expected = dpo_loss(pc, pr, refs[0].0, refs[0].1);
        prop_assert!(close(loss, expected), "{loss} vs {expected}");
    }

    /// 13. α = 1 ⇒ DPO on the primary; ε = 0 ⇒ auxiliaries clipped onto the primary ⇒ DPO.
    #[test]
    fn alpha_one_or_epsilon_zero_give_dpo_on_the_primary(e in example(2), alpha in alpha(), epsilon in -1.0..=1.0f64) {
        let expected = dpo_loss(e.0, e.1, e.2[0].0, e.2[0].1);
        let with_alpha_one = inputs_of(std::slice::from_ref(&e)).losses(&mrpo(2, epsilon, Alpha::Fixed(1.0), false), Precision::F64)[0];
        prop_assert!(close(with_alpha_one, expected), "α = 1: {with_alpha_one} vs {expected}");
        let with_eps_zero = inputs_of(&[e]).losses(&mrpo(2, 0.0, alpha, false), Precision::F64)[0];
        prop_assert!(close(with_eps_zero, expected), "ε = 0: {with_eps_zero} vs {expected}");
    }

    /// 14. Jensen: log π̃ ≤ Σ w_k r_k; and clipped references lie within the band.
    #[test]
    fn virtual_reference_is_below_the_weighted_mean_and_clips_stay_in_band(
        refs in proptest::collection::vec(proptest::collection::vec(logp(300.0), 3), 2..5),
        raw_weights in proptest::collection::vec(proptest::collection::vec(0.0..1.0f64, 3), 5),
        rate in 0.0..1.0f64,
    ) {
        let d = device();
        let k = refs.len();
        // Per example i, weights over references normalised to sum 1 (at least one > 0).
        let weights: Vec<Vec<f64>> = (0..k)
            .map(|r| (0..3).map(|i| {
                let total: f64 = (0..k).map(|j| raw_weights[j][i]).sum::<f64>() + 1e-3;
                (raw_weights[r][i] + if r == 0 { 1e-3 } else { 0.0 }) / total
            }).collect())
            .collect();
        let t = |v: &[f64]| tensor(v, Precision::F64, &d);
        let ref_t: Vec<_> = refs.iter().map(|r| t(r)).collect();
        let w_t: Vec<_> = weights.iter().map(|w| t(w)).collect();
        let v = values(&virtual_reference(&ref_t, &w_t));
        for i in 0..3 {
            let mean: f64 = (0..k).map(|r| weights[r][i] * refs[r][i]).sum();
            prop_assert!(v[i] <= mean + 1e-9 * (1.0 + mean.abs()), "log π̃ = {} > Σ w r = {mean}", v[i]);
        }
        let clipped = clip_to_primary(&ref_t, &t(&[rate; 3]));
        for r in 1..k {
            let c = values(&clipped[r]);
            for i in 0..3 {
                let r0 = refs[0][i];
                let (lo, hi) = ((1.0 + rate) * r0, (1.0 - rate) * r0);
                prop_assert!(lo - 1e-12 <= c[i] && c[i] <= hi + 1e-12, "{} outside [{lo}, {hi}]", c[i]);
                if (lo..=hi).contains(&refs[r][i]) {
                    prop_assert_eq!(c[i], refs[r][i]);
                }
            }
        }
    }

    /// 15. K = 1 ⇒ DPO.
    #[test]
    fn one_reference_is_dpo(examples in proptest::collection::vec(example(1), 1..5), naive: bool, epsilon in -1.0..=1.0f64) {
        let losses = inputs_of(&examples).losses(&mrpo(1, epsilon, ADAPTIVE, naive), Precision::F64);
        for (loss, e) in losses.iter().zip(&examples) {
            let expected = dpo_loss(e.0, e.1, e.2[0].0, e.2[0].1);
            prop_assert!(close(*loss, expected), "{loss} vs {expected}");
        }
    }

    /// Naive Multi-DPO, K = 2: α·L_DPO(clip(ref_1)) + (1−α)·L_DPO(ref_0), with ARWC's α or a
    /// fixed one, for adaptive and fixed clipping rates.
    #[test]
    fn naive_mode_is_the_weighted_sum_of_dpo_losses_with_the_auxiliary_clipped(
        examples in proptest::collection::vec(example(2), 1..5),
        fixed in prop_oneof![Just(None), (0.0..=1.0f64).prop_map(Some)],
        epsilon in -0.5..0.5f64,
    ) {
        let alpha = fixed.map(Alpha::Fixed).unwrap_or(ADAPTIVE);
        let losses = inputs_of(&examples).losses(&mrpo(2, epsilon, alpha, true), Precision::F64);
        for (loss, e) in losses.iter().zip(&examples) {
            let expected = naive_by_hand(e, epsilon, fixed);
            prop_assert!(close(*loss, expected), "{loss} vs {expected}");
        }
    }

    /// α = 0 is DPO against the clipped auxiliary alone (the virtual reference puts all its
    /// weight there); in naive mode, where α weighs the auxiliary's loss, α = 1 is, and α = 0
    /// is DPO against the primary.
    #[test]
    fn alpha_at_its_ends_is_dpo_against_one_reference(e in example(2), epsilon in -1.0..=1.0f64) {
        let loss = |alpha: f64, naive: bool| {
            inputs_of(std::slice::from_ref(&e)).losses(&mrpo(2, epsilon, Alpha::Fixed(alpha), naive), Precision::F64)[0]
        };
        let (r1c, r1l) = clipped_auxiliary(&e, epsilon);
        let against_auxiliary = dpo_loss(e.0, e.1, r1c, r1l);
        let against_primary = dpo_loss(e.0, e.1, e.2[0].0, e.2[0].1);
        prop_assert!(close(loss(0.0, false), against_auxiliary), "main path, α = 0: {} vs {against_auxiliary}", loss(0.0, false));
        prop_assert!(close(loss(1.0, true), against_auxiliary), "naive, α = 1: {} vs {against_auxiliary}", loss(1.0, true));
        prop_assert!(close(loss(0.0, true), against_primary), "naive, α = 0: {} vs {against_primary}", loss(0.0, true));
    }

    /// ARWC's α lies in [0, 1) (the 1e-6 keeps it below 1), and the `mrpo/alpha` metric
    /// reports it.
    #[test]
    fn adaptive_alpha_is_in_zero_one(examples in proptest::collection::vec(example(2), 1..6), naive: bool) {
        let d = device();
        let t = |f: fn(&Example) -> f64| tensor(&examples.iter().map(f).collect::<Vec<_>>(), Precision::F64, &d);
        let chosen = [t(|e| e.2[0].0), t(|e| e.2[1].0)];
        let rejected = [t(|e| e.2[0].1), t(|e| e.2[1].1)];
        let alpha = values(&adaptive_alpha(&chosen, &rejected));
        for (a, e) in alpha.iter().zip(&examples) {
            prop_assert!((0.0..1.0).contains(a), "α = {a}");
            prop_assert!(close(*a, arwc(e)), "{a} vs {}", arwc(e));
        }
        let (q, _) = inputs_of(&examples).tensors(Precision::F64, &d, false);
        let out = bapo_objective::Objective::compute(&mrpo(2, 0.1, ADAPTIVE, naive), &q).unwrap();
        prop_assert_eq!(values(out.metrics.get("mrpo/alpha").unwrap()), alpha);
    }

    /// CTRO's adaptive rates split ε between chosen and rejected: ε_c + ε_r = ε, both in
    /// [0, ε], ε_c/ε = |b_c|/(|b_c| + |b_r|); a negative ε gives |ε| for both.
    #[test]
    fn clipping_rates_split_epsilon(
        refs in proptest::collection::vec((logp(300.0), logp(300.0)), 1..4), epsilon in -1.0..=1.0f64,
    ) {
        let d = device();
        let chosen: Vec<_> = refs.iter().map(|r| tensor(&[r.0], Precision::F64, &d)).collect();
        let rejected: Vec<_> = refs.iter().map(|r| tensor(&[r.1], Precision::F64, &d)).collect();
        let (ec, er) = clipping_rates(epsilon, &chosen, &rejected);
        let (ec, er) = (values(&ec)[0], values(&er)[0]);
        if epsilon < 0.0 {
            prop_assert_eq!((ec, er), (-epsilon, -epsilon));
        } else {
            prop_assert!(close(ec + er, epsilon), "{ec} + {er} vs {epsilon}");
            prop_assert!(ec >= 0.0 && er >= 0.0, "{ec}, {er}");
            let bc = (refs.iter().map(|r| r.0).sum::<f64>() / refs.len() as f64).abs();
            let br = (refs.iter().map(|r| r.1).sum::<f64>() / refs.len() as f64).abs();
            prop_assert!(close(ec, epsilon * bc / (bc + br)), "{ec} vs {}", epsilon * bc / (bc + br));
        }
    }
}

/// K > 2 with fixed weights: the virtual reference of the (normalised) weights.
#[test]
fn fixed_weights_for_three_references() {
    let e: Example = (
        -10.0,
        -12.0,
        vec![(-11.0, -11.5), (-9.0, -14.0), (-10.5, -13.0)],
    );
    let objective = Mrpo {
        config: MrpoConfig {
            references: 3,
            weights: vec![2.0, 1.0, 1.0],
            epsilon: 1.0,
            ..MrpoConfig::default()
        },
    };
    let loss = inputs_of(std::slice::from_ref(&e)).losses(&objective, Precision::F64)[0];
    // ε = 1 opens the band to [2·r0, 0], which contains every auxiliary here: no clipping.
    let w = [0.5, 0.25, 0.25];
    let vr = |pick: fn(&(f64, f64)) -> f64| {
        -(0..3)
            .map(|k| w[k] * (-pick(&e.2[k])).exp())
            .sum::<f64>()
            .ln()
    };
    let expected = dpo_loss(e.0, e.1, vr(|r| r.0), vr(|r| r.1));
    assert!(close(loss, expected), "{loss} vs {expected}");
}
