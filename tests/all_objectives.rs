//! Invariants every objective must satisfy (spec invariants 7, 16 and 17), checked on each
//! built-in objective in its default configuration and in the variants that change its
//! computation.

use bapo_objective::{Objective, registry};
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;
use bapo_testkit::inputs::{inputs_for, inputs_for_needs};
use bapo_testkit::{Precision, assert_close, scalar};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// (objective, settings): every built-in with its defaults and its computation-changing
/// switches.
const VARIANTS: &[(&str, &str)] = &[
    ("dpo", ""),
    ("dpo", "label_smoothing = 0.2"),
    ("dpo", "reference_free = true\nbeta = 0.5"),
    ("kl-dpo", ""),
    (
        "kl-dpo",
        "on = [\"base\"]\ndirection = \"forward\"\nlambda_kl = 2.0",
    ),
    ("bapo", ""),
    ("bapo", "form = \"abs\"\nnormalize = \"mean\""),
    ("bapo", "form = \"squared\"\nlambda = 0.3"),
    ("bapo", "form = \"nll\"\nnum_anchors = 3"),
    ("bapo", "num_anchors = 2\nnormalize = \"mean\""),
    ("mrpo", ""),
    ("mrpo", "alpha = 0.3\nepsilon = -0.2"),
    ("mrpo", "naive = true"),
    (
        "mrpo",
        "references = 3\nweights = [0.5, 0.3, 0.2]\nepsilon = 0.3",
    ),
    ("mrpo", "references = 1"),
];

fn build(name: &str, settings: &str) -> Box<dyn Objective> {
    let settings: toml::Table = toml::from_str(settings).expect("settings parse");
    registry::build(name, &settings).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn objectives() -> Vec<(String, Box<dyn Objective>)> {
    VARIANTS
        .iter()
        .map(|(name, settings)| {
            (
                format!("{name} [{}]", settings.replace('\n', ", ")),
                build(name, settings),
            )
        })
        .collect()
}

/// Invariant 7: reference quantities are constants, whatever the caller passes.
#[test]
fn no_gradient_reaches_any_reference_quantity() {
    for (label, objective) in objectives() {
        // A fresh runner per objective: a runner counts its successes across runs.
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&inputs_for(objective.as_ref(), 3, 50.0), |inputs| {
                for (q, grad) in inputs.gradients(objective.as_ref()) {
                    if q.is_constant() {
                        prop_assert!(grad.is_none(), "{label}: gradient reached {q}: {grad:?}");
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

/// Invariant 17: the autodiff gradient of the whole loss equals central finite differences in
/// f64, for every input that carries gradient.
#[test]
fn gradients_match_central_finite_differences() {
    for (label, objective) in objectives() {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
        runner
            .run(&inputs_for(objective.as_ref(), 3, 30.0), |inputs| {
                for (q, grad) in inputs.gradients(objective.as_ref()) {
                    if q.is_constant() {
                        continue;
                    }
                    let grad = grad.unwrap_or_else(|| panic!("{label}: no gradient for {q}"));
                    let fd = inputs.finite_differences(objective.as_ref(), q, 1e-5);
                    for (i, (g, f)) in grad.iter().zip(&fd).enumerate() {
                        prop_assert!(
                            (g - f).abs() <= 1e-6 + 1e-5 * f.abs(),
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
/// independence (permuting the batch permutes the losses) and batch mean = mean of the
/// single-example losses.
#[test]
fn losses_are_finite_per_example_and_batch_consistent() {
    for (label, objective) in objectives() {
        // A fresh runner per objective: a runner counts its successes across runs.
        let mut runner = proptest::test_runner::TestRunner::default();
        let needs = objective.needs();
        let strategy = (1usize..6).prop_flat_map(move |batch| {
            (
                inputs_for_needs(needs.clone(), batch, 1000.0),
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
                let device = burn::tensor::Device::flex();
                let (q, _) = inputs.tensors(Precision::F64, &device, false);
                let batch_mean = scalar(&objective.compute(&q).unwrap().mean_loss());
                let mean_of_singles = singles.iter().sum::<f64>() / singles.len() as f64;
                prop_assert!(
                    (batch_mean - mean_of_singles).abs() <= 1e-12 * (1.0 + mean_of_singles.abs())
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

/// Each objective's quantities: what it needs is what it reads, and a missing one is an error,
/// not a panic.
#[test]
fn a_missing_quantity_is_an_error_naming_it() {
    for (label, objective) in objectives() {
        // A fresh runner per objective: a runner counts its successes across runs.
        let mut runner = proptest::test_runner::TestRunner::default();
        let inputs = inputs_for(objective.as_ref(), 2, 10.0)
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
