//! Spec invariants 9–11 of BAPO: λ = 0 is DPO; the one-sided anchors (hinge, Huber, squared
//! hinge) and their gradients vanish where the policy keeps the base response at least as
//! likely as the reference; the hinge's gradient is −λ below; "mean" normalisation equals
//! "sum" for one-token base responses. Plus the default's smoothness at `pb = rb` (float noise
//! there moves its gradient by at most λ·δ/κ) and every anchor form against its definition.

use bapo_objective::{Objective, Quantity, Response};
use bapo_objective_bapo::{
    AnchorForm, Bapo, BapoConfig, KAPPA_MEAN, KAPPA_SUM, Kappa, NOISE_FLOOR, Normalize,
};
use bapo_testkit::inputs::logp;
use bapo_testkit::{Inputs, Precision};
use proptest::prelude::*;

const PB: Quantity = Quantity::PolicyLogp(Response::Base);
const RB: Quantity = Quantity::ReferenceLogp {
    reference: 0,
    response: Response::Base,
};
const NB: Quantity = Quantity::TokenCount(Response::Base);

fn bapo(lambda: f64, form: AnchorForm, normalize: Normalize, num_anchors: usize) -> Bapo {
    Bapo {
        config: BapoConfig {
            beta: 0.1,
            lambda,
            form,
            normalize,
            num_anchors,
            ..BapoConfig::default()
        },
    }
}

fn huber(lambda: f64, kappa: f64, normalize: Normalize) -> Bapo {
    Bapo {
        config: BapoConfig {
            lambda,
            kappa: Kappa::Fixed(kappa),
            normalize,
            ..BapoConfig::default()
        },
    }
}

/// The Huber-ised hinge by its definition, `v = rb − pb`, with its noise floor.
fn huber_by_hand(v: f64, kappa: f64) -> f64 {
    let v = v - kappa * NOISE_FLOOR;
    if v <= 0.0 {
        0.0
    } else if v <= kappa {
        v * v / (2.0 * kappa)
    } else {
        v - kappa / 2.0
    }
}

fn dpo_loss(pc: f64, pr: f64, rc: f64, rr: f64) -> f64 {
    bapo_testkit::dpo_loss_by_hand(0.1, pc, pr, rc, rr)
}

/// One example with `anchors` base responses.
fn example(
    (pc, pr, rc, rr): (f64, f64, f64, f64),
    pb: Vec<f64>,
    rb: Vec<f64>,
    nb: Vec<f64>,
) -> Inputs {
    let anchors = pb.len();
    Inputs::preference(vec![pc], vec![pr], vec![rc], vec![rr])
        .set_2d(PB, pb, anchors)
        .set_2d(RB, rb, anchors)
        .set_2d(NB, nb, anchors)
}

fn pair() -> impl Strategy<Value = (f64, f64, f64, f64)> {
    (logp(200.0), logp(200.0), logp(200.0), logp(200.0))
}

fn form() -> impl Strategy<Value = AnchorForm> {
    prop_oneof![
        Just(AnchorForm::Huber),
        Just(AnchorForm::Hinge),
        Just(AnchorForm::SquaredHinge),
        Just(AnchorForm::Abs),
        Just(AnchorForm::Squared),
        Just(AnchorForm::Nll)
    ]
}

fn normalize() -> impl Strategy<Value = Normalize> {
    prop_oneof![Just(Normalize::Sum), Just(Normalize::Mean)]
}

fn grad_of(inputs: &Inputs, objective: &Bapo, q: Quantity) -> Vec<f64> {
    inputs
        .gradients(objective)
        .into_iter()
        .find(|(k, _)| *k == q)
        .and_then(|(_, g)| g)
        .expect("gradient")
}

proptest! {
    /// 9. λ = 0 ⇒ equals DPO, for every anchor form and normalisation.
    #[test]
    fn zero_lambda_is_dpo(
        p in pair(), form in form(), normalize in normalize(),
        anchors in proptest::collection::vec((logp(200.0), logp(200.0), 1u32..50), 1..4),
    ) {
        let objective = bapo(0.0, form, normalize, anchors.len());
        let inputs = example(
            p,
            anchors.iter().map(|a| a.0).collect(),
            anchors.iter().map(|a| a.1).collect(),
            anchors.iter().map(|a| f64::from(a.2)).collect(),
        );
        let loss = inputs.losses(&objective, Precision::F64)[0];
        let expected = dpo_loss(p.0, p.1, p.2, p.3);
        prop_assert!((loss - expected).abs() <= 1e-12 * (1.0 + expected), "{loss} vs {expected}");
    }

    /// 9. One-sided forms (hinge, Huber, squared hinge): zero anchor term and zero gradient
    /// w.r.t. pb where pb ≥ rb (boundary included), with either normalisation.
    #[test]
    fn one_sided_anchors_are_inactive_where_the_policy_keeps_the_anchor(
        p in pair(), rb in logp(200.0), above in prop_oneof![Just(0.0), 0.0..50.0f64], lambda in 0.1..10.0f64,
        form in prop_oneof![Just(AnchorForm::Hinge), Just(AnchorForm::Huber), Just(AnchorForm::SquaredHinge)],
        normalize in normalize(),
    ) {
        let objective = bapo(lambda, form, normalize, 1);
        let inputs = example(p, vec![rb + above], vec![rb], vec![7.0]);
        let loss = inputs.losses(&objective, Precision::F64)[0];
        let expected = dpo_loss(p.0, p.1, p.2, p.3);
        prop_assert!((loss - expected).abs() <= 1e-12 * (1.0 + expected), "{loss} vs DPO {expected}");
        prop_assert_eq!(grad_of(&inputs, &objective, PB), vec![0.0]);
    }

    /// The default form is smooth at pb = rb, the first step's regime: perturbing pb by
    /// δ ∈ [−1e-6, 1e-6] around rb moves ∂L/∂pb by at most λ·|δ|/κ (plus DPO's part, which
    /// does not depend on pb) — in fact not at all, below the noise floor. The plain hinge
    /// fails this: its gradient jumps by λ.
    #[test]
    fn the_default_anchor_gradient_is_continuous_at_the_reference(
        p in pair(), rb in logp(200.0), delta in -1e-6..1e-6f64, lambda in 0.1..10.0f64,
        normalize in normalize(), nb in 1u32..60,
    ) {
        let objective = Bapo { config: BapoConfig { lambda, normalize, ..BapoConfig::default() } };
        let kappa = objective.config.kappa();
        let at = |pb: f64| grad_of(&example(p, vec![pb], vec![rb], vec![f64::from(nb)]), &objective, PB)[0];
        let (on, off) = (at(rb), at(rb + delta));
        prop_assert_eq!(on, 0.0, "no anchor gradient at pb = rb");
        // The perturbation as stored (rb + δ rounds), and with "mean" the anchor sees δ/n_b
        // and its gradient w.r.t. pb carries another 1/n_b.
        let stored = ((rb + delta) - rb).abs();
        let scale = if normalize == Normalize::Mean { 1.0 / f64::from(nb * nb) } else { 1.0 };
        let bound = lambda * stored / kappa * scale;
        prop_assert!(
            (off - on).abs() <= bound * (1.0 + 1e-6) + 1e-15,
            "gradient moved by {} for δ = {delta} (bound {bound})", (off - on).abs()
        );
    }

    /// Drops within the noise floor (0 < rb − pb ≤ κ/1000) cost nothing, in value and
    /// gradient: float noise cannot reach Adam's per-parameter normalisation.
    #[test]
    fn drops_within_the_noise_floor_cost_nothing(
        p in pair(), rb in logp(200.0), fraction in 0.0..=1.0f64, lambda in 0.1..10.0f64,
        normalize in normalize(), nb in 1u32..60,
    ) {
        let objective = Bapo { config: BapoConfig { lambda, normalize, ..BapoConfig::default() } };
        let per = if normalize == Normalize::Mean { f64::from(nb) } else { 1.0 };
        // Slightly inside the floor, so rounding of rb − pb cannot cross it.
        let drop = fraction * 0.999 * objective.config.kappa() * NOISE_FLOOR * per;
        let inputs = example(p, vec![rb - drop], vec![rb], vec![f64::from(nb)]);
        let loss = inputs.losses(&objective, Precision::F64)[0];
        let expected = dpo_loss(p.0, p.1, p.2, p.3);
        prop_assert!((loss - expected).abs() <= 1e-12 * (1.0 + expected), "{loss} vs DPO {expected}");
        prop_assert_eq!(grad_of(&inputs, &objective, PB), vec![0.0]);
    }

    /// The Huber-ised hinge against its definition in all its zones, with several anchors and
    /// either normalisation; its gradient is −λ·clamp(v − κ/1000, 0, κ)/κ per anchor
    /// (÷ anchors), exactly 0 for drops within the noise floor.
    #[test]
    fn huber_matches_its_definition_and_gradient(
        p in pair(), lambda in 0.0..5.0f64, kappa in 0.01..5.0f64, normalize in normalize(),
        anchors in proptest::collection::vec((logp(100.0), -10.0..10.0f64, 1u32..30), 1..4),
    ) {
        let n = anchors.len();
        let objective = Bapo { config: BapoConfig { lambda, kappa: Kappa::Fixed(kappa), normalize, num_anchors: n, ..BapoConfig::default() } };
        let rb: Vec<f64> = anchors.iter().map(|a| a.0).collect();
        let pb: Vec<f64> = anchors.iter().map(|a| a.0 - a.1).collect();
        let nb: Vec<f64> = anchors.iter().map(|a| f64::from(a.2)).collect();
        let divisor = |i: usize| if normalize == Normalize::Mean { nb[i] } else { 1.0 };
        let inputs = example(p, pb.clone(), rb.clone(), nb.clone());
        let anchor: f64 = (0..n).map(|i| huber_by_hand((rb[i] - pb[i]) / divisor(i), kappa)).sum::<f64>() / n as f64;
        let expected = dpo_loss(p.0, p.1, p.2, p.3) + lambda * anchor;
        let loss = inputs.losses(&objective, Precision::F64)[0];
        prop_assert!((loss - expected).abs() <= 1e-10 * (1.0 + expected.abs()), "{loss} vs {expected}");
        for (i, g) in grad_of(&inputs, &objective, PB).iter().enumerate() {
            let w = (rb[i] - pb[i]) / divisor(i) - kappa * NOISE_FLOOR;
            let expected = -lambda * w.clamp(0.0, kappa) / kappa / divisor(i) / n as f64;
            // v = rb − pb cancels: rounding of ~1e-16·|rb| in v, magnified by λ/κ.
            let tolerance = 1e-10 * (1.0 + expected.abs()) + lambda / kappa * 1e-14 * (1.0 + rb[i].abs());
            prop_assert!((g - expected).abs() <= tolerance, "anchor {i}: {g} vs {expected}");
        }
    }

    /// 10. Hinge: ∂L/∂pb = −λ where pb < rb (per anchor: −λ/A, since anchors are averaged).
    #[test]
    fn hinge_gradient_is_minus_lambda_below_the_reference(
        p in pair(),
        anchors in proptest::collection::vec((logp(200.0), 0.01..50.0f64), 1..4),
        lambda in 0.01..10.0f64,
    ) {
        let n = anchors.len();
        let objective = bapo(lambda, AnchorForm::Hinge, Normalize::Sum, n);
        let rb: Vec<f64> = anchors.iter().map(|a| a.0).collect();
        let pb: Vec<f64> = anchors.iter().map(|a| a.0 - a.1).collect();
        let inputs = example(p, pb.clone(), rb.clone(), vec![3.0; n]);
        for g in grad_of(&inputs, &objective, PB) {
            prop_assert!((g + lambda / n as f64).abs() <= 1e-12 * lambda, "{g} vs {}", -lambda / n as f64);
        }
        let loss = inputs.losses(&objective, Precision::F64)[0];
        let anchor: f64 = rb.iter().zip(&pb).map(|(r, p)| r - p).sum::<f64>() / n as f64;
        let expected = dpo_loss(p.0, p.1, p.2, p.3) + lambda * anchor;
        prop_assert!((loss - expected).abs() <= 1e-10 * (1.0 + expected), "{loss} vs {expected}");
    }

    /// 11. "mean" equals "sum" when every base response has one token.
    #[test]
    fn mean_equals_sum_for_one_token_anchors(
        p in pair(), form in form(), lambda in 0.0..5.0f64,
        anchors in proptest::collection::vec((logp(50.0), logp(50.0)), 1..4),
    ) {
        let n = anchors.len();
        let inputs = example(p, anchors.iter().map(|a| a.0).collect(), anchors.iter().map(|a| a.1).collect(), vec![1.0; n]);
        // The same κ for both ("auto" picks a per-token width for "mean").
        let with = |normalize| Bapo { config: BapoConfig { kappa: Kappa::Fixed(0.5), ..bapo(lambda, form, normalize, n).config } };
        let sum = inputs.losses(&with(Normalize::Sum), Precision::F64)[0];
        let mean = inputs.losses(&with(Normalize::Mean), Precision::F64)[0];
        prop_assert!((sum - mean).abs() <= 1e-12 * (1.0 + sum.abs()), "{sum} vs {mean}");
    }

    /// Each form against its definition, with per-token normalisation and several anchors.
    #[test]
    fn anchor_forms_match_their_definitions(
        p in pair(), form in form(), lambda in 0.0..5.0f64,
        anchors in proptest::collection::vec((logp(100.0), logp(100.0), 1u32..30), 1..4),
    ) {
        let n = anchors.len();
        let objective = bapo(lambda, form, Normalize::Mean, n);
        let inputs = example(
            p,
            anchors.iter().map(|a| a.0).collect(),
            anchors.iter().map(|a| a.1).collect(),
            anchors.iter().map(|a| f64::from(a.2)).collect(),
        );
        let term = |(pb, rb, nb): &(f64, f64, u32)| {
            let (pb, rb) = (pb / f64::from(*nb), rb / f64::from(*nb));
            match form {
                AnchorForm::Huber => huber_by_hand(rb - pb, KAPPA_MEAN),
                AnchorForm::Hinge => (rb - pb).max(0.0),
                AnchorForm::SquaredHinge => (rb - pb).max(0.0).powi(2),
                AnchorForm::Abs => (rb - pb).abs(),
                AnchorForm::Squared => (rb - pb).powi(2),
                AnchorForm::Nll => -pb,
            }
        };
        let anchor: f64 = anchors.iter().map(term).sum::<f64>() / n as f64;
        let expected = dpo_loss(p.0, p.1, p.2, p.3) + lambda * anchor;
        let loss = inputs.losses(&objective, Precision::F64)[0];
        prop_assert!((loss - expected).abs() <= 1e-10 * (1.0 + expected.abs()), "{loss} vs {expected}");
    }
}

/// "auto" κ follows the normalisation; the default is the Huber-ised hinge.
#[test]
fn default_is_huber_with_kappa_by_normalisation() {
    let sum = BapoConfig::default();
    assert_eq!(sum.form, AnchorForm::Huber);
    assert_eq!(sum.kappa(), KAPPA_SUM);
    let mean = BapoConfig {
        normalize: Normalize::Mean,
        ..BapoConfig::default()
    };
    assert_eq!(mean.kappa(), KAPPA_MEAN);
    assert_eq!(huber(1.0, 0.3, Normalize::Mean).config.kappa(), 0.3);
}

#[test]
fn needs_follow_the_settings() {
    let hinge = bapo(1.0, AnchorForm::Hinge, Normalize::Sum, 2).needs();
    assert!(hinge.contains(&PB) && hinge.contains(&RB) && !hinge.contains(&NB));
    assert_eq!(hinge.anchors_per_prompt, 2);
    assert!(hinge.needs_base_responses() && !hinge.needs_live_reference());
    let nll_mean = bapo(1.0, AnchorForm::Nll, Normalize::Mean, 1).needs();
    assert!(!nll_mean.contains(&RB) && nll_mean.contains(&NB));
}

#[test]
fn anchor_metrics_are_reported() {
    let inputs = example(
        (-5.0, -6.0, -5.0, -6.0),
        vec![-3.0, -1.0],
        vec![-2.0, -2.0],
        vec![4.0, 4.0],
    );
    let device = burn::tensor::Device::flex();
    let (q, _) = inputs.tensors(Precision::F64, &device, false);
    let out = bapo(1.0, AnchorForm::Hinge, Normalize::Sum, 2)
        .compute(&q)
        .unwrap();
    let get = |name: &str| bapo_testkit::values(out.metrics.get(name).unwrap())[0];
    assert_eq!(get("anchor/violation"), 0.5);
    assert_eq!(get("anchor/term"), 0.5);
    assert_eq!(get("logps/base"), -2.0);
}
