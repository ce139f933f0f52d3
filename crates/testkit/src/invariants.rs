//! The invariants every objective must satisfy (spec invariants 7, 16 and 17 and the typed
//! error for a missing quantity), as checks any objective crate can run on its own settings:
//! the in-tree objectives' suite (tests/all_objectives.rs) and a crate in another repository
//! use the same entry, [`objective_invariant_tests!`](crate::objective_invariant_tests):
//!
//! ```ignore
//! use my_objective as _; // links the crate, so that its registration is seen
//! use bapo_testkit::invariants::AtTheKink::Smooth;
//!
//! bapo_testkit::objective_invariant_tests!(&[("simpo", "", Smooth), ("simpo", "gamma = 1.0", Smooth)]);
//! ```
//!
//! Base-response inputs include the first step's regime, `pb = rb` exactly or within float
//! noise (`Kink::Include`), except for the finite-difference check of a form with a kink
//! there ([`AtTheKink::Kinked`]).
//!
//! Each check was proved against planted bugs (tests/planted-mutations.toml): invariant 7
//! fails when `Quantities::get` stops detaching constants; 16 when an objective mixes examples
//! (e.g. normalises by a batch statistic); 17 when any gradient path is wrong.

use bapo_objective::{Objective, registry};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::inputs::{Kink, inputs_for, inputs_for_needs};
use crate::{Precision, assert_close};

/// How smooth an objective is in the policy's base-response log-prob at `pb = rb` (where an
/// anchor switches on): it sets how close finite differences must come there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AtTheKink {
    /// Twice differentiable (or no anchor at all).
    Smooth,
    /// Differentiable, with a jump of at most this much (nats⁻¹) in the second derivative:
    /// a central difference of step h straddling it is off by up to jump·h/2.
    C1(f64),
    /// Not differentiable there (hinge, abs): finite differences stay 0.01 away.
    Kinked,
}

/// One objective in one configuration, built through the registry as a run builds it.
pub struct Variant {
    /// `name [settings]`, for messages.
    pub label: String,
    pub objective: Box<dyn Objective>,
    pub at_the_kink: AtTheKink,
}

impl Variant {
    /// The registered objective `name` with `settings` (the `[objective]` table's keys, as
    /// TOML; "" for its defaults). Panics, naming it, when the registry refuses it: link the
    /// objective's crate into the test (`use my_objective as _;`).
    pub fn new(name: &str, settings: &str, at_the_kink: AtTheKink) -> Variant {
        let table: toml::Table = toml::from_str(settings)
            .unwrap_or_else(|e| panic!("{name}: settings {settings:?} are not TOML: {e}"));
        let objective = registry::build(name, &table).unwrap_or_else(|e| panic!("{name}: {e}"));
        Variant {
            label: format!("{name} [{}]", settings.replace('\n', ", ")),
            objective,
            at_the_kink,
        }
    }
}

/// Every variant of `list` (objective name, settings as TOML, smoothness at the kink), built.
pub fn variants(list: &[(&str, &str, AtTheKink)]) -> Vec<Variant> {
    list.iter()
        .map(|(name, settings, at_the_kink)| Variant::new(name, settings, *at_the_kink))
        .collect()
}

/// Runs every invariant on every variant, panicking with the first that fails.
pub fn check_all(variants: &[Variant]) {
    no_gradient_reaches_any_reference_quantity(variants);
    gradients_match_central_finite_differences(variants);
    losses_are_finite_per_example_and_batch_consistent(variants);
    a_missing_quantity_is_an_error_naming_it(variants);
}

/// Invariant 7: reference quantities are constants. Every quantity is handed to the objective
/// as a tracked, undetached leaf; no gradient may reach the constant ones.
pub fn no_gradient_reaches_any_reference_quantity(variants: &[Variant]) {
    for Variant {
        label, objective, ..
    } in variants
    {
        let reference_free = objective.needs().num_references() == 0;
        let strategy = inputs_for(objective.as_ref(), 3, 50.0, Kink::Include);
        check_cases(label, ProptestConfig::default(), &strategy, |inputs| {
            let mut constants = 0;
            for (q, grad) in inputs.gradients(objective.as_ref()) {
                if q.is_constant() {
                    constants += 1;
                    prop_assert!(grad.is_none(), "{label}: gradient reached {q}: {grad:?}");
                }
            }
            prop_assert!(
                constants > 0 || reference_free,
                "{label}: no constant to check"
            );
            Ok(())
        });
    }
}

/// Invariant 17: the autodiff gradient of the whole loss equals central finite differences in
/// f64, for every input that carries gradient — on the kink (`pb = rb`) too for every anchor
/// form that is smooth there.
pub fn gradients_match_central_finite_differences(variants: &[Variant]) {
    const H: f64 = 1e-7;
    for Variant {
        label,
        objective,
        at_the_kink,
    } in variants
    {
        let (kink, jump) = match *at_the_kink {
            AtTheKink::Smooth => (Kink::Include, 0.0),
            AtTheKink::C1(jump) => (Kink::Include, jump),
            AtTheKink::Kinked => (Kink::Avoid, 0.0),
        };
        let strategy = inputs_for(objective.as_ref(), 3, 30.0, kink);
        check_cases(label, ProptestConfig::with_cases(48), &strategy, |inputs| {
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
        });
    }
}

/// Invariant 16: finite losses for finite inputs (f32, log-probs down to −1000), per-example
/// independence (permuting the batch permutes the losses; each loss equals the loss of its
/// example alone), and the batch mean's gradient is the mean of the single examples'
/// gradients (no objective couples examples, e.g. through a batch statistic).
pub fn losses_are_finite_per_example_and_batch_consistent(variants: &[Variant]) {
    for Variant {
        label, objective, ..
    } in variants
    {
        let needs = objective.needs();
        let strategy = (2usize..6).prop_flat_map(move |batch| {
            (
                inputs_for_needs(needs.clone(), batch, 1000.0, Kink::Include),
                Just((0..batch).collect::<Vec<usize>>()).prop_shuffle(),
            )
        });
        check_cases(
            label,
            ProptestConfig::default(),
            &strategy,
            |(inputs, order)| {
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
                assert_close(&permuted, &expected, 1e-12, 1e-12, label);

                let singles: Vec<f64> = (0..inputs.batch)
                    .map(|i| inputs.example(i).losses(objective.as_ref(), Precision::F64)[0])
                    .collect();
                assert_close(&losses, &singles, 1e-12, 1e-12, label);

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
            },
        );
    }
}

/// Runs `property` on cases drawn from `strategy` for the variant `label`, panicking with the
/// label and the smallest failing case. A fresh runner each time: a runner counts its
/// successes across runs.
fn check_cases<S: Strategy>(
    label: &str,
    config: ProptestConfig,
    strategy: &S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    TestRunner::new(config)
        .run(strategy, property)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
}

/// Each objective's quantities: what it needs is what it reads, and a missing one is an error
/// naming it, not a panic.
pub fn a_missing_quantity_is_an_error_naming_it(variants: &[Variant]) {
    for Variant {
        label, objective, ..
    } in variants
    {
        let mut runner = TestRunner::default();
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

/// One `#[test]` per invariant, run on every variant of `$variants` (a
/// `&[(&str, &str, AtTheKink)]`: objective name, its settings as TOML, its smoothness at the
/// kink). The objectives must be linked into the test (`use my_objective as _;`).
#[macro_export]
macro_rules! objective_invariant_tests {
    ($variants:expr) => {
        #[test]
        fn no_gradient_reaches_any_reference_quantity() {
            $crate::invariants::no_gradient_reaches_any_reference_quantity(
                &$crate::invariants::variants($variants),
            );
        }

        #[test]
        fn gradients_match_central_finite_differences() {
            $crate::invariants::gradients_match_central_finite_differences(
                &$crate::invariants::variants($variants),
            );
        }

        #[test]
        fn losses_are_finite_per_example_and_batch_consistent() {
            $crate::invariants::losses_are_finite_per_example_and_batch_consistent(
                &$crate::invariants::variants($variants),
            );
        }

        #[test]
        fn a_missing_quantity_is_an_error_naming_it() {
            $crate::invariants::a_missing_quantity_is_an_error_naming_it(
                &$crate::invariants::variants($variants),
            );
        }
    };
}
