//! Spec invariants 1–6 of DPO, property-tested on the Flex backend (f64 unless stated).

use bapo_objective::{Objective, ObjectiveConfig, Quantity, Response};
use bapo_objective_dpo::{Dpo, DpoConfig};
use bapo_testkit::inputs::logp;
use bapo_testkit::{Inputs, Precision};
use proptest::prelude::*;

fn dpo(beta: f64, label_smoothing: f64) -> Dpo {
    let config = DpoConfig {
        beta,
        label_smoothing,
        reference_free: false,
    };
    config.validate("dpo").expect("valid test config");
    Dpo { config }
}

/// The loss of one example with log-ratio difference `z` (pc = z, the others 0).
fn loss_at(objective: &Dpo, z: f64, precision: Precision) -> f64 {
    Inputs::preference(vec![z], vec![0.0], vec![0.0], vec![0.0]).losses(objective, precision)[0]
}

fn batch(n: usize) -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
    let v = move || proptest::collection::vec(logp(300.0), n);
    (v(), v(), v(), v())
}

fn beta() -> impl Strategy<Value = f64> {
    prop_oneof![0.001..0.01f64, 0.01..1.0f64, 1.0..10.0f64]
}

proptest! {
    /// 1. policy = reference ⇒ loss = ln 2 for any β > 0 (ε = 0).
    #[test]
    fn equal_policy_and_reference_give_ln2(beta in beta(), (pc, pr, _, _) in batch(4)) {
        let inputs = Inputs::preference(pc.clone(), pr.clone(), pc, pr);
        for precision in [Precision::F64, Precision::F32] {
            for loss in inputs.losses(&dpo(beta, 0.0), precision) {
                prop_assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
            }
        }
    }

    /// 2. strictly decreasing in z and positive (f64, |βz| ≤ 30 where the loss is far from
    /// underflow), and finite with finite gradients up to |βz| = 1e4 in f32 and f64.
    #[test]
    fn loss_is_positive_strictly_decreasing_and_stable(
        beta in beta(),
        a in -30.0..30.0f64,
        gap in 1e-3..10.0f64,
        extreme in -1e4..1e4f64,
    ) {
        let objective = dpo(beta, 0.0);
        let (z1, z2) = (a / beta, (a + gap) / beta);
        let (l1, l2) = (loss_at(&objective, z1, Precision::F64), loss_at(&objective, z2, Precision::F64));
        prop_assert!(l1 > l2, "loss({z1}) = {l1} not > loss({z2}) = {l2}");
        prop_assert!(l2 > 0.0 && l1.is_finite());

        let z = extreme / beta;
        for precision in [Precision::F32, Precision::F64] {
            let loss = loss_at(&objective, z, precision);
            prop_assert!(loss.is_finite() && loss >= 0.0, "loss({z}) = {loss} in {precision:?}");
        }
        let inputs = Inputs::preference(vec![z], vec![0.0], vec![0.0], vec![0.0]);
        for (q, grad) in inputs.gradients(&objective) {
            if let Some(grad) = grad {
                prop_assert!(grad.iter().all(|g| g.is_finite()), "d/d {q} = {grad:?} at z = {z}");
            }
        }
    }

    /// 3. swapping chosen and rejected maps z → −z, and loss(z) − loss(−z) = −βz (ε = 0).
    #[test]
    fn swapping_responses_negates_z(beta in beta(), (pc, pr, rc, rr) in batch(4)) {
        let objective = dpo(beta, 0.0);
        let forward = Inputs::preference(pc.clone(), pr.clone(), rc.clone(), rr.clone());
        let swapped = Inputs::preference(pr.clone(), pc.clone(), rr.clone(), rc.clone());
        let (lf, ls) = (forward.losses(&objective, Precision::F64), swapped.losses(&objective, Precision::F64));
        for i in 0..4 {
            let z = (pc[i] - pr[i]) - (rc[i] - rr[i]);
            let expected = -beta * z;
            prop_assert!((lf[i] - ls[i] - expected).abs() <= 1e-9 * (1.0 + expected.abs()),
                "loss(z) − loss(−z) = {} ≠ −βz = {expected}", lf[i] - ls[i]);
        }
    }

    /// 4. ∂L/∂pc = −∂L/∂pr = −β·σ(−βz)(1−ε) + β·σ(βz)·ε (the spec's formula), and both
    /// match central finite differences.
    #[test]
    fn gradients_are_opposite_and_match_the_formula(
        beta in beta(),
        eps in 0.0..=0.5f64,
        (pc, pr, rc, rr) in batch(3),
    ) {
        let objective = dpo(beta, eps);
        let inputs = Inputs::preference(pc.clone(), pr.clone(), rc.clone(), rr.clone());
        let grads = inputs.gradients(&objective);
        let grad = |q: Quantity| grads.iter().find(|(k, _)| *k == q).and_then(|(_, g)| g.clone()).unwrap();
        let gc = grad(Quantity::PolicyLogp(Response::Chosen));
        let gr = grad(Quantity::PolicyLogp(Response::Rejected));
        let fd_c = inputs.finite_differences(&objective, Quantity::PolicyLogp(Response::Chosen), 1e-5);
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        for i in 0..3 {
            let z = (pc[i] - pr[i]) - (rc[i] - rr[i]);
            let formula = -beta * sigmoid(-beta * z) * (1.0 - eps) + beta * sigmoid(beta * z) * eps;
            prop_assert!((gc[i] + gr[i]).abs() <= 1e-12, "{} vs {}", gc[i], gr[i]);
            prop_assert!((gc[i] - formula).abs() <= 1e-10 * (1.0 + formula.abs()), "{} vs formula {formula}", gc[i]);
            prop_assert!((gc[i] - fd_c[i]).abs() <= 1e-7 + 1e-5 * fd_c[i].abs(), "{} vs fd {}", gc[i], fd_c[i]);
        }
    }

    /// 5. reference values enter only through rc − rr: shifting both by c changes nothing.
    #[test]
    fn only_the_reference_difference_matters(
        beta in beta(),
        eps in 0.0..=0.5f64,
        c in -100.0..100.0f64,
        (pc, pr, rc, rr) in batch(4),
    ) {
        let objective = dpo(beta, eps);
        let base = Inputs::preference(pc.clone(), pr.clone(), rc.clone(), rr.clone());
        let shift = |v: &[f64]| v.iter().map(|x| x + c).collect::<Vec<_>>();
        let shifted = Inputs::preference(pc, pr, shift(&rc), shift(&rr));
        let (a, b) = (base.losses(&objective, Precision::F64), shifted.losses(&objective, Precision::F64));
        for (x, y) in a.iter().zip(&b) {
            prop_assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }

    /// 6. ε = 0.5 makes the loss even in z.
    #[test]
    fn half_label_smoothing_is_even_in_z(beta in beta(), z in -1e3..1e3f64) {
        let objective = dpo(beta, 0.5);
        let (a, b) = (loss_at(&objective, z, Precision::F64), loss_at(&objective, -z, Precision::F64));
        prop_assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()), "loss({z}) = {a}, loss(−z) = {b}");
    }

    /// 6. ε outside [0, 0.5] is rejected, inside accepted.
    #[test]
    fn label_smoothing_must_lie_in_0_to_half(eps in -2.0..2.0f64) {
        let config = DpoConfig { label_smoothing: eps, ..DpoConfig::default() };
        prop_assert_eq!(config.validate("dpo").is_ok(), (0.0..=0.5).contains(&eps));
    }
}

#[test]
fn reference_free_ignores_the_reference() {
    let objective = Dpo {
        config: DpoConfig {
            reference_free: true,
            ..DpoConfig::default()
        },
    };
    assert!(!objective.needs().contains(&Quantity::ReferenceLogp {
        reference: 0,
        response: Response::Chosen
    }));
    let with_ref = Inputs::preference(vec![-3.0], vec![-5.0], vec![-1.0], vec![-9.0]);
    let plain = Inputs::new(1)
        .set(Quantity::PolicyLogp(Response::Chosen), vec![-3.0])
        .set(Quantity::PolicyLogp(Response::Rejected), vec![-5.0]);
    let expected = -(1.0 / (1.0 + (-0.1f64 * 2.0).exp())).ln();
    for inputs in [with_ref, plain] {
        let loss = inputs.losses(&objective, Precision::F64)[0];
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
    }
}

/// At the start of training the policy is the reference (z = 0 exactly): the gradient there is
/// −β/2 for pc, the value a one-sided derivative of log-sigmoid would get wrong.
#[test]
fn gradient_at_policy_equal_reference_is_half_beta() {
    for beta in [0.1, 1.0] {
        let objective = dpo(beta, 0.0);
        let inputs = Inputs::preference(
            vec![-7.0, -2.5],
            vec![-3.0, -9.0],
            vec![-7.0, -2.5],
            vec![-3.0, -9.0],
        );
        let grads = inputs.gradients(&objective);
        let gc = grads[0].1.clone().unwrap();
        assert_eq!(grads[0].0, Quantity::PolicyLogp(Response::Chosen));
        for g in gc {
            assert!((g + beta / 2.0).abs() < 1e-12, "{g} vs {}", -beta / 2.0);
        }
    }
}
