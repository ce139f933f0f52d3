//! Invariants every objective must satisfy (spec invariants 7, 16 and 17), checked on each
//! built-in objective in its default configuration and in the variants that change its
//! computation, and on the third-party IPO example.
//!
//! Base-response inputs include the first step's regime, `pb = rb` exactly or within float
//! noise (`Kink::Include`), except for the finite-difference check of the two anchor forms
//! that have a kink there (`hinge`, `abs`).
//!
//! Each test was checked against planted bugs (`cargo mutants`, docs/objectives.md): invariant
//! 7 fails when `Quantities::get` stops detaching constants; 16 when an objective mixes
//! examples (e.g. normalises by a batch statistic); 17 when any gradient path is wrong.

use bapo_example_ipo as _;
use bapo_objective::{Objective, registry};
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;
use bapo_testkit::inputs::{Kink, inputs_for, inputs_for_needs};
use bapo_testkit::{Precision, assert_close};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// How smooth an objective is in the policy's base-response log-prob at `pb = rb`.
#[derive(Clone, Copy)]
enum AtTheKink {
    /// Twice differentiable (or no anchor at all).
    Smooth,
    /// Differentiable, with a jump of at most this much (nats⁻¹) in the second derivative:
    /// a central difference of step h straddling it is off by up to jump·h/2.
    C1(f64),
    /// Not differentiable there (hinge, abs): finite differences stay 0.01 away.
    Kinked,
}
use AtTheKink::*;

/// (objective, settings, smoothness at the kink): every objective with its defaults and its
/// computation-changing switches.
const VARIANTS: &[(&str, &str, AtTheKink)] = &[
    ("dpo", "", Smooth),
    ("dpo", "label_smoothing = 0.2", Smooth),
    ("dpo", "reference_free = true\nbeta = 0.5", Smooth),
    ("kl-dpo", "", Smooth),
    (
        "kl-dpo",
        "on = [\"base\"]\ndirection = \"forward\"\nlambda_kl = 2.0",
        Smooth,
    ),
    // Huber: the second derivative jumps by λ/κ (÷ n_b² with "mean", ÷ anchors).
    ("bapo", "", C1(1.0)),
    (
        "bapo",
        "kappa = 0.3\nnum_anchors = 2\nlambda = 2.5",
        C1(2.5 / 0.3),
    ),
    ("bapo", "normalize = \"mean\"", C1(1.0 / 0.025)),
    ("bapo", "form = \"hinge\"", Kinked),
    // Squared hinge: the second derivative jumps by 2λ.
    (
        "bapo",
        "form = \"squared_hinge\"\nnormalize = \"mean\"",
        C1(2.0),
    ),
    ("bapo", "form = \"abs\"\nnormalize = \"mean\"", Kinked),
    ("bapo", "form = \"squared\"\nlambda = 0.3", Smooth),
    ("bapo", "form = \"nll\"\nnum_anchors = 3", Smooth),
    (
        "bapo",
        "form = \"hinge\"\nnum_anchors = 2\nnormalize = \"mean\"",
        Kinked,
    ),
    ("mrpo", "", Smooth),
    ("mrpo", "alpha = 0.3\nepsilon = -0.2", Smooth),
    ("mrpo", "naive = true", Smooth),
    ("mrpo", "naive = true\nalpha = 0.6\nepsilon = 0.4", Smooth),
    (
        "mrpo",
        "references = 3\nweights = [0.5, 0.3, 0.2]\nepsilon = 0.3",
        Smooth,
    ),
    ("mrpo", "references = 1", Smooth),
    ("ipo", "", Smooth),
    ("ipo", "length_normalize = false\ntau = 0.5", Smooth),
];

fn build(name: &str, settings: &str) -> Box<dyn Objective> {
    let settings: toml::Table = toml::from_str(settings).expect("settings parse");
    registry::build(name, &settings).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Variant {
    label: String,
    objective: Box<dyn Objective>,
    at_the_kink: AtTheKink,
}

fn variants() -> Vec<Variant> {
    VARIANTS
        .iter()
        .map(|(name, settings, at_the_kink)| Variant {
            label: format!("{name} [{}]", settings.replace('\n', ", ")),
            objective: build(name, settings),
            at_the_kink: *at_the_kink,
        })
        .collect()
}

/// Invariant 7: reference quantities are constants. Every quantity is handed to the objective
/// as a tracked, undetached leaf; no gradient may reach the constant ones.
#[test]
fn no_gradient_reaches_any_reference_quantity() {
    for Variant {
        label, objective, ..
    } in variants()
    {
        // A fresh runner per objective: a runner counts its successes across runs.
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &inputs_for(objective.as_ref(), 3, 50.0, Kink::Include),
                |inputs| {
                    let mut constants = 0;
                    for (q, grad) in inputs.gradients(objective.as_ref()) {
                        if q.is_constant() {
                            constants += 1;
                            prop_assert!(grad.is_none(), "{label}: gradient reached {q}: {grad:?}");
                        }
                    }
                    prop_assert!(
                        constants > 0 || label.contains("reference_free"),
                        "{label}: no constant to check"
                    );
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

/// Invariant 17: the autodiff gradient of the whole loss equals central finite differences in
/// f64, for every input that carries gradient — on the kink (`pb = rb`) too for every anchor
/// form that is smooth there.
#[test]
fn gradients_match_central_finite_differences() {
    const H: f64 = 1e-7;
    for Variant {
        label,
        objective,
        at_the_kink,
    } in variants()
    {
        let (kink, jump) = match at_the_kink {
            Smooth => (Kink::Include, 0.0),
            C1(jump) => (Kink::Include, jump),
            Kinked => (Kink::Avoid, 0.0),
        };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
        runner
            .run(&inputs_for(objective.as_ref(), 3, 30.0, kink), |inputs| {
                for (q, grad) in inputs.gradients(objective.as_ref()) {
                    if q.is_constant() {
                        continue;
                    }
                    let grad = grad.unwrap_or_else(|| panic!("{label}: no gradient for {q}"));
                    // Rounding adds ~1e-16·|loss|/h; a C¹ point within h adds jump·h/2.
                    let fd = inputs.finite_differences(objective.as_ref(), q, H);
                    for (i, (g, f)) in grad.iter().zip(&fd).enumerate() {
                        prop_assert!(
                            (g - f).abs() <= 1e-6 + 1e-5 * f.abs() + jump * H / 2.0,
                            "{label}: d loss / d {q}[{i}]: autodiff {g} vs finite difference {f}"
                        );
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

/// Invariant 16: finite losses for finite inputs (f32, log-probs down to −1000), per-example
/// independence (permuting the batch permutes the losses; each loss equals the loss of its
/// example alone), and the batch mean's gradient is the mean of the single examples'
/// gradients (no objective couples examples, e.g. through a batch statistic).
#[test]
fn losses_are_finite_per_example_and_batch_consistent() {
    for Variant {
        label, objective, ..
    } in variants()
    {
        // A fresh runner per objective: a runner counts its successes across runs.
        let mut runner = proptest::test_runner::TestRunner::default();
        let needs = objective.needs();
        let strategy = (2usize..6).prop_flat_map(move |batch| {
            (
                inputs_for_needs(needs.clone(), batch, 1000.0, Kink::Include),
                Just((0..batch).collect::<Vec<usize>>()).prop_shuffle(),
            )
        });
        runner
            .run(&strategy, |(inputs, order)| {
                let f32_losses = inputs.losses(objective.as_ref(), Precision::F32);
                prop_assert!(
                    f32_losses.iter().all(|l| l.is_finite()),
                    "{label}: {f32_losses:?}"
                );

                let losses = inputs.losses(objective.as_ref(), Precision::F64);
                let permuted = inputs
                    .permuted(&order)
                    .losses(objective.as_ref(), Precision::F64);
                let expected: Vec<f64> = order.iter().map(|&i| losses[i]).collect();
                assert_close(&permuted, &expected, 1e-12, 1e-12, &label);

                let singles: Vec<f64> = (0..inputs.batch)
                    .map(|i| inputs.example(i).losses(objective.as_ref(), Precision::F64)[0])
                    .collect();
                assert_close(&losses, &singles, 1e-12, 1e-12, &label);

                // The batch's summed loss, differentiated w.r.t. example i's inputs, equals
                // example i's own loss differentiated alone (so the batch mean's gradient is
                // the mean of the single examples' gradients).
                let batch_grads = inputs.gradients(objective.as_ref());
                let single_grads: Vec<_> = (0..inputs.batch)
                    .map(|i| inputs.example(i).gradients(objective.as_ref()))
                    .collect();
                for (k, (q, grad)) in batch_grads.iter().enumerate() {
                    let Some(grad) = grad else { continue };
                    let cols = grad.len() / inputs.batch;
                    for (i, single) in single_grads.iter().enumerate() {
                        let own = single[k].1.as_ref().expect("a single example's gradient");
                        assert_close(
                            &grad[i * cols..(i + 1) * cols],
                            own,
                            1e-10,
                            1e-12,
                            &format!("{label}: d loss / d {q}, example {i}"),
                        );
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

/// Each objective's quantities: what it needs is what it reads, and a missing one is an error,
/// not a panic.
#[test]
fn a_missing_quantity_is_an_error_naming_it() {
    for Variant {
        label, objective, ..
    } in variants()
    {
        // A fresh runner per objective: a runner counts its successes across runs.
        let mut runner = proptest::test_runner::TestRunner::default();
        let inputs = inputs_for(objective.as_ref(), 2, 10.0, Kink::Include)
            .new_tree(&mut runner)
            .expect("a value")
            .current();
        for (q, _, _) in &inputs.entries {
            let mut without = inputs.clone();
            without.entries.retain(|(k, _, _)| k != q);
            let device = burn::tensor::Device::flex();
            let (quantities, _) = without.tensors(Precision::F64, &device, false);
            let err = objective
                .compute(&quantities)
                .expect_err(&format!("{label} without {q}"));
            assert!(err.to_string().contains(&q.to_string()), "{label}: {err}");
        }
    }
}
