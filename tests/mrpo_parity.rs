//! Parity with the MRPO authors' code: bapo's `mrpo` (K = 2; main path and naive Multi-DPO,
//! ARWC and fixed α, adaptive and fixed clipping rates) against a line-by-line port of
//! `get_batch_loss_metrics` in their `trainer_mref.py`, recorded by
//! `tests/fixtures/mrpo/make_mrpo_parity.py` into `tests/fixtures/mrpo/mrpo_parity.json`.

use bapo_objective::{Objective, registry};
use bapo_objective_mrpo as _;
use bapo_testkit::{Inputs, Precision, assert_close, values};
use burn::tensor::Device;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    beta: f64,
    epsilon: f64,
    alpha: toml::Value,
    naive: bool,
    examples: Vec<Example>,
}

#[derive(Deserialize)]
struct Example {
    pc: f64,
    pr: f64,
    r0c: f64,
    r0r: f64,
    r1c: f64,
    r1r: f64,
    loss: f64,
    chosen_reward: f64,
    rejected_reward: f64,
    alpha: f64,
}

fn fixture() -> Fixture {
    bapo_integration_tests::fixture("mrpo/mrpo_parity.json")
}

impl Case {
    fn objective(&self) -> Box<dyn Objective> {
        let mut settings = toml::Table::new();
        settings.insert("beta".into(), self.beta.into());
        settings.insert("epsilon".into(), self.epsilon.into());
        settings.insert("alpha".into(), self.alpha.clone());
        settings.insert("naive".into(), self.naive.into());
        registry::build("mrpo", &settings).expect("fixture settings are valid")
    }

    fn label(&self) -> String {
        format!(
            "beta {} epsilon {} alpha {} naive {}",
            self.beta, self.epsilon, self.alpha, self.naive
        )
    }

    fn inputs(&self) -> Inputs {
        let column = |f: fn(&Example) -> f64| self.examples.iter().map(f).collect::<Vec<_>>();
        Inputs::preference(
            column(|e| e.pc),
            column(|e| e.pr),
            column(|e| e.r0c),
            column(|e| e.r0r),
        )
        .with_reference(1, column(|e| e.r1c), column(|e| e.r1r))
    }

    fn expected(&self, f: fn(&Example) -> f64) -> Vec<f64> {
        self.examples.iter().map(f).collect()
    }
}

#[test]
fn mrpo_matches_the_authors_formulas_to_1e6_relative() {
    let fixture = fixture();
    let naive_cases = fixture.cases.iter().filter(|c| c.naive).count();
    assert!(
        naive_cases > 0 && naive_cases < fixture.cases.len(),
        "both paths covered"
    );
    for case in &fixture.cases {
        let label = case.label();
        let (q, _) = case
            .inputs()
            .tensors(Precision::F64, &Device::flex(), false);
        let out = case.objective().compute(&q).unwrap();
        let metric = |name: &str| values(out.metrics.get(name).unwrap());
        let check = |actual: &[f64], f: fn(&Example) -> f64, what: &str| {
            assert_close(
                actual,
                &case.expected(f),
                1e-6,
                1e-12,
                &format!("{what}, {label}"),
            )
        };
        check(&values(&out.losses), |e| e.loss, "loss");
        check(
            &metric("rewards/chosen"),
            |e| e.chosen_reward,
            "rewards/chosen",
        );
        check(
            &metric("rewards/rejected"),
            |e| e.rejected_reward,
            "rewards/rejected",
        );
        check(&metric("mrpo/alpha"), |e| e.alpha, "mrpo/alpha");
    }
}

/// The example of the issue that found the naive mode's missing clipping: the authors' code
/// gives 0.464, the unclipped auxiliary 5.37.
#[test]
fn naive_mode_clips_the_auxiliary_as_the_authors_do() {
    let inputs = Inputs::preference(vec![-40.0], vec![-60.0], vec![-45.0], vec![-55.0])
        .with_reference(1, vec![-10.0], vec![-90.0]);
    let mut settings = toml::Table::new();
    settings.insert("naive".into(), true.into());
    let objective = registry::build("mrpo", &settings).unwrap();
    let loss = inputs.losses(objective.as_ref(), Precision::F64)[0];
    assert!((loss - 0.463_812_401_630_766).abs() < 1e-9, "{loss}");
}

#[test]
fn mrpo_matches_the_authors_formulas_in_f32_within_f32_rounding() {
    for case in &fixture().cases {
        let losses = case
            .inputs()
            .losses(case.objective().as_ref(), Precision::F32);
        assert_close(
            &losses,
            &case.expected(|e| e.loss),
            1e-4,
            1e-4,
            &case.label(),
        );
    }
}
